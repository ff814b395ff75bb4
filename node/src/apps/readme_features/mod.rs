//! The Socket.IO 0.9 README's recipes (seed "Socket.IO Readme.md") as a cluster-wide
//! application: custom events, per-socket data (`set nickname` / `ready` / `msg`), the `/chat`
//! and `/news` namespaces multiplexed on one connection, acknowledgements both ways, broadcasts,
//! rooms, volatile `bieber tweet`s and plain `message` / `send`.
//!
//! The README's recipes run on `/`; here they run on [`NAMESPACE`] (`/readme`) because `/`
//! already carries the chat demo and the CRUD dialects, and the recipes greet every connection
//! with cluster-wide broadcasts (`this`, `user connected`, `new fan`) and a tweet stream that a
//! chat client must not receive. `/chat` and `/news` are the README's own namespaces. Every
//! event name and payload is listed in the README's "Socket.IO README features" section.
//!
//! Every broadcast goes through the cluster adapter, so "everyone" means every socket of the
//! namespace on every node, and rooms span nodes.

use std::{sync::Arc, time::Duration};

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};
use socketioxide::{
    SocketIo,
    extract::{Event, SocketRef, State, TryData},
    socket::DisconnectReason,
};
use socketioxide_core::{packet::Packet, parser::Parse};
use socketioxide_parser_common::CommonParser;

use crate::{
    admission,
    app::{Adapter, App},
    application::{Application, Setup},
    joins,
    refusal::{Code, Refused},
    rooms::{self, Grants, MAX_ROOM_CHARS},
    session::public_id,
    sockets::Reply,
    value::{ApiValue, Args},
};

mod ask;
mod chat_news;
mod room_events;

use self::{ask::*, chat_news::*, room_events::*};

/// The namespace of the README's recipes that the README runs on `/`.
pub const NAMESPACE: &str = "/readme";
/// The README's `/chat` namespace ("Restricting yourself to a namespace").
pub const CHAT_NAMESPACE: &str = "/chat";
/// The README's `/news` namespace.
pub const NEWS_NAMESPACE: &str = "/news";

/// Room every `/readme` socket joins on connection ("Rooms": `socket.join('justin bieber fans')`).
pub const FANS_ROOM: &str = "justin bieber fans";
/// Room whose members get `new non-fan` whenever a socket connects.
pub const NON_FANS_ROOM: &str = "rammstein fans";
/// Interval of each socket's volatile `bieber tweet` stream (the README's `setInterval(…, 100)`).
pub const TWEET_INTERVAL: Duration = Duration::from_millis(100);
/// Event through which errors reach clients that sent no ack callback.
pub const ERROR_EVENT: &str = "readme-error";

/// Longest nickname.
pub const MAX_NICKNAME_CHARS: usize = 100;
/// Longest `msg` text.
pub const MAX_MSG_CHARS: usize = 10_000;
/// Longest `tweet` text.
pub const MAX_TWEET_CHARS: usize = 280;

// --- input ----------------------------------------------------------------------------------

/// `{room, data}` of `to` and `in`.
#[derive(Debug, Deserialize)]
struct RoomEmit {
    room: String,
    #[serde(default = "null")]
    data: ApiValue,
}

/// `{to, question}` of `ask`.
#[derive(Debug, Deserialize)]
struct Ask {
    to: String,
    #[serde(default = "null")]
    question: ApiValue,
}

fn null() -> ApiValue {
    ApiValue::Null
}

/// A string of 1 to `max` characters that is not only whitespace.
fn text(what: &str, v: Result<String, String>, max: usize) -> Result<String, String> {
    let s = v.map_err(|e| format!("{what} must be a string ({e})"))?;
    if s.trim().is_empty() || s.chars().count() > max {
        return Err(format!("{what} must be 1-{max} characters"));
    }
    Ok(s)
}

/// What a client wants to do with a room it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RoomUse {
    Join,
    Leave,
    Publish,
}

/// A room the client may use this way (see `rooms`): every socket sits in a room named by its
/// id, so joining one would let a client read another socket's private events; beyond the
/// reserved rooms, the connection's grants decide.
fn room(v: Result<String, String>, grants: &Grants, how: RoomUse) -> Result<String, Refused> {
    let r = v.map_err(|e| format!("room must be a string ({e})"))?;
    match how {
        RoomUse::Join => grants.may_join(&r)?,
        RoomUse::Publish => grants.may_publish(&r)?,
        RoomUse::Leave => rooms::check_client(&r)?,
    }
    Ok(r)
}

fn parsed<T>(TryData(d): TryData<T>) -> Result<T, String> {
    d.map_err(|e| e.to_string())
}

/// Answers an error: `{ok: false, code, error}` through the ack when the client sent one,
/// else `readme-error {event, ok: false, code, error}`.
fn reply_error(s: &SocketRef<Adapter>, reply: Reply, event: &str, error: impl Into<Refused>) {
    let r: Refused = error.into();
    tracing::debug!(sid = %s.id, event, error = %r.error, "readme: refused");
    if reply.has_ack() {
        reply.ack(&r.to_json());
    } else {
        reply.send(s, ERROR_EVENT, &r.to_json_with([("event", event.into())]));
    }
}

/// What a client is told when a cluster request fails: Redis's and the adapter's error text is
/// internal, so it is logged under a request id and the client gets a fixed message.
fn cluster_unavailable(event: &str, e: &ioscale_adapter::Error) -> Refused {
    Refused::internal(
        Code::Unavailable,
        "cluster unavailable, retry later",
        event,
        e,
    )
}

/// The namespace's handle is gone: the node is closing.
fn not_ready() -> Refused {
    Refused::new(Code::Unavailable, "namespace not ready")
}

// --- /readme --------------------------------------------------------------------------------

/// Connect hook of `/readme`: the README's connection-time recipes, in its order.
/// The recipes' events on `/readme`, registered at the handshake.
fn register(s: &SocketRef<Adapter>, _io: &SocketIo<Adapter>, _app: &Arc<App>) {
    s.on("my other event", my_other_event);
    s.on("private message", private_message);
    s.on("set nickname", set_nickname);
    s.on("msg", msg);
    s.on("nicknames", nicknames);
    s.on("ferret", ferret);
    s.on("ask", ask);
    s.on("shout", shout);
    s.on("join", join_or_leave);
    s.on("leave", join_or_leave);
    s.on("to", to_room);
    s.on("in", in_room);
    s.on("tweet", tweet);
    s.on("message", message);
}

async fn on_connect(s: SocketRef<Adapter>, io: SocketIo<Adapter>, app: Arc<App>) {
    connection_broadcasts(&s, &io, &app).await;
    // "How to use": a greeting for this socket only. It comes last, once the broadcasts above
    // are handed to the cluster, so a client that got it knows they are on their way.
    let _ = s.emit("news", &json!({"hello": "world"}));
    // "Sending volatile messages".
    tokio::spawn(tweet_stream(s.clone()));
}

/// The README's connection-time broadcasts, in its order, each handed to the cluster before
/// the next.
async fn connection_broadcasts(s: &SocketRef<Adapter>, io: &SocketIo<Adapter>, app: &App) {
    let Some(ns) = io.of(NAMESPACE) else { return };
    // Broadcasts reach every node; a full local buffer is counted by the adapter, so errors
    // here only need a debug line.
    let log = |what: &str, r: Result<(), socketioxide::BroadcastError>| {
        if let Err(e) = r {
            tracing::debug!(error = %e, what, "readme: broadcast partially delivered");
        }
    };
    // "Sending and receiving events": everyone, this socket included.
    log(
        "this",
        ns.clone()
            .emit("this", &json!({"will": "be received by everyone"}))
            .await,
    );
    // "Broadcasting messages": everyone but this socket.
    log(
        "user connected",
        s.broadcast()
            .emit("user connected", &Args(Vec::new()))
            .await,
    );
    log(
        "message",
        s.broadcast()
            .emit("message", &json!({"a": "message"}))
            .await,
    );
    // "Rooms".
    joins::join(s, &app.cluster, FANS_ROOM).await;
    log(
        "new fan",
        s.broadcast()
            .to(FANS_ROOM)
            .emit("new fan", &Args(Vec::new()))
            .await,
    );
    log(
        "new non-fan",
        ns.within(NON_FANS_ROOM)
            .emit("new non-fan", &Args(Vec::new()))
            .await,
    );
}

/// "Sending and receiving events": `io.sockets.emit('user disconnected')`, to every other
/// socket on every node.
fn on_disconnect(s: SocketRef<Adapter>, reason: DisconnectReason) -> BoxFuture<'static, ()> {
    Box::pin(async move {
        tracing::debug!(sid = %s.id, ?reason, "readme: disconnected");
        // A closing node is leaving the cluster; its sockets reconnect elsewhere.
        if matches!(reason, DisconnectReason::ClosingServer) {
            return;
        }
        if let Err(e) = s
            .broadcast()
            .emit("user disconnected", &Args(Vec::new()))
            .await
        {
            tracing::debug!(error = %e, "readme: user disconnected partially delivered");
        }
    })
}

/// The README's `setInterval(… socket.volatile.emit('bieber tweet', tweet) …, 100)`: ends
/// with the socket (its `clearInterval` on disconnect).
async fn tweet_stream(s: SocketRef<Adapter>) {
    let mut tick = tokio::time::interval(TWEET_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // The first tick is immediate; setInterval's first call comes after one interval.
    tick.tick().await;
    let mut seq: u64 = 0;
    loop {
        tick.tick().await;
        if !s.connected() {
            break;
        }
        seq += 1;
        let tweet = json!({"seq": seq, "text": format!("bieber tweet #{seq}")});
        // Volatile: dropped when the client is not ready (socketioxide keeps only the latest
        // volatile packet per socket), which is the point of the recipe.
        if s.volatile().emit("bieber tweet", &tweet).is_err() && !s.connected() {
            break;
        }
    }
}

/// `my other event` (data): the README's client answer to `news`; logged, acked `{ok: true}`.
async fn my_other_event(s: SocketRef<Adapter>, data: TryData<Json>, reply: Reply) {
    // Any data, none included.
    let data = parsed(data).unwrap_or(Json::Null);
    tracing::debug!(sid = %s.id, %data, "readme: my other event");
    reply.ack(&json!({"ok": true}));
}

/// `private message` (from, msg): two strings, logged, acked `{ok: true, from, msg}`.
async fn private_message(s: SocketRef<Adapter>, args: TryData<(String, String)>, reply: Reply) {
    match parsed(args) {
        Ok((from, msg)) => {
            tracing::debug!(sid = %s.id, from, msg, "readme: private message");
            reply.ack(&json!({"ok": true, "from": from, "msg": msg}));
        }
        Err(e) => reply_error(
            &s,
            reply,
            "private message",
            format!("private message expects two strings (from, msg): {e}"),
        ),
    }
}

/// `set nickname` (name): stored as the socket's data, which every node reads through
/// fetchSockets, then `ready` (and an ack `{ok: true}` when asked).
async fn set_nickname(
    s: SocketRef<Adapter>,
    name: TryData<String>,
    reply: Reply,
    State(app): State<Arc<App>>,
) {
    let name = match text("nickname", parsed(name), MAX_NICKNAME_CHARS) {
        Ok(n) => n,
        Err(e) => return reply_error(&s, reply, "set nickname", e),
    };
    // Merged, so data set with `set-data` survives.
    let mut data = match app.cluster.socket_data(s.ns(), s.id) {
        Json::Object(m) => m,
        _ => serde_json::Map::new(),
    };
    data.insert("nickname".to_owned(), Json::String(name));
    app.cluster
        .set_socket_data(s.ns(), s.id, Json::Object(data));
    let _ = s.emit("ready", &Args(Vec::new()));
    reply.ack(&json!({"ok": true}));
}

/// `msg` (text): `msg {nickname, text}` to every `/readme` socket on every node.
async fn msg(
    s: SocketRef<Adapter>,
    io: SocketIo<Adapter>,
    t: TryData<String>,
    reply: Reply,
    State(app): State<Arc<App>>,
) {
    let t = match text("msg", parsed(t), MAX_MSG_CHARS) {
        Ok(t) => t,
        Err(e) => return reply_error(&s, reply, "msg", e),
    };
    let nickname = app.cluster.socket_data(s.ns(), s.id)["nickname"].clone();
    if !nickname.is_string() {
        return reply_error(&s, reply, "msg", "set a nickname first".to_owned());
    }
    tracing::debug!(sid = %s.id, %nickname, "readme: chat message");
    if let Some(ns) = io.of(NAMESPACE)
        && let Err(e) = ns
            .emit("msg", &json!({"nickname": nickname, "text": t}))
            .await
    {
        tracing::debug!(error = %e, "readme: msg partially delivered");
    }
    reply.ack(&json!({"ok": true}));
}

/// `nicknames` (ack): the nickname of every `/readme` socket that set one, on every node.
async fn nicknames(s: SocketRef<Adapter>, reply: Reply, State(app): State<Arc<App>>) {
    if !reply.has_ack() {
        return reply_error(&s, reply, "nicknames", "nicknames needs an ack".to_owned());
    }
    let Some(h) = app.cluster.namespace(NAMESPACE) else {
        return reply_error(&s, reply, "nicknames", not_ready());
    };
    match h.fetch_sockets_report(ioscale_adapter::all_sockets()).await {
        Ok(report) => {
            let mut list: Vec<Json> = report
                .sockets
                .into_iter()
                .filter(|i| i.data["nickname"].is_string())
                // The public id: the session id is a key to the other client's session.
                .map(|i| {
                    let id = public_id::in_rooms(&i.rooms);
                    json!({"id": id, "node": i.node, "nickname": i.data["nickname"]})
                })
                .collect();
            list.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
            reply.ack(&json!({"nicknames": list, "missing_nodes": report.missing_nodes}));
        }
        Err(e) => {
            let msg = cluster_unavailable("nicknames", &e);
            reply_error(&s, reply, "nicknames", msg)
        }
    }
}

/// The README recipes as an application of the node, on `/readme`, `/chat` and `/news`.
#[derive(Debug, Default)]
pub struct ReadmeFeatures;

impl Application for ReadmeFeatures {
    fn name(&self) -> &'static str {
        "readme_features"
    }

    fn setup(&self, setup: &mut Setup<'_>) -> anyhow::Result<()> {
        setup.on_register(NAMESPACE, register);
        setup.on_connect(NAMESPACE, on_connect);
        setup.on_disconnect(NAMESPACE, on_disconnect);
        setup.on_register(CHAT_NAMESPACE, |s, _io, _app| s.on("hi!", hi));
        setup.on_connect(CHAT_NAMESPACE, on_connect_chat);
        setup.on_register(NEWS_NAMESPACE, |s, _io, _app| s.on("woot", woot));
        setup.on_connect(NEWS_NAMESPACE, |s, _io, app| on_connect_news(s, app));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_are_checked() {
        let all = Grants::new(&["*"], &["*"]);
        let room = |v| room(v, &all, RoomUse::Join);
        assert!(room(Ok("rammstein fans".to_owned())).is_ok());
        assert!(room(Ok(String::new())).is_err());
        assert!(room(Ok("x".repeat(MAX_ROOM_CHARS + 1))).is_err());
        // A session id is 16 url-safe base64 characters, a public id 22.
        assert!(room(Ok("AAAAAAAAAAAAAAAA".to_owned())).is_err());
        assert!(room(Ok(public_id::generate())).is_err());
        assert!(room(Ok("user:bob".to_owned())).is_err());
        assert!(room(Err("invalid type".to_owned())).is_err());
        let some = Grants::new(&["fans"], &[]);
        assert!(super::room(Ok("fans".to_owned()), &some, RoomUse::Join).is_ok());
        assert!(super::room(Ok("fans".to_owned()), &some, RoomUse::Publish).is_err());
        assert!(super::room(Ok("other".to_owned()), &some, RoomUse::Leave).is_ok());
    }

    #[test]
    fn texts_are_checked() {
        assert!(text("nickname", Ok("tobi".to_owned()), 5).is_ok());
        assert!(text("nickname", Ok("   ".to_owned()), 5).is_err());
        assert!(text("nickname", Ok("toolong".to_owned()), 5).is_err());
    }
}
