//! Session binding (`--session-binding address`, the default): a polling request or a
//! WebSocket upgrade that names an Engine.IO session must come from the client address that
//! opened it. The session id is all such a request carries, so without this anyone who learns
//! it (a log line, a screenshot, a leaked URL, another client's code) could send as the client
//! and read its packets. A request that fails the check gets exactly the answer of a session
//! that does not exist, so the check tells a prober nothing.
//!
//! Only polling sessions are bound: a session opened over WebSocket is the connection itself
//! and no later request can name it (engineioxide refuses polling on it and a second upgrade).
//! A binding is forgotten when the node answers that the session is gone (or upgraded: it
//! then refuses polling), or when no request named it for longer than a live polling client
//! can stay silent (it polls at least every ping interval).
//!
//! The address is the one `--trust-proxy` gives (the TCP peer's, or the last
//! `X-Forwarded-For` entry). Clients behind one NAT or one untrusted proxy share an address, so
//! the binding does not tell them apart: README's Security section says what covers that.
//! Cookies could, but socket.io-client in Node and cross-origin pages send none by default.

use std::{
    collections::HashMap,
    convert::Infallible,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::{
    body::{Body, to_bytes},
    extract::{ConnectInfo, Request},
    http::{Method, StatusCode, header},
    response::{IntoResponse, Response},
};
use futures_util::{FutureExt as _, future::BoxFuture};
use prometheus::IntCounter;
use tower::{Layer, Service};

use crate::address_rate::client_addr;

/// Largest handshake answer read to learn the new session's id (it is about 100 bytes).
const MAX_HANDSHAKE_BODY_BYTES: usize = 64 * 1024;

/// What engineioxide answers for a session it does not know, byte for byte: a refused request
/// gets the same.
const UNKNOWN_SESSION: &str = r#"{"code":"1","message":"Session ID unknown"}"#;

/// The sessions this node bound, by session id.
#[derive(Debug)]
pub struct Bindings {
    trust_proxy: bool,
    idle: Duration,
    table: Mutex<Table>,
    refused: IntCounter,
}

#[derive(Debug)]
struct Table {
    sessions: HashMap<String, Bound>,
    pruned: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Bound {
    addr: IpAddr,
    seen: Instant,
}

/// What a request asks of the Engine.IO layer, as far as the binding is concerned.
#[derive(Debug, PartialEq, Eq)]
enum Kind<'a> {
    /// Not an Engine.IO request, or a WebSocket opened without a session: nothing to check.
    Other,
    /// A polling handshake: its answer names a new session, to bind.
    PollingHandshake,
    /// A request naming a session (`sid=`), and whether it asks to upgrade to WebSocket.
    Session { sid: &'a str, upgrade: bool },
}

fn kind(req: &Request) -> Kind<'_> {
    let path = req.uri().path();
    if path != "/socket.io/" && path != "/socket.io" {
        return Kind::Other;
    }
    let query = req.uri().query().unwrap_or("");
    // The first `sid=` and `transport=`, as engineioxide reads them.
    let param = |name: &str| query.split('&').find_map(|kv| kv.strip_prefix(name));
    let websocket = param("transport=") == Some("websocket");
    match param("sid=") {
        Some(sid) => Kind::Session {
            sid,
            upgrade: websocket,
        },
        None if !websocket && req.method() == Method::GET => Kind::PollingHandshake,
        None => Kind::Other,
    }
}

impl Bindings {
    /// Bindings forgotten after `idle` without a request: a polling client requests at least
    /// every ping interval, and its session closes a ping timeout after it stops.
    pub fn new(trust_proxy: bool, idle: Duration, refused: IntCounter) -> Self {
        Self {
            trust_proxy,
            idle,
            table: Mutex::new(Table {
                sessions: HashMap::new(),
                pruned: Instant::now(),
            }),
            refused,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Binds `sid` to `addr`.
    fn bind(&self, sid: &str, addr: IpAddr, now: Instant) {
        let mut t = self.lock();
        let idle = self.idle;
        if now.saturating_duration_since(t.pruned) >= idle / 2 {
            t.sessions
                .retain(|_, b| now.saturating_duration_since(b.seen) < idle);
            t.pruned = now;
        }
        t.sessions.insert(sid.to_owned(), Bound { addr, seen: now });
    }

    /// Whether a request from `addr` may name `sid`; a bound session is marked seen.
    fn admit(&self, sid: &str, addr: IpAddr, now: Instant) -> bool {
        let mut t = self.lock();
        match t.sessions.get_mut(sid) {
            Some(b) if b.addr == addr && now.saturating_duration_since(b.seen) < self.idle => {
                b.seen = now;
                true
            }
            _ => false,
        }
    }

    fn forget(&self, sid: &str) {
        self.lock().sessions.remove(sid);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().sessions.len()
    }
}

/// The id of the session a polling handshake answer opens: `0{"sid":"…",…}`.
fn handshake_sid(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Open {
        sid: String,
    }
    // The open packet is the payload's first record (records are split by 0x1e).
    let first = body.split(|&b| b == 0x1e).next()?;
    let json = first.strip_prefix(b"0")?;
    serde_json::from_slice::<Open>(json).ok().map(|o| o.sid)
}

fn unknown_session() -> Response {
    (
        StatusCode::BAD_REQUEST,
        [(header::CONTENT_TYPE, "application/json")],
        UNKNOWN_SESSION,
    )
        .into_response()
}

/// The binding as a tower layer, outside the Socket.IO layer (inside the origin and
/// handshake-rate checks). A hand-written service rather than an axum `from_fn` middleware:
/// an idle long-polling client always has a poll pending, and `from_fn` keeps a boxed clone of
/// the whole inner service per request, which measured about 2.6 KB per idle polling client.
#[derive(Debug, Clone)]
pub struct BindingLayer(Arc<Bindings>);

impl BindingLayer {
    /// The layer checking requests against `bindings`.
    pub fn new(bindings: Bindings) -> Self {
        Self(Arc::new(bindings))
    }
}

impl<S> Layer<S> for BindingLayer {
    type Service = BindingService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BindingService {
            bindings: self.0.clone(),
            inner,
        }
    }
}

/// [`BindingLayer`]'s service.
#[derive(Debug, Clone)]
pub struct BindingService<S> {
    bindings: Arc<Bindings>,
    inner: S,
}

impl<S> Service<Request> for BindingService<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        // Absent only when the router is driven without a listener (in-process tests).
        let Some(ConnectInfo(peer)) = req.extensions().get::<ConnectInfo<SocketAddr>>().copied()
        else {
            return self.inner.call(req).boxed();
        };
        let b = self.bindings.clone();
        let addr = client_addr(&req, peer.ip(), b.trust_proxy);
        let session = match kind(&req) {
            Kind::Other => return self.inner.call(req).boxed(),
            Kind::PollingHandshake => None,
            Kind::Session { sid, upgrade } => Some((sid.to_owned(), upgrade)),
        };
        let Some((sid, upgrade)) = session else {
            let answer = self.inner.call(req);
            return async move { Ok(bind_answer(&b, addr, answer.await?).await) }.boxed();
        };
        if !b.admit(&sid, addr, Instant::now()) {
            b.refused.inc();
            tracing::debug!(%addr, upgrade, "request naming a session it is not bound to");
            return std::future::ready(Ok(unknown_session())).boxed();
        }
        let answer = self.inner.call(req);
        async move {
            let resp = answer.await?;
            // Gone, or upgraded (engineioxide then refuses polling with a 400): nothing left
            // to protect. Not at the upgrade's 101: the client goes on polling while it probes
            // the WebSocket, and an upgrade that fails leaves it polling.
            if resp.status() == StatusCode::BAD_REQUEST {
                b.forget(&sid);
            }
            Ok(resp)
        }
        .boxed()
    }
}

/// Reads the new session's id from a polling handshake answer and binds it to `addr`.
async fn bind_answer(b: &Bindings, addr: IpAddr, resp: Response) -> Response {
    if resp.status() != StatusCode::OK {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let bytes = match to_bytes(body, MAX_HANDSHAKE_BODY_BYTES).await {
        Ok(bytes) => bytes,
        Err(e) => {
            // The session exists but is bound to nothing, so every request naming it is
            // refused and the client opens another.
            tracing::warn!(error = %e, "unreadable polling handshake answer");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    match handshake_sid(&bytes) {
        Some(sid) => b.bind(&sid, addr, Instant::now()),
        None => tracing::warn!("a polling handshake answer without a session id"),
    }
    Response::from_parts(parts, Body::from(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bindings(idle_s: u64) -> Bindings {
        let c = IntCounter::new("t", "t").unwrap();
        Bindings::new(false, Duration::from_secs(idle_s), c)
    }

    fn req(method: Method, uri: &str) -> Request {
        Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::empty())
            .unwrap()
    }

    #[test]
    fn requests_are_classified_as_engineioxide_reads_them() {
        let get = |u: &str| req(Method::GET, u);
        assert_eq!(
            kind(&get("/socket.io/?EIO=4&transport=polling&t=x")),
            Kind::PollingHandshake
        );
        assert_eq!(
            kind(&get("/socket.io/?EIO=4&transport=websocket")),
            Kind::Other
        );
        assert_eq!(
            kind(&get("/socket.io/?EIO=4&transport=polling&sid=abc&sid=def")),
            Kind::Session {
                sid: "abc",
                upgrade: false
            }
        );
        assert_eq!(
            kind(&get("/socket.io/?EIO=4&transport=websocket&sid=abc")),
            Kind::Session {
                sid: "abc",
                upgrade: true
            }
        );
        assert_eq!(
            kind(&req(Method::POST, "/socket.io/?EIO=4&transport=polling")),
            Kind::Other
        );
        assert_eq!(kind(&get("/healthz?sid=abc")), Kind::Other);
    }

    #[test]
    fn a_session_admits_its_own_address_only_until_idle() {
        let b = bindings(60);
        let (a, other): (IpAddr, IpAddr) =
            ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t0 = Instant::now();
        assert!(!b.admit("s1", a, t0), "nothing bound yet");
        b.bind("s1", a, t0);
        assert!(b.admit("s1", a, t0 + Duration::from_secs(30)));
        assert!(!b.admit("s1", other, t0 + Duration::from_secs(31)));
        assert!(!b.admit("s2", a, t0 + Duration::from_secs(31)));
        // Seen at 30 s: still bound at 89 s, gone at 90 s.
        assert!(b.admit("s1", a, t0 + Duration::from_secs(89)));
        assert!(!b.admit("s1", a, t0 + Duration::from_secs(150)));
        b.forget("s1");
        assert_eq!(b.len(), 0);
    }

    #[test]
    fn idle_bindings_are_pruned_when_others_bind() {
        let b = bindings(10);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let t0 = Instant::now();
        b.bind("old", a, t0);
        b.bind("new", a, t0 + Duration::from_secs(20));
        assert_eq!(b.len(), 1);
    }

    #[test]
    fn the_handshake_answer_names_the_session() {
        let body =
            br#"0{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":["websocket"],"pingInterval":25000}"#;
        assert_eq!(handshake_sid(body).as_deref(), Some("lv_VI97HAXpY6yYWAAAC"));
        assert_eq!(
            handshake_sid(b"0{\"sid\":\"x\"}\x1e2").as_deref(),
            Some("x")
        );
        assert_eq!(handshake_sid(b"4{}"), None);
        assert_eq!(handshake_sid(b"0not json"), None);
        assert_eq!(handshake_sid(b""), None);
    }
}
