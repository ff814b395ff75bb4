//! The client pub/sub namespace (`/pubsub`): `join` / `leave` a room, `publish {room, data}`
//! to every member of the room on every node (sender included) as `msg {room, data}`.
//!
//! Publishes of one socket are handed to the cluster in the order the client sent them: the
//! `publish` handler runs synchronously in the socket's read path (socketioxide would
//! otherwise spawn one task per message, which does not keep order). When nothing of the
//! socket is waiting, the handler does the work itself: handing a message to the cluster and
//! acking it completes without waiting in the usual case, and then costs no task wake. Work
//! that does wait (the adapter's in-flight bound, an ack that finds the publisher's buffer
//! full) goes on the socket's own ordered queue, and so does every publish behind it; one task
//! per such socket finishes them one at a time. The publisher gets its ack `{ok: true}` once
//! its message is handed to the cluster.
//!
//! The queue is bounded in bytes (`--publish-buffer-bytes`), not in messages, so a burst of
//! small publishes is absorbed whole. A publish beyond the bound, or a malformed one, is
//! refused at once with `{ok: false, error}` and counted in
//! `ioscale_pubsub_publishes_refused_total{reason}`: every publish is either handed over or
//! refused, never lost silently.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::{FutureExt as _, future::BoxFuture};
use ioscale_adapter::DropReason;
use prometheus::IntCounter;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use socketioxide::{
    SendError, SocketError, SocketIo,
    extract::{AckSender, Data, Event, SocketRef, State},
    handler::{FromMessageParts, MessageHandler, Value},
    socket::Socket,
};
use tokio::sync::mpsc;

use crate::{
    admission,
    app::{Adapter, App},
    auth::Identity,
    config::Config,
    joins,
    metrics::PubsubStage,
    rate::EventBudget,
    refusal::{Code, Refused},
    rooms::{self, Grants},
    sockets,
};

/// The namespace path.
pub const NAMESPACE: &str = "/pubsub";
/// Publishes the loop hands over between two yields (see [`publish_loop`]).
const YIELD_EVERY: u32 = 64;
/// First pause before an ack that found the publisher's packet buffer full is tried again.
const ACK_RETRY_MIN: Duration = Duration::from_millis(1);
/// Longest pause between two tries of an ack that found the publisher's packet buffer full.
const ACK_RETRY_MAX: Duration = Duration::from_millis(50);

/// Why a publish was refused: the `reason` label of `ioscale_pubsub_publishes_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The socket already has `--publish-buffer-bytes` waiting to be handed to the cluster.
    BufferFull,
    /// Not `{room, data}`, a bad room name, or binary attachments.
    Invalid,
    /// The socket's publish task is gone (the namespace is closing).
    Closed,
    /// Over the socket's event budget (`--event-rate-per-s`, `--event-burst`).
    RateLimited,
}

impl Refusal {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::BufferFull => "buffer_full",
            Refusal::Invalid => "invalid",
            Refusal::Closed => "closed",
            Refusal::RateLimited => "rate_limited",
        }
    }
}

#[derive(Debug, Deserialize)]
struct Publish {
    room: String,
    /// The client's JSON text, kept as it came: its size is known exactly, it takes no more
    /// memory than that, and it is forwarded without being parsed into a tree and written out
    /// again.
    data: Box<RawValue>,
}

/// What room members receive.
#[derive(Serialize)]
struct Msg<'a> {
    room: &'a str,
    data: &'a RawValue,
}

/// The publisher's ack when all went well.
#[derive(Serialize)]
struct AckOk {
    ok: bool,
}

const ACK_OK: AckOk = AckOk { ok: true };

/// A publish accepted by the handler and not yet handed to the cluster.
struct Accepted {
    publish: Publish,
    /// The publisher, kept rather than an `AckSender` so that an ack that finds the socket's
    /// buffer full can be tried again.
    socket: Arc<Socket<Adapter>>,
    ack_id: Option<i64>,
    /// When the handler accepted it (the `queue` stage).
    accepted: Instant,
}

/// What a queued publish holds: the room and data texts (owned copies, the received frame is
/// not kept) and its work. Known without walking the data.
fn queued_bytes(p: &Publish) -> usize {
    p.room.len() + p.data.get().len() + std::mem::size_of::<Accepted>()
}

/// A socket's publish queue, in its extensions: the unfinished work of its publishes, in
/// order.
#[derive(Clone)]
struct PublishQueue {
    tx: mpsc::UnboundedSender<BoxFuture<'static, ()>>,
    /// Bytes of queued publishes not yet finished: added by the handler, subtracted by each
    /// publish's work when done. The channel is unbounded because this is its bound.
    pending: Arc<AtomicUsize>,
}

/// The event handlers of a `/pubsub` socket, registered at its handshake.
pub fn register(s: &SocketRef<Adapter>, io: &SocketIo<Adapter>, app: &Arc<App>) {
    s.on("join", join_or_leave);
    s.on("leave", join_or_leave);
    let events = app.metrics.events.with_label_values(&[NAMESPACE]);
    let Some(budget) = sockets::budget(s) else {
        tracing::error!(sid = %s.id, "a /pubsub socket without its event budget");
        return;
    };
    let identity = admission::identity(s);
    s.on(
        "publish",
        OrderedPublish {
            io: io.clone(),
            app: app.clone(),
            events,
            budget,
            identity,
        },
    );
}

/// `join` / `leave` a room, acked `{ok: true}` or refused. Joining needs the connection's
/// grant; leaving is always allowed, but not the rooms the node put the socket in.
///
/// The room is a string, or `{room, presence: true, data}` to join the room's presence too
/// (see [`crate::presence`]): the ack then carries it, `{ok: true, presence: {room, count,
/// members}}`, and a presence that cannot be joined undoes the join.
async fn join_or_leave(
    s: SocketRef<Adapter>,
    Event(event): Event,
    Data(arg): Data<serde_json::Value>,
    ack: AckSender<Adapter>,
    State(app): State<Arc<App>>,
    State(presence): State<crate::presence::Handle>,
) {
    let join = event == "join";
    let Some(req) = RoomRequest::read(arg) else {
        let r = Refused::new(
            Code::BadRequest,
            "expected a room name, or {room, presence: true, data}",
        );
        let _ = ack.send(&r.to_json());
        return;
    };
    let room = req.room;
    let checked = sockets::take_event(&s, &app).and_then(|()| {
        let r = if join {
            admission::identity(&s).grants.may_join(&room)
        } else {
            rooms::check_client(&room)
        };
        r.map_err(Refused::from)
    });
    if let Err(r) = checked {
        let _ = ack.send(&r.to_json());
        return;
    }
    if !join {
        joins::leave(&s, &app.cluster, room.clone());
        if let Some(p) = &presence.0
            && let Err(r) = p.leave(&s, &room).await
        {
            let _ = ack.send(&r.to_json());
            return;
        }
        let _ = ack.send(&ACK_OK);
        return;
    }
    joins::join(&s, &app.cluster, room.clone()).await;
    if !req.presence {
        let _ = ack.send(&ACK_OK);
        return;
    }
    let joined = match &presence.0 {
        Some(p) => {
            let user = admission::identity(&s).user.clone();
            let alive = p.alive(&app);
            p.join(&s, &room, req.data, user, &alive).await
        }
        None => Err(Refused::new(
            Code::Unavailable,
            "presence needs the cluster's Redis (--redis-url)",
        )),
    };
    match joined {
        Ok(snapshot) => {
            let _ = ack.send(&serde_json::json!({"ok": true, "presence": snapshot}));
        }
        Err(r) => {
            joins::leave(&s, &app.cluster, room);
            let _ = ack.send(&r.to_json());
        }
    }
}

/// What `join` and `leave` name: a room, and whether to join its presence with what data.
struct RoomRequest {
    room: String,
    presence: bool,
    data: serde_json::Value,
}

impl RoomRequest {
    fn read(arg: serde_json::Value) -> Option<Self> {
        match arg {
            serde_json::Value::String(room) => Some(Self {
                room,
                presence: false,
                data: serde_json::Value::Null,
            }),
            serde_json::Value::Object(mut o) => {
                let room = match o.remove("room")? {
                    serde_json::Value::String(r) => r,
                    _ => return None,
                };
                let presence = match o.remove("presence") {
                    None | Some(serde_json::Value::Null) => false,
                    Some(serde_json::Value::Bool(b)) => b,
                    Some(_) => return None,
                };
                let data = o.remove("data").unwrap_or(serde_json::Value::Null);
                Some(Self {
                    room,
                    presence,
                    data,
                })
            }
            _ => None,
        }
    }
}

/// Marker type of the ordered handler.
#[derive(Debug)]
pub struct Ordered;

#[derive(Clone)]
struct OrderedPublish {
    io: SocketIo<Adapter>,
    app: Arc<App>,
    /// `ioscale_events_received_total{namespace="/pubsub"}`, looked up once per socket.
    events: IntCounter,
    /// The socket's event budget and identity, looked up once per socket rather than in its
    /// extensions at every publish.
    budget: Arc<EventBudget>,
    identity: Arc<Identity>,
}

/// An ack sender for `ack_id` (socketioxide's extractor ignores the message value).
fn ack_sender(s: &Arc<Socket<Adapter>>, ack_id: Option<i64>) -> AckSender<Adapter> {
    let mut unused = Value::Bytes(bytes::Bytes::new());
    let Ok(ack) = AckSender::<Adapter>::from_message_parts(s, &mut unused, &ack_id);
    ack
}

fn parse(
    s: &Arc<Socket<Adapter>>,
    v: &mut Value,
    ack_id: &Option<i64>,
    grants: &Grants,
) -> Result<Publish, Refused> {
    // Raw JSON cannot hold the attachments' bytes (socket.io-client sends binary apart).
    if matches!(v, Value::Str(_, Some(bins)) if !bins.is_empty()) || matches!(v, Value::Bytes(_)) {
        return Err("publish data cannot carry binary attachments"
            .to_owned()
            .into());
    }
    let Data(p) = Data::<Publish>::from_message_parts(s, v, ack_id)
        .map_err(|e| format!("publish expects {{room: string, data: any}}: {e}"))?;
    grants.may_publish(&p.room)?;
    Ok(p)
}

impl OrderedPublish {
    /// The socket's publish queue, made the first time a publish has to wait: most sockets
    /// only subscribe, and a queue with its task costs about 7 KB per socket.
    fn queue(&self, s: &Socket<Adapter>) -> PublishQueue {
        if let Some(q) = s.extensions.get::<PublishQueue>() {
            return q;
        }
        // Handlers of one socket run one after another in its read path: no other publish of
        // this socket can be creating the queue now.
        let (tx, rx) = mpsc::unbounded_channel();
        let q = PublishQueue {
            tx,
            pending: Arc::new(AtomicUsize::new(0)),
        };
        s.extensions.insert(q.clone());
        tokio::spawn(publish_loop(rx));
        q
    }

    /// Does the publish's work here when nothing of this socket is pending and the work does
    /// not wait; otherwise queues what is left of it, behind the socket's earlier publishes.
    /// `pending` is what the socket had pending when the publish was accepted.
    fn hand_over(&self, s: &Socket<Adapter>, p: Accepted, bytes: usize, pending: usize) {
        // Boxed before its first poll: work that waits moves to the queue as it is. Outside
        // tokio's cooperative budget: the read path spends it on the socket's stream, and then
        // every budgeted await of a publish (the in-flight permit) would report a wait that is
        // none, sending the rest of a burst to the queue (measured: all but the first few
        // hundred of 20,000 written at once, each a boxed future kept until its turn; 15 % of
        // the node's time in growing its heap). The read path still yields at its stream.
        let work = hand_over(p, self.io.clone(), self.app.clone());
        let mut work = tokio::task::unconstrained(work).boxed();
        if pending == 0 && (&mut work).now_or_never().is_some() {
            return;
        }
        let q = self.queue(s);
        // Only this socket's read path adds to `pending`: nothing can raise it between the
        // caller's check and this add.
        q.pending.fetch_add(bytes, Ordering::AcqRel);
        let counter = q.pending.clone();
        let queued = async move {
            work.await;
            counter.fetch_sub(bytes, Ordering::AcqRel);
        };
        if let Err(mpsc::error::SendError(_)) = q.tx.send(queued.boxed()) {
            // The loop ends only with the runtime; the work (and its ack) is lost with it.
            q.pending.fetch_sub(bytes, Ordering::AcqRel);
            self.app
                .metrics
                .publishes_refused
                .with_label_values(&[Refusal::Closed.as_str()])
                .inc();
        }
    }

    /// Refuses a publish visibly: `{ok: false, code, error}` and the refusal counter. When the
    /// client does not read at all its buffer may be full and this ack lost too; it is counted
    /// all the same, and the client's ack times out.
    fn refuse(&self, s: &Arc<Socket<Adapter>>, ack_id: Option<i64>, why: Refusal, r: Refused) {
        self.app
            .metrics
            .publishes_refused
            .with_label_values(&[why.as_str()])
            .inc();
        let _ = ack_sender(s, ack_id).send(&r.to_json());
    }
}

impl MessageHandler<Adapter, Ordered> for OrderedPublish {
    fn call(&self, s: Arc<Socket<Adapter>>, mut v: Value, ack_id: Option<i64>) {
        self.events.inc();
        if let Err(r) = sockets::charge(&SocketRef::from(s.clone()), &self.app, &self.budget) {
            return self.refuse(&s, ack_id, Refusal::RateLimited, r);
        }
        let publish = match parse(&s, &mut v, &ack_id, &self.identity.grants) {
            Ok(p) => p,
            Err(e) => return self.refuse(&s, ack_id, Refusal::Invalid, e),
        };
        let bytes = queued_bytes(&publish);
        let pending = s
            .extensions
            .get::<PublishQueue>()
            .map_or(0, |q| q.pending.load(Ordering::Acquire));
        // On an empty queue a publish larger than the whole bound still goes (it passed
        // `--max-payload-bytes`): no size of message is refused for ever.
        if pending > 0 && pending + bytes > self.app.config.publish_buffer_bytes {
            let e = format!("publish buffer full ({pending} bytes pending), retry later");
            return self.refuse(&s, ack_id, Refusal::BufferFull, Refused::new(Code::Busy, e));
        }
        let accepted = Accepted {
            publish,
            socket: s.clone(),
            ack_id,
            accepted: Instant::now(),
        };
        self.hand_over(&s, accepted, bytes, pending);
    }
}

/// Finishes a socket's queued publishes one by one, in order.
///
/// The publisher's own packet buffer (`--socket-buffer-packets`, 16,384 by default) carries
/// its acks and, when it is a member of the room, its own copies: two packets per publish,
/// 40,000 for a burst of 20,000. They fit because the socket's writer drains the buffer while
/// the socket's read path (or this loop) fills it: the first ack wakes the writer, the read
/// path yields when tokio's budget for its stream is spent, and this loop yields every
/// [`YIELD_EVERY`] publishes so the writer runs at the latest then. For a client that
/// reads, the buffer then does not grow with the length of the burst (tests/tests/burst.rs:
/// 20,000 at once, nothing dropped, no ack waited). Raising the default instead would only
/// move the limit, and a full buffer is harmful in itself: engineioxide closes a socket whose
/// ping does not fit in it. When the buffer is full anyway (a client that reads too slowly or
/// not at all), the ack waits for room instead of being dropped: that stalls this socket's
/// publishes only, its byte-bounded queue fills, and its further publishes are refused.
async fn publish_loop(mut rx: mpsc::UnboundedReceiver<BoxFuture<'static, ()>>) {
    let mut handed: u32 = 0;
    while let Some(work) = rx.recv().await {
        work.await;
        handed = handed.wrapping_add(1);
        if handed.is_multiple_of(YIELD_EVERY) {
            tokio::task::yield_now().await;
        }
    }
}

/// One publish: handed to the cluster, then acked.
async fn hand_over(p: Accepted, io: SocketIo<Adapter>, app: Arc<App>) {
    let Some(ns) = io.of(NAMESPACE) else { return };
    let Accepted {
        publish,
        socket,
        ack_id,
        accepted,
    } = p;
    let metrics = &app.metrics;
    let taken = Instant::now();
    metrics.pubsub_stage(PubsubStage::Queue, taken - accepted);
    let msg = Msg {
        room: &publish.room,
        data: &publish.data,
    };
    // The error lists only local sockets whose buffers were full, each counted by the
    // adapter (`ioscale_adapter_dropped_total{reason="socket_buffer_full"}`, as a failed
    // Redis publish is under its own reason); the message itself was handed to the cluster,
    // which is what the ack says.
    if let Err(e) = ns.to(publish.room.clone()).emit("msg", &msg).await {
        tracing::debug!(error = %e, "publish partially delivered");
    }
    let emitted = Instant::now();
    metrics.pubsub_stage(PubsubStage::Emit, emitted - taken);
    drop(publish);
    if ack_id.is_some() {
        // After that long a client that does not read has failed its heartbeat and is gone.
        let ack_wait = Config::ms(app.config.ping_interval_ms + app.config.ping_timeout_ms);
        ack_ok(&socket, ack_id, ack_wait, &app).await;
        metrics.pubsub_stage(PubsubStage::Ack, emitted.elapsed());
    }
}

/// Acks `{ok: true}`, waiting while the publisher's packet buffer is full (see
/// [`publish_loop`]). Gives up when the socket is gone, or after `limit`, counting the lost ack
/// as a `socket_buffer_full` drop.
async fn ack_ok(s: &Arc<Socket<Adapter>>, ack_id: Option<i64>, limit: Duration, app: &App) {
    let deadline = Instant::now() + limit;
    let mut pause = ACK_RETRY_MIN;
    loop {
        match ack_sender(s, ack_id).send(&ACK_OK) {
            Err(SendError::Socket(SocketError::InternalChannelFull)) => {
                if !s.connected() {
                    return;
                }
                if Instant::now() >= deadline {
                    app.cluster
                        .metrics()
                        .drop_n(DropReason::SocketBufferFull, 1);
                    tracing::warn!(
                        sid = %s.id,
                        "publish ack dropped: the publisher's buffer stayed full"
                    );
                    return;
                }
                if pause == ACK_RETRY_MIN {
                    app.metrics.pubsub_acks_waited.inc();
                    tracing::debug!(
                        sid = %s.id,
                        "publish ack waits for room in the publisher's buffer"
                    );
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(ACK_RETRY_MAX);
            }
            // Sent, or the socket is closed (nobody to tell).
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use socketioxide_core::parser::Parse;
    use socketioxide_parser_common::CommonParser;

    use super::*;

    #[test]
    fn raw_data_is_forwarded_verbatim() {
        let p: Publish =
            serde_json::from_str(r#"{"room":"r","data":{"seq":7, "s":"a\"b"}}"#).unwrap();
        assert_eq!(p.data.get(), r#"{"seq":7, "s":"a\"b"}"#);
        let msg = Msg {
            room: &p.room,
            data: &p.data,
        };
        let v = CommonParser.encode_value(&msg, Some("msg")).unwrap();
        assert_eq!(
            v.as_str().map(|s| s.as_str()),
            Some(r#"["msg",{"room":"r","data":{"seq":7, "s":"a\"b"}}]"#)
        );
    }

    #[test]
    fn socket_io_args_parse_to_raw_data() {
        let mut v = Value::Str(
            r#"["publish",{"room":"r","data":[1,{"a":null}]}]"#.to_owned().into(),
            None,
        );
        let p: Publish = CommonParser.decode_value(&mut v, true).unwrap();
        assert_eq!((p.room.as_str(), p.data.get()), ("r", r#"[1,{"a":null}]"#));
        assert_eq!(queued_bytes(&p), 1 + 14 + std::mem::size_of::<Accepted>());
    }

    #[test]
    fn acks() {
        assert_eq!(
            serde_json::to_value(ACK_OK).unwrap(),
            serde_json::json!({"ok": true})
        );
    }
}
