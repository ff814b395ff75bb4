//! Real load balancers in front of test nodes: `nginx` and `haproxy` started
//! from the committed configs in `deploy/lb/`, as the test's own processes on a
//! free loopback port, with their pid, logs and temp files in the test's log
//! directory (never the system service).
//!
//! The configs are used as committed: nginx's template gets its `${IOSCALE_*}`
//! placeholders filled (what the official nginx image's envsubst step does) and
//! is included into a minimal main config that only says where files go;
//! HAProxy reads its file directly and expands the same variables from the
//! environment. Neither is rewritten.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use nix::sys::signal::Signal;

use crate::logs::{TestLogs, tail};
use crate::redis::free_port;
use crate::tools::deploy_dir;

/// How long a proxy may take to answer its first request.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How many ports to try when another process takes the one picked.
const PORT_ATTEMPTS: usize = 5;

/// Which proxy and config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LbKind {
    /// `deploy/lb/nginx.conf.template`: affinity cookie + consistent hash.
    Nginx,
    /// `deploy/lb/haproxy.cfg`: inserted server cookie, `/readyz` checks.
    Haproxy,
    /// `deploy/lb/nginx-roundrobin-broken.conf.template`: the counter-example.
    NginxRoundRobinBroken,
}

impl LbKind {
    /// Short name for files and messages.
    pub fn name(self) -> &'static str {
        match self {
            LbKind::Nginx => "nginx",
            LbKind::Haproxy => "haproxy",
            LbKind::NginxRoundRobinBroken => "nginx-roundrobin-broken",
        }
    }

    /// The committed config file this kind runs.
    pub fn config_path(self) -> PathBuf {
        let lb = deploy_dir().join("lb");
        match self {
            LbKind::Nginx => lb.join("nginx.conf.template"),
            LbKind::Haproxy => lb.join("haproxy.cfg"),
            LbKind::NginxRoundRobinBroken => lb.join("nginx-roundrobin-broken.conf.template"),
        }
    }
}

/// Replaces `${NAME}` for each `(NAME, value)`, like `envsubst '${NAME}…'`,
/// and fails if an `${IOSCALE_…}` placeholder is left unfilled.
///
/// # Errors
/// On a leftover placeholder.
pub fn render_template(text: &str, vars: &[(&str, String)]) -> Result<String> {
    let mut out = text.to_owned();
    for (k, v) in vars {
        out = out.replace(&format!("${{{k}}}"), v);
    }
    if let Some(i) = out.find("${IOSCALE_") {
        let end = out[i..].find('}').map_or(out.len(), |e| i + e + 1);
        bail!("template placeholder {} was not filled", &out[i..end]);
    }
    Ok(out)
}

/// The variables every config takes: where to listen and the three nodes.
fn config_vars(listen: &str, nodes: &[SocketAddr]) -> Result<Vec<(&'static str, String)>> {
    ensure!(
        nodes.len() == 3,
        "the deploy/lb configs name three nodes, got {}",
        nodes.len()
    );
    Ok(vec![
        ("IOSCALE_LB_LISTEN", listen.to_owned()),
        ("IOSCALE_LB_BIND", listen.to_owned()),
        ("IOSCALE_NODE_1", nodes[0].to_string()),
        ("IOSCALE_NODE_2", nodes[1].to_string()),
        ("IOSCALE_NODE_3", nodes[2].to_string()),
    ])
}

/// A running proxy. Dropping it stops the process (and nginx's workers).
#[derive(Debug)]
pub struct LoadBalancer {
    kind: LbKind,
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
    /// Where the proxy logs requests (nginx access log, HAProxy's stderr).
    request_log: PathBuf,
    /// Where it logs errors and startup messages.
    error_log: PathBuf,
    _logs: TestLogs,
}

impl LoadBalancer {
    /// Starts `kind` in front of `nodes` (exactly three) and waits until it answers.
    ///
    /// # Errors
    /// If the binary is missing, the config is rejected, or it does not answer in 10 s.
    pub async fn start(logs: &TestLogs, kind: LbKind, nodes: &[SocketAddr]) -> Result<Self> {
        let mut last = None;
        for attempt in 0..PORT_ATTEMPTS {
            let port = free_port()?;
            let dir = logs.file(&format!("{}-{attempt}", kind.name()));
            std::fs::create_dir_all(&dir)?;
            let mut lb = Self {
                kind,
                port,
                request_log: dir.join(match kind {
                    LbKind::Haproxy => "haproxy.log",
                    _ => "access.log",
                }),
                error_log: dir.join(match kind {
                    LbKind::Haproxy => "haproxy.log",
                    _ => "error.log",
                }),
                dir,
                child: None,
                _logs: logs.clone(),
            };
            match lb.spawn_and_wait(nodes).await {
                Ok(()) => return Ok(lb),
                Err(e) => {
                    lb.stop();
                    last = Some(e);
                }
            }
        }
        Err(last.expect("at least one attempt"))
            .with_context(|| format!("starting {}", kind.name()))
    }

    async fn spawn_and_wait(&mut self, nodes: &[SocketAddr]) -> Result<()> {
        let listen = format!("127.0.0.1:{}", self.port);
        let vars = config_vars(&listen, nodes)?;
        let child = match self.kind {
            LbKind::Haproxy => self.spawn_haproxy(&vars)?,
            LbKind::Nginx | LbKind::NginxRoundRobinBroken => self.spawn_nginx(&vars)?,
        };
        self.child = Some(child);
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                bail!(
                    "{} exited with {status} before answering (port {}); log tail:\n{}",
                    self.kind.name(),
                    self.port,
                    tail(&self.error_log, 20)
                );
            }
            // Any HTTP answer means the proxy is up (the counter-example has no
            // /lb-health and forwards it to a node, which answers 404).
            if client
                .get(format!("{}/lb-health", self.url()))
                .send()
                .await
                .is_ok()
            {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "{} did not answer on port {} within {START_TIMEOUT:?}; log tail:\n{}",
                    self.kind.name(),
                    self.port,
                    tail(&self.error_log, 20)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn spawn_nginx(&self, vars: &[(&str, String)]) -> Result<Child> {
        let template = std::fs::read_to_string(self.kind.config_path())
            .with_context(|| format!("reading {}", self.kind.config_path().display()))?;
        let site = self.dir.join("ioscale.conf");
        std::fs::write(&site, render_template(&template, vars)?)?;
        let tmp = self.dir.join("tmp");
        std::fs::create_dir_all(&tmp)?;
        let d = |p: &Path| p.display().to_string();
        // Only file locations and process settings here, the routing logic is
        // all in the included template (as in the nginx image, whose main
        // config includes conf.d/ inside `http {}`).
        let main = format!(
            "daemon off;\n\
             worker_processes 1;\n\
             pid {pid};\n\
             error_log {err} info;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n\
             \x20   access_log {acc};\n\
             \x20   client_body_temp_path {tmp}/client_body;\n\
             \x20   proxy_temp_path {tmp}/proxy;\n\
             \x20   fastcgi_temp_path {tmp}/fastcgi;\n\
             \x20   uwsgi_temp_path {tmp}/uwsgi;\n\
             \x20   scgi_temp_path {tmp}/scgi;\n\
             \x20   include {site};\n\
             }}\n",
            pid = d(&self.dir.join("nginx.pid")),
            err = d(&self.error_log),
            acc = d(&self.request_log),
            tmp = d(&tmp),
            site = d(&site),
        );
        let conf = self.dir.join("nginx.conf");
        std::fs::write(&conf, main)?;
        let out = std::fs::File::create(self.dir.join("nginx.stdout.log"))?;
        Command::new("nginx")
            .arg("-p")
            .arg(&self.dir)
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(&self.error_log)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("spawning nginx (is it installed? `apt-get install nginx`)")
    }

    fn spawn_haproxy(&self, vars: &[(&str, String)]) -> Result<Child> {
        let log = std::fs::File::create(&self.error_log)?;
        let mut cmd = Command::new("haproxy");
        cmd.arg("-db")
            .arg("-f")
            .arg(self.kind.config_path())
            .arg("-p")
            .arg(self.dir.join("haproxy.pid"))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        for (k, v) in vars {
            cmd.env(k, v);
        }
        cmd.spawn()
            .context("spawning haproxy (is it installed? `apt-get install haproxy`)")
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Which proxy this is.
    pub fn kind(&self) -> LbKind {
        self.kind
    }

    /// The directory with its config, pid, logs and temp files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The request log so far.
    pub fn request_log(&self) -> String {
        std::fs::read_to_string(&self.request_log).unwrap_or_default()
    }

    /// Path of the request log.
    pub fn request_log_path(&self) -> &Path {
        &self.request_log
    }

    /// Stops the proxy: SIGTERM (nginx's master then stops its workers; a
    /// SIGKILL would orphan them, still holding the port), SIGKILL after 5 s.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = crate::node::signal(Some(child.id()), Signal::SIGTERM);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for LoadBalancer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What [`polling_probe`] saw: one Engine.IO long-polling session driven by
/// hand, request by request.
#[derive(Debug, Clone, Default)]
pub struct ProbeReport {
    /// Requests sent after the handshake.
    pub requests: usize,
    /// Answered 200.
    pub ok: usize,
    /// Answered 400 `Session ID unknown`: the request reached a node that does
    /// not hold the session.
    pub unknown_sid: usize,
    /// Anything else, as `status body`.
    pub other: Vec<String>,
    /// The cookies the proxy set on the handshake (`name=value`).
    pub cookies: Vec<String>,
}

/// `nodes` nodes on one Redis that trust the balancer in front of them (`--trust-proxy`: a
/// client is known by the address it appends to `X-Forwarded-For`), with the addresses to
/// give [`LoadBalancer::start`].
///
/// # Errors
/// If the cluster does not start.
pub async fn trusting_cluster(nodes: usize) -> Result<(crate::Cluster, Vec<SocketAddr>)> {
    let cluster = crate::Cluster::builder()
        .nodes(nodes)
        .node_args(["--trust-proxy"])
        .start()
        .await?;
    let addrs = cluster.nodes().iter().map(|n| n.addr()).collect();
    Ok((cluster, addrs))
}

/// Opens a long-polling session through `base` with raw HTTP (sending back
/// the cookies the handshake set, as a browser would), connects to `/`, then
/// sends `posts` events, each its own request, and counts which requests
/// reached the node holding the session. The socket.io client only reports "xhr post
/// error"; this sees the node's exact answer.
///
/// # Errors
/// If the handshake fails or a request gets no answer.
pub async fn polling_probe(base: &str, posts: usize) -> Result<ProbeReport> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let hs = client
        .get(format!("{base}/socket.io/?EIO=4&transport=polling"))
        .send()
        .await
        .context("polling handshake")?;
    let cookies: Vec<String> = hs
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .map(|v| v.trim().to_owned())
        .collect();
    let status = hs.status().as_u16();
    let body = hs.text().await?;
    ensure!(
        status == 200 && body.starts_with('0'),
        "handshake answered {status}: {body}"
    );
    let open: serde_json::Value =
        serde_json::from_str(&body[1..]).with_context(|| format!("handshake body {body}"))?;
    let sid = open["sid"]
        .as_str()
        .with_context(|| format!("no sid in {body}"))?
        .to_owned();
    let url = format!("{base}/socket.io/?EIO=4&transport=polling&sid={sid}");
    let cookie = cookies.join("; ");
    let mut report = ProbeReport {
        cookies,
        ..ProbeReport::default()
    };
    let mut record = |status: u16, body: String| {
        report.requests += 1;
        if status == 200 {
            report.ok += 1;
        } else if status == 400 && body.contains("Session ID unknown") {
            report.unknown_sid += 1;
        } else {
            report.other.push(format!("{status} {body}"));
        }
    };
    let send = |req: reqwest::RequestBuilder| {
        if cookie.is_empty() {
            req
        } else {
            req.header(reqwest::header::COOKIE, &cookie)
        }
    };
    // The namespace CONNECT, then polls until its answer (`40{...}`) arrives:
    // a client must not emit before that (the server closes the session).
    let r = send(client.post(&url).body("40"))
        .send()
        .await
        .context("polling POST")?;
    let status = r.status().as_u16();
    record(status, r.text().await.unwrap_or_default());
    for _ in 0..5 {
        let r = send(client.get(&url)).send().await.context("polling GET")?;
        let status = r.status().as_u16();
        let body = r.text().await.unwrap_or_default();
        let connected = body.split('\x1e').any(|p| p.starts_with("40"));
        let pinged = body.split('\x1e').any(|p| p == "2");
        record(status, body);
        if status != 200 || connected {
            break;
        }
        if pinged {
            let r = send(client.post(&url).body("3"))
                .send()
                .await
                .context("polling pong")?;
            let status = r.status().as_u16();
            record(status, r.text().await.unwrap_or_default());
        }
    }
    // Plain events the server ignores, each its own request.
    for i in 0..posts {
        let r = send(
            client
                .post(&url)
                .header("content-type", "text/plain;charset=UTF-8")
                .body(format!("42[\"lb-probe\",{i}]")),
        )
        .send()
        .await
        .context("polling POST")?;
        let status = r.status().as_u16();
        record(status, r.text().await.unwrap_or_default());
    }
    // Best effort: close the session (Engine.IO close packet).
    let _ = send(client.post(&url).body("1")).send().await;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_placeholders_and_rejects_leftovers() {
        let vars = vec![("IOSCALE_A", "x:1".to_owned())];
        assert_eq!(
            render_template("server ${IOSCALE_A}; $host", &vars).unwrap(),
            "server x:1; $host"
        );
        let err = render_template("server ${IOSCALE_B};", &vars).unwrap_err();
        assert!(err.to_string().contains("${IOSCALE_B}"), "{err}");
    }
}
