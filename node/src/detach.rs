//! Copies the head of a Socket.IO request out of the HTTP server's read buffer before the
//! socket.io layer keeps it.
//!
//! The HTTP/1 parser hands out the URI and the header values as slices of the connection's
//! read buffer (8-16 KB), and the socket.io layer stores the handshake request's head with the
//! session for as long as the session lives (handshake data, `req_parts`). Each slice keeps the
//! whole buffer alive: measured with valgrind massif at 1,000 idle WebSocket sessions, 16 KB of
//! heap per session was that buffer. Copying the head (a few hundred bytes) frees it as soon as
//! the upgrade is done.

use axum::{
    extract::{OriginalUri, Request},
    http::{HeaderMap, HeaderName, HeaderValue, Uri},
};

/// The path prefix the socket.io layer serves.
const SOCKETIO_PATH: &str = "/socket.io/";

/// Middleware (`axum::middleware::map_request`): detaches the URI and headers of the requests
/// that open a socket.io session; every other request (polls and upgrades of an existing
/// session, which carry its `sid`, and the rest of the routes) passes untouched.
pub async fn detach_head(req: Request) -> Request {
    if !opens_session(req.uri()) {
        return req;
    }
    let (mut parts, body) = req.into_parts();
    parts.uri = owned_uri(&parts.uri);
    parts.headers = owned_headers(&parts.headers);
    // The router keeps the URI as it arrived in an extension, which the session keeps too.
    if let Some(OriginalUri(original)) = parts.extensions.get::<OriginalUri>() {
        let copy = owned_uri(original);
        parts.extensions.insert(OriginalUri(copy));
    }
    Request::from_parts(parts, body)
}

/// Whether the socket.io layer would open a session for (and keep the head of) a request to
/// `uri`: a request under its path without a `sid` query parameter, the rule it applies itself.
fn opens_session(uri: &Uri) -> bool {
    uri.path().starts_with(SOCKETIO_PATH)
        && !uri
            .query()
            .is_some_and(|q| q.split('&').any(|kv| kv.starts_with("sid=")))
}

/// A URI equal to `uri` in storage of its own.
fn owned_uri(uri: &Uri) -> Uri {
    // Parsing what a valid URI prints cannot fail; keep the original if it ever did.
    Uri::try_from(uri.to_string()).unwrap_or_else(|_| uri.clone())
}

/// A header map equal to `headers` (every value, in order) in storage of its own.
fn owned_headers(headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        // Standard names are static; other names and every value are copied.
        let name =
            HeaderName::from_bytes(name.as_str().as_bytes()).unwrap_or_else(|_| name.clone());
        let mut copied =
            HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
        copied.set_sensitive(value.is_sensitive());
        out.append(name, copied);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use bytes::Bytes;

    /// A request whose URI and header values are slices of one buffer, as the HTTP/1 parser
    /// makes them.
    fn shared_request(buf: &Bytes, path: &str) -> Request {
        let uri = Uri::from_maybe_shared(buf.slice(0..path.len())).unwrap();
        let value = HeaderValue::from_maybe_shared(buf.slice(path.len()..path.len() + 5)).unwrap();
        let mut req = Request::builder()
            .uri(uri.clone())
            .body(Body::empty())
            .unwrap();
        req.extensions_mut().insert(OriginalUri(uri));
        req.headers_mut().append("x-shared", value.clone());
        req.headers_mut()
            .append("x-shared", HeaderValue::from_static("second"));
        req.headers_mut().insert("cookie", value);
        req
    }

    fn is_inside(buf: &Bytes, s: &[u8]) -> bool {
        let (start, end) = (buf.as_ptr() as usize, buf.as_ptr() as usize + buf.len());
        let p = s.as_ptr() as usize;
        p >= start && p < end
    }

    #[tokio::test]
    async fn socketio_request_heads_no_longer_point_into_the_read_buffer() {
        let path = "/socket.io/?EIO=4&transport=websocket";
        let buf = Bytes::from(format!("{path}hello and the rest of a large read buffer"));
        let req = shared_request(&buf, path);
        assert!(is_inside(&buf, req.headers()["x-shared"].as_bytes()));

        let req = detach_head(req).await;
        assert_eq!(req.uri().to_string(), path);
        let values: Vec<&[u8]> = req
            .headers()
            .get_all("x-shared")
            .iter()
            .map(HeaderValue::as_bytes)
            .collect();
        assert_eq!(values, [b"hello".as_slice(), b"second".as_slice()]);
        assert_eq!(req.headers()["cookie"], "hello");
        for (_, v) in req.headers() {
            assert!(!is_inside(&buf, v.as_bytes()), "{v:?} still in the buffer");
        }
        assert!(!is_inside(&buf, req.uri().path().as_bytes()));
        let original = &req.extensions().get::<OriginalUri>().unwrap().0;
        assert_eq!(original.to_string(), path);
        assert!(!is_inside(&buf, original.path().as_bytes()));
    }

    #[tokio::test]
    async fn requests_of_an_open_session_pass_untouched() {
        let path = "/socket.io/?EIO=4&transport=polling&sid=AAAAAAAAAAAAAAAA";
        let buf = Bytes::from(format!("{path}hello"));
        let req = detach_head(shared_request(&buf, path)).await;
        assert!(is_inside(&buf, req.headers()["x-shared"].as_bytes()));
    }

    #[tokio::test]
    async fn other_requests_pass_untouched() {
        let path = "/api/v1/emit?x=1";
        let buf = Bytes::from(format!("{path}hello"));
        let req = detach_head(shared_request(&buf, path)).await;
        assert!(is_inside(&buf, req.headers()["x-shared"].as_bytes()));
    }
}
