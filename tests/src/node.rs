//! `ioscale-node` processes under test: locating (or building) the binary,
//! spawning it with per-node log files, and signalling it.
//!
//! The node is a binary of another package, so `CARGO_BIN_EXE_ioscale-node` is
//! not available here. The binary is found next to the test executable
//! (`<target>/<profile>/ioscale-node`); when it is missing it is built once,
//! under a file lock because nextest runs every test as its own process.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::http::Api;
use crate::logs::{TestLogs, profile_dir, tail, target_dir, workspace_root};

/// How long a node may take to log its bound address.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Name of the binary under test.
const NODE_BIN: &str = "ioscale-node";

/// Sends `sig` to `pid`.
pub(crate) fn signal(pid: Option<u32>, sig: Signal) -> Result<()> {
    let pid = pid.ok_or_else(|| anyhow!("process is not running"))?;
    let pid = i32::try_from(pid).context("pid out of range")?;
    nix::sys::signal::kill(Pid::from_raw(pid), sig)
        .with_context(|| format!("kill -{sig} {pid}"))?;
    if sig == Signal::SIGSTOP {
        wait_stopped(pid)?;
    }
    Ok(())
}

/// Waits until every thread of `pid` is stopped. `kill` only makes SIGSTOP pending: on a busy
/// (virtual) machine a running thread can go on for tens of milliseconds, long enough to answer
/// a request the test sends "after" the stop.
fn wait_stopped(pid: i32) -> Result<()> {
    let started = std::time::Instant::now();
    loop {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
            .with_context(|| format!("reading threads of {pid}"))?;
        let mut all_stopped = true;
        for task in tasks.flatten() {
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
            // The state is the first field after the parenthesised command name.
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .unwrap_or("");
            if state != "T" && state != "t" {
                all_stopped = false;
            }
        }
        if all_stopped {
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "process {pid} did not stop within 5 s of SIGSTOP"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// Path of the `ioscale-node` binary, building it first if it does not exist.
///
/// `IOSCALE_NODE_BIN` overrides the path. `IOSCALE_TEST_REBUILD_NODE=1` runs
/// `cargo build` even when the binary exists (cargo is a no-op when it is fresh),
/// which protects against testing a stale binary during development.
///
/// # Errors
/// If the build fails.
pub async fn node_binary() -> Result<PathBuf> {
    static BIN: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    if let Some(r) = BIN.get() {
        return r.clone().map_err(|e| anyhow!(e));
    }
    // Building can take minutes; keep it off the async runtime.
    let r = tokio::task::spawn_blocking(|| {
        BIN.get_or_init(|| locate_or_build().map_err(|e| format!("{e:#}")))
            .clone()
    })
    .await
    .context("build task panicked")?;
    r.map_err(|e| anyhow!(e))
}

fn locate_or_build() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("IOSCALE_NODE_BIN") {
        return Ok(PathBuf::from(p));
    }
    let bin = profile_dir().join(NODE_BIN);
    let force = std::env::var_os("IOSCALE_TEST_REBUILD_NODE").is_some_and(|v| v != "0");
    if bin.exists() && !force {
        return Ok(bin);
    }
    let args = ["-p", "ioscale-node", "--bin", NODE_BIN];
    build_once(&args, &bin, "ioscale-node", force)?;
    Ok(bin)
}

/// Runs `cargo build ARGS` (in the test's profile) unless `artifact` exists (always with
/// `force`: cargo is a no-op when it is fresh), under a file lock: several test processes may
/// get here at once, one builds and the others wait on the lock and then find the artifact.
///
/// # Errors
/// If the build fails or does not produce `artifact`.
pub(crate) fn build_once(args: &[&str], artifact: &Path, what: &str, force: bool) -> Result<()> {
    let lock_path = target_dir().join(format!(".{what}-build.lock"));
    let lock =
        File::create(&lock_path).with_context(|| format!("creating {}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("locking the {what} build"))?;
    if artifact.exists() && !force {
        return Ok(());
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").to_owned());
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .args(args)
        .current_dir(workspace_root())
        .env("CARGO_TARGET_DIR", target_dir())
        .stdin(Stdio::null());
    if profile_dir().file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let out = cmd
        .output()
        .with_context(|| format!("running cargo build for {what}"))?;
    if !out.status.success() {
        bail!(
            "cargo build {} failed ({}):\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    if !artifact.exists() {
        bail!(
            "cargo build succeeded but {} does not exist",
            artifact.display()
        );
    }
    Ok(())
}

/// How to start one node.
#[derive(Debug, Clone)]
pub struct NodeOpts {
    /// Node id (`--node-id`) and log file name.
    pub name: String,
    /// `--redis-url`; `None` runs the node alone, in memory.
    pub redis_url: Option<String>,
    /// `--api-key`
    pub api_key: Option<String>,
    /// `--heartbeat-interval-ms`
    pub heartbeat_interval_ms: Option<u64>,
    /// `--listen`; defaults to `127.0.0.1:0`.
    pub listen: String,
    /// Any further command-line arguments.
    pub extra_args: Vec<String>,
    /// Extra environment variables (applied after the defaults, so they win).
    pub env: Vec<(String, String)>,
}

impl NodeOpts {
    /// Options for a node called `name`, on an ephemeral port, without Redis.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            redis_url: None,
            api_key: None,
            heartbeat_interval_ms: None,
            listen: "127.0.0.1:0".to_owned(),
            extra_args: Vec::new(),
            env: Vec::new(),
        }
    }

    /// Sets `--redis-url`.
    pub fn with_redis(mut self, url: impl Into<String>) -> Self {
        self.redis_url = Some(url.into());
        self
    }

    /// Sets `--api-key`.
    pub fn with_api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// Sets `--heartbeat-interval-ms`.
    pub fn with_heartbeat_ms(mut self, ms: u64) -> Self {
        self.heartbeat_interval_ms = Some(ms);
        self
    }

    /// Adds command-line arguments.
    pub fn with_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.extra_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Adds an environment variable.
    pub fn with_env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }
}

/// A running `ioscale-node`. Dropping it kills the process.
#[derive(Debug)]
pub struct NodeProc {
    opts: NodeOpts,
    child: Option<Child>,
    /// Set once the process has been reaped.
    status: Option<ExitStatus>,
    addr: SocketAddr,
    log: PathBuf,
    logs: TestLogs,
}

impl NodeProc {
    /// Starts a node logging into the current test's log directory and waits
    /// until it logs its bound address.
    ///
    /// # Errors
    /// If the binary cannot be built or started, or no address is logged within 20 s.
    pub async fn start(opts: NodeOpts) -> Result<Self> {
        Self::start_in(&TestLogs::for_current_test()?, opts).await
    }

    /// Like [`NodeProc::start`], logging into `logs`.
    ///
    /// # Errors
    /// If the binary cannot be built or started, or no address is logged within 20 s.
    pub async fn start_in(logs: &TestLogs, opts: NodeOpts) -> Result<Self> {
        let log = logs.file(&format!("{}.log", opts.name));
        let (child, addr) = spawn(&opts, &log).await?;
        Ok(Self {
            opts,
            child: Some(child),
            status: None,
            addr,
            log,
            logs: logs.clone(),
        })
    }

    /// Starts the node again with the same options (after it exited or was
    /// killed; kills it first otherwise). It gets a new port, and its log file
    /// is appended to.
    ///
    /// # Errors
    /// As for [`NodeProc::start`].
    pub async fn restart(&mut self) -> Result<()> {
        self.kill_and_reap();
        let (child, addr) = spawn(&self.opts, &self.log).await?;
        self.child = Some(child);
        self.status = None;
        self.addr = addr;
        Ok(())
    }

    /// The address the node listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://IP:PORT`, for both the HTTP API and socket.io clients.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The node id passed with `--node-id`.
    pub fn node_id(&self) -> &str {
        &self.opts.name
    }

    /// The options it was started with.
    pub fn opts(&self) -> &NodeOpts {
        &self.opts
    }

    /// HTTP client for this node's API, with its API key.
    pub fn api(&self) -> Api {
        Api::new(self.url(), self.opts.api_key.clone())
    }

    /// The process id, while the process has not been reaped.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Path of the node's log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The whole log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The test's log directory handle.
    pub fn logs(&self) -> &TestLogs {
        &self.logs
    }

    /// Sends SIGTERM (graceful shutdown).
    ///
    /// # Errors
    /// If the process is gone.
    pub fn sigterm(&self) -> Result<()> {
        signal(self.pid(), Signal::SIGTERM)
    }

    /// Sends SIGKILL and reaps the process.
    pub fn sigkill(&mut self) {
        self.kill_and_reap();
    }

    /// Sends SIGSTOP: the node freezes but keeps its sockets open.
    ///
    /// # Errors
    /// If the process is gone.
    pub fn sigstop(&self) -> Result<()> {
        signal(self.pid(), Signal::SIGSTOP)
    }

    /// Sends SIGCONT after [`NodeProc::sigstop`].
    ///
    /// # Errors
    /// If the process is gone.
    pub fn sigcont(&self) -> Result<()> {
        signal(self.pid(), Signal::SIGCONT)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.try_reap();
        self.status.is_none() && self.child.is_some()
    }

    /// Waits for the process to exit and returns its status.
    ///
    /// # Errors
    /// If it is still running after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            self.try_reap();
            if let Some(s) = self.status {
                return Ok(s);
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "node {} still running after {timeout:?} (log: {}); log tail:\n{}",
                    self.opts.name,
                    self.log.display(),
                    tail(&self.log, 20)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn try_reap(&mut self) {
        if self.status.is_none()
            && let Some(c) = self.child.as_mut()
            && let Ok(Some(s)) = c.try_wait()
        {
            self.status = Some(s);
        }
    }

    fn kill_and_reap(&mut self) {
        self.try_reap();
        if self.status.is_none()
            && let Some(c) = self.child.as_mut()
        {
            // A SIGSTOPped process still dies on SIGKILL.
            let _ = c.kill();
            if let Ok(s) = c.wait() {
                self.status = Some(s);
            }
        }
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        self.kill_and_reap();
    }
}

/// Spawns the node and waits for its `listening … bound_addr=IP:PORT` line.
async fn spawn(opts: &NodeOpts, log: &Path) -> Result<(Child, SocketAddr)> {
    let bin = node_binary().await?;
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    // Only look at what this run writes (a restarted node appends).
    let start_offset = file.metadata()?.len();
    let mut cmd = Command::new(&bin);
    cmd.args(["--listen", &opts.listen, "--node-id", &opts.name]);
    if let Some(url) = &opts.redis_url {
        cmd.args(["--redis-url", url]);
    }
    if let Some(key) = &opts.api_key {
        cmd.args(["--api-key", key]);
    }
    if let Some(ms) = opts.heartbeat_interval_ms {
        cmd.args(["--heartbeat-interval-ms", &ms.to_string()]);
    }
    cmd.args(&opts.extra_args);
    // Settings must come from the test, not from the developer's shell.
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("IOSCALE_") {
            cmd.env_remove(k);
        }
    }
    // Every client of a test comes from 127.0.0.1, standing for many users: one address's
    // handshake budget would throttle them all. Tests of that limit pass its flags, which
    // override these.
    cmd.env("IOSCALE_HANDSHAKES_PER_ADDRESS_PER_S", "1000000")
        .env("IOSCALE_HANDSHAKE_BURST_PER_ADDRESS", "1000000");
    cmd.env("RUST_LOG", "info,ioscale_adapter=debug,ioscale_node=debug")
        // Colour codes would split `bound_addr=` in the log file.
        .env("NO_COLOR", "1")
        .env("RUST_BACKTRACE", "1");
    for (k, v) in &opts.env {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("spawning {}", bin.display()))?;

    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    loop {
        if let Some(addr) = find_bound_addr(log, start_offset) {
            return Ok((child, addr));
        }
        if let Ok(Some(status)) = child.try_wait() {
            bail!(
                "node {} exited with {status} before listening (log: {}); log tail:\n{}",
                opts.name,
                log.display(),
                tail(log, 30)
            );
        }
        if tokio::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "node {} did not log `listening … bound_addr=` within {START_TIMEOUT:?} (log: {}); log tail:\n{}",
                opts.name,
                log.display(),
                tail(log, 30)
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Finds the bound address in the log written after `offset`.
fn find_bound_addr(log: &Path, offset: u64) -> Option<SocketAddr> {
    let mut f = File::open(log).ok()?;
    f.seek(SeekFrom::Start(offset)).ok()?;
    let mut text = String::new();
    f.read_to_string(&mut text).ok()?;
    text.lines()
        .map(strip_ansi)
        .filter(|l| l.contains("listening"))
        .find_map(|l| parse_bound_addr(&l))
}

/// Extracts `IP:PORT` from `bound_addr=IP:PORT` (text logs) or
/// `"bound_addr":"IP:PORT"` (JSON logs).
pub fn parse_bound_addr(line: &str) -> Option<SocketAddr> {
    let rest = if let Some(i) = line.find("bound_addr=") {
        &line[i + "bound_addr=".len()..]
    } else {
        let i = line.find("\"bound_addr\":")?;
        &line[i + "\"bound_addr\":".len()..]
    };
    let value: String = rest
        .trim_start_matches('"')
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '"' && *c != ',' && *c != '}')
        .collect();
    value.parse().ok()
}

/// Removes ANSI escape sequences (`ESC [ … letter`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_text_and_json_lines() {
        let text = "2026-11-22T06:00:00Z  INFO ioscale_node: listening bound_addr=127.0.0.1:4312 node_id=a";
        assert_eq!(
            parse_bound_addr(text),
            Some("127.0.0.1:4312".parse().unwrap())
        );
        let json =
            r#"{"level":"INFO","fields":{"message":"listening","bound_addr":"127.0.0.1:9"}}"#;
        assert_eq!(parse_bound_addr(json), Some("127.0.0.1:9".parse().unwrap()));
        let colored = "\u{1b}[3mbound_addr\u{1b}[0m\u{1b}[2m=\u{1b}[0m127.0.0.1:77 listening";
        assert_eq!(
            parse_bound_addr(&strip_ansi(colored)),
            Some("127.0.0.1:77".parse().unwrap())
        );
        assert_eq!(parse_bound_addr("listening on nothing"), None);
    }
}
