//! Trims the head of a Socket.IO request to what the transport reads, in storage of its own,
//! before the socket.io layer keeps it.
//!
//! The HTTP/1 parser hands out the URI and the header values as slices of the connection's
//! read buffer (8-16 KB), and the socket.io layer keeps a request's head for as long as its
//! session lives: the head of the request that opened the session (handshake data,
//! `req_parts`), and, unused, the head of a WebSocket upgrade of a polling session (held by
//! the session's task, as browsers' clients connect). Each slice keeps the whole buffer alive:
//! measured with valgrind massif at 1,000 idle WebSocket sessions, 16 KB of heap per session
//! was that buffer. So the head is copied; and only what the transport reads is kept (the URI,
//! and `Sec-WebSocket-Key` for an upgrade): every check that needs the rest (origin, address
//! budget, session binding) runs outside this, before it, and no handler of the node reads the
//! handshake's headers. A browser's head (cookies, user agent, languages) is 1-3 KB.

use std::net::SocketAddr;

use axum::{
    extract::{ConnectInfo, OriginalUri, Request},
    http::{HeaderMap, HeaderValue, Uri, header},
};

/// The path prefix the socket.io layer serves.
const SOCKETIO_PATH: &str = "/socket.io/";

/// Middleware (`axum::middleware::map_request`), right outside the socket.io layer: trims the
/// heads the transport keeps (see the module); every other request (polls of an existing
/// session, the rest of the routes) passes untouched.
pub async fn trim_head(req: Request) -> Request {
    if !kept_by_transport(req.uri(), req.headers()) {
        return req;
    }
    let (mut parts, body) = req.into_parts();
    parts.uri = owned_uri(&parts.uri);
    parts.headers = transport_headers(&parts.headers);
    // The router's copy of the URI and the peer address were for the layers outside.
    parts.extensions.remove::<OriginalUri>();
    parts.extensions.remove::<ConnectInfo<SocketAddr>>();
    Request::from_parts(parts, body)
}

/// Whether the socket.io layer keeps the head of a request to `uri`: one under its path that
/// opens a session (no `sid`, the rule it applies itself), or upgrades one to a WebSocket.
fn kept_by_transport(uri: &Uri, headers: &HeaderMap) -> bool {
    let opens = !uri
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv.starts_with("sid=")));
    let upgrades = headers
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    uri.path().starts_with(SOCKETIO_PATH) && (opens || upgrades)
}

/// A URI equal to `uri` in storage of its own.
fn owned_uri(uri: &Uri) -> Uri {
    // Parsing what a valid URI prints cannot fail; keep the original if it ever did.
    Uri::try_from(uri.to_string()).unwrap_or_else(|_| uri.clone())
}

/// The one header the transport reads (the upgrade's key), copied.
fn transport_headers(headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    if let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY)
        && let Ok(copied) = HeaderValue::from_bytes(key.as_bytes())
    {
        out.insert(header::SEC_WEBSOCKET_KEY, copied);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use bytes::Bytes;

    /// A request whose URI and header values are slices of one buffer, as the HTTP/1 parser
    /// makes them, with the extensions the layers outside add.
    fn shared_request(buf: &Bytes, path: &str, upgrade: bool) -> Request {
        let uri = Uri::from_maybe_shared(buf.slice(0..path.len())).unwrap();
        let value = HeaderValue::from_maybe_shared(buf.slice(path.len()..path.len() + 5)).unwrap();
        let mut req = Request::builder()
            .uri(uri.clone())
            .body(Body::empty())
            .unwrap();
        req.extensions_mut().insert(OriginalUri(uri));
        let peer: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        req.extensions_mut().insert(ConnectInfo(peer));
        req.headers_mut().append("x-shared", value.clone());
        req.headers_mut().insert("cookie", value.clone());
        req.headers_mut().insert(header::SEC_WEBSOCKET_KEY, value);
        if upgrade {
            let websocket = HeaderValue::from_static("WebSocket");
            req.headers_mut().insert(header::UPGRADE, websocket);
        }
        req
    }

    fn is_inside(buf: &Bytes, s: &[u8]) -> bool {
        let (start, end) = (buf.as_ptr() as usize, buf.as_ptr() as usize + buf.len());
        let p = s.as_ptr() as usize;
        p >= start && p < end
    }

    /// The head keeps its URI and the upgrade key, in storage of its own, and nothing else.
    fn assert_trimmed(buf: &Bytes, req: &Request, path: &str) {
        assert_eq!(req.uri().to_string(), path);
        assert!(!is_inside(buf, req.uri().path().as_bytes()));
        let names: Vec<&str> = req.headers().keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["sec-websocket-key"]);
        let key = &req.headers()[header::SEC_WEBSOCKET_KEY];
        assert_eq!(key, "hello");
        assert!(
            !is_inside(buf, key.as_bytes()),
            "the key is still in the buffer"
        );
        assert!(req.extensions().get::<OriginalUri>().is_none());
        assert!(req.extensions().get::<ConnectInfo<SocketAddr>>().is_none());
    }

    #[tokio::test]
    async fn a_session_opening_head_is_trimmed_and_leaves_the_read_buffer() {
        let path = "/socket.io/?EIO=4&transport=websocket";
        let buf = Bytes::from(format!("{path}hello and the rest of a large read buffer"));
        let req = shared_request(&buf, path, true);
        assert!(is_inside(&buf, req.headers()["x-shared"].as_bytes()));
        assert_trimmed(&buf, &trim_head(req).await, path);
        let polling = "/socket.io/?EIO=4&transport=polling";
        let buf = Bytes::from(format!("{polling}hello"));
        let req = shared_request(&buf, polling, false);
        assert_trimmed(&buf, &trim_head(req).await, polling);
    }

    #[tokio::test]
    async fn the_upgrade_of_a_polling_session_is_trimmed_too() {
        let path = "/socket.io/?EIO=4&transport=websocket&sid=AAAAAAAAAAAAAAAA";
        let buf = Bytes::from(format!("{path}hello"));
        let req = trim_head(shared_request(&buf, path, true)).await;
        assert_trimmed(&buf, &req, path);
    }

    #[tokio::test]
    async fn polls_of_an_open_session_pass_untouched() {
        let path = "/socket.io/?EIO=4&transport=polling&sid=AAAAAAAAAAAAAAAA";
        let buf = Bytes::from(format!("{path}hello"));
        let req = trim_head(shared_request(&buf, path, false)).await;
        assert!(is_inside(&buf, req.headers()["x-shared"].as_bytes()));
        assert!(req.extensions().get::<ConnectInfo<SocketAddr>>().is_some());
    }

    #[tokio::test]
    async fn other_requests_pass_untouched() {
        let path = "/api/v1/emit?x=1";
        let buf = Bytes::from(format!("{path}hello"));
        let req = trim_head(shared_request(&buf, path, true)).await;
        assert!(is_inside(&buf, req.headers()["x-shared"].as_bytes()));
    }
}
