//! The README's broadcasting and room recipes on `/readme`: `shout`, `join`/`leave`, `to`/`in`
//! a room, `tweet`, and `message` echoes.

use super::*;

/// `shout` (data): `shout {from, data}` to every other `/readme` socket on every node
/// (`socket.broadcast.emit`).
pub(super) async fn shout(s: SocketRef<Adapter>, data: TryData<ApiValue>, reply: Reply) {
    let data = parsed(data).unwrap_or(ApiValue::Null);
    let out = Out {
        from: public_id::of(&s),
        room: None,
        data,
    };
    if let Err(e) = s.broadcast().emit("shout", &out).await {
        tracing::debug!(error = %e, "readme: shout partially delivered");
    }
    reply.ack(&json!({"ok": true}));
}

/// What `shout`, `to` and `in` deliver.
#[derive(Serialize)]
pub(super) struct Out {
    from: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    room: Option<String>,
    data: ApiValue,
}

/// `join` and `leave` (room): acked `{ok: true}` once the socket is in (or out of) the room
/// (rooms span nodes).
pub(super) async fn join_or_leave(
    s: SocketRef<Adapter>,
    Event(event): Event,
    r: TryData<String>,
    reply: Reply,
    State(app): State<Arc<App>>,
) {
    let how = if event == "join" {
        RoomUse::Join
    } else {
        RoomUse::Leave
    };
    match room(parsed(r), &admission::identity(&s).grants, how) {
        Ok(r) => {
            if event == "join" {
                joins::join(&s, &app.cluster, r).await;
            } else {
                joins::leave(&s, &app.cluster, r);
            }
            reply.ack(&json!({"ok": true}));
        }
        Err(e) => reply_error(&s, reply, &event, e),
    }
}

/// `to` {room, data}: `room message {from, room, data}` to every member of `room` but the
/// sender (`socket.broadcast.to(room)`).
pub(super) async fn to_room(s: SocketRef<Adapter>, e: TryData<RoomEmit>, reply: Reply) {
    room_emit(s, None, e, reply, "to").await;
}

/// `in` {room, data}: `room message {from, room, data}` to every member of `room`, the sender
/// included when it is one (`io.sockets.in(room)`).
pub(super) async fn in_room(
    s: SocketRef<Adapter>,
    io: SocketIo<Adapter>,
    e: TryData<RoomEmit>,
    reply: Reply,
) {
    room_emit(s, Some(io), e, reply, "in").await;
}

pub(super) async fn room_emit(
    s: SocketRef<Adapter>,
    io: Option<SocketIo<Adapter>>,
    e: TryData<RoomEmit>,
    reply: Reply,
    event: &str,
) {
    let e = match parsed(e) {
        Ok(e) => e,
        Err(err) => {
            let msg = format!("{event} expects {{room, data}}: {err}");
            return reply_error(&s, reply, event, msg);
        }
    };
    let r = match room(
        Ok(e.room),
        &admission::identity(&s).grants,
        RoomUse::Publish,
    ) {
        Ok(r) => r,
        Err(err) => return reply_error(&s, reply, event, err),
    };
    let out = Out {
        from: public_id::of(&s),
        room: Some(r.clone()),
        data: e.data,
    };
    let op = match io.and_then(|io| io.of(NAMESPACE)) {
        Some(ns) => ns.within(r),
        None => s.to(r),
    };
    if let Err(err) = op.emit("room message", &out).await {
        tracing::debug!(error = %err, "readme: room message partially delivered");
    }
    reply.ack(&json!({"ok": true}));
}

/// `tweet` (text): a volatile `bieber tweet {from, text}` to every member of
/// `justin bieber fans` on every node (every socket, unless it left the room).
pub(super) async fn tweet(
    s: SocketRef<Adapter>,
    io: SocketIo<Adapter>,
    t: TryData<String>,
    reply: Reply,
) {
    let t = match text("tweet", parsed(t), MAX_TWEET_CHARS) {
        Ok(t) => t,
        Err(e) => return reply_error(&s, reply, "tweet", e),
    };
    if let Some(ns) = io.of(NAMESPACE)
        && let Err(e) = ns
            .volatile()
            .to(FANS_ROOM)
            .emit(
                "bieber tweet",
                &json!({"from": public_id::of(&s), "text": t}),
            )
            .await
    {
        tracing::debug!(error = %e, "readme: tweet partially delivered");
    }
    reply.ack(&json!({"ok": true}));
}

/// `message` (…args), what `socket.send(…)` emits: echoed to the sender with the same
/// arguments, binary included ("Using it just as a cross-browser WebSocket").
// `_reply`: unused, but its extraction takes the event from the socket's budget.
pub(super) async fn message(s: SocketRef<Adapter>, args: TryData<Args>, _reply: Reply) {
    let Args(args) = parsed(args).unwrap_or_default();
    let _ = s.emit("message", &Args(args));
}
