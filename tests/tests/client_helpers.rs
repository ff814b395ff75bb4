//! The recovery helpers' own tests (`clients/js` with `node --test`, `clients/python` with
//! pytest), run here so that `./test.sh` runs them; the helpers against a real cluster are in
//! `session_recovery.rs`.

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use ioscale_cluster_tests::{logs::workspace_root, py::venv_python};
use tokio::process::Command;

const LIMIT: Duration = Duration::from_secs(120);

/// Runs `cmd` in `dir` and fails with its output unless it succeeds.
async fn passes(mut cmd: Command, what: &str) -> Result<()> {
    let out = tokio::time::timeout(LIMIT, cmd.kill_on_drop(true).output())
        .await
        .with_context(|| format!("{what} took more than {LIMIT:?}"))?
        .with_context(|| format!("running {what}"))?;
    ensure!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[tokio::test]
async fn the_socket_io_client_helper_passes_its_tests() -> Result<()> {
    let dir = workspace_root().join("clients").join("js");
    ensure!(
        dir.join("node_modules").join("socket.io-client").exists(),
        "run ./test.sh (npm ci --prefix clients/js) first"
    );
    let mut cmd = Command::new("node");
    cmd.arg("--test").current_dir(&dir);
    passes(cmd, "node --test in clients/js").await
}

#[tokio::test]
async fn the_python_socketio_helper_passes_its_tests() -> Result<()> {
    let dir = workspace_root().join("clients").join("python");
    let mut cmd = Command::new(venv_python().await?);
    cmd.args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .current_dir(&dir);
    passes(cmd, "pytest in clients/python").await
}
