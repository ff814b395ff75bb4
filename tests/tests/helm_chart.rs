//! The Helm chart `deploy/helm/ioscale`, without a Kubernetes cluster: `helm
//! lint --strict` and `helm template` (Helm from the npm package the harness
//! installs) with the default values and each `ci/*.yaml` values file; every
//! rendered manifest passes `kubernetes-validate --strict` (PyPI) for the
//! oldest Kubernetes the chart supports and the newest the validator knows; the
//! rendered objects say what the deployment docs promise (probes, sticky
//! ingress, secrets, optional parts); `values.schema.json` and the templates
//! reject bad values. Every rendering is held to the secure defaults too
//! (`ioscale_cluster_tests::helm::check_secure_by_default`, `check_jwt`); the
//! values that change them: `helm_chart_security.rs`.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use ioscale_cluster_tests::TestLogs;
use ioscale_cluster_tests::helm::{
    RELEASE, chart_dir, check_jwt, check_node_deployment, check_secure_by_default, env_var, find,
    kinds, render_and_validate, template,
};
use ioscale_cluster_tests::tools::{self, expect_success, helm, with_install_timeout};
use serde_json::{Value, json};

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
            format!("PersistentVolumeClaim/{full}-redis"),
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
            arg("--appendonly") == Some("yes")
                && arg("--appendfsync") == Some("everysec")
                && arg("--dir") == Some("/data"),
            "Redis must keep an append-only file in /data, fsync every second: {args:?}"
        );
        let redis_dep = find(&docs, "Deployment", &format!("{full}-redis"))?;
        let volumes = &redis_dep["spec"]["template"]["spec"]["volumes"];
        ensure!(
            volumes[0]["persistentVolumeClaim"]["claimName"] == format!("{full}-redis")
                && redis_dep["spec"]["strategy"]["type"] == "Recreate",
            "Redis's /data must be its claim, one pod at a time: {volumes}"
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
async fn bad_values_are_rejected() -> Result<()> {
    with_install_timeout(async {
        let logs = TestLogs::for_current_test()?;
        let cases: [(&[&str], &str); 11] = [
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
            (&["--set", "redis.persistence.size=lots"], "size"),
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

/// `redis.persistence.enabled=false`: no claim, the append-only file on an emptyDir (it
/// survives a container restart, not the pod's deletion).
#[tokio::test]
async fn redis_without_persistence_renders_no_claim() -> Result<()> {
    with_install_timeout(async {
        let logs = TestLogs::for_current_test()?;
        let args = ["--set", "redis.persistence.enabled=false"];
        let docs = render_and_validate(&logs, "no-persistence", &args).await?;
        let full = format!("{RELEASE}-ioscale");
        ensure!(
            !kinds(&docs)
                .iter()
                .any(|k| k.starts_with("PersistentVolumeClaim/")),
            "no claim without persistence: {:?}",
            kinds(&docs)
        );
        let redis = find(&docs, "Deployment", &format!("{full}-redis"))?;
        let volumes = &redis["spec"]["template"]["spec"]["volumes"];
        ensure!(
            volumes[0]["emptyDir"].is_object(),
            "Redis's /data must be an emptyDir: {volumes}"
        );
        Ok(())
    })
    .await
}
