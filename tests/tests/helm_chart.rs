//! The Helm chart `deploy/helm/ioscale`, without a Kubernetes cluster: `helm
//! lint --strict` and `helm template` (Helm from the npm package the harness
//! installs) with the default values and each `ci/*.yaml` values file; every
//! rendered manifest passes `kubernetes-validate --strict` (PyPI) for the
//! oldest Kubernetes the chart supports and the newest the validator knows; the
//! rendered objects say what the deployment docs promise (probes, sticky
//! ingress, secrets, optional parts); `values.schema.json` and the templates
//! reject bad values. Secure by default: JWT auth with a generated secret
//! mounted as a file, a generated API key, metrics and the server API on an
//! `admin` port that only a ClusterIP Service of its own exposes (the ingress
//! routes to `http` only), Redis bounded with `noeviction`, and no well-known
//! password anywhere.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use ioscale_cluster_tests::TestLogs;
use ioscale_cluster_tests::tools::{
    self, deploy_dir, expect_success, helm, python_tool, with_install_timeout, yaml_docs,
};
use serde_json::{Value, json};

/// The chart's `kubeVersion` floor, and the validator's newest schemas.
const KUBE_VERSIONS: [&str; 2] = ["1.25.0", "1.37.0"];
const RELEASE: &str = "chat";

fn chart_dir() -> PathBuf {
    deploy_dir().join("helm").join("ioscale")
}

/// `helm template` with extra arguments; the rendered text or Helm's error output.
async fn template(logs: &TestLogs, args: &[&str]) -> Result<std::result::Result<String, String>> {
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
async fn render_and_validate(logs: &TestLogs, name: &str, args: &[&str]) -> Result<Vec<Value>> {
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

fn kinds(docs: &[Value]) -> BTreeSet<String> {
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

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> Result<&'a Value> {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .with_context(|| format!("no {kind}/{name} in {:?}", kinds(docs)))
}

fn env_var<'a>(container: &'a Value, name: &str) -> Option<&'a Value> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
}

/// The plain value of `name` in the node container: its own `env`, or the
/// ConfigMap it takes with `envFrom` (the container's own entry wins, as in
/// Kubernetes).
fn node_setting(docs: &[Value], container: &Value, name: &str) -> Option<String> {
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
fn check_secure_by_default(docs: &[Value], full: &str) -> Result<()> {
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
fn check_jwt(docs: &[Value], full: &str, secret: &str, namespaces: Option<&str>) -> Result<()> {
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
fn check_node_deployment(dep: &Value, secret: &str) -> Result<()> {
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

#[tokio::test]
async fn helm_lint_strict_passes_for_every_values_file() -> Result<()> {
    with_install_timeout(async {
        let logs = TestLogs::for_current_test()?;
        let helm = helm().await?;
        let chart = chart_dir();
        let log = logs.file("helm-lint.log");
        let mut sets: Vec<Vec<String>> = vec![vec![]];
        for entry in std::fs::read_dir(chart.join("ci"))? {
            let p = entry?.path();
            sets.push(vec!["-f".into(), p.to_string_lossy().into_owned()]);
        }
        ensure!(
            sets.len() >= 3,
            "ci/ must hold the non-default values files"
        );
        for extra in &sets {
            let mut args = vec!["lint", "--strict", chart.to_str().context("utf-8")?];
            args.extend(extra.iter().map(String::as_str));
            let out = tools::run(
                &helm,
                &args,
                &chart,
                &[],
                Duration::from_secs(60),
                Some(&log),
            )
            .await?;
            expect_success(&format!("helm lint --strict {extra:?}"), &out, &log)?;
        }
        Ok(())
    })
    .await
}

#[tokio::test]
async fn default_values_render_a_valid_cluster_with_bundled_redis() -> Result<()> {
    with_install_timeout(async {
        let logs = TestLogs::for_current_test()?;
        let docs = render_and_validate(&logs, "default", &[]).await?;
        let full = format!("{RELEASE}-ioscale");
        let want: BTreeSet<String> = [
            format!("ConfigMap/{full}"),
            format!("Secret/{full}"),
            format!("Service/{full}"),
            format!("Service/{full}-admin"),
            format!("Deployment/{full}"),
            format!("PodDisruptionBudget/{full}"),
            format!("Deployment/{full}-redis"),
            format!("Service/{full}-redis"),
        ]
        .into_iter()
        .collect();
        ensure!(kinds(&docs) == want, "rendered {:?}, want {want:?}", kinds(&docs));

        let dep = find(&docs, "Deployment", &full)?;
        check_node_deployment(dep, &full)?;
        check_secure_by_default(&docs, &full)?;
        check_jwt(&docs, &full, &full, Some("/pubsub"))?;
        ensure!(dep["spec"]["replicas"] == 3, "three replicas by default");
        let c = &dep["spec"]["template"]["spec"]["containers"][0];
        ensure!(
            env_var(c, "IOSCALE_API_KEY")
                .is_some_and(|e| e["valueFrom"]["secretKeyRef"] == json!({"name": full, "key": "api-key"})),
            "no API key given: the generated one must come from the chart's Secret"
        );
        let secret = find(&docs, "Secret", &full)?;
        ensure!(
            secret["stringData"]["redis-url"] == format!("redis://{full}-redis:6379"),
            "bundled Redis URL: {}",
            secret["stringData"]
        );
        // Generated: long, and new at each install (helm template sees no
        // installed Secret to keep them from).
        let again = render_and_validate(&logs, "default-again", &[]).await?;
        let again = find(&again, "Secret", &full)?;
        for (key, min) in [("api-key", 32), ("jwt-secret", 32)] {
            let v = secret["stringData"][key].as_str().unwrap_or_default();
            ensure!(
                v.len() >= min && v.chars().all(|c| c.is_ascii_alphanumeric()),
                "generated {key} must be {min}+ random characters: {v:?}"
            );
            ensure!(
                again["stringData"][key] != secret["stringData"][key],
                "{key} must be generated at random, not fixed in the chart"
            );
        }
        // The bundled Redis: bounded, and refusing writes rather than evicting.
        let redis = &find(&docs, "Deployment", &format!("{full}-redis"))?["spec"]["template"]["spec"]["containers"][0];
        let args: Vec<&str> = redis["args"]
            .as_array()
            .context("redis args")?
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let arg = |flag: &str| {
            args.iter()
                .position(|a| *a == flag)
                .and_then(|i| args.get(i + 1).copied())
        };
        ensure!(
            arg("--maxmemory-policy") == Some("noeviction"),
            "Redis must not evict silently: {args:?}"
        );
        ensure!(
            arg("--maxmemory").is_some_and(|m| m.ends_with("mb") && m != "0mb"),
            "Redis must be bounded by maxmemory: {args:?}"
        );
        // The node Service selects node pods only, never the bundled Redis.
        let svc = find(&docs, "Service", &full)?;
        let redis_pod_labels = &find(&docs, "Deployment", &format!("{full}-redis"))?["spec"]["template"]["metadata"]["labels"];
        let selects_redis = svc["spec"]["selector"]
            .as_object()
            .context("selector")?
            .iter()
            .all(|(k, v)| &redis_pod_labels[k] == v);
        ensure!(!selects_redis, "the node Service must not select the Redis pod");
        ensure!(svc["spec"]["sessionAffinity"] == "ClientIP", "ClientIP affinity on the Service");
        let cm = find(&docs, "ConfigMap", &full)?;
        ensure!(cm["data"]["IOSCALE_LISTEN"] == "0.0.0.0:3000", "listen on the container port");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn every_option_renders_valid_manifests() -> Result<()> {
    with_install_timeout(async {
        let logs = TestLogs::for_current_test()?;
        let values = chart_dir().join("ci").join("full-values.yaml");
        let docs = render_and_validate(&logs, "full", &["-f", &values.to_string_lossy()]).await?;
        let full = format!("{RELEASE}-ioscale");
        let k = kinds(&docs);
        for want in [
            "Ingress",
            "HorizontalPodAutoscaler",
            "ServiceMonitor",
            "PodDisruptionBudget",
        ] {
            ensure!(
                k.contains(&format!("{want}/{full}")),
                "{want} missing from {k:?}"
            );
        }
        ensure!(
            !k.iter().any(|x| x.ends_with("-redis")),
            "external Redis: no bundled one: {k:?}"
        );

        let dep = find(&docs, "Deployment", &full)?;
        check_node_deployment(dep, &full)?;
        check_secure_by_default(&docs, &full)?;
        check_jwt(&docs, &full, &full, Some("/pubsub,/custom"))?;
        ensure!(
            dep["spec"]["replicas"].is_null(),
            "the HPA owns the replica count"
        );
        let c = &dep["spec"]["template"]["spec"]["containers"][0];
        ensure!(
            c["image"] == "registry.example.com/ioscale-node:1.2.3",
            "image {}",
            c["image"]
        );
        ensure!(
            env_var(c, "IOSCALE_API_KEY")
                .is_some_and(|e| e["valueFrom"]["secretKeyRef"]["key"] == "api-key"),
            "the API key must come from the Secret"
        );
        ensure!(
            env_var(c, "RUST_LOG").is_some(),
            "extraEnv must be passed on"
        );
        let secret = find(&docs, "Secret", &full)?;
        ensure!(
            secret["stringData"]["redis-url"]
                .as_str()
                .is_some_and(|u| u.starts_with("redis-cluster://")),
            "external Redis Cluster URL"
        );
        // Given values are used as they are, never replaced by generated ones.
        ensure!(
            secret["stringData"]["api-key"] == "not-a-real-key,another-key-being-rotated"
                && secret["stringData"]["jwt-secret"]
                    == "not-a-real-secret-but-long-enough-for-hs256",
            "the Secret must hold the given key and JWT secret: {}",
            secret["stringData"]
        );

        let ing = find(&docs, "Ingress", &full)?;
        let a = &ing["metadata"]["annotations"];
        ensure!(
            a["nginx.ingress.kubernetes.io/affinity"] == "cookie"
                && a["nginx.ingress.kubernetes.io/affinity-mode"] == "persistent"
                && a["nginx.ingress.kubernetes.io/session-cookie-name"] == "ioscale_affinity",
            "ingress-nginx cookie affinity: {a}"
        );
        let read: u64 = a["nginx.ingress.kubernetes.io/proxy-read-timeout"]
            .as_str()
            .and_then(|v| v.parse().ok())
            .context("proxy-read-timeout")?;
        ensure!(
            read > 45,
            "proxy-read-timeout {read} s must outlast pingInterval + pingTimeout"
        );
        ensure!(
            a["nginx.ingress.kubernetes.io/proxy-body-size"] == "4m",
            "user annotations must override the chart's: {a}"
        );
        ensure!(
            ing["spec"]["tls"][0]["secretName"] == "chat-example-com-tls",
            "tls"
        );

        let hpa = find(&docs, "HorizontalPodAutoscaler", &full)?;
        ensure!(
            hpa["spec"]["minReplicas"] == 2 && hpa["spec"]["maxReplicas"] == 8,
            "hpa bounds {}",
            hpa["spec"]
        );
        let sm = find(&docs, "ServiceMonitor", &full)?;
        ensure!(
            sm["spec"]["endpoints"]
                .as_array()
                .is_some_and(|e| e.len() == 1)
                && sm["spec"]["endpoints"][0]["port"] == "admin"
                && sm["spec"]["endpoints"][0]["path"] == "/metrics",
            "the ServiceMonitor must scrape /metrics on the admin port: {}",
            sm["spec"]
        );
        ensure!(
            sm["metadata"]["labels"]["release"] == "prometheus",
            "ServiceMonitor labels"
        );
        let sel = sm["spec"]["selector"]["matchLabels"]
            .as_object()
            .context("matchLabels")?;
        let selects = |svc: &Value| sel.iter().all(|(k, v)| &svc["metadata"]["labels"][k] == v);
        ensure!(
            selects(find(&docs, "Service", &format!("{full}-admin"))?),
            "the ServiceMonitor must select the admin Service"
        );
        ensure!(
            !selects(find(&docs, "Service", &full)?),
            "the ServiceMonitor must not select the client Service (type {}: public)",
            find(&docs, "Service", &full)?["spec"]["type"]
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn existing_secret_replaces_the_charts_secret() -> Result<()> {
    with_install_timeout(async {
        let logs = TestLogs::for_current_test()?;
        let values = chart_dir().join("ci").join("existing-secret-values.yaml");
        let docs =
            render_and_validate(&logs, "existing-secret", &["-f", &values.to_string_lossy()])
                .await?;
        let full = format!("{RELEASE}-ioscale");
        ensure!(
            !docs.iter().any(|d| d["kind"] == "Secret"),
            "no Secret when existingSecret is set: {:?}",
            kinds(&docs)
        );
        let dep = find(&docs, "Deployment", &full)?;
        check_node_deployment(dep, "ioscale-credentials")?;
        check_secure_by_default(&docs, &full)?;
        check_jwt(&docs, &full, "ioscale-credentials", Some("/pubsub"))?;
        let c = &dep["spec"]["template"]["spec"]["containers"][0];
        ensure!(
            env_var(c, "IOSCALE_API_KEY")
                .is_some_and(|e| e["valueFrom"]["secretKeyRef"]["name"] == "ioscale-credentials"),
            "the API key must come from the existing Secret"
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn auth_none_renders_without_a_jwt_secret() -> Result<()> {
    with_install_timeout(async {
        let logs = TestLogs::for_current_test()?;
        let values = chart_dir().join("ci").join("no-auth-values.yaml");
        let docs =
            render_and_validate(&logs, "no-auth", &["-f", &values.to_string_lossy()]).await?;
        let full = format!("{RELEASE}-ioscale");
        let dep = find(&docs, "Deployment", &full)?;
        check_node_deployment(dep, &full)?;
        // The API and the metrics stay on the admin port without connection auth too.
        check_secure_by_default(&docs, &full)?;
        let pod = &dep["spec"]["template"]["spec"];
        let c = &pod["containers"][0];
        ensure!(
            node_setting(&docs, c, "IOSCALE_AUTH").as_deref() == Some("none"),
            "IOSCALE_AUTH must say none"
        );
        for name in ["IOSCALE_AUTH_NAMESPACES", "IOSCALE_JWT_SECRET_FILE"] {
            ensure!(
                node_setting(&docs, c, name).is_none(),
                "{name} must not be set without auth"
            );
        }
        ensure!(
            pod["volumes"].is_null() && c["volumeMounts"].is_null(),
            "no JWT secret volume without auth: {}",
            pod["volumes"]
        );
        let secret = find(&docs, "Secret", &full)?;
        ensure!(
            secret["stringData"]["jwt-secret"].is_null()
                && secret["stringData"]["api-key"]
                    .as_str()
                    .is_some_and(|k| k.len() >= 32),
            "without auth: an API key, no JWT secret: {:?}",
            secret["stringData"]
                .as_object()
                .map(|o| o.keys().collect::<Vec<_>>())
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn bad_values_are_rejected() -> Result<()> {
    with_install_timeout(async {
        let logs = TestLogs::for_current_test()?;
        let cases: [(&[&str], &str); 10] = [
            (&["--set", "replicaCount=0"], "replicaCount"),
            (&["--set", "image.pullPolicy=Sometimes"], "pullPolicy"),
            (&["--set", "replicaCout=3"], "replicaCout"),
            (
                &["--set", "externalRedis.url=http://redis:6379"],
                "externalRedis",
            ),
            (&["--set", "serviceMonitor.interval=often"], "interval"),
            (&["--set", "auth=basic"], "auth"),
            // HS256 needs a secret of 32 bytes or more.
            (&["--set", "jwtSecret=short"], "jwtSecret"),
            (&["--set", "authNamespaces=pubsub"], "authNamespaces"),
            (&["--set", "redis.maxmemory=0"], "maxmemory"),
            // No Redis at all: a template error, not a schema one.
            (
                &["--set", "redis.enabled=false"],
                "externalRedis.url is required",
            ),
        ];
        for (args, needle) in cases {
            match template(&logs, args).await? {
                Ok(_) => anyhow::bail!("helm template {args:?} must fail"),
                Err(e) => ensure!(
                    e.contains(needle),
                    "helm template {args:?} failed without naming {needle}: {e}"
                ),
            }
        }
        Ok(())
    })
    .await
}
