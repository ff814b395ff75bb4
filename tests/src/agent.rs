//! Rust side of the JS client agent (`tests/js/agent.mjs`): real `socket.io-client`
//! sockets driven over JSON lines.
//!
//! The official JS client is the reference implementation of the protocol, so
//! using it (rather than a Rust client) tests what browsers will see. One agent
//! process per test holds any number of named clients; each command is one
//! stdin line with an id, answered by one stdout line with the same id, so
//! long waits can overlap with other commands.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::oneshot;

use crate::Transport;
use crate::logs::{TestLogs, tail, target_dir};

/// Slack added to the agent-side timeout of a command, so the agent's own
/// (more descriptive) timeout error normally wins the race.
const HARNESS_SLACK: Duration = Duration::from_secs(3);
/// Timeout of commands that do not wait for anything remote.
const QUICK: Duration = Duration::from_secs(5);

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Value, String>>>>>;

/// How a client answers server emits that carry an ack callback.
#[derive(Debug, Clone, PartialEq)]
pub enum AckReply {
    /// Answer with the first argument of the event.
    Echo,
    /// Answer with this value (`{"$binary": …}` becomes a Buffer).
    Value(Value),
    /// Never answer.
    Never,
}

/// Options of [`Agent::connect`].
#[derive(Debug, Clone)]
pub struct ConnectOpts {
    /// Namespace, `/` by default.
    pub namespace: String,
    /// Allowed transports.
    pub transport: Transport,
    /// Handshake `auth` payload.
    pub auth: Option<Value>,
    /// Whether the client reconnects by itself (off by default, so a test sees
    /// every disconnect as final).
    pub reconnection: bool,
    /// How long to wait for the connection.
    pub timeout: Duration,
    /// Open the namespace on this other client's connection (multiplexing)
    /// instead of a new one; `transport` and `reconnection` are then that client's.
    pub share_with: Option<String>,
    /// Whether the server answers `whoami` with the socket's public id (every namespace of
    /// `ioscale-node` does); without it the socket is known by its `socket.id`.
    pub whoami: bool,
}

impl ConnectOpts {
    /// Connect to `/` over `transport`.
    pub fn new(transport: Transport) -> Self {
        Self {
            namespace: "/".to_owned(),
            transport,
            auth: None,
            reconnection: false,
            timeout: Duration::from_secs(10),
            share_with: None,
            whoami: true,
        }
    }

    /// For a server that is not `ioscale-node` (no `whoami`): the socket is known by its
    /// `socket.id`.
    pub fn without_whoami(mut self) -> Self {
        self.whoami = false;
        self
    }

    /// Multiplexes the namespace on `client`'s Engine.IO connection, as a
    /// browser does for `io.connect('…/chat')` and `io.connect('…/news')`.
    pub fn share_with(mut self, client: impl Into<String>) -> Self {
        self.share_with = Some(client.into());
        self
    }

    /// Connects to namespace `ns`.
    pub fn namespace(mut self, ns: impl Into<String>) -> Self {
        self.namespace = ns.into();
        self
    }

    /// Turns automatic reconnection on.
    pub fn reconnect(mut self) -> Self {
        self.reconnection = true;
        self
    }

    /// Sets the handshake `auth` payload.
    pub fn auth(mut self, auth: Value) -> Self {
        self.auth = Some(auth);
        self
    }
}

/// One event as recorded by the agent.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Received {
    pub event: String,
    pub args: Vec<Value>,
    /// Whether the server asked for an ack.
    pub ack: bool,
}

/// Client state from [`Agent::state`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ClientState {
    pub connected: bool,
    pub id: Option<String>,
    pub transport: Option<String>,
    pub last_disconnect_reason: Option<String>,
    pub disconnect_reasons: Vec<String>,
    pub connects: u64,
    pub reconnects: u64,
    pub connect_errors: Vec<String>,
    pub recovered: bool,
    /// The Engine.IO session id (shared by multiplexed namespaces).
    #[serde(default)]
    pub engine_id: Option<String>,
}

/// A running `agent.mjs`. Dropping it kills the process and every client.
#[derive(Debug)]
pub struct Agent {
    child: Child,
    stdin: tokio::sync::Mutex<ChildStdin>,
    pending: Pending,
    next_id: AtomicU64,
    log: PathBuf,
    _logs: TestLogs,
}

/// `tests/js`
pub fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("js")
}

/// Runs `npm ci` in `tests/js` unless `node_modules` exists, under a file lock
/// (nextest runs tests as parallel processes that would otherwise race).
pub async fn ensure_node_modules() -> Result<()> {
    let dir = js_dir();
    // Every package of tests/js/package.json: a checkout that installed an older
    // package.json must install again.
    let modules = dir.join("node_modules");
    let installed = move || {
        ["socket.io-client", "playwright-core", "backbone"]
            .iter()
            .all(|p| modules.join(p).exists())
    };
    if installed() {
        return Ok(());
    }
    tokio::task::spawn_blocking(move || -> Result<()> {
        let lock_path = target_dir().join(".ioscale-npm-ci.lock");
        std::fs::create_dir_all(target_dir())?;
        let lock = File::create(&lock_path)?;
        lock.lock().context("locking npm ci")?;
        if installed() {
            return Ok(());
        }
        let out = std::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .stdin(Stdio::null())
            .output()
            .context("running npm ci in tests/js (is npm on PATH?)")?;
        if !out.status.success() {
            bail!(
                "npm ci failed ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    })
    .await
    .context("npm ci task panicked")?
}

impl Agent {
    /// Starts an agent for the current test; its stderr goes to `agent.log`
    /// in the test's log directory.
    ///
    /// # Errors
    /// If npm or node are missing, or the agent does not answer a ping.
    pub async fn spawn() -> Result<Self> {
        Self::spawn_in(&TestLogs::for_current_test()?).await
    }

    /// Like [`Agent::spawn`], logging into `logs`.
    ///
    /// # Errors
    /// If npm or node are missing, or the agent does not answer a ping.
    pub async fn spawn_in(logs: &TestLogs) -> Result<Self> {
        ensure_node_modules().await?;
        let log = logs.file("agent.log");
        let stderr = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut child = Command::new("node")
            .arg(js_dir().join("agent.mjs"))
            .current_dir(js_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .context("spawning node tests/js/agent.mjs (is node on PATH?)")?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let pending: Pending = Arc::default();
        let reader_pending = pending.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                #[derive(Deserialize)]
                struct Reply {
                    id: u64,
                    ok: bool,
                    #[serde(default)]
                    result: Value,
                    #[serde(default)]
                    error: Option<String>,
                }
                let Ok(reply) = serde_json::from_str::<Reply>(&line) else {
                    continue;
                };
                let tx = reader_pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&reply.id);
                if let Some(tx) = tx {
                    let r = if reply.ok {
                        Ok(reply.result)
                    } else {
                        Err(reply.error.unwrap_or_else(|| "unknown error".to_owned()))
                    };
                    let _ = tx.send(r);
                }
            }
            // EOF: the agent died. Dropping the senders fails every waiter.
            reader_pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clear();
        });
        let agent = Self {
            child,
            stdin: tokio::sync::Mutex::new(stdin),
            pending,
            next_id: AtomicU64::new(1),
            log,
            _logs: logs.clone(),
        };
        let pong = agent
            .request("ping", json!({}), Duration::from_secs(20))
            .await?;
        anyhow::ensure!(pong == json!("pong"), "agent answered ping with {pong}");
        Ok(agent)
    }

    /// Path of the agent's stderr log.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Sends one command and waits (at most `timeout`) for its reply.
    ///
    /// # Errors
    /// If the agent reports an error, dies, or does not answer in time.
    pub async fn request(&self, cmd: &str, mut params: Value, timeout: Duration) -> Result<Value> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        params["id"] = json!(id);
        params["cmd"] = json!(cmd);
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, tx);
        let mut line = params.to_string();
        line.push('\n');
        {
            let mut stdin = self.stdin.lock().await;
            tokio::time::timeout(QUICK, stdin.write_all(line.as_bytes()))
                .await
                .context("writing to the agent timed out")?
                .context("writing to the agent")?;
        }
        let r = tokio::time::timeout(timeout, rx).await;
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        match r {
            Err(_) => bail!(
                "agent command {cmd} {params} got no reply within {timeout:?}; agent log tail:\n{}",
                tail(&self.log, 10)
            ),
            Ok(Err(_)) => bail!(
                "agent exited during {cmd}; agent log tail:\n{}",
                tail(&self.log, 20)
            ),
            Ok(Ok(Err(e))) => Err(anyhow!("agent {cmd} failed: {e}")),
            Ok(Ok(Ok(v))) => Ok(v),
        }
    }

    /// Connects a new client named `client` to `url` (a node's `http://IP:PORT`)
    /// and returns its public id (the node's `whoami` answer; its `socket.id` without
    /// [`ConnectOpts::whoami`]).
    ///
    /// # Errors
    /// If the connection fails or times out.
    pub async fn connect(&self, client: &str, url: &str, opts: &ConnectOpts) -> Result<String> {
        let timeout_ms = u64::try_from(opts.timeout.as_millis())?;
        let mut params = json!({
            "client": client,
            "url": url,
            "namespace": opts.namespace,
            "transports": opts.transport.names(),
            "reconnection": opts.reconnection,
            "timeout_ms": timeout_ms,
            "whoami": opts.whoami,
        });
        if let Some(auth) = &opts.auth {
            params["auth"] = auth.clone();
        }
        if let Some(other) = &opts.share_with {
            params["share_with"] = json!(other);
        }
        let v = self
            .request("connect", params, opts.timeout + HARNESS_SLACK)
            .await
            .with_context(|| format!("connecting {client} to {url}{}", opts.namespace))?;
        v["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("connect answered without id: {v}"))
    }

    /// Emits `event` from `client`, without ack.
    ///
    /// # Errors
    /// If the client does not exist.
    pub async fn emit(&self, client: &str, event: &str, args: Vec<Value>) -> Result<()> {
        self.request(
            "emit",
            json!({"client": client, "event": event, "args": args}),
            QUICK,
        )
        .await?;
        Ok(())
    }

    /// Emits `event` from `client` and returns the server's ack arguments.
    ///
    /// # Errors
    /// If no ack arrives within `timeout`.
    pub async fn emit_with_ack(
        &self,
        client: &str,
        event: &str,
        args: Vec<Value>,
        timeout: Duration,
    ) -> Result<Vec<Value>> {
        let v = self
            .request(
                "emit",
                json!({"client": client, "event": event, "args": args,
                       "ack_timeout_ms": u64::try_from(timeout.as_millis())?}),
                timeout + HARNESS_SLACK,
            )
            .await?;
        Ok(serde_json::from_value(v)?)
    }

    /// Sets how `client` answers server emits of `event` that carry an ack.
    ///
    /// # Errors
    /// If the client does not exist.
    pub async fn set_ack_reply(&self, client: &str, event: &str, reply: AckReply) -> Result<()> {
        let params = match reply {
            AckReply::Echo => json!({"client": client, "event": event, "mode": "echo"}),
            AckReply::Value(v) => {
                json!({"client": client, "event": event, "mode": "value", "value": v})
            }
            AckReply::Never => json!({"client": client, "event": event, "mode": "none"}),
        };
        self.request("set_ack_reply", params, QUICK).await?;
        Ok(())
    }

    /// Every payload (argument list) `client` received for `event` so far.
    ///
    /// # Errors
    /// If the client does not exist.
    pub async fn events(&self, client: &str, event: &str) -> Result<Vec<Vec<Value>>> {
        let v = self
            .request("events", json!({"client": client, "event": event}), QUICK)
            .await?;
        Ok(serde_json::from_value(v)?)
    }

    /// Every event `client` received so far, in arrival order.
    ///
    /// # Errors
    /// If the client does not exist.
    pub async fn all_events(&self, client: &str) -> Result<Vec<Received>> {
        let v = self
            .request("events", json!({"client": client}), QUICK)
            .await?;
        Ok(serde_json::from_value(v)?)
    }

    /// Waits until `client` received `event` at least `n` times; returns all its payloads.
    ///
    /// # Errors
    /// On timeout (the error says how many arrived).
    pub async fn wait_count(
        &self,
        client: &str,
        event: &str,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<Vec<Value>>> {
        let v = self
            .request(
                "wait_count",
                json!({"client": client, "event": event, "n": n,
                       "timeout_ms": u64::try_from(timeout.as_millis())?}),
                timeout + HARNESS_SLACK,
            )
            .await?;
        Ok(serde_json::from_value(v)?)
    }

    /// Waits until `client` has been disconnected `n` times; returns all reasons.
    ///
    /// # Errors
    /// On timeout.
    pub async fn wait_disconnect(
        &self,
        client: &str,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<String>> {
        let v = self
            .request(
                "wait_disconnect",
                json!({"client": client, "n": n,
                       "timeout_ms": u64::try_from(timeout.as_millis())?}),
                timeout + HARNESS_SLACK,
            )
            .await?;
        Ok(serde_json::from_value(v)?)
    }

    /// Waits until `client` is connected after at least `connects` successful
    /// connects (2 = reconnected once); returns the (new) socket id.
    ///
    /// # Errors
    /// On timeout.
    pub async fn wait_connected(
        &self,
        client: &str,
        connects: u64,
        timeout: Duration,
    ) -> Result<String> {
        let v = self
            .request(
                "wait_connected",
                json!({"client": client, "connects": connects,
                       "timeout_ms": u64::try_from(timeout.as_millis())?}),
                timeout + HARNESS_SLACK,
            )
            .await?;
        v.as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("wait_connected answered {v}"))
    }

    /// Disconnects `client` (client-side, reason "io client disconnect").
    ///
    /// # Errors
    /// If the client does not exist.
    pub async fn disconnect(&self, client: &str) -> Result<()> {
        self.request("disconnect", json!({"client": client}), QUICK)
            .await?;
        Ok(())
    }

    /// The client's connection state and history.
    ///
    /// # Errors
    /// If the client does not exist.
    pub async fn state(&self, client: &str) -> Result<ClientState> {
        let v = self
            .request("state", json!({"client": client}), QUICK)
            .await?;
        Ok(serde_json::from_value(v)?)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}
