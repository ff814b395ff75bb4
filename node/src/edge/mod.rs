//! The HTTP edge of the public listener: the connections it accepts ([`connections`]) and
//! the first middleware every request passes.

pub mod connections;

use std::{net::SocketAddr, sync::Arc};

use axum::{
    extract::{ConnectInfo, Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};

use crate::{
    address_rate::opens_session,
    app::App,
    refusal::{Code, Refused},
};
use connections::Peer;

/// The path the Socket.IO transport serves.
const TRANSPORT_PATH: &str = "/socket.io/";

/// The outermost middleware of the public listener.
///
/// - Gives the request axum's `ConnectInfo<SocketAddr>`, which the checks behind read, and
///   its connection (`Arc<Conn>`), and marks a connection that carries the Socket.IO
///   transport (only those are slow consumers, or told to go by a draining node).
/// - While the node drains, refuses a request that would open a new Engine.IO session with
///   503 `{ok: false, code: "unavailable"}` and `Retry-After`, before any session exists: a
///   load balancer retries it on another node (nginx: `proxy_next_upstream http_503`), and a
///   client without one reconnects with its backoff. A refusal at CONNECT instead would be a
///   `connect_error`, after which socket.io-client does not retry by itself. A request of a
///   session the node does not know gets the same 503 while it drains (see below).
pub async fn gate(State(app): State<Arc<App>>, mut req: Request, next: Next) -> Response {
    if let Some(ConnectInfo(peer)) = req.extensions_mut().remove::<ConnectInfo<Peer>>() {
        if req.uri().path() == TRANSPORT_PATH {
            peer.conn.carries_socketio();
        }
        req.extensions_mut()
            .insert(ConnectInfo::<SocketAddr>(peer.addr));
        req.extensions_mut().insert(peer.conn);
    }
    if app.is_accepting() || req.uri().path() != TRANSPORT_PATH {
        return next.run(req).await;
    }
    if opens_session(&req) {
        app.metrics
            .connects_refused
            .with_label_values(&["draining"])
            .inc();
        return unavailable();
    }
    // A request of a session this node does not hold, while it drains: the client's affinity
    // still points here but its new session is on the node the balancer retried the
    // handshake on. A 503 sends this request there too; engineioxide's own 400 ("Session ID
    // unknown") would end that session.
    let resp = next.run(req).await;
    if resp.status() == StatusCode::BAD_REQUEST {
        return unavailable();
    }
    resp
}

/// 503 `{ok: false, code: "unavailable"}` with `Retry-After`.
fn unavailable() -> Response {
    let e = "this node is shutting down, connect to another";
    let body = axum::Json(Refused::new(Code::Unavailable, e).to_json());
    let mut resp = (StatusCode::SERVICE_UNAVAILABLE, body).into_response();
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    resp
}
