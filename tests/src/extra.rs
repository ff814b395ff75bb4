//! Harness pieces for the failure-mode, API and load tests: bounded polling,
//! metric deltas, raw Redis access (stray subscribers, garbage publishes) and
//! the agent's bulk commands (windowed publish loop, sequence check, latency
//! run), which run inside the agent so that 20,000 emits do not go through the
//! JSON-lines protocol one by one.

use std::future::Future;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt as _;

use crate::agent::Agent;
use crate::cluster::Cluster;
use crate::http::{Api, Method, metric_value};
use crate::logs::{TestLogs, tail};

/// Runs `body` with a custom overall timeout (for tests that legitimately need
/// longer than [`crate::TEST_TIMEOUT`], such as the 20,000-message burst).
///
/// # Errors
/// The body's error, or a timeout error.
pub async fn with_timeout_of<F>(limit: Duration, body: F) -> Result<()>
where
    F: Future<Output = Result<()>>,
{
    match tokio::time::timeout(limit, body).await {
        Ok(r) => r,
        Err(_) => bail!("test did not finish within {limit:?}"),
    }
}

/// Calls `probe` every `every` until it returns `Some`, for at most `limit`.
///
/// # Errors
/// The probe's error, or a timeout naming `what` and the last probe error.
pub async fn wait_until<T, F, Fut>(
    limit: Duration,
    every: Duration,
    what: &str,
    mut probe: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    let mut last_err = None;
    loop {
        match probe().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(format!("{e:#}")),
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "timed out after {limit:?} waiting for {what}{}",
                last_err
                    .map(|e| format!(" (last error: {e})"))
                    .unwrap_or_default()
            );
        }
        tokio::time::sleep(every).await;
    }
}

/// Awaits `fut` and returns how long it took.
pub async fn timed<T>(fut: impl Future<Output = T>) -> (Duration, T) {
    let start = Instant::now();
    let out = fut.await;
    (start.elapsed(), out)
}

/// The value of a metric on a node (0 when the series does not exist yet:
/// Prometheus vectors only show label sets that were used).
///
/// # Errors
/// If `/metrics` cannot be read.
pub async fn metric(api: &Api, name: &str, labels: &[(&str, &str)]) -> Result<f64> {
    let text = api.metrics().await?;
    Ok(metric_value(&text, name, labels).unwrap_or(0.0))
}

/// The value of a metric on every node of `cluster`, in node order.
///
/// # Errors
/// If a node's `/metrics` cannot be read.
pub async fn metric_all(
    cluster: &Cluster,
    name: &str,
    labels: &[(&str, &str)],
) -> Result<Vec<f64>> {
    let mut out = Vec::with_capacity(cluster.nodes().len());
    for i in 0..cluster.nodes().len() {
        out.push(metric(&cluster.api(i), name, labels).await?);
    }
    Ok(out)
}

/// `GET /readyz`: status and JSON body.
///
/// # Errors
/// On connection errors, timeouts or a non-JSON body.
pub async fn readyz_full(api: &Api) -> Result<(u16, Value)> {
    let r = api
        .raw(Method::GET, "/readyz", None, Duration::from_secs(3))
        .await?;
    let body = r.json()?;
    Ok((r.status, body))
}

/// Runs a `redis-cli` command whose last argument is `payload` (passed on
/// stdin with `-x`, so it may hold any bytes, NUL included),
/// and returns its trimmed stdout.
///
/// # Errors
/// If redis-cli fails or takes more than 10 s.
pub async fn cli_with_stdin(port: u16, args: &[&str], payload: &[u8]) -> Result<String> {
    let mut cmd = tokio::process::Command::new("redis-cli");
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-x"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().context("spawning redis-cli -x")?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin.write_all(payload).await?;
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .with_context(|| format!("redis-cli -x {args:?} timed out"))??;
    ensure!(
        out.status.success(),
        "redis-cli -x {args:?} failed with {}: {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// `PUBLISH channel payload` with arbitrary bytes; returns the receiver count.
///
/// # Errors
/// If redis-cli fails or answers something that is not a count.
pub async fn publish_bytes(port: u16, channel: &str, payload: &[u8]) -> Result<i64> {
    let out = cli_with_stdin(port, &["PUBLISH", channel], payload).await?;
    out.trim()
        .trim_start_matches("(integer) ")
        .parse()
        .with_context(|| format!("PUBLISH answered {out:?}"))
}

/// A long-running `redis-cli SUBSCRIBE …` that is not a node: a stray
/// subscriber on the cluster's channels. Killed on drop.
#[derive(Debug)]
pub struct StraySubscriber {
    child: tokio::process::Child,
    log: PathBuf,
}

impl StraySubscriber {
    /// Starts `redis-cli -p port SUBSCRIBE channels…`, its output going to
    /// `stray-subscriber.log` in the test's log directory.
    ///
    /// # Errors
    /// If redis-cli cannot be started.
    pub fn start(logs: &TestLogs, port: u16, channels: &[&str]) -> Result<Self> {
        let log = logs.file("stray-subscriber.log");
        let out = std::fs::File::create(&log)?;
        let child = tokio::process::Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "SUBSCRIBE"])
            .args(channels)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .context("spawning redis-cli SUBSCRIBE")?;
        Ok(Self { child, log })
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// What it printed so far.
    pub fn output(&self) -> String {
        tail(&self.log, 200)
    }
}

impl Drop for StraySubscriber {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// `PUBSUB NUMSUB channel` on one server.
///
/// # Errors
/// If redis-cli fails or the answer cannot be parsed.
pub async fn numsub(port: u16, channel: &str, sharded: bool) -> Result<i64> {
    let sub = if sharded { "SHARDNUMSUB" } else { "NUMSUB" };
    let out = crate::redis::cli(port, &["PUBSUB", sub, channel]).await?;
    let lines: Vec<&str> = out
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    ensure!(lines.len() == 2, "PUBSUB {sub} {channel} answered {out:?}");
    lines[1]
        .parse()
        .with_context(|| format!("PUBSUB {sub} {channel} answered {out:?}"))
}

/// Result of the agent's `publish_window` command.
#[derive(Debug, Clone, Deserialize)]
pub struct PublishWindowReport {
    /// Publishes emitted.
    pub sent: u64,
    /// Publishes acked with `{"ok": true}`.
    pub acked: u64,
    /// Publishes refused: acked `{"ok": false, "error": "<non-empty text>"}`.
    #[serde(default)]
    pub refused: u64,
    /// Their seqs, ascending.
    #[serde(default)]
    pub refused_seqs: Vec<u64>,
    /// The first few refusal texts.
    #[serde(default)]
    pub refusal_errors: Vec<String>,
    /// Publishes that timed out or were acked with anything else (neither ok nor a refusal).
    pub error_count: u64,
    /// The first few errors.
    pub errors: Vec<String>,
    /// Agent clock (ms since the epoch) when the first publish went out.
    pub started_ms: u64,
    /// Agent clock when the last ack came back.
    pub finished_ms: u64,
}

/// Result of the agent's `seq_check` command.
#[derive(Debug, Clone, Deserialize)]
pub struct SeqReport {
    /// Events of that name received.
    pub count: u64,
    /// True when the sequence is exactly 0, 1, …, n-1.
    pub in_order: bool,
    /// Receptions of a seq already seen.
    pub duplicates: u64,
    /// Seqs in 0..n never received.
    pub missing_count: u64,
    /// The first few missing seqs.
    pub missing_first: Vec<u64>,
    /// Events whose payload had no integer seq.
    pub invalid: u64,
    /// Receptions of a seq that was to be skipped (a refused publish delivered anyway).
    #[serde(default)]
    pub unexpected: u64,
    /// First position whose seq is not its index: `{index, got}`.
    pub first_out_of_order: Value,
    /// Agent clock when the n-th event was seen (null if never).
    pub done_ms: Option<u64>,
}

/// Result of the agent's `latency_run` command (milliseconds).
#[derive(Debug, Clone, Deserialize)]
pub struct LatencyReport {
    pub n: u64,
    pub min_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

/// The agent's bulk commands.
#[allow(async_fn_in_trait)]
pub trait AgentBulk {
    /// `client` emits `publish {room, data: {seq: i}}` for i in 0..count with
    /// acks, keeping at most `window` unacked (`window >= count`: all at once).
    ///
    /// # Errors
    /// If the agent fails or the loop exceeds `limit`.
    async fn publish_window(
        &self,
        client: &str,
        room: &str,
        count: u64,
        window: u64,
        limit: Duration,
    ) -> Result<PublishWindowReport> {
        self.publish_window_padded(client, room, count, window, 0, limit)
            .await
    }

    /// [`AgentBulk::publish_window`] with a string of `pad_bytes` characters in
    /// each message's data (`{seq, pad}`), to make the messages bigger.
    ///
    /// # Errors
    /// If the agent fails or the loop exceeds `limit`.
    async fn publish_window_padded(
        &self,
        client: &str,
        room: &str,
        count: u64,
        window: u64,
        pad_bytes: u64,
        limit: Duration,
    ) -> Result<PublishWindowReport>;

    /// Waits up to `limit` until `client` has `n` x `event`, then `settle`
    /// more, and checks `args[0].data.seq` is exactly 0..n-1 in order.
    ///
    /// # Errors
    /// If the agent fails (not when the check fails: see the report).
    async fn seq_check(
        &self,
        client: &str,
        event: &str,
        n: u64,
        limit: Duration,
        settle: Duration,
    ) -> Result<SeqReport> {
        self.seq_check_skipping(client, event, n, &[], limit, settle)
            .await
    }

    /// [`AgentBulk::seq_check`] expecting 0..n-1 without the seqs in `skip`
    /// (refused publishes), in order; a skipped seq received is `unexpected`.
    ///
    /// # Errors
    /// If the agent fails (not when the check fails: see the report).
    async fn seq_check_skipping(
        &self,
        client: &str,
        event: &str,
        n: u64,
        skip: &[u64],
        limit: Duration,
        settle: Duration,
    ) -> Result<SeqReport>;

    /// `sender` publishes `count` messages to `room` one at a time; each is
    /// awaited at `receiver` before the next goes out. Latency is measured in
    /// the agent from a timestamp carried in the payload.
    ///
    /// # Errors
    /// If a message does not arrive within `per_message`.
    async fn latency_run(
        &self,
        sender: &str,
        receiver: &str,
        room: &str,
        count: u64,
        per_message: Duration,
    ) -> Result<LatencyReport>;
}

fn ms(d: Duration) -> Result<u64> {
    Ok(u64::try_from(d.as_millis())?)
}

impl AgentBulk for Agent {
    async fn publish_window_padded(
        &self,
        client: &str,
        room: &str,
        count: u64,
        window: u64,
        pad_bytes: u64,
        limit: Duration,
    ) -> Result<PublishWindowReport> {
        let v = self
            .request(
                "publish_window",
                json!({"client": client, "room": room, "count": count, "window": window,
                       "pad_bytes": pad_bytes, "ack_timeout_ms": ms(limit)?}),
                limit + Duration::from_secs(5),
            )
            .await?;
        Ok(serde_json::from_value(v)?)
    }

    async fn seq_check_skipping(
        &self,
        client: &str,
        event: &str,
        n: u64,
        skip: &[u64],
        limit: Duration,
        settle: Duration,
    ) -> Result<SeqReport> {
        let v = self
            .request(
                "seq_check",
                json!({"client": client, "event": event, "n": n, "skip": skip,
                       "timeout_ms": ms(limit)?, "settle_ms": ms(settle)?}),
                limit + settle + Duration::from_secs(10),
            )
            .await?;
        Ok(serde_json::from_value(v)?)
    }

    async fn latency_run(
        &self,
        sender: &str,
        receiver: &str,
        room: &str,
        count: u64,
        per_message: Duration,
    ) -> Result<LatencyReport> {
        let v = self
            .request(
                "latency_run",
                json!({"sender": sender, "receiver": receiver, "room": room,
                       "count": count, "timeout_ms": ms(per_message)?}),
                per_message * u32::try_from(count.max(1)).unwrap_or(u32::MAX)
                    + Duration::from_secs(10),
            )
            .await?;
        Ok(serde_json::from_value(v)?)
    }
}

/// Lines of a node log that contain `needle` (for assertions on log output).
pub fn log_lines_with(log: &str, needle: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains(needle))
        .map(str::to_owned)
        .collect()
}

/// Collects violations instead of stopping at the first, so one run of a
/// scenario reports everything that is wrong (a broken request path early in a
/// failure-mode test must not hide the failure-mode behaviour itself).
#[derive(Debug, Default)]
pub struct Checks {
    failures: Vec<String>,
}

impl Checks {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `msg` when `ok` is false (and prints it at once).
    pub fn check(&mut self, ok: bool, msg: impl FnOnce() -> String) -> bool {
        if !ok {
            let m = msg();
            eprintln!("CHECK FAILED: {m}");
            self.failures.push(m);
        }
        ok
    }

    /// Records an error result.
    pub fn ok<T>(&mut self, r: Result<T>, what: &str) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                let m = format!("{what}: {e:#}");
                eprintln!("CHECK FAILED: {m}");
                self.failures.push(m);
                None
            }
        }
    }

    /// Fails with every recorded violation.
    ///
    /// # Errors
    /// If any check failed.
    pub fn finish(self) -> Result<()> {
        if self.failures.is_empty() {
            return Ok(());
        }
        bail!(
            "{} check(s) failed:\n  - {}",
            self.failures.len(),
            self.failures.join("\n  - ")
        )
    }
}

/// Adds `n` nodes to a cluster on a Redis Cluster, where a node can fail to start while the
/// cluster settles: a failure is recorded in `checks` (the test fails) and the node is tried
/// once more, so the remaining checks still run. Then waits until all `n` see each other.
///
/// # Errors
/// A second failure to start, or nodes that do not see each other.
pub async fn add_nodes_retrying_once(
    cluster: &mut Cluster,
    checks: &mut Checks,
    n: usize,
) -> Result<()> {
    for i in 0..n {
        if let Err(e) = cluster.add_node().await {
            checks.check(false, || {
                format!("node {i} failed to start on the Redis Cluster (retried once): {e:#}")
            });
            cluster.add_node().await?;
        }
    }
    cluster.wait_nodes_visible(n).await
}
