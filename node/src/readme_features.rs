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

use std::{str::FromStr, sync::Arc, time::Duration};

use futures_util::future::BoxFuture;
use serde::{Deserialize, Deserializer, Serialize, de::SeqAccess};
use serde_json::{Value as Json, json};
use socketioxide::{
    SocketIo,
    extract::{SocketRef, State, TryData},
    socket::{DisconnectReason, Sid},
};
use socketioxide_core::{packet::Packet, parser::Parse};
use socketioxide_parser_common::CommonParser;

use crate::{
    app::{Adapter, App},
    sockets::{self, Reply},
    value::{ApiValue, Args},
};

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
/// Longest room name.
pub const MAX_ROOM_CHARS: usize = 256;

// --- input ----------------------------------------------------------------------------------

/// Every argument of an event, whatever their number (socketioxide hands a handler all the
/// arguments only when the target type deserialises as a tuple, hence `deserialize_tuple`).
#[derive(Debug, Clone, Default)]
struct AllArgs(Vec<ApiValue>);

impl<'de> Deserialize<'de> for AllArgs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = AllArgs;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("event arguments")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<AllArgs, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = seq.next_element()? {
                    out.push(v);
                }
                Ok(AllArgs(out))
            }
        }
        d.deserialize_tuple(usize::MAX, V)
    }
}

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

/// A room a client may name: 1 to [`MAX_ROOM_CHARS`] characters, and not shaped like a socket
/// id: every socket sits in a room named by its id, so joining one would let a client read
/// another socket's private events.
fn room(v: Result<String, String>) -> Result<String, String> {
    let r = v.map_err(|e| format!("room must be a string ({e})"))?;
    if r.is_empty() || r.chars().count() > MAX_ROOM_CHARS {
        return Err(format!("room must be 1-{MAX_ROOM_CHARS} characters"));
    }
    if Sid::from_str(&r).is_ok() {
        return Err("room names shaped like socket ids are reserved".to_owned());
    }
    Ok(r)
}

fn parsed<T>(TryData(d): TryData<T>) -> Result<T, String> {
    d.map_err(|e| e.to_string())
}

/// Answers an error: `{ok: false, error}` through the ack when the client sent one, else
/// `readme-error {event, ok: false, error}`.
fn reply_error(s: &SocketRef<Adapter>, reply: Reply, event: &str, error: String) {
    tracing::debug!(sid = %s.id, event, error = %error, "readme: bad input");
    if reply.has_ack() {
        reply.ack(&json!({"ok": false, "error": error}));
    } else {
        reply.send(
            s,
            ERROR_EVENT,
            &json!({"event": event, "ok": false, "error": error}),
        );
    }
}

/// What a client is told when a cluster request fails: Redis's and the adapter's error text is
/// internal, so it is logged and the client gets a fixed message.
fn cluster_unavailable(event: &str, e: &ioscale_adapter::Error) -> String {
    tracing::warn!(event, error = %e, "readme: cluster request failed");
    "cluster unavailable, retry later".to_owned()
}

fn count_event(app: &App, ns: &str) {
    app.metrics.events.with_label_values(&[ns]).inc();
}

// --- /readme --------------------------------------------------------------------------------

/// Connect handler of `/readme`: the README's connection-time recipes, in its order.
pub async fn on_connect(s: SocketRef<Adapter>, io: SocketIo<Adapter>, State(app): State<Arc<App>>) {
    sockets::on_connect_then(&s, &app, Some(on_disconnect));
    s.on("my other event", my_other_event);
    s.on("private message", private_message);
    s.on("set nickname", set_nickname);
    s.on("msg", msg);
    s.on("nicknames", nicknames);
    s.on("ferret", ferret);
    s.on("ask", ask);
    s.on("shout", shout);
    s.on("join", join);
    s.on("leave", leave);
    s.on("to", to_room);
    s.on("in", in_room);
    s.on("tweet", tweet);
    s.on("message", message);

    connection_broadcasts(&s, &io).await;
    // "How to use": a greeting for this socket only. It comes last, once the broadcasts above
    // are handed to the cluster, so a client that got it knows they are on their way.
    let _ = s.emit("news", &json!({"hello": "world"}));
    // "Sending volatile messages".
    tokio::spawn(tweet_stream(s.clone()));
}

/// The README's connection-time broadcasts, in its order, each handed to the cluster before
/// the next.
async fn connection_broadcasts(s: &SocketRef<Adapter>, io: &SocketIo<Adapter>) {
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
    s.join(FANS_ROOM);
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
async fn my_other_event(
    s: SocketRef<Adapter>,
    data: TryData<Json>,
    reply: Reply,
    State(app): State<Arc<App>>,
) {
    count_event(&app, NAMESPACE);
    // Any data, none included.
    let data = parsed(data).unwrap_or(Json::Null);
    tracing::debug!(sid = %s.id, %data, "readme: my other event");
    reply.ack(&json!({"ok": true}));
}

/// `private message` (from, msg): two strings, logged, acked `{ok: true, from, msg}`.
async fn private_message(
    s: SocketRef<Adapter>,
    args: TryData<(String, String)>,
    reply: Reply,
    State(app): State<Arc<App>>,
) {
    count_event(&app, NAMESPACE);
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
    count_event(&app, NAMESPACE);
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
    count_event(&app, NAMESPACE);
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
    count_event(&app, NAMESPACE);
    if !reply.has_ack() {
        return reply_error(&s, reply, "nicknames", "nicknames needs an ack".to_owned());
    }
    let Some(h) = app.cluster.namespace(NAMESPACE) else {
        return reply_error(&s, reply, "nicknames", "namespace not ready".to_owned());
    };
    match h.fetch_sockets_report(ioscale_adapter::all_sockets()).await {
        Ok(report) => {
            let mut list: Vec<Json> = report
                .sockets
                .into_iter()
                .filter(|i| i.data["nickname"].is_string())
                .map(|i| json!({"id": i.id, "node": i.node, "nickname": i.data["nickname"]}))
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

/// `ferret` (name, fn): the README's acknowledgement recipe, `fn('woot')`.
async fn ferret(s: SocketRef<Adapter>, reply: Reply, State(app): State<Arc<App>>) {
    count_event(&app, NAMESPACE);
    if reply.has_ack() {
        reply.ack(&json!("woot"));
    } else {
        reply_error(
            &s,
            reply,
            "ferret",
            "ferret expects an ack callback".to_owned(),
        );
    }
}

/// `ask` {to, question} (ack): the server emits `question` with an ack to room or socket `to`
/// on every node, and acks the asker with every answer:
/// `{answers: [{socket, node, answer}], unanswered: [{socket, node, error}], complete, missing_nodes}`.
async fn ask(s: SocketRef<Adapter>, a: TryData<Ask>, reply: Reply, State(app): State<Arc<App>>) {
    count_event(&app, NAMESPACE);
    if !reply.has_ack() {
        return reply_error(&s, reply, "ask", "ask needs an ack".to_owned());
    }
    let a = match parsed(a) {
        Ok(a) => a,
        Err(e) => {
            return reply_error(
                &s,
                reply,
                "ask",
                format!("ask expects {{to, question}}: {e}"),
            );
        }
    };
    if a.to.is_empty() || a.to.chars().count() > MAX_ROOM_CHARS {
        let e = format!("to must be a socket id or room of 1-{MAX_ROOM_CHARS} characters");
        return reply_error(&s, reply, "ask", e);
    }
    let Some(h) = app.cluster.namespace(NAMESPACE) else {
        return reply_error(&s, reply, "ask", "namespace not ready".to_owned());
    };
    let parser = CommonParser;
    let value = match parser.encode_value(&Args(vec![a.question]), Some("question")) {
        Ok(v) => v,
        Err(e) => {
            tracing::debug!(error = %e, "readme: question not encodable");
            return reply_error(&s, reply, "ask", "cannot encode question".to_owned());
        }
    };
    let mut opts = ioscale_adapter::all_sockets();
    opts.rooms = std::iter::once(a.to.into()).collect();
    let timeout = Duration::from_millis(app.config.ack_timeout_ms);
    let report = match h
        .broadcast_with_ack_report(Packet::event(NAMESPACE, value), opts, timeout)
        .await
    {
        Ok(r) => r,
        Err(e) => {
            let msg = cluster_unavailable("ask", &e);
            return reply_error(&s, reply, "ask", msg);
        }
    };
    let mut answers = Vec::new();
    let mut unanswered = Vec::new();
    for entry in report.acks {
        match entry.response {
            Ok(mut v) => {
                // The answer keeps its binary parts: it goes back as ApiValue, not JSON.
                let answer = parser
                    .decode_value::<ApiValue>(&mut v, false)
                    .unwrap_or(ApiValue::Null);
                answers.push(AnswerOut {
                    socket: entry.socket,
                    node: entry.node,
                    answer,
                });
            }
            // A stable code (`timeout`, `socket_closed`, ...), never the transport's text.
            Err(e) => unanswered
                .push(json!({"socket": entry.socket, "node": entry.node, "error": e.as_str()})),
        }
    }
    reply.ack_with(&AskOut {
        answers,
        unanswered,
        complete: report.complete,
        missing_nodes: report.missing_nodes,
    });
}

#[derive(Serialize)]
struct AnswerOut {
    socket: String,
    node: String,
    answer: ApiValue,
}

#[derive(Serialize)]
struct AskOut {
    answers: Vec<AnswerOut>,
    unanswered: Vec<Json>,
    complete: bool,
    missing_nodes: Vec<String>,
}

/// `shout` (data): `shout {from, data}` to every other `/readme` socket on every node
/// (`socket.broadcast.emit`).
async fn shout(
    s: SocketRef<Adapter>,
    data: TryData<ApiValue>,
    reply: Reply,
    State(app): State<Arc<App>>,
) {
    count_event(&app, NAMESPACE);
    let data = parsed(data).unwrap_or(ApiValue::Null);
    let out = Out {
        from: s.id.to_string(),
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
struct Out {
    from: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    room: Option<String>,
    data: ApiValue,
}

/// `join` (room): acked `{ok: true}` once the socket is in the room (rooms span nodes).
async fn join(
    s: SocketRef<Adapter>,
    r: TryData<String>,
    reply: Reply,
    State(app): State<Arc<App>>,
) {
    count_event(&app, NAMESPACE);
    match room(parsed(r)) {
        Ok(r) => {
            s.join(r);
            reply.ack(&json!({"ok": true}));
        }
        Err(e) => reply_error(&s, reply, "join", e),
    }
}

/// `leave` (room): acked `{ok: true}`.
async fn leave(
    s: SocketRef<Adapter>,
    r: TryData<String>,
    reply: Reply,
    State(app): State<Arc<App>>,
) {
    count_event(&app, NAMESPACE);
    match room(parsed(r)) {
        Ok(r) => {
            s.leave(r);
            reply.ack(&json!({"ok": true}));
        }
        Err(e) => reply_error(&s, reply, "leave", e),
    }
}

/// `to` {room, data}: `room message {from, room, data}` to every member of `room` but the
/// sender (`socket.broadcast.to(room)`).
async fn to_room(
    s: SocketRef<Adapter>,
    e: TryData<RoomEmit>,
    reply: Reply,
    State(app): State<Arc<App>>,
) {
    room_emit(s, None, e, reply, app, "to").await;
}

/// `in` {room, data}: `room message {from, room, data}` to every member of `room`, the sender
/// included when it is one (`io.sockets.in(room)`).
async fn in_room(
    s: SocketRef<Adapter>,
    io: SocketIo<Adapter>,
    e: TryData<RoomEmit>,
    reply: Reply,
    State(app): State<Arc<App>>,
) {
    room_emit(s, Some(io), e, reply, app, "in").await;
}

async fn room_emit(
    s: SocketRef<Adapter>,
    io: Option<SocketIo<Adapter>>,
    e: TryData<RoomEmit>,
    reply: Reply,
    app: Arc<App>,
    event: &str,
) {
    count_event(&app, NAMESPACE);
    let e = match parsed(e) {
        Ok(e) => e,
        Err(err) => {
            let msg = format!("{event} expects {{room, data}}: {err}");
            return reply_error(&s, reply, event, msg);
        }
    };
    let r = match room(Ok(e.room)) {
        Ok(r) => r,
        Err(err) => return reply_error(&s, reply, event, err),
    };
    let out = Out {
        from: s.id.to_string(),
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
async fn tweet(
    s: SocketRef<Adapter>,
    io: SocketIo<Adapter>,
    t: TryData<String>,
    reply: Reply,
    State(app): State<Arc<App>>,
) {
    count_event(&app, NAMESPACE);
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
                &json!({"from": s.id.to_string(), "text": t}),
            )
            .await
    {
        tracing::debug!(error = %e, "readme: tweet partially delivered");
    }
    reply.ack(&json!({"ok": true}));
}

/// `message` (…args), what `socket.send(…)` emits: echoed to the sender with the same
/// arguments, binary included ("Using it just as a cross-browser WebSocket").
async fn message(s: SocketRef<Adapter>, args: TryData<AllArgs>, State(app): State<Arc<App>>) {
    count_event(&app, NAMESPACE);
    let AllArgs(args) = parsed(args).unwrap_or_default();
    let _ = s.emit("message", &Args(args));
}

// --- /chat and /news ------------------------------------------------------------------------

/// Connect handler of `/chat`: `a message` to every `/chat` socket on every node, then one to
/// the new socket (the README's `chat.emit` and `socket.emit`).
pub async fn on_connect_chat(
    s: SocketRef<Adapter>,
    io: SocketIo<Adapter>,
    State(app): State<Arc<App>>,
) {
    sockets::on_connect(&s, &app);
    s.on("hi!", hi);
    if let Some(chat) = io.of(CHAT_NAMESPACE)
        && let Err(e) = chat
            .emit("a message", &json!({"everyone": "in", "/chat": "will get"}))
            .await
    {
        tracing::debug!(error = %e, "readme: /chat broadcast partially delivered");
    }
    // After the broadcast (the README has it before): a client that got it knows the broadcast
    // is on its way.
    let _ = s.emit("a message", &json!({"that": "only", "/chat": "will get"}));
}

/// `/chat` `hi!` (what the README's client sends on connect): `hi! {from}` to every other
/// `/chat` socket on every node.
async fn hi(s: SocketRef<Adapter>, reply: Reply, State(app): State<Arc<App>>) {
    count_event(&app, CHAT_NAMESPACE);
    if let Err(e) = s
        .broadcast()
        .emit("hi!", &json!({"from": s.id.to_string()}))
        .await
    {
        tracing::debug!(error = %e, "readme: hi! partially delivered");
    }
    reply.ack(&json!({"ok": true}));
}

/// Connect handler of `/news`: `item {news: 'item'}` to the new socket.
pub async fn on_connect_news(s: SocketRef<Adapter>, State(app): State<Arc<App>>) {
    sockets::on_connect(&s, &app);
    s.on("woot", woot);
    let _ = s.emit("item", &json!({"news": "item"}));
}

/// `/news` `woot` (the README's client answer to a news item): answered with
/// `item {news: 'woot'}` (through the ack when there is one).
async fn woot(s: SocketRef<Adapter>, reply: Reply, State(app): State<Arc<App>>) {
    count_event(&app, NEWS_NAMESPACE);
    reply.send(&s, "item", &json!({"news": "woot"}));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_are_checked() {
        assert!(room(Ok("rammstein fans".to_owned())).is_ok());
        assert!(room(Ok(String::new())).is_err());
        assert!(room(Ok("x".repeat(MAX_ROOM_CHARS + 1))).is_err());
        // A socket id is 16 url-safe base64 characters.
        assert!(room(Ok("AAAAAAAAAAAAAAAA".to_owned())).is_err());
        assert!(room(Err("invalid type".to_owned())).is_err());
    }

    #[test]
    fn texts_are_checked() {
        assert!(text("nickname", Ok("tobi".to_owned()), 5).is_ok());
        assert!(text("nickname", Ok("   ".to_owned()), 5).is_err());
        assert!(text("nickname", Ok("toolong".to_owned()), 5).is_err());
    }

    #[test]
    fn all_args_reads_any_number_of_arguments() {
        let a: AllArgs = serde_json::from_str(r#"[1, "two", {"three": 3}]"#).unwrap();
        assert_eq!(a.0.len(), 3);
        let a: AllArgs = serde_json::from_str("[]").unwrap();
        assert!(a.0.is_empty());
    }
}
