//! The Helm chart `deploy/helm/ioscale` rendered without a Kubernetes
//! cluster, for the chart tests (`helm_chart.rs`, `helm_chart_security.rs`):
//! `helm template` and `kubernetes-validate`, lookups in the rendered objects,
//! and the invariants every rendering must hold (the node Deployment's, the
//! secure defaults', JWT auth's).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use serde_json::{Value, json};

use crate::logs::TestLogs;
use crate::tools::{self, deploy_dir, expect_success, helm, python_tool, yaml_docs};

/// The chart's `kubeVersion` floor, and the validator's newest schemas.
const KUBE_VERSIONS: [&str; 2] = ["1.25.0", "1.37.0"];

/// The release name every test renders the chart as.
pub const RELEASE: &str = "chat";

/// `deploy/helm/ioscale`
pub fn chart_dir() -> PathBuf {
    deploy_dir().join("helm").join("ioscale")
}

/// `helm template` with extra arguments; the rendered text or Helm's error output.
pub async fn template(
    logs: &TestLogs,
    args: &[&str],
) -> Result<std::result::Result<String, String>> {
    let helm = helm().await?;
    let chart = chart_dir();
    let mut all = vec!["template", RELEASE, chart.to_str().context("utf-8 path")?];
    all.extend(args);
    let out = tools::run(
        &helm,
        &all,
        &chart,
        &[],
        Duration::from_secs(60),
        Some(&logs.file("helm.log")),
    )
    .await?;
    Ok(if out.success() {
        Ok(out.stdout)
    } else {
        Err(out.text())
    })
}

/// Renders, validates every object with kubernetes-validate, returns the objects.
pub async fn render_and_validate(logs: &TestLogs, name: &str, args: &[&str]) -> Result<Vec<Value>> {
    let text = template(logs, args)
        .await?
        .map_err(|e| anyhow::anyhow!("helm template {args:?} failed:\n{e}"))?;
    let file = logs.file(&format!("{name}.yaml"));
    std::fs::write(&file, &text)?;
    let docs = yaml_docs(&text).await?;
    ensure!(!docs.is_empty(), "nothing rendered");
    let validate = python_tool("kubernetes-validate").await?;
    let log = logs.file("kubernetes-validate.log");
    for k in KUBE_VERSIONS {
        let out = tools::run(
            &validate,
            &["--strict", "-k", k, &file.to_string_lossy()],
            logs.dir(),
            &[],
            Duration::from_secs(120),
            Some(&log),
        )
        .await?;
        expect_success(&format!("kubernetes-validate -k {k} {name}"), &out, &log)?;
        // Every built-in object must have been checked, not skipped.
        for d in &docs {
            let kind = d["kind"].as_str().unwrap_or_default();
            if is_crd(d) {
                continue;
            }
            let needle = format!(
                "passed for resource {}/{}",
                kind.to_lowercase(),
                d["metadata"]["name"].as_str().unwrap_or_default()
            );
            ensure!(
                out.text().contains(&needle),
                "kubernetes-validate -k {k} did not validate {kind}: {}",
                out.text()
            );
        }
    }
    Ok(docs)
}

/// Objects of custom resources the validator has no schema for.
fn is_crd(d: &Value) -> bool {
    d["apiVersion"]
        .as_str()
        .is_some_and(|v| v.starts_with("monitoring.coreos.com/"))
}

/// `Kind/name` of every object, for assertions and error messages.
pub fn kinds(docs: &[Value]) -> BTreeSet<String> {
    docs.iter()
        .map(|d| {
            format!(
                "{}/{}",
                d["kind"].as_str().unwrap_or(""),
                d["metadata"]["name"].as_str().unwrap_or("")
            )
        })
        .collect()
}

/// The object of `kind` named `name`.
///
/// # Errors
/// If there is none.
pub fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> Result<&'a Value> {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .with_context(|| format!("no {kind}/{name} in {:?}", kinds(docs)))
}

/// The `env` entry `name` of a container.
pub fn env_var<'a>(container: &'a Value, name: &str) -> Option<&'a Value> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
}

/// The plain value of `name` in the node container: its own `env`, or the
/// ConfigMap it takes with `envFrom` (the container's own entry wins, as in
/// Kubernetes).
pub fn node_setting(docs: &[Value], container: &Value, name: &str) -> Option<String> {
    if let Some(e) = env_var(container, name) {
        return e["value"].as_str().map(str::to_owned);
    }
    container["envFrom"].as_array()?.iter().find_map(|from| {
        let cm = from["configMapRef"]["name"].as_str()?;
        let cm = docs
            .iter()
            .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == cm)?;
        cm["data"][name].as_str().map(str::to_owned)
    })
}

/// Every string in `v`, with the path that leads to it.
fn strings(v: &Value, path: &str, out: &mut Vec<(String, String)>) {
    match v {
        Value::String(s) => out.push((path.to_owned(), s.clone())),
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                strings(x, &format!("{path}[{i}]"), out);
            }
        }
        Value::Object(o) => {
            for (k, x) in o {
                strings(x, &format!("{path}.{k}"), out);
            }
        }
        _ => {}
    }
}

/// Values no credential may have: placeholders and default passwords.
const WELL_KNOWN: [&str; 5] = ["change-me", "changeme", "admin", "password", "secret"];

/// What every rendering must hold, whatever the values: the server API and
/// the metrics on the `admin` port of the pods, bound by IOSCALE_ADMIN_LISTEN,
/// exposed by a ClusterIP Service of their own and by no other; an ingress
/// (when there is one) that routes to `http` only; no placeholder or default
/// password among the rendered strings (the Secret's included).
pub fn check_secure_by_default(docs: &[Value], full: &str) -> Result<()> {
    let dep = find(docs, "Deployment", full)?;
    let c = &dep["spec"]["template"]["spec"]["containers"][0];
    let ports = c["ports"].as_array().context("container ports")?;
    let port = |name: &str| {
        ports
            .iter()
            .find(|p| p["name"] == name)
            .and_then(|p| p["containerPort"].as_u64())
    };
    let admin_port = port("admin").context("no container port named admin")?;
    ensure!(
        port("http") != Some(admin_port),
        "admin and http must be two ports: {ports:?}"
    );
    let admin_listen = node_setting(docs, c, "IOSCALE_ADMIN_LISTEN").context(
        "IOSCALE_ADMIN_LISTEN must be set, or /metrics and the API share the public port",
    )?;
    ensure!(
        admin_listen == format!("0.0.0.0:{admin_port}"),
        "IOSCALE_ADMIN_LISTEN {admin_listen} must bind the admin container port {admin_port}"
    );

    let admin_svc = find(docs, "Service", &format!("{full}-admin"))?;
    ensure!(
        admin_svc["spec"]["type"] == "ClusterIP",
        "the admin Service must stay inside the cluster: {}",
        admin_svc["spec"]
    );
    ensure!(
        admin_svc["spec"]["ports"]
            .as_array()
            .is_some_and(|p| p.len() == 1 && p[0]["targetPort"] == "admin"),
        "the admin Service must expose the admin port, and only it: {}",
        admin_svc["spec"]["ports"]
    );
    for svc in docs.iter().filter(|d| d["kind"] == "Service") {
        if svc["metadata"]["name"] == format!("{full}-admin") {
            continue;
        }
        for p in svc["spec"]["ports"].as_array().into_iter().flatten() {
            ensure!(
                p["targetPort"] != "admin" && p["targetPort"] != admin_port,
                "Service {} must not expose the admin port: {p}",
                svc["metadata"]["name"]
            );
        }
    }
    check_ingress_routes_http_only(docs, full)?;
    check_no_well_known_values(docs)
}

/// Every ingress backend is the node Service's `http` port, so neither `/metrics` nor
/// `/api/v1` is reachable through it.
fn check_ingress_routes_http_only(docs: &[Value], full: &str) -> Result<()> {
    for ing in docs.iter().filter(|d| d["kind"] == "Ingress") {
        let mut backends = Vec::new();
        for rule in ing["spec"]["rules"].as_array().into_iter().flatten() {
            for path in rule["http"]["paths"].as_array().into_iter().flatten() {
                backends.push(&path["backend"]["service"]);
            }
        }
        if !ing["spec"]["defaultBackend"].is_null() {
            backends.push(&ing["spec"]["defaultBackend"]["service"]);
        }
        ensure!(
            !backends.is_empty(),
            "the ingress routes nowhere: {}",
            ing["spec"]
        );
        for b in backends {
            ensure!(
                b["name"] == full && b["port"] == json!({"name": "http"}),
                "the ingress must route to the http port of {full} only, so neither /metrics \
                 nor /api/v1 is reachable through it: {b}"
            );
        }
    }

    Ok(())
}

/// No Secret, ConfigMap, container variable or argument holds a placeholder or well-known
/// password.
fn check_no_well_known_values(docs: &[Value]) -> Result<()> {
    // Where credentials live: Secrets, ConfigMaps and the containers' plain
    // variables. (Not everywhere: `admin` is rightly a port and label name.)
    let mut values = Vec::new();
    for d in docs {
        let name = format!(
            "{}/{}",
            d["kind"].as_str().unwrap_or(""),
            d["metadata"]["name"].as_str().unwrap_or("")
        );
        for field in ["stringData", "data"] {
            strings(&d[field], &format!("{name}.{field}"), &mut values);
        }
        let pod = &d["spec"]["template"]["spec"];
        for c in pod["containers"].as_array().into_iter().flatten() {
            for e in c["env"].as_array().into_iter().flatten() {
                strings(
                    &e["value"],
                    &format!("{name} env {}", e["name"]),
                    &mut values,
                );
            }
            strings(&c["args"], &format!("{name} args"), &mut values);
        }
    }
    ensure!(!values.is_empty(), "no settings found to check");
    for (path, value) in &values {
        let v = value.trim().to_lowercase();
        ensure!(
            !WELL_KNOWN.contains(&v.as_str()),
            "{path} is a placeholder or well-known password: {value:?}"
        );
    }
    Ok(())
}

/// With `auth: jwt`: the node requires tokens (on `namespaces`, or everywhere
/// when `None`) and reads its HS256 secret from a file that is the Secret's
/// `jwt-secret`, mounted read-only.
pub fn check_jwt(docs: &[Value], full: &str, secret: &str, namespaces: Option<&str>) -> Result<()> {
    let dep = find(docs, "Deployment", full)?;
    let pod = &dep["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    ensure!(
        node_setting(docs, c, "IOSCALE_AUTH").as_deref() == Some("jwt"),
        "IOSCALE_AUTH must be jwt"
    );
    ensure!(
        node_setting(docs, c, "IOSCALE_AUTH_NAMESPACES").as_deref() == namespaces,
        "IOSCALE_AUTH_NAMESPACES must be {namespaces:?}"
    );
    ensure!(
        env_var(c, "IOSCALE_JWT_SECRET").is_none(),
        "the JWT secret must come as a file, not a variable (visible in kubectl describe)"
    );
    let file = node_setting(docs, c, "IOSCALE_JWT_SECRET_FILE")
        .context("IOSCALE_JWT_SECRET_FILE must be set")?;
    let (dir, name) = file.rsplit_once('/').context("an absolute path")?;
    let mount = c["volumeMounts"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["mountPath"] == dir))
        .with_context(|| format!("nothing mounted at {dir}: {}", c["volumeMounts"]))?;
    ensure!(mount["readOnly"] == true, "{dir} must be mounted read-only");
    let vol = pod["volumes"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["name"] == mount["name"]))
        .context("the JWT secret's volume")?;
    ensure!(
        vol["secret"]["secretName"] == secret
            && vol["secret"]["items"].as_array().is_some_and(|i| i
                .iter()
                .any(|i| i["key"] == "jwt-secret" && i["path"] == name)),
        "{file} must be key jwt-secret of Secret {secret}: {vol}"
    );
    Ok(())
}

/// The node Deployment's invariants, whatever the values.
pub fn check_node_deployment(dep: &Value, secret: &str) -> Result<()> {
    let pod = &dep["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    ensure!(
        c["readinessProbe"]["httpGet"]["path"] == "/readyz",
        "readiness must be /readyz"
    );
    ensure!(
        c["livenessProbe"]["httpGet"]["path"] == "/healthz",
        "liveness must be /healthz"
    );
    ensure!(
        c["ports"][0]["containerPort"] == 3000,
        "container port 3000"
    );
    ensure!(
        pod["securityContext"]["runAsNonRoot"] == true,
        "non-root pods"
    );
    ensure!(
        env_var(c, "IOSCALE_NODE_ID")
            .is_some_and(|e| e["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"),
        "each pod's node id must be its (unique) name"
    );
    let redis = env_var(c, "IOSCALE_REDIS_URL").context("IOSCALE_REDIS_URL")?;
    ensure!(
        redis["valueFrom"]["secretKeyRef"] == json!({"name": secret, "key": "redis-url"}),
        "the Redis URL (it may hold a password) must come from Secret {secret}: {redis}"
    );
    ensure!(
        c["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep",
        "a preStop pause before the drain"
    );
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap_or(30);
    ensure!(
        grace >= 10,
        "grace period {grace} s must cover the pause and the 5 s drain"
    );
    Ok(())
}
