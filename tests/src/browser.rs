//! A headless Chromium for tests of the pages the nodes serve: Debian's
//! `chromium` driven by playwright-core through the agent (`browser_*` and
//! `page_*` commands of `tests/js/agent.mjs`), and the browser client script
//! (`node/client`, socket.io-client's `dist/socket.io.min.js`) those pages load.
//!
//! Every call is bounded twice: playwright's own timeout inside the agent, and
//! the harness's reply timeout a little later.

use std::fs::File;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use serde_json::{Value, json};

use crate::agent::Agent;
use crate::logs::{target_dir, workspace_root};

/// Flags Chromium runs with: headless, no sandbox (tests run as root), and no
/// network of its own (no QUIC, no background updates or sync).
pub const CHROMIUM_ARGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

/// Slack over the agent-side timeout, so playwright's own error normally wins.
const SLACK: Duration = Duration::from_secs(3);
/// Launching Chromium on a busy 2-core machine can take a while.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(45);

/// The Chromium binary: `IOSCALE_CHROMIUM`, else `chromium` on the PATH
/// (Debian's package; `.ci/run` installs it).
///
/// # Errors
/// If there is none.
pub fn chromium_path() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("IOSCALE_CHROMIUM") {
        return Ok(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser"] {
            let p = dir.join(name);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    bail!("no chromium on PATH (apt-get install -y chromium, or set IOSCALE_CHROMIUM)")
}

/// The browser client script the nodes serve, installing `node/client` with
/// `npm ci` first when it is missing (under a lock: nextest runs tests as
/// parallel processes).
///
/// # Errors
/// If npm fails.
pub async fn ensure_client_script() -> Result<PathBuf> {
    let dir = workspace_root().join("node").join("client");
    let script = dir.join("node_modules/socket.io-client/dist/socket.io.min.js");
    if script.is_file() {
        return Ok(script);
    }
    tokio::task::spawn_blocking(move || -> Result<PathBuf> {
        std::fs::create_dir_all(target_dir())?;
        let lock = File::create(target_dir().join(".ioscale-npm-ci-node-client.lock"))?;
        lock.lock().context("locking npm ci of node/client")?;
        if script.is_file() {
            return Ok(script);
        }
        let out = std::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .stdin(Stdio::null())
            .output()
            .context("running npm ci in node/client (is npm on PATH?)")?;
        if !out.status.success() {
            bail!(
                "npm ci in node/client failed ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        if !script.is_file() {
            bail!("npm ci succeeded but {} is missing", script.display());
        }
        Ok(script)
    })
    .await
    .context("npm ci task panicked")?
}

/// A Chromium launched by `agent`. Call [`Browser::close`] at the end of the
/// test; the agent's exit closes it too.
#[derive(Debug)]
pub struct Browser<'a> {
    agent: &'a Agent,
    /// Chromium's version.
    pub version: String,
}

fn ms(d: Duration) -> Result<u64> {
    Ok(u64::try_from(d.as_millis())?)
}

impl<'a> Browser<'a> {
    /// Launches Chromium (a fresh temporary profile) with [`CHROMIUM_ARGS`].
    ///
    /// # Errors
    /// If Chromium is missing or does not start in time.
    pub async fn launch(agent: &'a Agent) -> Result<Self> {
        let exe = chromium_path()?;
        let v = agent
            .request(
                "browser_launch",
                json!({"executable_path": exe, "args": CHROMIUM_ARGS,
                       "timeout_ms": ms(LAUNCH_TIMEOUT)?}),
                LAUNCH_TIMEOUT + SLACK,
            )
            .await
            .with_context(|| format!("launching {}", exe.display()))?;
        let version = v["version"].as_str().unwrap_or("?").to_owned();
        Ok(Self { agent, version })
    }

    async fn call(&self, cmd: &str, mut params: Value, timeout: Duration) -> Result<Value> {
        params["timeout_ms"] = json!(ms(timeout)?);
        self.agent.request(cmd, params, timeout + SLACK).await
    }

    /// Opens `url` in a new page called `page` (its own browser context, like a
    /// separate browser) and returns the HTTP status of the document.
    ///
    /// # Errors
    /// If the page does not load within `timeout`.
    pub async fn open(&self, page: &str, url: &str, timeout: Duration) -> Result<u16> {
        let v = self
            .call("page_open", json!({"page": page, "url": url}), timeout)
            .await?;
        v["status"]
            .as_u64()
            .and_then(|s| u16::try_from(s).ok())
            .ok_or_else(|| anyhow!("page_open answered {v}"))
    }

    /// Goes to `url` in the open page `page`; a change of the URL's hash alone stays in the
    /// document (a single-page application keeps its state).
    ///
    /// # Errors
    /// If the page is not open or does not load within `timeout`.
    pub async fn goto(&self, page: &str, url: &str, timeout: Duration) -> Result<()> {
        self.call("page_goto", json!({"page": page, "url": url}), timeout)
            .await?;
        Ok(())
    }

    /// Types `value` into the element `selector` of `page`.
    ///
    /// # Errors
    /// If there is no such element within `timeout`.
    pub async fn fill(
        &self,
        page: &str,
        selector: &str,
        value: &str,
        timeout: Duration,
    ) -> Result<()> {
        self.call(
            "page_fill",
            json!({"page": page, "selector": selector, "value": value}),
            timeout,
        )
        .await?;
        Ok(())
    }

    /// Clicks the element `selector` of `page`.
    ///
    /// # Errors
    /// If there is no clickable element within `timeout`.
    pub async fn click(&self, page: &str, selector: &str, timeout: Duration) -> Result<()> {
        self.call(
            "page_click",
            json!({"page": page, "selector": selector}),
            timeout,
        )
        .await?;
        Ok(())
    }

    /// Waits until an element `selector` of `page` contains `text`.
    ///
    /// # Errors
    /// On timeout.
    pub async fn wait_text(
        &self,
        page: &str,
        selector: &str,
        text: &str,
        timeout: Duration,
    ) -> Result<()> {
        self.call(
            "page_wait_text",
            json!({"page": page, "selector": selector, "text": text}),
            timeout,
        )
        .await
        .with_context(|| format!("page {page}: waiting for {text:?} in {selector}"))?;
        Ok(())
    }

    /// The text of every element `selector` of `page`, in document order.
    ///
    /// # Errors
    /// If the page does not answer.
    pub async fn texts(&self, page: &str, selector: &str) -> Result<Vec<String>> {
        let v = self
            .call(
                "page_texts",
                json!({"page": page, "selector": selector}),
                Duration::from_secs(5),
            )
            .await?;
        Ok(serde_json::from_value(v)?)
    }

    /// The current value of the form field `selector` of `page`.
    ///
    /// # Errors
    /// If there is no such field.
    pub async fn value(&self, page: &str, selector: &str) -> Result<String> {
        let v = self
            .call(
                "page_value",
                json!({"page": page, "selector": selector}),
                Duration::from_secs(5),
            )
            .await?;
        v.as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("page_value answered {v}"))
    }

    /// Saves a full-page PNG of `page` to `path`.
    ///
    /// # Errors
    /// If the screenshot fails.
    pub async fn screenshot(&self, page: &str, path: &std::path::Path) -> Result<()> {
        self.call(
            "page_screenshot",
            json!({"page": page, "path": path}),
            Duration::from_secs(15),
        )
        .await?;
        Ok(())
    }

    /// Console errors and uncaught exceptions of `page` so far.
    ///
    /// # Errors
    /// If the page does not exist.
    pub async fn errors(&self, page: &str) -> Result<Vec<String>> {
        let v = self
            .call("page_errors", json!({"page": page}), Duration::from_secs(5))
            .await?;
        Ok(serde_json::from_value(v)?)
    }

    /// Closes the browser and every page.
    ///
    /// # Errors
    /// If the agent does not answer.
    pub async fn close(self) -> Result<()> {
        self.call("browser_close", json!({}), Duration::from_secs(10))
            .await?;
        Ok(())
    }
}
