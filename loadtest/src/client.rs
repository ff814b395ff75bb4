//! One simulated client: an Engine.IO v4 session over WebSocket or HTTP long-polling with a
//! Socket.IO namespace connected on top, or a plain WebSocket for the raw baseline.
//!
//! A client is driven by one task: [`Client::recv`] yields Socket.IO messages (heartbeats are
//! answered inside it) and is cancel-safe, so a task can `select!` it against its own send
//! schedule. The hot path is [`Client::fill`] + [`Client::drain`]: every message already read is
//! handed out borrowed, without allocation (see `ws`). Read buffers start at 4 KiB and grow only
//! for busy clients, so one process can hold tens of thousands of clients.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::protocol::{self, EnginePacket, SioKind};
use crate::ws::{Frame, UpgradeRefused, WsConn};

/// The wire protocol spoken to the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Engine.IO v4 / Socket.IO v5 (ioscale, socket.io, socketioxide).
    Socketio,
    /// The raw WebSocket baseline's framing (see `protocol::raw`).
    Raw,
}

/// How a Socket.IO client resumes after its connection is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RecoveryMode {
    /// No recovery: a reconnected client joins its room again.
    Off,
    /// ioscale's session recovery (`ioscale_recovery {session, offset}` in the CONNECT auth).
    Ioscale,
    /// socket.io's connection state recovery (`{pid, offset}` in the CONNECT auth).
    Socketio,
}

/// The transport of one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Websocket,
    Polling,
}

/// Picks the transport of client `i` so that `share` of all clients poll, spread evenly
/// (with 0.05 every twentieth client polls) rather than bunched on the first ones.
pub fn transport_for(i: usize, share: f64) -> Transport {
    if spread(i, share) {
        Transport::Polling
    } else {
        Transport::Websocket
    }
}

/// Whether item `i` is one of a `share` of all items spread evenly (with 0.05 every
/// twentieth).
pub fn spread(i: usize, share: f64) -> bool {
    let share = share.clamp(0.0, 1.0);
    #[allow(clippy::cast_precision_loss)]
    let (a, b) = ((i as f64 * share).floor(), ((i + 1) as f64 * share).floor());
    b > a
}

/// Where clients connect: one server (or load balancer) of the comma-separated target list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `host:port`
    pub authority: String,
    /// Socket.IO request path, e.g. `/socket.io/`.
    pub path: String,
}

impl Target {
    /// Accepts `http://host:port`, `ws://host:port` or `host:port` (a trailing path is ignored:
    /// the Socket.IO path comes from `path`).
    ///
    /// # Errors
    /// TLS schemes (not supported) or an empty host.
    pub fn parse(url: &str, path: &str) -> anyhow::Result<Self> {
        let url = url.trim();
        let rest = if let Some((scheme, rest)) = url.split_once("://") {
            anyhow::ensure!(
                scheme == "http" || scheme == "ws",
                "unsupported scheme {scheme:?} in {url:?} (only http:// and ws://)"
            );
            rest
        } else {
            url
        };
        let authority = rest.split('/').next().unwrap_or_default();
        anyhow::ensure!(!authority.is_empty(), "no host in target URL {url:?}");
        let mut path = path.to_owned();
        if !path.starts_with('/') {
            path.insert(0, '/');
        }
        if !path.ends_with('/') {
            path.push('/');
        }
        Ok(Self {
            authority: authority.to_owned(),
            path,
        })
    }

    fn ws_path(&self, protocol: Protocol) -> String {
        match protocol {
            Protocol::Socketio => format!(
                "{}?EIO={}&transport=websocket",
                self.path,
                protocol::EIO_VERSION
            ),
            Protocol::Raw => "/".to_owned(),
        }
    }

    fn polling_url(&self) -> String {
        format!(
            "http://{}{}?EIO={}&transport=polling",
            self.authority,
            self.path,
            protocol::EIO_VERSION
        )
    }
}

/// Why a client failed; `cause` is a short stable key for counting failures by cause.
#[derive(Debug, Clone)]
pub struct ClientError {
    pub cause: String,
    pub detail: String,
}

impl ClientError {
    fn new(cause: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            cause: cause.into(),
            detail: detail.into(),
        }
    }
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.cause, self.detail)
    }
}

impl std::error::Error for ClientError {}

fn io_cause(e: &std::io::Error) -> &'static str {
    use std::io::ErrorKind as K;
    // EMFILE / ENFILE: the generator itself ran out of file descriptors.
    if matches!(e.raw_os_error(), Some(24 | 23)) {
        return "too-many-open-files";
    }
    match e.kind() {
        K::ConnectionRefused => "refused",
        K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe => "reset",
        K::TimedOut => "timeout",
        K::AddrNotAvailable => "no-local-port",
        K::UnexpectedEof => "closed",
        _ => "io",
    }
}

impl From<std::io::Error> for ClientError {
    fn from(e: std::io::Error) -> Self {
        let cause = match e.get_ref().and_then(|i| i.downcast_ref::<UpgradeRefused>()) {
            Some(UpgradeRefused {
                status: Some(code), ..
            }) => format!("http-{code}"),
            Some(_) => "http".to_owned(),
            None if e.kind() == std::io::ErrorKind::InvalidData => "websocket".to_owned(),
            None => io_cause(&e).to_owned(),
        };
        Self::new(cause, e.to_string())
    }
}

impl From<reqwest::Error> for ClientError {
    fn from(e: reqwest::Error) -> Self {
        let cause = if let Some(status) = e.status() {
            format!("http-{}", status.as_u16())
        } else if e.is_timeout() {
            "timeout".to_owned()
        } else {
            // The io error is a few sources down the chain (hyper-util, hyper).
            let mut source = std::error::Error::source(&e);
            let mut found = if e.is_connect() { "connect" } else { "http" };
            while let Some(s) = source {
                if let Some(io) = s.downcast_ref::<std::io::Error>() {
                    found = io_cause(io);
                    break;
                }
                source = s.source();
            }
            found.to_owned()
        };
        Self::new(cause, format!("{e:#}"))
    }
}

/// Tunables shared by every client of a run.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub protocol: Protocol,
    /// Bound on the whole handshake (TCP, WebSocket upgrade or first poll, namespace connect).
    pub connect_timeout: Duration,
    /// Shared HTTP client of the polling clients (a connection pool).
    pub http: reqwest::Client,
    /// The JSON `auth` payload of every namespace CONNECT (`{"token": …}`), if any.
    pub auth: Option<String>,
    /// The session recovery clients use.
    pub recovery: RecoveryMode,
    /// `TCP_QUICKACK` after every WebSocket read (see the `--quickack` flag).
    pub quickack: bool,
    /// Local addresses WebSocket clients connect from, in turn (empty: the system's choice).
    pub sources: Arc<[std::net::IpAddr]>,
    next_source: Arc<std::sync::atomic::AtomicUsize>,
}

impl ClientConfig {
    /// Sends `{"token": token}` with every namespace CONNECT.
    #[must_use]
    pub fn with_auth_token(self, token: Option<&str>) -> Self {
        self.with_auth_field("token", token.map(Into::into))
    }

    /// The recovery every client asks for. With ioscale's, every first namespace CONNECT
    /// carries `ioscale_recovery: {session: null, offset: null}` (a fresh recoverable session
    /// each); socket.io's needs nothing until a reconnection.
    #[must_use]
    pub fn with_recovery(mut self, mode: RecoveryMode) -> Self {
        self.recovery = mode;
        let ask = serde_json::json!({"session": null, "offset": null});
        self.with_auth_field(
            "ioscale_recovery",
            (mode == RecoveryMode::Ioscale).then_some(ask),
        )
    }

    /// Acknowledges every WebSocket read at once (`TCP_QUICKACK`).
    #[must_use]
    pub fn with_quickack(mut self, quickack: bool) -> Self {
        self.quickack = quickack;
        self
    }

    /// WebSocket clients connect from `n` loopback addresses, 127.77.0.1 onwards, in turn.
    #[must_use]
    pub fn with_source_addrs(mut self, n: u32) -> Self {
        self.sources = (0..n)
            .map(|i| {
                let [_, _, hi, lo] = (i / 250 * 256 + i % 250 + 1).to_be_bytes();
                std::net::IpAddr::from([127, 77, hi, lo])
            })
            .collect();
        self
    }

    /// The local address of the next WebSocket client, if they are spread.
    fn next_source(&self) -> Option<std::net::IpAddr> {
        let i = self
            .next_source
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.sources.get(i % self.sources.len().max(1)).copied()
    }

    fn with_auth_field(mut self, key: &str, value: Option<serde_json::Value>) -> Self {
        let Some(value) = value else { return self };
        self.auth = Some(self.auth_with([(key, value)]));
        self
    }

    /// The CONNECT auth with `fields` set over the configured ones (a reconnection's
    /// recovery fields).
    pub fn auth_with<'a>(
        &self,
        fields: impl IntoIterator<Item = (&'a str, serde_json::Value)>,
    ) -> String {
        let mut auth = self
            .auth
            .as_deref()
            .and_then(|a| {
                serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(a).ok()
            })
            .unwrap_or_default();
        for (key, value) in fields {
            auth.insert(key.to_owned(), value);
        }
        serde_json::Value::Object(auth).to_string()
    }

    /// # Errors
    /// If the HTTP client cannot be built.
    pub fn new(protocol: Protocol, connect_timeout: Duration) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(90))
            .build()?;
        Ok(Self {
            protocol,
            connect_timeout,
            http,
            auth: None,
            recovery: RecoveryMode::Off,
            quickack: false,
            sources: Arc::from(Vec::new()),
            next_source: Arc::default(),
        })
    }
}

struct Polling {
    http: reqwest::Client,
    /// Polling URL with `&sid=`.
    url: String,
    /// The long-poll GET in flight (a task, so that cancelling `recv` loses nothing).
    get: Option<JoinHandle<Result<String, ClientError>>>,
    /// Packets of the last GET not yet handed out.
    queue: VecDeque<String>,
    /// The packet handed out last.
    current: String,
    /// Packets to POST; one writer task sends them in order, batched, never two POSTs at once
    /// (Engine.IO servers close a session on overlapping POSTs).
    writer: mpsc::UnboundedSender<String>,
    writer_task: JoinHandle<()>,
}

impl Drop for Polling {
    fn drop(&mut self) {
        if let Some(get) = self.get.take() {
            get.abort();
        }
        self.writer_task.abort();
    }
}

enum Conn {
    Ws(Box<WsConn>),
    Polling(Box<Polling>),
}

/// Timings of a successful handshake.
#[derive(Debug, Clone, Copy)]
pub struct ConnectTimes {
    /// Until the Engine.IO session was open (or the raw WebSocket upgraded).
    pub transport: Duration,
    /// Until the namespace connect was acknowledged (equal to `transport` for raw).
    pub total: Duration,
}

/// A connected client.
pub struct Client {
    conn: Conn,
    protocol: Protocol,
    transport: Transport,
    /// The data of the namespace CONNECT answer (`{"sid": …}`, with socket.io's recovery
    /// also `"pid"`).
    connect_answer: String,
    /// Events of the namespace that came before its CONNECT answer (socket.io replays what a
    /// recovered session missed first), handed out before anything else.
    early: VecDeque<String>,
    /// The early event handed out last.
    early_current: String,
}

impl Client {
    /// Connects and, for Socket.IO, joins namespace `nsp`.
    ///
    /// # Errors
    /// Any failure, with its cause; the whole handshake is bounded by the configured timeout.
    pub async fn connect(
        cfg: &ClientConfig,
        target: &Target,
        transport: Transport,
        nsp: &str,
    ) -> Result<(Self, ConnectTimes), ClientError> {
        Self::connect_with_auth(cfg, target, transport, nsp, cfg.auth.as_deref()).await
    }

    /// [`Self::connect`] with this CONNECT auth instead of the configured one (a reconnection
    /// that resumes a session).
    ///
    /// # Errors
    /// As [`Self::connect`].
    pub async fn connect_with_auth(
        cfg: &ClientConfig,
        target: &Target,
        transport: Transport,
        nsp: &str,
        auth: Option<&str>,
    ) -> Result<(Self, ConnectTimes), ClientError> {
        let started = Instant::now();
        match tokio::time::timeout(
            cfg.connect_timeout,
            Self::handshake(cfg, target, transport, nsp, auth, started),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(ClientError::new(
                "timeout",
                format!("handshake took over {:?}", cfg.connect_timeout),
            )),
        }
    }

    async fn handshake(
        cfg: &ClientConfig,
        target: &Target,
        transport: Transport,
        nsp: &str,
        auth: Option<&str>,
        started: Instant,
    ) -> Result<(Self, ConnectTimes), ClientError> {
        let conn = match (cfg.protocol, transport) {
            (Protocol::Raw, Transport::Polling) => {
                return Err(ClientError::new(
                    "config",
                    "the raw protocol has no polling transport",
                ));
            }
            (_, Transport::Websocket) => {
                let path = target.ws_path(cfg.protocol);
                let mut ws = WsConn::connect(&target.authority, &path, cfg.next_source()).await?;
                ws.quickack = cfg.quickack;
                Conn::Ws(Box::new(ws))
            }
            (Protocol::Socketio, Transport::Polling) => {
                Conn::Polling(Box::new(Polling::open(&cfg.http, target).await?))
            }
        };
        let mut client = Self {
            conn,
            protocol: cfg.protocol,
            transport,
            connect_answer: String::new(),
            early: VecDeque::new(),
            early_current: String::new(),
        };
        if cfg.protocol == Protocol::Raw {
            let t = started.elapsed();
            return Ok((
                client,
                ConnectTimes {
                    transport: t,
                    total: t,
                },
            ));
        }
        if let Conn::Ws(_) = client.conn {
            // Over WebSocket the server speaks first: the open packet.
            let first = client.next_frame().await?.ok_or_else(|| {
                ClientError::new("closed", "closed before the engine.io open packet")
            })?;
            match protocol::parse_engine(&first) {
                Ok(EnginePacket::Open(json)) => {
                    protocol::parse_open(json)
                        .map_err(|e| ClientError::new("eio-open", e.to_string()))?;
                }
                _ => {
                    return Err(ClientError::new(
                        "eio-open",
                        format!(
                            "expected an open packet, got {:?}",
                            &first[..first.len().min(80)]
                        ),
                    ));
                }
            }
        }
        let transport_time = started.elapsed();
        client.send(protocol::connect_packet(nsp, auth)).await?;
        let mut early = VecDeque::new();
        loop {
            let msg = client
                .recv()
                .await?
                .ok_or_else(|| ClientError::new("closed", "closed before the namespace connect"))?;
            let Ok(p) = protocol::parse_socketio(&msg[1..]) else {
                continue;
            };
            if p.nsp != nsp {
                continue;
            }
            match p.kind {
                SioKind::Connect => {
                    client.connect_answer = p.data.to_owned();
                    client.early = early;
                    break;
                }
                SioKind::ConnectError => {
                    return Err(ClientError::new("namespace-rejected", p.data.to_owned()));
                }
                // Not into `early` yet: `recv` hands that out first.
                SioKind::Event => early.push_back(msg),
                _ => {}
            }
        }
        Ok((
            client,
            ConnectTimes {
                transport: transport_time,
                total: started.elapsed(),
            },
        ))
    }

    /// The client's transport.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// The data of the namespace CONNECT answer (empty for raw).
    pub fn connect_answer(&self) -> &str {
        &self.connect_answer
    }

    /// Loses the connection the way a network failure does: a WebSocket is reset (no close
    /// frame, no FIN) once the client is dropped; a polling session just stops polling (the
    /// server times it out).
    pub fn abort(&self) {
        if let Conn::Ws(ws) = &self.conn {
            ws.reset_on_drop();
        }
    }

    /// Next raw frame of the underlying transport (WebSocket message or one packet of a
    /// poll), owned; for the handshake and other slow paths.
    async fn next_frame(&mut self) -> Result<Option<String>, ClientError> {
        loop {
            match self.conn.next_buffered()? {
                Got::Frame(b) => return Ok(Some(String::from_utf8_lossy(b).into_owned())),
                Got::Closed => return Ok(None),
                Got::Empty => {
                    if !self.fill().await? {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// Waits for more input from the server (at least one frame or byte), after sending what
    /// is queued (pongs). False when the server closed the transport. Cancel-safe; take what
    /// arrived with [`Self::drain`].
    ///
    /// # Errors
    /// Transport errors.
    pub async fn fill(&mut self) -> Result<bool, ClientError> {
        if !self.early.is_empty() {
            return Ok(true);
        }
        match &mut self.conn {
            Conn::Ws(ws) => Ok(ws.fill().await?),
            Conn::Polling(p) => p.fill().await,
        }
    }

    /// Hands every complete message already received to `f` (Socket.IO: the Engine.IO message
    /// bytes starting with `4`; raw: the frame), answering pings on the way. False once the
    /// server closed the session.
    ///
    /// # Errors
    /// Malformed frames.
    pub fn drain(&mut self, mut f: impl FnMut(&[u8])) -> Result<bool, ClientError> {
        loop {
            match self.next_message()? {
                Got::Frame(b) => f(b),
                Got::Closed => return Ok(false),
                Got::Empty => return Ok(true),
            }
        }
    }

    /// The next message already received, with Engine.IO control packets handled.
    fn next_message(&mut self) -> Result<Got<'_>, ClientError> {
        if let Some(m) = self.early.pop_front() {
            self.early_current = m;
            return Ok(Got::Frame(self.early_current.as_bytes()));
        }
        loop {
            // Look at the kind first and only borrow the message for returning it: the borrow
            // checker does not let a loop return a borrow on one path and mutate on another.
            let kind = match self.conn.next_buffered()? {
                Got::Frame(b) => b.first().copied(),
                Got::Closed => return Ok(Got::Closed),
                Got::Empty => return Ok(Got::Empty),
            };
            if self.protocol == Protocol::Raw || kind == Some(b'4') {
                return Ok(Got::Frame(self.conn.current()));
            }
            match kind {
                Some(b'2') => self.conn.queue(protocol::PONG)?,
                Some(b'1') => return Ok(Got::Closed),
                // Pong, noop (sent to end a poll), upgrade: nothing to do.
                _ => {}
            }
        }
    }

    /// The next message: for Socket.IO the Engine.IO message text starting with `4` (parse the
    /// rest with [`protocol::parse_socketio`]), for raw the frame. `None` when the server closed
    /// the session. Engine.IO pings are answered here. Cancel-safe.
    ///
    /// # Errors
    /// Transport errors.
    pub async fn recv(&mut self) -> Result<Option<String>, ClientError> {
        loop {
            match self.next_message()? {
                Got::Frame(b) => return Ok(Some(String::from_utf8_lossy(b).into_owned())),
                Got::Closed => return Ok(None),
                Got::Empty => {
                    if !self.fill().await? {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// Sends one message (Engine.IO packet text such as `42/pubsub,…`, or a raw frame).
    ///
    /// # Errors
    /// Transport errors.
    pub async fn send(&mut self, text: String) -> Result<(), ClientError> {
        self.conn.queue(&text)?;
        self.conn.flush().await
    }

    /// Sends several messages with one write (one syscall instead of one each).
    ///
    /// # Errors
    /// Transport errors.
    pub async fn send_batch(&mut self, texts: Vec<String>) -> Result<(), ClientError> {
        for t in &texts {
            self.conn.queue(t)?;
        }
        self.conn.flush().await
    }

    /// Closes the session politely (best effort, bounded).
    pub async fn close(mut self) {
        let fut = async {
            match &mut self.conn {
                Conn::Ws(ws) => {
                    ws.queue_close();
                    let _ = ws.flush().await;
                }
                Conn::Polling(p) => {
                    let _ = p
                        .http
                        .post(&p.url)
                        .body("1")
                        .header("content-type", "text/plain;charset=UTF-8")
                        .send()
                        .await;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), fut).await;
    }
}

/// A buffered message, or why there is none.
enum Got<'a> {
    Frame(&'a [u8]),
    Closed,
    Empty,
}

impl Conn {
    /// The next frame already read, without interpretation.
    fn next_buffered(&mut self) -> Result<Got<'_>, ClientError> {
        match self {
            Conn::Ws(ws) => match ws.next_message()? {
                Some(Frame::Message(span)) => {
                    ws.last = Some(span);
                    Ok(Got::Frame(ws.bytes(span)))
                }
                Some(Frame::Closed) => Ok(Got::Closed),
                None => Ok(Got::Empty),
            },
            Conn::Polling(p) => match p.queue.pop_front() {
                Some(packet) => {
                    p.current = packet;
                    Ok(Got::Frame(p.current.as_bytes()))
                }
                None => Ok(Got::Empty),
            },
        }
    }

    /// The frame [`Self::next_buffered`] returned last.
    fn current(&self) -> &[u8] {
        match self {
            Conn::Ws(ws) => ws.last.map_or(&[][..], |s| ws.bytes(s)),
            Conn::Polling(p) => p.current.as_bytes(),
        }
    }

    fn queue(&mut self, text: &str) -> Result<(), ClientError> {
        match self {
            Conn::Ws(ws) => {
                ws.queue_text(text.as_bytes());
                Ok(())
            }
            Conn::Polling(p) => p.post(text.to_owned()),
        }
    }

    async fn flush(&mut self) -> Result<(), ClientError> {
        match self {
            Conn::Ws(ws) => Ok(ws.flush().await?),
            // The polling writer task sends on its own.
            Conn::Polling(_) => Ok(()),
        }
    }
}

impl Polling {
    /// The handshake GET; packets after the open packet stay queued.
    async fn open(http: &reqwest::Client, target: &Target) -> Result<Self, ClientError> {
        let base = target.polling_url();
        let body = http
            .get(&base)
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        let mut packets = protocol::split_payload(&body);
        let first = packets.next().unwrap_or_default();
        let info = match protocol::parse_engine(first) {
            Ok(EnginePacket::Open(json)) => protocol::parse_open(json)
                .map_err(|e| ClientError::new("eio-open", e.to_string()))?,
            _ => {
                return Err(ClientError::new(
                    "eio-open",
                    format!(
                        "expected an open packet, got {:?}",
                        &first[..first.len().min(80)]
                    ),
                ));
            }
        };
        let rest = packets.map(str::to_owned).collect();
        let url = format!("{base}&sid={}", info.sid);
        let (tx, rx) = mpsc::unbounded_channel();
        let writer_task = tokio::spawn(write_loop(http.clone(), url.clone(), rx));
        Ok(Self {
            http: http.clone(),
            url,
            get: None,
            queue: rest,
            current: String::new(),
            writer: tx,
            writer_task,
        })
    }

    fn post(&self, text: String) -> Result<(), ClientError> {
        self.writer
            .send(text)
            .map_err(|_| ClientError::new("closed", "polling writer stopped (a POST failed)"))
    }

    /// Waits for the long-poll GET in flight (started here when none is) and queues its
    /// packets; false when the server ended the session. Cancel-safe: the GET is a task.
    async fn fill(&mut self) -> Result<bool, ClientError> {
        if !self.queue.is_empty() {
            return Ok(true);
        }
        let get = self.get.get_or_insert_with(|| {
            let (http, url) = (self.http.clone(), self.url.clone());
            tokio::spawn(async move {
                let resp = http.get(&url).send().await?;
                if !resp.status().is_success() {
                    // 400 with "Session ID unknown" is how a closed session looks.
                    return Err(ClientError::new(
                        format!("http-{}", resp.status().as_u16()),
                        resp.text().await.unwrap_or_default(),
                    ));
                }
                Ok(resp.text().await?)
            })
        });
        let res = get.await;
        self.get = None;
        let body = match res {
            Ok(r) => r?,
            Err(e) => return Err(ClientError::new("internal", e.to_string())),
        };
        self.queue
            .extend(protocol::split_payload(&body).map(str::to_owned));
        Ok(!self.queue.is_empty())
    }
}

async fn write_loop(http: reqwest::Client, url: String, mut rx: mpsc::UnboundedReceiver<String>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let body = protocol::join_payload(&batch);
        let ok = http
            .post(&url)
            .body(body)
            .header("content-type", "text/plain;charset=UTF-8")
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if !ok {
            // Dropping the receiver makes the next send fail, which ends the client.
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polling_share_is_spread() {
        let polling: Vec<usize> = (0..100)
            .filter(|&i| transport_for(i, 0.05) == Transport::Polling)
            .collect();
        assert_eq!(polling.len(), 5);
        assert!(polling.windows(2).all(|w| w[1] - w[0] == 20));
        assert!((0..50).all(|i| transport_for(i, 0.0) == Transport::Websocket));
        assert!((0..50).all(|i| transport_for(i, 1.0) == Transport::Polling));
    }

    #[tokio::test]
    async fn a_refused_upgrade_is_counted_by_its_status() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                .await;
        });
        let cfg = ClientConfig::new(Protocol::Socketio, Duration::from_secs(5)).unwrap();
        let target = Target::parse(&format!("http://{addr}"), "/socket.io/").unwrap();
        let err = Client::connect(&cfg, &target, Transport::Websocket, "/")
            .await
            .err()
            .expect("a 400 is no upgrade");
        assert_eq!(err.cause, "http-400", "{err}");
        server.await.unwrap();
    }

    #[test]
    fn targets() {
        let t = Target::parse("http://127.0.0.1:3001", "/socket.io").unwrap();
        assert_eq!(t.authority, "127.0.0.1:3001");
        assert_eq!(t.path, "/socket.io/");
        assert_eq!(
            t.ws_path(Protocol::Socketio),
            "/socket.io/?EIO=4&transport=websocket"
        );
        assert_eq!(t.ws_path(Protocol::Raw), "/");
        assert_eq!(
            Target::parse("h:1/x", "/socket.io/").unwrap().authority,
            "h:1"
        );
        assert!(Target::parse("https://h:1", "/").is_err());
    }
}
