//! The adapter's example servers (`adapter/examples/*.rs`) as processes under test: built
//! with cargo (always: they are small and cargo is a no-op when they are fresh), each with its
//! own log file, killed on drop.

use std::fs::OpenOptions;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};

use crate::logs::{TestLogs, profile_dir, tail};
use crate::node::build_once;

/// How long an example may take to print that it listens.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running example server. Dropping it kills the process.
#[derive(Debug)]
pub struct ExampleProc {
    child: Child,
    port: u16,
    log: PathBuf,
}

/// Builds `adapter/examples/{name}.rs` and returns its binary.
///
/// # Errors
/// If the build fails.
pub async fn example_binary(name: &str) -> Result<PathBuf> {
    let bin = profile_dir().join("examples").join(name);
    let (b, name) = (bin.clone(), name.to_owned());
    tokio::task::spawn_blocking(move || {
        let args = ["-p", "ioscale-adapter", "--example", &name];
        build_once(&args, &b, &format!("example-{name}"), true)
    })
    .await
    .context("build task panicked")??;
    Ok(bin)
}

impl ExampleProc {
    /// Starts example `name` with `env` on `port`, logging to `{log_name}.log` in `logs`,
    /// and waits until it prints `listening on`.
    ///
    /// # Errors
    /// If it cannot be built or started, or does not listen within 20 s.
    pub async fn start(
        logs: &TestLogs,
        name: &str,
        log_name: &str,
        port: u16,
        env: &[(&str, String)],
    ) -> Result<Self> {
        let bin = example_binary(name).await?;
        let log = logs.file(&format!("{log_name}.log"));
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("opening {}", log.display()))?;
        let err = out.try_clone().context("cloning the log handle")?;
        let child = Command::new(&bin)
            .env("PORT", port.to_string())
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut me = Self { child, port, log };
        let started = tokio::time::Instant::now();
        while !std::fs::read_to_string(&me.log)
            .unwrap_or_default()
            .contains("listening on")
        {
            if let Some(status) = me.child.try_wait()? {
                bail!("{name} exited with {status}:\n{}", tail(&me.log, 30));
            }
            if started.elapsed() > START_TIMEOUT {
                bail!(
                    "{name} did not listen within {START_TIMEOUT:?}:\n{}",
                    tail(&me.log, 30)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(me)
    }

    /// `http://127.0.0.1:PORT`, for socket.io clients.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for ExampleProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
