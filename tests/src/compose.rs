//! The root `compose.yaml` as Docker Compose resolves it (`docker compose
//! config`), for the deployment tests (`deploy_compose.rs`,
//! `compose_secrets.rs`): the resolved model and the script of its one-shot
//! secrets service.

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use serde_json::Value;

use crate::logs::{TestLogs, workspace_root};
use crate::tools::{self, expect_success, python_tool};

/// The node services.
pub const NODES: [&str; 3] = ["node1", "node2", "node3"];
/// The one-shot service that writes the secrets before anything reads them.
pub const SECRETS: &str = "secrets";

/// `docker compose config --format json` of the root compose.yaml, with `env`.
///
/// # Errors
/// If Compose cannot be installed or rejects the file.
pub async fn compose_config(logs: &TestLogs, env: &[(&str, &str)]) -> Result<Value> {
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

/// The secrets service's shell script (`sh -c SCRIPT`), with Compose's `$$`
/// escapes undone.
///
/// # Errors
/// If the secrets service does not run a script with `sh -c`.
pub fn secrets_script(services: &serde_json::Map<String, Value>) -> Result<String> {
    let s = &services[SECRETS];
    ensure!(
        s["entrypoint"] == serde_json::json!(["sh", "-c"]),
        "{SECRETS} must run its command with sh -c: {}",
        s["entrypoint"]
    );
    let script = s["command"][0]
        .as_str()
        .context("the secrets service's script")?;
    Ok(script.replace("$$", "$"))
}
