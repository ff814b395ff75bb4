//! What every namespace does with its sockets: the own-id room, cluster-visible socket data
//! (`set-data`), connection metrics and cleanup.

use std::sync::Arc;

#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod fuzz;

use futures_util::future::BoxFuture;
use socketioxide::{
    extract::{AckSender, Data, SocketRef, State},
    handler::{DisconnectHandler, FromMessageParts, Value},
    socket::{DisconnectReason, Socket},
};

use crate::{
    admission,
    app::{Adapter, App},
    edge::connections::{Closed, Conn},
    joins,
    rate::{EventBudget, Verdict},
    refusal::{Code, Refused},
    session::{public_id, recovery},
};

/// The socket data key holding the token's user (`sub`).
pub const USER_KEY: &str = "user";

/// Largest socket data, serialised, a client may set.
pub const MAX_SOCKET_DATA_BYTES: usize = 16 * 1024;

fn transport(s: &SocketRef<Adapter>) -> &'static str {
    match s.transport_type() {
        socketioxide::TransportType::Websocket => "websocket",
        socketioxide::TransportType::Polling => "polling",
    }
}

/// Work a namespace does when one of its sockets disconnects, after the common cleanup.
pub type OnDisconnect = fn(SocketRef<Adapter>, DisconnectReason) -> BoxFuture<'static, ()>;

/// What every namespace does when a socket connects, before its applications' hooks; `then`
/// runs when the socket disconnects, after the common cleanup (socketioxide keeps one
/// disconnect handler per socket, so an application's own one would replace this one).
pub fn common_connect(s: &SocketRef<Adapter>, app: &Arc<App>, then: Arc<[OnDisconnect]>) {
    // The own-id and user rooms were joined at the handshake (`handshake::middleware`).
    // The event budget was inserted at the handshake (`handshake::middleware`), with the
    // handlers that use it.
    app.admission.opened();
    // A user's sockets share a room on every node, and its id is visible to fetchSockets
    // (`data.user`, which `set-data` cannot change).
    if let Some(user) = &admission::identity(s).user {
        let data = serde_json::json!({ USER_KEY: user });
        app.cluster.set_socket_data(s.ns(), s.id, data);
    }
    let ns = s.ns().to_owned();
    let t = transport(s);
    app.metrics.connects.with_label_values(&[&ns]).inc();
    app.metrics.connections.with_label_values(&[&ns, t]).inc();
    tracing::debug!(sid = %s.id, ns = %ns, transport = t, "connected");
    // The connection that opened the session: its own for a WebSocket client, the first poll's
    // for one that upgrades (whose WebSocket is another connection, logged by its peer).
    let conn = s.req_parts().extensions.get::<Arc<Conn>>().cloned();
    if let Some(c) = &conn {
        c.label(&public_id::of(s));
    }
    s.on("set-data", set_data);
    if let Some(o) = app.observer.get() {
        // Its joins and leaves are reported from `joins`, which has the socket only.
        s.extensions.insert(o.clone());
        o.connected(s);
    }
    recovery::connected(s, app);
    s.on_disconnect(Cleanup {
        app: app.clone(),
        conn,
        transport: t,
        then,
    });
}

/// The common disconnect handler. socketioxide takes a socket out of its namespace only after
/// an async disconnect handler has finished, in a task of its own; until then a CONNECT to the
/// namespace on the same session is dropped as a duplicate, without an answer (a client's
/// `disconnect()` then `connect()` would wait forever). This handler does its work and lets
/// socketioxide remove the socket before it returns, so the next packet of the session finds
/// the namespace free; the applications' `then` hooks run afterwards in a task.
struct Cleanup {
    app: Arc<App>,
    /// The connection that opened the session (see [`common_connect`]).
    conn: Option<Arc<Conn>>,
    transport: &'static str,
    then: Arc<[OnDisconnect]>,
}

impl DisconnectHandler<Adapter, Cleanup> for Cleanup {
    fn call_with_defer(
        &self,
        socket: Arc<Socket<Adapter>>,
        reason: DisconnectReason,
        remove: fn(Arc<Socket<Adapter>>),
    ) {
        let s = SocketRef::from(socket.clone());
        let app = &self.app;
        let ns = s.ns().to_owned();
        app.admission.closed();
        app.metrics
            .connections
            .with_label_values(&[&ns, self.transport])
            .dec();
        let closed = self.conn.as_ref().and_then(|c| c.closed_by_node());
        let why = closed.map_or(reason_label(reason), closed_label);
        app.metrics
            .disconnects
            .with_label_values(&[ns.as_str(), why])
            .inc();
        recovery::disconnected(&s, app);
        if let Some(o) = app.observer.get() {
            o.disconnected(&s, reason);
        }
        app.cluster.remove_socket_data(&ns, s.id);
        // Before `remove`, which takes the socket out of its rooms in socketioxide.
        joins::left_all(&s, &app.cluster);
        remove(socket);
        if self.then.is_empty() {
            return;
        }
        let then = self.then.clone();
        tokio::spawn(async move {
            for then in then.iter() {
                then(s.clone(), reason).await;
            }
        });
    }
}

/// `whoami` (ack): `{ok: true, id}`, the socket's public id: what other clients see of it
/// (`from` fields, member lists) and what they can address it by. Its own `socket.id` is the
/// session id, which it must not show anyone. Registered by the connect middleware, before
/// socketioxide sends CONNECT: a client asks it first thing, and socketioxide calls the connect
/// handler only after it has queued CONNECT, so a stalled thread could let the question arrive
/// before a handler registered there.
pub(crate) async fn whoami(s: SocketRef<Adapter>, ack: AckSender<Adapter>) {
    let _ = ack.send(&serde_json::json!({"ok": true, "id": public_id::of(&s)}));
}

/// The `reason` of a socket whose connection the node closed.
fn closed_label(c: Closed) -> &'static str {
    match c {
        Closed::SlowConsumer => "slow_consumer",
        Closed::Draining => "draining",
    }
}

fn reason_label(r: DisconnectReason) -> &'static str {
    match r {
        DisconnectReason::TransportClose => "transport_close",
        DisconnectReason::MultipleHttpPollingError => "polling_error",
        DisconnectReason::PacketParsingError => "parse_error",
        DisconnectReason::TransportError => "transport_error",
        DisconnectReason::HeartbeatTimeout => "heartbeat_timeout",
        DisconnectReason::ClientNSDisconnect => "client_disconnect",
        DisconnectReason::ServerNSDisconnect => "server_disconnect",
        DisconnectReason::ClosingServer => "server_closing",
        #[allow(unreachable_patterns)]
        _ => "other",
    }
}

/// `set-data` `{...}`: merges the object into the socket's data, visible from every node.
async fn set_data(
    s: SocketRef<Adapter>,
    Data(patch): Data<serde_json::Value>,
    ack: AckSender<Adapter>,
    State(app): State<Arc<App>>,
) {
    if let Err(r) = take_event(&s, &app) {
        let _ = ack.send(&r.to_json());
        return;
    }
    let current = app.cluster.socket_data(s.ns(), s.id);
    let data = match merged_data(current, patch, app.admission.verifies_tokens()) {
        Ok(data) => data,
        Err(r) => {
            let _ = ack.send(&r.to_json());
            return;
        }
    };
    app.cluster.set_socket_data(s.ns(), s.id, data);
    recovery::changed(&s);
    let _ = ack.send(&serde_json::json!({"ok": true}));
}

/// A socket's data after a client's `set-data` patch: the patch must be an object, may not
/// set the token's user when tokens are verified, and the result must stay within
/// [`MAX_SOCKET_DATA_BYTES`] serialised.
///
/// # Errors
/// The refusal to answer the client with.
pub fn merged_data(
    current: serde_json::Value,
    patch: serde_json::Value,
    verifies_tokens: bool,
) -> Result<serde_json::Value, Refused> {
    let serde_json::Value::Object(patch) = patch else {
        return Err(Refused::new(Code::BadRequest, "set-data expects an object"));
    };
    // Only the node writes the token's user; without auth the key is the client's.
    if verifies_tokens && patch.contains_key(USER_KEY) {
        let error = format!("{USER_KEY} is set by the node, from the connection's token");
        return Err(Refused::new(Code::Forbidden, error));
    }
    let mut data = match current {
        serde_json::Value::Object(m) => m,
        _ => serde_json::Map::new(),
    };
    for (k, v) in patch {
        data.insert(k, v);
    }
    let data = serde_json::Value::Object(data);
    let size = data.to_string().len();
    if size > MAX_SOCKET_DATA_BYTES {
        let error = format!("socket data of {size} bytes exceeds {MAX_SOCKET_DATA_BYTES}");
        return Err(Refused::new(Code::TooLarge, error));
    }
    Ok(data)
}

/// The event every client event that finds no answer of its own is refused with, when the
/// client sent no ack callback.
pub const REFUSED_EVENT: &str = "ioscale-error";

/// Takes one event of `s` from its budget (see `rate`), counting it.
///
/// # Errors
/// The refusal to send back; when the client went on sending into an empty budget the socket
/// is also disconnected.
pub fn take_event(s: &SocketRef<Adapter>, app: &App) -> Result<(), Refused> {
    app.metrics.events.with_label_values(&[s.ns()]).inc();
    match budget(s) {
        Some(b) => charge(s, app, &b),
        None => Ok(()),
    }
}

/// The event budget `common_connect` gave `s`.
pub fn budget(s: &Socket<Adapter>) -> Option<Arc<EventBudget>> {
    s.extensions.get::<Arc<EventBudget>>()
}

/// [`take_event`] for a handler that counts its events and keeps the socket's budget itself
/// (`/pubsub`'s publish, both resolved once per socket).
///
/// # Errors
/// As [`take_event`].
pub fn charge(s: &SocketRef<Adapter>, app: &App, budget: &EventBudget) -> Result<(), Refused> {
    let reason = match budget.take() {
        Verdict::Accepted => return Ok(()),
        Verdict::Refused => "rate_limited",
        Verdict::Abusive => {
            tracing::info!(sid = %s.id, ns = s.ns(), "disconnecting a socket over its event budget");
            let _ = s.clone().disconnect();
            "abuse_disconnect"
        }
    };
    app.metrics
        .events_refused
        .with_label_values(&[reason])
        .inc();
    Err(Refused::new(
        Code::Busy,
        "too many events: over --event-rate-per-s, slow down",
    ))
}

/// Answers a client: through its ack callback when it sent one, else as an event (the
/// socketioxide `AckSender` alone cannot tell, and silently drops the answer).
pub struct Reply {
    ack: AckSender<Adapter>,
    has_ack: bool,
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reply")
            .field("has_ack", &self.has_ack)
            .finish_non_exhaustive()
    }
}

/// An event refused over its socket's budget; the client has been told.
#[derive(Debug, thiserror::Error)]
#[error("event over the socket's budget")]
pub struct OverBudget;

/// Every handler that answers through a [`Reply`] takes its event from the socket's budget
/// here: over budget the handler does not run, and the client gets the refusal (through its
/// ack, or as [`REFUSED_EVENT`]).
impl FromMessageParts<Adapter> for Reply {
    type Error = OverBudget;
    fn from_message_parts(
        s: &Arc<Socket<Adapter>>,
        v: &mut Value,
        ack_id: &Option<i64>,
    ) -> Result<Self, Self::Error> {
        let Ok(ack) = AckSender::from_message_parts(s, v, ack_id);
        let reply = Reply {
            ack,
            has_ack: ack_id.is_some(),
        };
        if let Ok(State(app)) = State::<Arc<App>>::from_message_parts(s, v, ack_id)
            && let Err(r) = take_event(&SocketRef::from(s.clone()), &app)
        {
            if reply.has_ack {
                let _ = reply.ack.send(&r.to_json());
            } else {
                let _ = s.emit(REFUSED_EVENT, &r.to_json());
            }
            return Err(OverBudget);
        }
        Ok(reply)
    }
}

impl Reply {
    /// Whether the client asked for an ack.
    pub fn has_ack(&self) -> bool {
        self.has_ack
    }

    /// Sends `body` through the ack, or emits `event` with it when there is no ack.
    pub fn send(self, s: &SocketRef<Adapter>, event: &str, body: &serde_json::Value) {
        if self.has_ack {
            let _ = self.ack.send(body);
        } else {
            let _ = s.emit(event, body);
        }
    }

    /// Sends `body` through the ack if there is one; nothing otherwise.
    pub fn ack(self, body: &serde_json::Value) {
        if self.has_ack {
            let _ = self.ack.send(body);
        }
    }

    /// Sends any serialisable `body` (binary parts included) through the ack if there is one.
    pub fn ack_with<T: serde::Serialize + ?Sized>(self, body: &T) {
        if self.has_ack {
            let _ = self.ack.send(body);
        }
    }
}
