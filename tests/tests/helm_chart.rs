//! The Helm chart `deploy/helm/ioscale`, without a Kubernetes cluster: `helm
//! lint --strict` and `helm template` (Helm from the npm package the harness
//! installs) with the default values and each `ci/*.yaml` values file; every
//! rendered manifest passes `kubernetes-validate --strict` (PyPI) for the
//! oldest Kubernetes the chart supports and the newest the validator knows; the
//! rendered objects say what the deployment docs promise (probes, sticky
//! ingress, secrets, optional parts); `values.schema.json` and the templates
//! reject bad values.

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
        ensure!(dep["spec"]["replicas"] == 3, "three replicas by default");
        let c = &dep["spec"]["template"]["spec"]["containers"][0];
        ensure!(
            env_var(c, "IOSCALE_API_KEY").is_none(),
            "no API key set: the variable must be absent (the node rejects an empty key)"
        );
        let secret = find(&docs, "Secret", &full)?;
        ensure!(
            secret["stringData"]["redis-url"] == format!("redis://{full}-redis:6379"),
            "bundled Redis URL: {}",
            secret["stringData"]
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
            sm["spec"]["endpoints"][0]["port"] == "http"
                && sm["spec"]["endpoints"][0]["path"] == "/metrics",
            "ServiceMonitor endpoint {}",
            sm["spec"]
        );
        ensure!(
            sm["metadata"]["labels"]["release"] == "prometheus",
            "ServiceMonitor labels"
        );
        let svc = find(&docs, "Service", &full)?;
        let sel = &sm["spec"]["selector"]["matchLabels"];
        let selects = sel
            .as_object()
            .context("matchLabels")?
            .iter()
            .all(|(k, v)| &svc["metadata"]["labels"][k] == v);
        ensure!(selects, "the ServiceMonitor must select the node Service");
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
async fn bad_values_are_rejected() -> Result<()> {
    with_install_timeout(async {
        let logs = TestLogs::for_current_test()?;
        let cases: [(&[&str], &str); 6] = [
            (&["--set", "replicaCount=0"], "replicaCount"),
            (&["--set", "image.pullPolicy=Sometimes"], "pullPolicy"),
            (&["--set", "replicaCout=3"], "replicaCout"),
            (
                &["--set", "externalRedis.url=http://redis:6379"],
                "externalRedis",
            ),
            (&["--set", "serviceMonitor.interval=often"], "interval"),
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
