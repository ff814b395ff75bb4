//! Raw Engine.IO v4 / Socket.IO v5 clients for the protocol tests (`tests/protocol_*.rs`),
//! written from the two protocol documents: HTTP long-polling with `reqwest` (the cookie a
//! load balancer sets is sent back, as a browser would) and WebSocket with
//! `tokio-tungstenite`. Nothing here knows Socket.IO beyond framing: the tests spell out the
//! packets they send and expect, so a reader can hold them against the documents.
//!
//! [`Target`] is where a test runs: one node, or nginx (`deploy/lb`) in front of three nodes
//! sharing one Redis; both run `ioscale-node --conformance` with the timings of the reference
//! test suites (ping every 300 ms, 200 ms to answer, 1 s to connect a namespace).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest as _, http::HeaderValue};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::lb::{LbKind, LoadBalancer};
use crate::{Cluster, NodeOpts, NodeProc, TestLogs};

/// `pingInterval` the nodes under test announce.
pub const PING_INTERVAL: Duration = Duration::from_millis(300);
/// `pingTimeout` the nodes under test announce.
pub const PING_TIMEOUT: Duration = Duration::from_millis(200);
/// How long a session may stay without a namespace (`--connect-timeout-ms`).
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(1000);
/// `maxPayload` the nodes under test announce.
pub const MAX_PAYLOAD: usize = 1_000_000;
/// Longest wait for something that should happen.
pub const WAIT: Duration = Duration::from_secs(5);

/// The flags of every node under test.
pub fn node_args() -> Vec<String> {
    let ms = |d: Duration| d.as_millis().to_string();
    [
        "--conformance".to_owned(),
        "--ping-interval-ms".to_owned(),
        ms(PING_INTERVAL),
        "--ping-timeout-ms".to_owned(),
        ms(PING_TIMEOUT),
        "--connect-timeout-ms".to_owned(),
        ms(CONNECT_TIMEOUT),
        "--max-payload-bytes".to_owned(),
        MAX_PAYLOAD.to_string(),
    ]
    .into()
}

/// Where the protocol checks run; dropping it stops every process (the proxy first).
#[derive(Debug)]
pub struct Target {
    base: String,
    _lb: Option<LoadBalancer>,
    _cluster: Option<Cluster>,
    _node: Option<NodeProc>,
    _logs: TestLogs,
}

impl Target {
    /// One node, alone in memory.
    ///
    /// # Errors
    /// If it does not start.
    pub async fn one_node() -> Result<Self> {
        let logs = TestLogs::for_current_test()?;
        let node =
            NodeProc::start_in(&logs, NodeOpts::new("node-a").with_args(node_args())).await?;
        Ok(Self {
            base: node.url(),
            _lb: None,
            _cluster: None,
            _node: Some(node),
            _logs: logs,
        })
    }

    /// nginx with the committed config in front of three nodes sharing one Redis.
    ///
    /// # Errors
    /// If anything does not start.
    pub async fn nginx_cluster() -> Result<Self> {
        let logs = TestLogs::for_current_test()?;
        let cluster = Cluster::builder().node_args(node_args()).start().await?;
        let addrs: Vec<_> = cluster.nodes().iter().map(NodeProc::addr).collect();
        let lb = LoadBalancer::start(&logs, LbKind::Nginx, &addrs).await?;
        Ok(Self {
            base: lb.url(),
            _lb: Some(lb),
            _cluster: Some(cluster),
            _node: None,
            _logs: logs,
        })
    }

    /// `http://host:port` of the node or the proxy.
    pub fn base(&self) -> &str {
        &self.base
    }
}

/// The Engine.IO endpoint of `base`, with `query` appended.
pub fn eio_url(base: &str, query: &str) -> String {
    format!("{base}/socket.io/?EIO=4&{query}")
}

/// What a client reads: one Engine.IO packet, or the end of the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A text packet (`4…`, `2`, `6`, `1`, …).
    Text(String),
    /// A binary packet: a WebSocket binary frame, or a polling `b<base64>` record decoded.
    Binary(Vec<u8>),
    /// The transport is gone: WebSocket closed, or a poll answered with an error (`why`).
    Closed(String),
}

impl Frame {
    /// The text, or an error naming what came instead.
    ///
    /// # Errors
    /// If the frame is not text.
    pub fn text(self) -> Result<String> {
        match self {
            Frame::Text(t) => Ok(t),
            other => bail!("expected a text packet, got {other:?}"),
        }
    }
}

/// Splits a polling body into its packets (the `\x1e` record separator), decoding `b<base64>`.
///
/// # Errors
/// On bad base64.
pub fn decode_payload(body: &str) -> Result<Vec<Frame>> {
    body.split('\x1e')
        .map(|r| match r.strip_prefix('b') {
            Some(b64) => Ok(Frame::Binary(B64.decode(b64).context("base64 record")?)),
            None => Ok(Frame::Text(r.to_owned())),
        })
        .collect()
}

/// Joins packets into one polling body: `\x1e`-separated, binary as `b<base64>`.
pub fn encode_payload(frames: &[Frame]) -> String {
    let records: Vec<String> = frames
        .iter()
        .map(|f| match f {
            Frame::Text(t) => t.clone(),
            Frame::Binary(b) => format!("b{}", B64.encode(b)),
            Frame::Closed(_) => String::new(),
        })
        .collect();
    records.join("\x1e")
}

/// The JSON of an `open` packet (`0{…}`).
///
/// # Errors
/// If `packet` is not one.
pub fn parse_open(packet: &str) -> Result<Value> {
    let json = packet
        .strip_prefix('0')
        .with_context(|| format!("not an open packet: {packet:?}"))?;
    serde_json::from_str(json).with_context(|| format!("open packet JSON: {packet:?}"))
}

/// A long-polling session.
#[derive(Debug, Clone)]
pub struct Polling {
    http: reqwest::Client,
    url: String,
    cookie: Option<String>,
    /// The session id of the handshake.
    pub sid: String,
    /// The handshake's JSON.
    pub open: Value,
}

/// An HTTP answer: status and body.
pub type Answer = (u16, String);

impl Polling {
    /// The handshake (`GET …&transport=polling`).
    ///
    /// # Errors
    /// If it is not answered 200 with an open packet.
    pub async fn open(base: &str) -> Result<Self> {
        let http = reqwest::Client::builder().timeout(WAIT).build()?;
        let resp = http
            .get(eio_url(base, "transport=polling"))
            .send()
            .await
            .context("polling handshake")?;
        // The proxy's affinity cookie: later requests must reach the session's node.
        let cookies: Vec<String> = resp
            .headers()
            .get_all(reqwest::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok()?.split(';').next().map(str::to_owned))
            .collect();
        let status = resp.status().as_u16();
        let body = resp.text().await?;
        ensure!(status == 200, "handshake answered {status}: {body}");
        let open = parse_open(&body)?;
        let sid = open["sid"].as_str().context("sid")?.to_owned();
        Ok(Self {
            http,
            url: eio_url(base, &format!("transport=polling&sid={sid}")),
            cookie: (!cookies.is_empty()).then(|| cookies.join("; ")),
            sid,
            open,
        })
    }

    /// The `Cookie` header the session's requests carry, if any.
    pub fn cookie(&self) -> Option<&str> {
        self.cookie.as_deref()
    }

    fn with_cookie(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.cookie {
            Some(c) => req.header(reqwest::header::COOKIE, c),
            None => req,
        }
    }

    /// One GET of the session.
    ///
    /// # Errors
    /// If it gets no answer.
    pub async fn get(&self) -> Result<Answer> {
        let resp = self.with_cookie(self.http.get(&self.url)).send().await?;
        Ok((resp.status().as_u16(), resp.text().await?))
    }

    /// One POST of `body` to the session.
    ///
    /// # Errors
    /// If it gets no answer.
    pub async fn post(&self, body: impl Into<reqwest::Body>) -> Result<Answer> {
        let req = self.with_cookie(self.http.post(&self.url)).body(body);
        let resp = req.send().await?;
        Ok((resp.status().as_u16(), resp.text().await?))
    }

    /// POSTs `frames` in one body and checks the `200 ok` the document asks for.
    ///
    /// # Errors
    /// On another answer.
    pub async fn post_frames(&self, frames: &[Frame]) -> Result<()> {
        let (status, body) = self.post(encode_payload(frames)).await?;
        ensure!(
            status == 200 && body == "ok",
            "POST answered {status}: {body}"
        );
        Ok(())
    }
}

/// A WebSocket.
#[derive(Debug)]
pub struct Ws {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Ws {
    /// Opens `…&transport=websocket` (with `sid` for an upgrade, and the cookie of a proxy).
    ///
    /// # Errors
    /// If the WebSocket handshake fails.
    pub async fn connect(base: &str, sid: Option<&str>, cookie: Option<&str>) -> Result<Self> {
        let mut query = "transport=websocket".to_owned();
        if let Some(sid) = sid {
            query.push_str(&format!("&sid={sid}"));
        }
        let url = eio_url(&base.replacen("http://", "ws://", 1), &query);
        let mut req = url.into_client_request()?;
        if let Some(c) = cookie {
            req.headers_mut()
                .insert("cookie", HeaderValue::from_str(c)?);
        }
        let (stream, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req))
            .await
            .context("WebSocket handshake timed out")??;
        Ok(Self { stream })
    }

    /// Sends one packet in its own frame.
    ///
    /// # Errors
    /// If the connection is gone.
    pub async fn send(&mut self, frame: &Frame) -> Result<()> {
        let msg = match frame {
            Frame::Text(t) => Message::text(t.as_str()),
            Frame::Binary(b) => Message::binary(b.clone()),
            Frame::Closed(_) => Message::Close(None),
        };
        tokio::time::timeout(WAIT, self.stream.send(msg))
            .await
            .context("WebSocket send timed out")??;
        Ok(())
    }

    /// The next packet, or [`Frame::Closed`].
    ///
    /// # Errors
    /// If nothing comes within [`WAIT`].
    pub async fn recv(&mut self) -> Result<Frame> {
        loop {
            let next = tokio::time::timeout(WAIT, self.stream.next())
                .await
                .context("no WebSocket frame")?;
            return Ok(match next {
                Some(Ok(Message::Text(t))) => Frame::Text(t.as_str().to_owned()),
                Some(Ok(Message::Binary(b))) => Frame::Binary(b.to_vec()),
                Some(Ok(Message::Close(c))) => Frame::Closed(format!("close frame {c:?}")),
                Some(Ok(_)) => continue,
                Some(Err(e)) => Frame::Closed(format!("error: {e}")),
                None => Frame::Closed("end of stream".to_owned()),
            });
        }
    }
}

/// Either transport behind one interface, for the checks that must hold on both.
#[derive(Debug)]
pub enum Client {
    /// A WebSocket-only session.
    Ws(Ws),
    /// A long-polling session, with the packets of the last GET not yet read.
    Polling(Polling, VecDeque<Frame>),
}

/// Which transport a [`Client`] opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// WebSocket from the start.
    Ws,
    /// HTTP long-polling.
    Polling,
}

impl Client {
    /// Opens a session; returns it with its handshake JSON.
    ///
    /// # Errors
    /// If the handshake fails.
    pub async fn open(base: &str, kind: Kind) -> Result<(Self, Value)> {
        match kind {
            Kind::Ws => {
                let mut ws = Ws::connect(base, None, None).await?;
                let open = parse_open(&ws.recv().await?.text()?)?;
                Ok((Client::Ws(ws), open))
            }
            Kind::Polling => {
                let p = Polling::open(base).await?;
                let open = p.open.clone();
                Ok((Client::Polling(p, VecDeque::new()), open))
            }
        }
    }

    /// Sends packets: a frame each over WebSocket, one POST over polling.
    ///
    /// # Errors
    /// If they cannot be sent.
    pub async fn send(&mut self, frames: &[Frame]) -> Result<()> {
        match self {
            Client::Ws(ws) => {
                for f in frames {
                    ws.send(f).await?;
                }
                Ok(())
            }
            Client::Polling(p, _) => p.post_frames(frames).await,
        }
    }

    /// Sends one text packet.
    ///
    /// # Errors
    /// If it cannot be sent.
    pub async fn send_text(&mut self, packet: &str) -> Result<()> {
        self.send(&[Frame::Text(packet.to_owned())]).await
    }

    /// The next packet as it came, pings included.
    ///
    /// # Errors
    /// If nothing comes within [`WAIT`].
    pub async fn recv_raw(&mut self) -> Result<Frame> {
        match self {
            Client::Ws(ws) => ws.recv().await,
            Client::Polling(p, queue) => {
                while queue.is_empty() {
                    let (status, body) = tokio::time::timeout(WAIT, p.get())
                        .await
                        .context("no answer to GET")??;
                    if status != 200 {
                        return Ok(Frame::Closed(format!("{status} {body}")));
                    }
                    queue.extend(decode_payload(&body)?);
                }
                Ok(queue.pop_front().context("queue")?)
            }
        }
    }

    /// The next packet that is not a ping; pings are answered (`3`) on the way.
    ///
    /// # Errors
    /// If nothing but pings comes within [`WAIT`] (pings alone would otherwise keep a missing
    /// packet waited for until the test's own timeout, with nothing said).
    pub async fn recv(&mut self) -> Result<Frame> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            ensure!(
                tokio::time::Instant::now() < deadline,
                "only pings for {WAIT:?}: the packet waited for never came"
            );
            let f = self.recv_raw().await?;
            if f == Frame::Text("2".to_owned()) {
                // A pong to a session that is closing may fail; the next read tells.
                let _ = self.send_text("3").await;
                continue;
            }
            return Ok(f);
        }
    }

    /// The next text packet that is not a ping.
    ///
    /// # Errors
    /// If the next one is not text.
    pub async fn recv_text(&mut self) -> Result<String> {
        self.recv().await?.text()
    }

    /// Reads (answering pings) until the session ends; returns what came before, and when the
    /// end came.
    ///
    /// # Errors
    /// If the session is still open after `within`.
    pub async fn until_closed(&mut self, within: Duration) -> Result<(Vec<Frame>, Instant)> {
        let deadline = Instant::now() + within;
        let mut seen = Vec::new();
        loop {
            ensure!(
                Instant::now() < deadline,
                "session still open after {within:?}; got {seen:?}"
            );
            match self.recv().await? {
                Frame::Closed(_) => return Ok((seen, Instant::now())),
                f => seen.push(f),
            }
        }
    }

    /// CONNECT to `ns` (`/` or `/name`) with an optional JSON payload; returns the Socket.IO
    /// session id of the answer, after checking the `auth` event that follows it.
    ///
    /// # Errors
    /// If the answers are not the expected ones.
    pub async fn connect(&mut self, ns: &str, payload: Option<&str>) -> Result<String> {
        let prefix = if ns == "/" {
            String::new()
        } else {
            format!("{ns},")
        };
        self.send_text(&format!("40{prefix}{}", payload.unwrap_or("")))
            .await?;
        let answer = self.recv_text().await?;
        let json = answer
            .strip_prefix(&format!("40{prefix}"))
            .with_context(|| format!("CONNECT to {ns} answered {answer:?}"))?;
        let data: Value = serde_json::from_str(json).with_context(|| answer.clone())?;
        let sid = data["sid"].as_str().with_context(|| answer.clone())?;
        let expected: Value = serde_json::from_str(payload.unwrap_or("{}"))?;
        let auth = self.recv_text().await?;
        let args = auth
            .strip_prefix(&format!("42{prefix}"))
            .with_context(|| format!("expected the auth event, got {auth:?}"))?;
        let args: Value = serde_json::from_str(args).with_context(|| auth.clone())?;
        ensure!(
            args == serde_json::json!(["auth", expected]),
            "auth event {auth}"
        );
        Ok(sid.to_owned())
    }
}

/// `{code, message}` of an Engine.IO error answer, checked against `status` and the body.
///
/// # Errors
/// If the answer differs.
pub fn expect_error(answer: &Answer, code: u8, message: &str) -> Result<()> {
    let (status, body) = answer;
    ensure!(*status == 400, "expected 400, got {status}: {body}");
    let v: Value = serde_json::from_str(body).with_context(|| format!("error body {body}"))?;
    // Known deviation: engineioxide sends the code as a string (`"code":"5"`); the reference
    // server sends a number. The node's own session check copies engineioxide's answer. Clients read
    // neither, so both spellings are taken, with the right value.
    let code_ok = v["code"] == code || v["code"].as_str() == Some(code.to_string().as_str());
    let keys = v.as_object().map(|o| o.len());
    ensure!(
        code_ok && v["message"] == message && keys == Some(2),
        "error body {body}, expected code {code} {message:?}"
    );
    Ok(())
}
