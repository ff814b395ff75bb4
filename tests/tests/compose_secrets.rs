//! `compose.yaml`'s secrets: the one-shot `secrets` service's script (run
//! here as the container would, on temporary directories) generates the JWT
//! secret, the API key and Grafana's admin password once, each readable only
//! by the uid that reads it, and keeps them across starts; a key or password of
//! one's own (`IOSCALE_API_KEY`, `GRAFANA_ADMIN_PASSWORD`) goes to that service
//! and never into the environment of the nodes or of Grafana.
//!
//! Where the nodes and Grafana read those files: `deploy_compose.rs`.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use ioscale_cluster_tests::TestLogs;
use ioscale_cluster_tests::compose::{NODES, SECRETS, compose_config, secrets_script};
use ioscale_cluster_tests::tools::{self, expect_success, with_install_timeout};
use serde_json::Value;

/// A password of one's own (`GRAFANA_ADMIN_PASSWORD`) goes to the secrets
/// service, which writes it to the file Grafana reads; it never lands in
/// Grafana's own environment.
#[tokio::test]
async fn grafana_admin_password_comes_from_the_environment() -> Result<()> {
    with_install_timeout(async {
        let logs = TestLogs::for_current_test()?;
        let cfg = compose_config(&logs, &[("GRAFANA_ADMIN_PASSWORD", "s3cret-grafana")]).await?;
        let services = &cfg["services"];
        ensure!(
            services[SECRETS]["environment"]["GRAFANA_ADMIN_PASSWORD"] == "s3cret-grafana",
            "{SECRETS}: {}",
            services[SECRETS]["environment"]
        );
        let env = &services["grafana"]["environment"];
        ensure!(
            env["GF_SECURITY_ADMIN_PASSWORD"].is_null(),
            "grafana: {env}"
        );
        Ok(())
    })
    .await
}

/// A key of one's own (`IOSCALE_API_KEY` in a `.env` file or the shell) goes
/// to the secrets service, which writes it to the file the nodes read, so a
/// deployment does not have to edit the file; the nodes' environment never
/// holds it.
#[tokio::test]
async fn api_key_comes_from_the_environment() -> Result<()> {
    with_install_timeout(async {
        let logs = TestLogs::for_current_test()?;
        let cfg = compose_config(&logs, &[("IOSCALE_API_KEY", "s3cret-from-env")]).await?;
        ensure!(
            cfg["services"][SECRETS]["environment"]["IOSCALE_API_KEY"] == "s3cret-from-env",
            "{SECRETS}: {}",
            cfg["services"][SECRETS]["environment"]
        );
        for n in NODES {
            ensure!(
                cfg["services"][n]["environment"]["IOSCALE_API_KEY"].is_null(),
                "{n}: {}",
                cfg["services"][n]["environment"]
            );
        }
        Ok(())
    })
    .await
}

/// Runs the secrets service's script (as the container would, `sh -c`, as
/// root) with its volumes as temporary directories and `env`.
async fn run_secrets_script(
    logs: &TestLogs,
    services: &serde_json::Map<String, Value>,
    root: &std::path::Path,
    env: &[(&str, &str)],
) -> Result<()> {
    let mut script = secrets_script(services)?;
    for v in services[SECRETS]["volumes"].as_array().context("volumes")? {
        let target = v["target"].as_str().context("target")?;
        let dir = root.join(v["source"].as_str().context("source")?);
        std::fs::create_dir_all(&dir)?;
        script = script.replace(target, &dir.to_string_lossy());
    }
    let log = logs.file("secrets-script.log");
    let out = tools::run(
        std::path::Path::new("sh"),
        &["-c", &script],
        root,
        env,
        Duration::from_secs(30),
        Some(&log),
    )
    .await?;
    expect_success("the secrets service's script", &out, &log)
}

/// What the secrets service writes, where its consumers look for it.
fn read_secret(root: &std::path::Path, volume: &str, name: &str) -> Result<(String, u32, u32)> {
    use std::os::unix::fs::MetadataExt as _;
    let path = root.join(volume).join(name);
    let meta =
        std::fs::metadata(&path).with_context(|| format!("{} not written", path.display()))?;
    Ok((
        std::fs::read_to_string(&path)?,
        meta.mode() & 0o777,
        meta.uid(),
    ))
}

/// The secrets service's script: on a first start it writes three different
/// random values (32 bytes, hex) readable only by the uid that uses each
/// (the node image's 10001, Grafana's 472); a second start keeps them; a
/// key given in `IOSCALE_API_KEY` replaces the generated one (one per line,
/// as the node reads them) and leaves the JWT secret alone.
#[tokio::test]
async fn secrets_are_generated_once_and_kept() -> Result<()> {
    with_install_timeout(async {
        let logs = TestLogs::for_current_test()?;
        // The script chowns each file to its reader's uid, as root in the
        // container: only root can do that here too.
        let probe = logs.file("whoami");
        std::fs::write(&probe, "")?;
        if std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&probe)?) != 0 {
            eprintln!("skipped: the secrets script's chown needs root");
            return Ok(());
        }
        let cfg = compose_config(&logs, &[]).await?;
        let services = cfg["services"].as_object().context("services")?;
        let root = logs.dir().join("volumes");
        let no_env = [
            ("IOSCALE_API_KEY", ""),
            ("GRAFANA_ADMIN_PASSWORD", ""),
            ("IOSCALE_ADMIN_UI_PASSWORD", ""),
        ];
        run_secrets_script(&logs, services, &root, &no_env).await?;

        let files = [
            ("ioscale-secrets", "jwt-secret", 10001),
            ("ioscale-secrets", "api-key", 10001),
            ("ioscale-secrets", "admin-ui-password", 10001),
            ("grafana-secrets", "admin-password", 472),
        ];
        let mut first = Vec::new();
        for (volume, name, uid) in files {
            let (text, mode, owner) = read_secret(&root, volume, name)?;
            let value = text.trim_end();
            ensure!(
                value.len() == 64 && value.chars().all(|c| c.is_ascii_hexdigit()),
                "{volume}/{name} must be 32 random bytes in hex: {value:?}"
            );
            ensure!(
                mode == 0o400 && owner == uid,
                "{volume}/{name} must be readable by uid {uid} only: mode {mode:o}, owner {owner}"
            );
            first.push(value.to_owned());
        }
        let distinct: BTreeSet<&String> = first.iter().collect();
        ensure!(
            distinct.len() == first.len(),
            "each secret must be its own: {first:?}"
        );

        run_secrets_script(&logs, services, &root, &no_env).await?;
        for ((volume, name, _), was) in files.iter().zip(&first) {
            let (text, ..) = read_secret(&root, volume, name)?;
            ensure!(
                text.trim_end() == was,
                "{volume}/{name} must be kept across starts"
            );
        }

        let given = [
            ("IOSCALE_API_KEY", "key-one,key-two"),
            ("GRAFANA_ADMIN_PASSWORD", ""),
        ];
        run_secrets_script(&logs, services, &root, &given).await?;
        let (keys, ..) = read_secret(&root, "ioscale-secrets", "api-key")?;
        ensure!(
            keys == "key-one\nkey-two\n",
            "a given IOSCALE_API_KEY must be written one key per line: {keys:?}"
        );
        let (jwt, ..) = read_secret(&root, "ioscale-secrets", "jwt-secret")?;
        ensure!(jwt.trim_end() == first[0], "the JWT secret must be kept");
        Ok(())
    })
    .await
}
