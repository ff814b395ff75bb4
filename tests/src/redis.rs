//! Real `redis-server` processes for the tests: a standalone server, a Sentinel (see
//! [`crate::sentinel`]) and a Redis Cluster of 3 or more masters, with or without replicas.
//!
//! Each server gets a free port found by binding `127.0.0.1:0` and dropping the
//! listener. `--port 0` is never used: it makes Redis disable TCP entirely.
//! Between dropping the probe listener and Redis binding, another process may
//! take the port, so startup retries on "Address already in use", and checks via
//! `INFO server` that the process answering PING is really ours.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;

use crate::logs::{TestLogs, tail};
pub use crate::redis_cluster::RedisCluster;

/// How long a freshly spawned Redis may take to answer PING.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How many ports to try when another process steals the one we picked.
const PORT_ATTEMPTS: usize = 5;

/// A port that was free a moment ago.
///
/// # Errors
/// If no socket can be bound on 127.0.0.1.
pub fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// A decoded RESP reply (just enough of RESP2 for PING, INFO and CLUSTER INFO).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resp {
    /// `+OK`
    Simple(String),
    /// `-ERR …`
    Error(String),
    /// `:1`
    Int(i64),
    /// `$n …` (`None` for the null bulk string)
    Bulk(Option<Vec<u8>>),
    /// `*n …` (`None` for the null array)
    Array(Option<Vec<Resp>>),
}

impl Resp {
    /// The reply as text, for simple and bulk strings.
    pub fn as_text(&self) -> Option<String> {
        match self {
            Resp::Simple(s) => Some(s.clone()),
            Resp::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }
}

/// Sends one command to `127.0.0.1:port` over a fresh connection and reads the reply.
///
/// # Errors
/// On connection failure, a timeout (2 s) or a malformed reply.
pub async fn command(port: u16, args: &[&str]) -> Result<Resp> {
    tokio::time::timeout(Duration::from_secs(2), async {
        let stream = TcpStream::connect(("127.0.0.1", port)).await?;
        let mut stream = BufReader::new(stream);
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        stream.get_mut().write_all(req.as_bytes()).await?;
        read_resp(&mut stream).await
    })
    .await
    .context("redis command timed out")?
}

async fn read_resp(r: &mut BufReader<TcpStream>) -> Result<Resp> {
    let mut line = String::new();
    ensure!(r.read_line(&mut line).await? > 0, "connection closed");
    let line = line.trim_end_matches("\r\n");
    let (kind, rest) = line.split_at(1);
    Ok(match kind {
        "+" => Resp::Simple(rest.to_owned()),
        "-" => Resp::Error(rest.to_owned()),
        ":" => Resp::Int(rest.parse()?),
        "$" => {
            let len: i64 = rest.parse()?;
            if len < 0 {
                Resp::Bulk(None)
            } else {
                let mut buf = vec![0; usize::try_from(len)? + 2];
                r.read_exact(&mut buf).await?;
                buf.truncate(buf.len() - 2);
                Resp::Bulk(Some(buf))
            }
        }
        "*" => {
            let len: i64 = rest.parse()?;
            if len < 0 {
                Resp::Array(None)
            } else {
                let mut items = Vec::new();
                for _ in 0..len {
                    items.push(Box::pin(read_resp(r)).await?);
                }
                Resp::Array(Some(items))
            }
        }
        other => bail!("unexpected RESP type byte {other:?} in {line:?}"),
    })
}

/// One `redis-server` process. Dropping it kills the process.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    /// Working directory (`--dir`); removed on drop.
    dir: tempfile::TempDir,
    log: PathBuf,
    /// Extra arguments, kept so `restart` starts an identical server.
    extra: Vec<String>,
    /// For a Sentinel: its configuration file's text (Sentinel needs a writable file; it
    /// records what it learns there), written into `dir` before every start.
    sentinel_conf: Option<String>,
    child: Option<Child>,
    /// Kept alive so the panic hook keeps naming the log directory.
    _logs: TestLogs,
}

impl RedisServer {
    /// Starts a standalone server logging into the current test's log directory.
    ///
    /// # Errors
    /// If no server could be started and answer PING within 10 s.
    pub async fn start() -> Result<Self> {
        Self::start_with(&TestLogs::for_current_test()?, &[]).await
    }

    /// Starts a server with extra `redis-server` arguments, logging into `logs`.
    ///
    /// # Errors
    /// If no server could be started and answer PING within 10 s.
    pub async fn start_with(logs: &TestLogs, extra: &[&str]) -> Result<Self> {
        Self::start_as(logs, extra, None).await
    }

    /// Starts `redis-server <conf> --sentinel` with `conf` as its configuration file's text
    /// (the port, bind address, log file and directory come from the command line).
    ///
    /// # Errors
    /// If no Sentinel could be started and answer PING within 10 s.
    pub async fn start_sentinel(logs: &TestLogs, conf: &str) -> Result<Self> {
        Self::start_as(logs, &[], Some(conf.to_owned())).await
    }

    async fn start_as(
        logs: &TestLogs,
        extra: &[&str],
        sentinel_conf: Option<String>,
    ) -> Result<Self> {
        let mut last_err = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port()?;
            let mut server = Self {
                port,
                log: logs.file(&format!("redis-{port}.log")),
                dir: tempfile::Builder::new()
                    .prefix("ioscale-redis-")
                    .tempdir()
                    .context("creating redis tempdir")?,
                extra: extra.iter().map(|s| (*s).to_owned()).collect(),
                sentinel_conf: sentinel_conf.clone(),
                child: None,
                _logs: logs.clone(),
            };
            match server.spawn_and_wait().await {
                Ok(()) => return Ok(server),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.expect("at least one attempt")).context("starting redis-server")
    }

    /// Spawns the process on `self.port` and waits until it answers PING.
    async fn spawn_and_wait(&mut self) -> Result<()> {
        let mut cmd = Command::new("redis-server");
        if let Some(conf) = &self.sentinel_conf {
            let path = self.dir.path().join("sentinel.conf");
            std::fs::write(&path, conf).context("writing sentinel.conf")?;
            cmd.arg(&path).arg("--sentinel");
        }
        cmd.arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(&self.log)
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd
            .spawn()
            .context("spawning redis-server (is it on PATH?)")?;
        let pid = child.id();
        self.child = Some(child);

        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                bail!(
                    "redis-server on port {} exited with {status} before answering PING; log tail:\n{}",
                    self.port,
                    tail(&self.log, 20)
                );
            }
            // Make sure the server answering is ours, not a process that took
            // the port between our probe and redis-server's bind.
            if let Ok(info) = command(self.port, &["INFO", "server"]).await
                && let Some(text) = info.as_text()
            {
                let ours = text
                    .lines()
                    .any(|l| l.trim() == format!("process_id:{pid}"));
                if ours {
                    return Ok(());
                }
                self.kill();
                bail!("port {} is answered by another Redis", self.port);
            }
            if tokio::time::Instant::now() > deadline {
                self.kill();
                bail!(
                    "redis-server on port {} did not answer PING within {START_TIMEOUT:?}; log tail:\n{}",
                    self.port,
                    tail(&self.log, 20)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `redis://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The server's log file.
    pub fn log_path(&self) -> &std::path::Path {
        &self.log
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is running (it may still be stopped with SIGSTOP).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Kills the server with SIGKILL (no shutdown, clients see the connection drop).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGSTOP: the server keeps its sockets but stops answering.
    ///
    /// # Errors
    /// If the process is not running or the signal fails.
    pub fn sigstop(&self) -> Result<()> {
        crate::node::signal(self.pid(), nix::sys::signal::Signal::SIGSTOP)
    }

    /// Sends SIGCONT after [`RedisServer::sigstop`].
    ///
    /// # Errors
    /// If the process is not running or the signal fails.
    pub fn sigcont(&self) -> Result<()> {
        crate::node::signal(self.pid(), nix::sys::signal::Signal::SIGCONT)
    }

    /// Starts the server again on the same port (after [`RedisServer::kill`];
    /// kills it first if still running) and waits for PING. Data is gone:
    /// persistence is off.
    ///
    /// # Errors
    /// If it cannot be started on that port within a few attempts.
    pub async fn restart(&mut self) -> Result<()> {
        self.kill();
        let mut last_err = None;
        // Redis sets SO_REUSEADDR, so the port is normally free at once; retry
        // anyway in case another process grabbed it in the meantime.
        for _ in 0..10 {
            match self.spawn_and_wait().await {
                Ok(()) => return Ok(()),
                Err(e) => last_err = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(last_err.expect("at least one attempt"))
            .with_context(|| format!("restarting redis-server on port {}", self.port))
    }

    /// Runs `redis-cli -h 127.0.0.1 -p PORT <args>` and returns its stdout.
    ///
    /// # Errors
    /// If redis-cli fails, exits non-zero or takes more than 10 s.
    pub async fn cli(&self, args: &[&str]) -> Result<String> {
        cli(self.port, args).await
    }

    /// Whether the server answers PING right now.
    pub async fn ping(&self) -> bool {
        matches!(command(self.port, &["PING"]).await, Ok(Resp::Simple(s)) if s == "PONG")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `redis-cli -h 127.0.0.1 -p PORT <args>` with a 10 s timeout.
///
/// # Errors
/// If redis-cli fails to run, exits non-zero or times out.
pub async fn cli(port: u16, args: &[&str]) -> Result<String> {
    let mut cmd = tokio::process::Command::new("redis-cli");
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(10), cmd.output())
        .await
        .with_context(|| format!("redis-cli {args:?} timed out"))?
        .context("running redis-cli")?;
    ensure!(
        out.status.success(),
        "redis-cli {args:?} failed with {}: {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
