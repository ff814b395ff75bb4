//! Handshakes per client address (`--handshakes-per-address-per-s`,
//! `--handshake-burst-per-address`): every new Engine.IO session (a `/socket.io/` request
//! without a `sid`) takes a token from its address's bucket. Over it the request is refused
//! with HTTP 429 `{ok: false, code: "busy"}` and `Retry-After`, before any session exists, and
//! counted in `ioscale_connect_refused_total{reason="address_rate"}`.
//!
//! The address is the TCP peer's. Behind a load balancer that is the balancer's, so every
//! client would share one bucket: with `--trust-proxy` the node takes the last
//! `X-Forwarded-For` entry instead, the one the proxy in front of it appended (entries before
//! it come from the client and can be forged).

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    extract::{ConnectInfo, Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use prometheus::IntCounter;

use crate::{
    rate::TokenBucket,
    refusal::{Code, Refused},
};

/// How often buckets that have refilled are forgotten: the table holds only addresses seen
/// recently.
const PRUNE_EVERY: Duration = Duration::from_secs(10);

/// The buckets of every address seen recently.
#[derive(Debug)]
pub struct AddressRate {
    rate_per_s: f64,
    burst: f64,
    trust_proxy: bool,
    table: Mutex<Table>,
    refused: IntCounter,
}

#[derive(Debug)]
struct Table {
    buckets: HashMap<IpAddr, TokenBucket>,
    pruned: Instant,
}

impl AddressRate {
    /// Buckets of `burst` handshakes refilled at `rate_per_s`.
    pub fn new(rate_per_s: u32, burst: u32, trust_proxy: bool, refused: IntCounter) -> Self {
        Self {
            rate_per_s: f64::from(rate_per_s),
            burst: f64::from(burst),
            trust_proxy,
            table: Mutex::new(Table {
                buckets: HashMap::new(),
                pruned: Instant::now(),
            }),
            refused,
        }
    }

    /// Whether a handshake from `addr` at `now` is within its budget.
    fn admit(&self, addr: IpAddr, now: Instant) -> bool {
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if now.saturating_duration_since(t.pruned) >= PRUNE_EVERY {
            let (rate, burst) = (self.rate_per_s, self.burst);
            t.buckets.retain(|_, b| !b.is_full_at(now, rate, burst));
            t.pruned = now;
        }
        let burst = self.burst;
        let bucket = t
            .buckets
            .entry(addr)
            .or_insert_with(|| TokenBucket::full(burst, now));
        bucket.take(now, self.rate_per_s, self.burst)
    }

    /// The client's address: the peer's, or with `--trust-proxy` the last `X-Forwarded-For`
    /// entry when it parses.
    fn client_addr(&self, req: &Request, peer: IpAddr) -> IpAddr {
        client_addr(req, peer, self.trust_proxy)
    }
}

/// A request's client address: the TCP peer's, or with `trust_proxy` the last
/// `X-Forwarded-For` entry when it parses (the one the proxy in front appended).
pub fn client_addr(req: &Request, peer: IpAddr, trust_proxy: bool) -> IpAddr {
    if !trust_proxy {
        return peer;
    }
    req.headers()
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .next_back()
        .and_then(|last| parse_forwarded(last.trim()))
        .unwrap_or(peer)
}

/// An address as proxies write it: `1.2.3.4`, `2001:db8::1`, `[2001:db8::1]:443`, `1.2.3.4:80`.
fn parse_forwarded(s: &str) -> Option<IpAddr> {
    s.parse::<IpAddr>()
        .ok()
        .or_else(|| s.parse::<SocketAddr>().ok().map(|a| a.ip()))
}

/// Whether the request opens a new Engine.IO session (not the client script, not a request of
/// an existing session).
pub(crate) fn opens_session(req: &Request) -> bool {
    let path = req.uri().path();
    if path != "/socket.io/" && path != "/socket.io" {
        return false;
    }
    let query = req.uri().query().unwrap_or("");
    !query.split('&').any(|kv| kv.starts_with("sid="))
}

/// The middleware, outside the Socket.IO layer.
pub async fn check(State(rate): State<Arc<AddressRate>>, req: Request, next: Next) -> Response {
    if !opens_session(&req) {
        return next.run(req).await;
    }
    // Absent only when the router is driven without a listener (in-process tests).
    let Some(ConnectInfo(peer)) = req.extensions().get::<ConnectInfo<SocketAddr>>().copied() else {
        return next.run(req).await;
    };
    let addr = rate.client_addr(&req, peer.ip());
    if rate.admit(addr, Instant::now()) {
        return next.run(req).await;
    }
    rate.refused.inc();
    tracing::debug!(%addr, "handshake refused: address over its handshake rate");
    let e = "too many handshakes from this address, retry later";
    let body = axum::Json(Refused::new(Code::Busy, e).to_json());
    let mut resp = (StatusCode::TOO_MANY_REQUESTS, body).into_response();
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    resp
}

#[cfg(test)]
mod tests {
    use axum::body::Body;

    use super::*;

    fn rate(trust_proxy: bool) -> AddressRate {
        let c = IntCounter::new("t", "t").unwrap();
        AddressRate::new(1, 2, trust_proxy, c)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn each_address_has_its_own_burst_and_refills_at_the_rate() {
        let r = rate(false);
        let t0 = Instant::now();
        assert!(r.admit(ip("10.0.0.1"), t0) && r.admit(ip("10.0.0.1"), t0));
        assert!(!r.admit(ip("10.0.0.1"), t0));
        assert!(r.admit(ip("10.0.0.2"), t0));
        assert!(r.admit(ip("10.0.0.1"), t0 + Duration::from_secs(1)));
        // Refilled buckets are forgotten at the next prune.
        let later = t0 + PRUNE_EVERY + Duration::from_secs(5);
        assert!(r.admit(ip("10.0.0.3"), later));
        let t = r.table.lock().unwrap();
        assert_eq!(t.buckets.len(), 1, "{:?}", t.buckets.keys());
    }

    #[test]
    fn only_a_trusted_proxy_names_the_address_and_only_its_own_entry_counts() {
        let req = Request::get("/socket.io/?EIO=4&transport=polling")
            .header("x-forwarded-for", "6.6.6.6, 192.0.2.7")
            .body(Body::empty())
            .unwrap();
        let peer = ip("10.0.0.9");
        assert_eq!(rate(false).client_addr(&req, peer), peer);
        assert_eq!(rate(true).client_addr(&req, peer), ip("192.0.2.7"));
        let bad = Request::get("/socket.io/")
            .header("x-forwarded-for", "not an address")
            .body(Body::empty())
            .unwrap();
        assert_eq!(rate(true).client_addr(&bad, peer), peer);
        assert_eq!(
            parse_forwarded("[2001:db8::1]:443"),
            Some(ip("2001:db8::1"))
        );
    }

    #[test]
    fn only_new_sessions_are_counted() {
        let req = |uri: &str| Request::get(uri).body(Body::empty()).unwrap();
        assert!(opens_session(&req("/socket.io/?EIO=4&transport=polling")));
        assert!(opens_session(&req("/socket.io/?EIO=4&transport=websocket")));
        assert!(!opens_session(&req(
            "/socket.io/?EIO=4&transport=polling&sid=abc"
        )));
        assert!(!opens_session(&req("/socket.io/socket.io.js")));
        assert!(!opens_session(&req("/api/v1/nodes")));
    }
}
