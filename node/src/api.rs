//! The server HTTP API for backends (`/api/v1/*`): emit, sockets, rooms, join/leave,
//! disconnect, nodes and server-to-server events, across the whole cluster.
//!
//! JSON in and out; binary values are `{"$binary": "<base64>"}`; errors are
//! `{"ok": false, "error", "code", "request_id"}` with a 4xx status (503 when the cluster
//! cannot answer; the cause is logged with the request id, not sent); `Authorization: Bearer
//! <key>` always: with no key configured the API is off (404 on every route).

use std::time::Duration;

use axum::{
    Router,
    body::Bytes,
    extract::{
        Query, Request, State,
        rejection::{BytesRejection, QueryRejection},
    },
    http::{StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use ioscale_adapter::{MAX_EVENT_NAME_BYTES, NamespaceHandle, all_sockets};
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::{Value as Json, json};
use socketioxide::operators::BroadcastOperators;
use socketioxide_core::{adapter::BroadcastFlags, packet::Packet, parser::Parse};
use socketioxide_parser_common::CommonParser;

use crate::{
    app::{Adapter, HttpState},
    session::public_id,
    value::{ApiValue, Args},
};

#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod fuzz;

/// Longest ack timeout a caller may ask for.
pub const MAX_ACK_TIMEOUT_MS: u64 = 60_000;
/// Events a backend may not emit: they are part of the protocol.
const RESERVED_EVENTS: [&str; 6] = [
    "connect",
    "connect_error",
    "disconnect",
    "disconnecting",
    "newListener",
    "removeListener",
];

/// An API error: a status, a message for the caller, and a request id that the log line of
/// an internal cause carries too, so an operator can find it from the caller's answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    request_id: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            request_id: crate::refusal::new_request_id(),
        }
    }

    fn bad(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, msg)
    }

    /// The short, stable code of the answer (`code`), from its status.
    fn code(&self) -> &'static str {
        match self.status {
            StatusCode::BAD_REQUEST => "bad_request",
            StatusCode::UNAUTHORIZED => "unauthorized",
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
            StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            StatusCode::SERVICE_UNAVAILABLE => "unavailable",
            s if s.is_client_error() => "client_error",
            _ => "server_error",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "ok": false,
            "error": self.message,
            "code": self.code(),
            "request_id": self.request_id,
        });
        (self.status, axum::Json(body)).into_response()
    }
}

/// Maps a failed cluster operation of `route` to what the caller may see: a message too large
/// for the cluster is the caller's to fix (413); anything else is Redis or the adapter, whose
/// error text is internal: logged here, and the caller gets a fixed 503.
fn cluster_error(route: &'static str) -> impl FnOnce(ioscale_adapter::Error) -> ApiError {
    move |e| match e {
        ioscale_adapter::Error::TooLarge { size, limit } => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("message of {size} bytes exceeds the cluster's limit of {limit} bytes"),
        ),
        e => {
            let err = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "cluster unavailable, retry later",
            );
            tracing::warn!(error = %e, route, request_id = %err.request_id, "server API: cluster operation failed");
            err
        }
    }
}

type ApiResult = Result<axum::Json<Json>, ApiError>;

/// The routes, behind the bearer-token check.
pub fn router(state: HttpState) -> Router<HttpState> {
    Router::new()
        .route("/api/v1/emit", post(emit))
        .route("/api/v1/sockets", get(sockets))
        .route("/api/v1/rooms", get(rooms))
        .route("/api/v1/rooms/{room}/presence", get(presence))
        .route("/api/v1/join", post(join))
        .route("/api/v1/leave", post(leave))
        .route("/api/v1/disconnect", post(disconnect))
        .route("/api/v1/nodes", get(nodes))
        .route("/api/v1/server-emit", post(server_emit))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "unknown API route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this route",
            )
        })
        .layer(middleware::from_fn_with_state(state, auth))
}

async fn auth(State(st): State<HttpState>, req: Request, next: Next) -> Response {
    let keys = &st.app.api_keys;
    let refused = if keys.is_off() {
        Some((
            "off",
            ApiError::new(
                StatusCode::NOT_FOUND,
                "the server API is off: start the node with --api-key or --api-key-file",
            ),
        ))
    } else {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "))
            .unwrap_or("");
        (!keys.admits(given)).then(|| {
            let e = ApiError::new(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
            ("auth", e)
        })
    };
    if let Some((route, e)) = refused {
        let status = e.status;
        st.app
            .metrics
            .api_requests
            .with_label_values(&[route, status.as_str()])
            .inc();
        return e.into_response();
    }
    let route = req.uri().path().trim_start_matches("/api/v1/").to_owned();
    let route = match route.as_str() {
        "emit" | "sockets" | "rooms" | "join" | "leave" | "disconnect" | "nodes"
        | "server-emit" => route,
        _ => "other".to_owned(),
    };
    let res = next.run(req).await;
    st.app
        .metrics
        .api_requests
        .with_label_values(&[&route, res.status().as_str()])
        .inc();
    res
}

/// Parses a JSON body; any malformed or mistyped body is a 400 with serde's explanation. A body
/// axum would not read (too large, broken) is answered like every API error, with its status.
fn body<T: DeserializeOwned>(bytes: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let bytes = bytes.map_err(|e| ApiError::new(e.status(), e.body_text()))?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::bad(format!("invalid JSON body: {e}")))
}

/// A query string axum could not parse (a repeated parameter, say) is a 400 like the others.
fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(q)| q)
        .map_err(|e| ApiError::new(e.status(), e.body_text()))
}

fn namespace(
    st: &HttpState,
    ns: Option<String>,
) -> Result<(String, BroadcastOperators<Adapter>), ApiError> {
    let ns = ns.unwrap_or_else(|| "/".to_owned());
    match st.io.of(&ns) {
        Some(op) => Ok((ns, op)),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("unknown namespace {ns:?}"),
        )),
    }
}

fn handle(st: &HttpState, ns: &str) -> Result<std::sync::Arc<dyn NamespaceHandle>, ApiError> {
    st.app.cluster.namespace(ns).ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("namespace {ns:?} is not ready"),
        )
    })
}

fn check_rooms(rooms: &[String]) -> Result<(), ApiError> {
    if rooms.iter().any(|r| crate::rooms::check(r).is_err()) {
        return Err(ApiError::bad("room names must be 1-256 characters"));
    }
    Ok(())
}

/// Rooms an API call may put sockets in or take them out of: any valid name but a socket's own
/// room, shaped like a public id. The node alone puts a socket there, so it is the one room of
/// that shape a socket is in, which is how every node reads a socket's public id back.
fn check_joinable(rooms: &[String]) -> Result<(), ApiError> {
    check_rooms(rooms)?;
    if rooms.iter().any(|r| public_id::is_shaped(r)) {
        return Err(ApiError::bad(
            "names shaped like public ids are sockets' own rooms: the node's alone",
        ));
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EmitBody {
    namespace: Option<String>,
    #[serde(default)]
    rooms: Vec<String>,
    #[serde(default)]
    except: Vec<String>,
    event: String,
    #[serde(default)]
    args: Vec<Json>,
    #[serde(default)]
    volatile: bool,
    /// Only to this node's sockets.
    #[serde(default)]
    local: bool,
    ack_timeout_ms: Option<u64>,
}

/// Checks an emit body: an event that is not the protocol's, valid rooms, `$binary` values
/// decoded, an ack timeout in range. Returns the body without its args, and the args.
fn emit_request(mut b: EmitBody) -> Result<(EmitBody, Args), ApiError> {
    if b.event.is_empty() || RESERVED_EVENTS.contains(&b.event.as_str()) {
        return Err(ApiError::bad(format!(
            "event {:?} cannot be emitted",
            b.event
        )));
    }
    check_rooms(&b.rooms)?;
    check_rooms(&b.except)?;
    check_ack_timeout(b.ack_timeout_ms)?;
    let args = std::mem::take(&mut b.args)
        .into_iter()
        .map(ApiValue::from_json)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::bad(e.to_string()))?;
    Ok((b, Args(args)))
}

fn check_ack_timeout(ms: Option<u64>) -> Result<(), ApiError> {
    match ms {
        Some(ms) if ms == 0 || ms > MAX_ACK_TIMEOUT_MS => Err(ApiError::bad(format!(
            "ack_timeout_ms must be 1-{MAX_ACK_TIMEOUT_MS}"
        ))),
        _ => Ok(()),
    }
}

async fn emit(State(st): State<HttpState>, bytes: Result<Bytes, BytesRejection>) -> ApiResult {
    let (mut b, args) = emit_request(body(bytes)?)?;
    let (ns, op) = namespace(&st, b.namespace.take())?;
    match b.ack_timeout_ms {
        None => {
            let mut op = op.to(b.rooms).except(b.except);
            if b.volatile {
                op = op.volatile();
            }
            if b.local {
                op = op.local();
            }
            // Sockets with a full buffer are counted by the adapter; the emit itself went out.
            if let Err(e) = op.emit(&b.event, &args).await {
                tracing::debug!(error = %e, "emit partially delivered");
            }
            Ok(axum::Json(json!({"ok": true})))
        }
        Some(ms) => emit_with_acks(&st, &ns, b, args, Duration::from_millis(ms)).await,
    }
}

/// `POST /api/v1/emit` with `ack_timeout_ms`: the answers of the sockets that acked, and the
/// others listed apart, each with a stable code (`timeout`, `socket_closed`, ...), never the
/// transport's text.
async fn emit_with_acks(
    st: &HttpState,
    ns: &str,
    b: EmitBody,
    args: Args,
    timeout: Duration,
) -> ApiResult {
    let h = handle(st, ns)?;
    let parser = CommonParser;
    let value = parser.encode_value(&args, Some(&b.event)).map_err(|e| {
        tracing::debug!(error = %e, "server API: emit args not encodable");
        ApiError::bad("cannot encode args")
    })?;
    let packet = Packet::event(ns.to_owned(), value);
    let mut opts = all_sockets();
    let rooms = b.rooms.clone();
    opts.rooms = b.rooms.into_iter().map(Into::into).collect();
    opts.except = b.except.into_iter().map(Into::into).collect();
    if b.volatile {
        opts.add_flag(BroadcastFlags::Volatile);
    }
    if b.local {
        opts.add_flag(BroadcastFlags::Local);
    }
    let report = h
        .broadcast_with_ack_report(packet, opts, timeout)
        .await
        .map_err(cluster_error("emit"))?;
    // The report names sockets by session id; answers name them by public id (`null` for a
    // socket gone since it answered, or when the cluster could not say).
    let ids = public_id::by_session(h.as_ref(), rooms).await;
    let mut acks: Vec<Json> = Vec::new();
    let mut errors: Vec<Json> = Vec::new();
    for a in report.acks {
        let socket = ids.get(&a.socket);
        match a.response {
            Ok(mut v) => {
                let response = parser
                    .decode_value::<ApiValue>(&mut v, false)
                    .map(ApiValue::into_json)
                    .unwrap_or(Json::Null);
                acks.push(json!({"socket": socket, "node": a.node, "response": response}));
            }
            Err(e) => errors.push(json!({"socket": socket, "node": a.node, "error": e.as_str()})),
        }
    }
    Ok(axum::Json(json!({
        "acks": acks,
        "errors": errors,
        "complete": report.complete,
        "missing_nodes": report.missing_nodes,
    })))
}

#[derive(Debug, Deserialize)]
struct SocketsQuery {
    namespace: Option<String>,
    rooms: Option<String>,
}

fn split_rooms(rooms: Option<String>) -> Vec<String> {
    rooms
        .map(|r| {
            r.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

async fn sockets(
    State(st): State<HttpState>,
    q: Result<Query<SocketsQuery>, QueryRejection>,
) -> ApiResult {
    let q = query(q)?;
    let (ns, _) = namespace(&st, q.namespace)?;
    let mut opts = all_sockets();
    opts.rooms = split_rooms(q.rooms).into_iter().map(Into::into).collect();
    let report = handle(&st, &ns)?
        .fetch_sockets_report(opts)
        .await
        .map_err(cluster_error("sockets"))?;
    let sockets: Vec<Json> = report
        .sockets
        .into_iter()
        .map(|s| {
            // Operators see the public id, like the applications' clients: the session id is
            // a key to the session, and API answers end up in logs.
            let id = public_id::in_rooms(&s.rooms);
            json!({"id": id, "node": s.node, "rooms": s.rooms, "data": s.data})
        })
        .collect();
    Ok(axum::Json(
        json!({"sockets": sockets, "missing_nodes": report.missing_nodes}),
    ))
}

#[derive(Debug, Deserialize)]
struct NsQuery {
    namespace: Option<String>,
}

async fn rooms(
    State(st): State<HttpState>,
    q: Result<Query<NsQuery>, QueryRejection>,
) -> ApiResult {
    let q = query(q)?;
    let (ns, _) = namespace(&st, q.namespace)?;
    let report = handle(&st, &ns)?
        .rooms_report(all_sockets())
        .await
        .map_err(cluster_error("rooms"))?;
    Ok(axum::Json(
        json!({"rooms": report.rooms, "missing_nodes": report.missing_nodes}),
    ))
}

/// `GET /api/v1/rooms/{room}/presence?namespace=` (`/pubsub` by default): `{ok: true,
/// namespace, room, count, members}`, one Redis command (see `presence`).
async fn presence(
    State(st): State<HttpState>,
    axum::Extension(p): axum::Extension<crate::presence::Handle>,
    axum::extract::Path(room): axum::extract::Path<String>,
    q: Result<Query<NsQuery>, QueryRejection>,
) -> ApiResult {
    let ns = query(q)?
        .namespace
        .unwrap_or_else(|| crate::pubsub::NAMESPACE.to_owned());
    namespace(&st, Some(ns.clone()))?;
    let unavailable = |e: String| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e);
    let p =
        p.0.ok_or_else(|| unavailable("presence needs the cluster's Redis".into()))?;
    let snap = p
        .read(&ns, &room, &p.alive(&st.app))
        .await
        .map_err(|r| unavailable(r.error))?;
    Ok(axum::Json(
        json!({"ok": true, "namespace": ns, "room": snap.room,
        "count": snap.count, "members": snap.members}),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetBody {
    namespace: Option<String>,
    #[serde(default)]
    rooms: Vec<String>,
    #[serde(default)]
    except: Vec<String>,
    #[serde(default)]
    sockets: Vec<String>,
    #[serde(default)]
    join: Vec<String>,
    #[serde(default)]
    leave: Vec<String>,
}

/// The sockets a join/leave/disconnect call targets: rooms and socket ids (every socket is in
/// its own-id room), all sockets when neither is given.
fn target(st: &HttpState, b: &TargetBody) -> Result<BroadcastOperators<Adapter>, ApiError> {
    check_rooms(&b.rooms)?;
    check_rooms(&b.except)?;
    check_rooms(&b.sockets)?;
    let (_, op) = namespace(st, b.namespace.clone())?;
    let mut within: Vec<String> = b.rooms.clone();
    within.extend(b.sockets.iter().cloned());
    Ok(op.within(within).except(b.except.clone()))
}

async fn join(State(st): State<HttpState>, bytes: Result<Bytes, BytesRejection>) -> ApiResult {
    let b: TargetBody = body(bytes)?;
    if b.join.is_empty() || !b.leave.is_empty() {
        return Err(ApiError::bad(
            "join needs a non-empty \"join\" list of rooms",
        ));
    }
    check_joinable(&b.join)?;
    target(&st, &b)?
        .join(b.join.clone())
        .await
        .map_err(cluster_error("join"))?;
    Ok(axum::Json(json!({"ok": true})))
}

async fn leave(State(st): State<HttpState>, bytes: Result<Bytes, BytesRejection>) -> ApiResult {
    let b: TargetBody = body(bytes)?;
    if b.leave.is_empty() || !b.join.is_empty() {
        return Err(ApiError::bad(
            "leave needs a non-empty \"leave\" list of rooms",
        ));
    }
    check_joinable(&b.leave)?;
    target(&st, &b)?
        .leave(b.leave.clone())
        .await
        .map_err(cluster_error("leave"))?;
    Ok(axum::Json(json!({"ok": true})))
}

async fn disconnect(
    State(st): State<HttpState>,
    bytes: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let b: TargetBody = body(bytes)?;
    if !b.join.is_empty() || !b.leave.is_empty() {
        return Err(ApiError::bad("disconnect takes no join or leave list"));
    }
    if let Err(e) = target(&st, &b)?.disconnect().await {
        // Sockets already gone are not an error for the caller.
        tracing::debug!(error = %e, "disconnect partially applied");
    }
    Ok(axum::Json(json!({"ok": true})))
}

async fn nodes(
    State(st): State<HttpState>,
    q: Result<Query<NsQuery>, QueryRejection>,
) -> ApiResult {
    let q = query(q)?;
    let (ns, _) = namespace(&st, q.namespace)?;
    let nodes: Vec<Json> = handle(&st, &ns)?
        .nodes()
        .into_iter()
        .map(|n| json!({"id": n.id, "sockets": n.sockets, "last_seen_ms": n.last_seen.as_millis() as u64}))
        .collect();
    Ok(axum::Json(json!({"nodes": nodes})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerEmitBody {
    namespace: Option<String>,
    event: String,
    #[serde(default)]
    args: Vec<Json>,
    ack_timeout_ms: Option<u64>,
}

/// Checks a server-emit body: an event name the other nodes take (they refuse longer ones),
/// an ack timeout in range.
fn server_emit_request(b: &ServerEmitBody) -> Result<(), ApiError> {
    if b.event.is_empty() || b.event.len() > MAX_EVENT_NAME_BYTES {
        return Err(ApiError::bad(format!(
            "event must be 1-{MAX_EVENT_NAME_BYTES} bytes"
        )));
    }
    check_ack_timeout(b.ack_timeout_ms)
}

async fn server_emit(
    State(st): State<HttpState>,
    bytes: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let b: ServerEmitBody = body(bytes)?;
    server_emit_request(&b)?;
    let (ns, _) = namespace(&st, b.namespace)?;
    let report = handle(&st, &ns)?
        .server_side_emit(
            b.event,
            Json::Array(b.args),
            b.ack_timeout_ms.map(Duration::from_millis),
        )
        .await
        .map_err(cluster_error("server-emit"))?;
    if b.ack_timeout_ms.is_none() {
        return Ok(axum::Json(json!({"ok": true})));
    }
    let responses: Vec<Json> = report
        .responses
        .into_iter()
        .map(|(node, response)| json!({"node": node, "response": response}))
        .collect();
    Ok(axum::Json(json!({
        "responses": responses,
        "complete": report.complete,
        "missing_nodes": report.missing_nodes,
    })))
}
