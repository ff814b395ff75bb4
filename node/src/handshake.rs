//! The connect middleware every namespace runs before socketioxide sends CONNECT: the node's
//! [`Admission`](crate::admission::Admission) decides, a refusal is counted and becomes the client's `connect_error`.

use std::sync::Arc;

use socketioxide::{
    SocketIo,
    extract::{SocketRef, State, TryData},
};

use crate::{
    admission::Refusal,
    app::{Adapter, App},
    joins,
    rate::EventBudget,
    rooms,
    session::{public_id, recovery},
    sockets,
};

/// The connect middleware of every namespace: admits the handshake or refuses it.
///
/// # Errors
/// The refusal the client gets as its `connect_error` message.
pub(crate) async fn middleware(
    s: SocketRef<Adapter>,
    io: SocketIo<Adapter>,
    State(app): State<Arc<App>>,
    TryData(payload): TryData<serde_json::Value>,
) -> Result<(), Refusal> {
    // Socket.IO v5: the payload is an object or absent. socketioxide's parser lets any JSON
    // through; the reference server closes the connection, the node tells the client why.
    let payload = payload.ok();
    if payload.as_ref().is_some_and(|v| !v.is_object()) {
        return Err(refused(&s, &app, Refusal::BadPayload));
    }
    // `{token}`, as socket.io-client (`auth: {token}`) and python-socketio send it.
    let token = payload
        .as_ref()
        .and_then(|v| v.get("token"))
        .and_then(serde_json::Value::as_str);
    match app.admission.admit(s.ns(), !app.is_accepting(), token) {
        Ok(identity) => {
            // Like Node's socket.io: every socket is in a room named by its id, so a server
            // can target it on any node; a user's sockets share a room on every node. Joined
            // here, before the client hears it is connected, so that a broadcast to either
            // made after that reaches it. The id is the public one: the session id is a key
            // to the session (see `session`).
            let restored = match recovery::asked(payload.as_ref()) {
                Some(ask) => recovery::admit(&s, &app, &ask, identity.user.as_deref()).await,
                None => None,
            };
            let (id, kept_rooms) = match restored {
                Some(r) => (public_id::assign_as(&s, r.id), r.rooms),
                None => (public_id::assign(&s), Vec::new()),
            };
            let mut own = vec![id];
            s.on("whoami", sockets::whoami);
            own.extend(identity.user.as_deref().map(rooms::user_room));
            own.extend(kept_rooms);
            s.extensions.insert(identity);
            s.extensions
                .insert(Arc::new(EventBudget::new(app.config.event_limits())));
            // Before CONNECT: the client may emit the moment it hears it (see `Register`).
            let registers = app.registers.get().and_then(|r| r.get(s.ns()));
            for register in registers.into_iter().flatten() {
                register(&s, &io, &app);
            }
            joins::join(&s, &app.cluster, own).await;
            Ok(())
        }
        Err(r) => Err(refused(&s, &app, r)),
    }
}

/// Counts a refused handshake and hands the refusal back.
fn refused(s: &SocketRef<Adapter>, app: &App, r: Refusal) -> Refusal {
    app.metrics
        .connects_refused
        .with_label_values(&[r.code()])
        .inc();
    tracing::debug!(ns = s.ns(), reason = r.code(), "handshake refused");
    r
}
