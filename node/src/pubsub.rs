//! The client pub/sub namespace (`/pubsub`): `join` / `leave` a room, `publish {room, data}`
//! to every member of the room on every node (sender included) as `msg {room, data}`.
//!
//! Publishes of one socket are handed to the cluster in the order the client sent them: the
//! `publish` handler runs synchronously in the socket's read path and queues the message on the
//! socket's own ordered queue (socketioxide would otherwise spawn one task per message, which
//! does not keep order), and one task per publishing socket hands them over one at a time. The
//! publisher gets its ack `{ok: true}` once its message is handed to the cluster.
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

use ioscale_adapter::metrics::DropReason;
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

/// A publish waiting to be handed to the cluster.
struct Queued {
    publish: Publish,
    /// The publisher, kept rather than an `AckSender` so that an ack that finds the socket's
    /// buffer full can be tried again.
    socket: Arc<Socket<Adapter>>,
    ack_id: Option<i64>,
    /// What it counts against `--publish-buffer-bytes` (see [`queued_bytes`]).
    bytes: usize,
    /// When the handler accepted it (the `queue` stage).
    accepted: Instant,
}

/// What a queued publish holds: the room and data texts (owned copies, the received frame is
/// not kept) and the queue entry itself. Known without walking the data.
fn queued_bytes(p: &Publish) -> usize {
    p.room.len() + p.data.get().len() + std::mem::size_of::<Queued>()
}

/// A socket's publish queue, in its extensions.
#[derive(Clone)]
struct PublishQueue {
    tx: mpsc::UnboundedSender<Queued>,
    /// Bytes queued and not yet handed to the cluster: added by the handler, subtracted by the
    /// publish loop. The channel is unbounded because this is its bound.
    pending: Arc<AtomicUsize>,
}

/// Connect hook of `/pubsub`.
pub async fn on_connect(s: SocketRef<Adapter>, io: SocketIo<Adapter>, app: Arc<App>) {
    s.on("join", join_or_leave);
    s.on("leave", join_or_leave);
    let events = app.metrics.events.with_label_values(&[NAMESPACE]);
    let Some(budget) = sockets::budget(&s) else {
        tracing::error!(sid = %s.id, "a /pubsub socket without its event budget");
        return;
    };
    let identity = admission::identity(&s);
    s.on(
        "publish",
        OrderedPublish {
            io,
            app,
            events,
            budget,
            identity,
        },
    );
}

/// `join` / `leave` a room, acked `{ok: true}` or refused. Joining needs the connection's
/// grant; leaving is always allowed, but not the rooms the node put the socket in.
async fn join_or_leave(
    s: SocketRef<Adapter>,
    Event(event): Event,
    Data(room): Data<String>,
    ack: AckSender<Adapter>,
    State(app): State<Arc<App>>,
) {
    let join = event == "join";
    let checked = sockets::take_event(&s, &app).and_then(|()| {
        let r = if join {
            admission::identity(&s).grants.may_join(&room)
        } else {
            rooms::check_client(&room)
        };
        r.map_err(Refused::from)
    });
    match checked {
        Ok(()) if join => s.join(room),
        Ok(()) => s.leave(room),
        Err(r) => {
            let _ = ack.send(&r.to_json());
            return;
        }
    }
    let _ = ack.send(&ACK_OK);
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
    /// The socket's publish queue, made on its first publish: most sockets only subscribe,
    /// and a queue with its task costs about 7 KB per socket.
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
        tokio::spawn(publish_loop(
            rx,
            q.pending.clone(),
            self.io.clone(),
            self.app.clone(),
        ));
        q
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
        let q = self.queue(&s);
        // Only this socket's read path adds to `pending`, and the loop only subtracts: nothing
        // can raise it between this check and the add below.
        let pending = q.pending.load(Ordering::Acquire);
        // On an empty queue a publish larger than the whole bound still goes (it passed
        // `--max-payload-bytes`): no size of message is refused for ever.
        if pending > 0 && pending + bytes > self.app.config.publish_buffer_bytes {
            let e = format!("publish buffer full ({pending} bytes pending), retry later");
            return self.refuse(&s, ack_id, Refusal::BufferFull, Refused::new(Code::Busy, e));
        }
        q.pending.fetch_add(bytes, Ordering::AcqRel);
        let entry = Queued {
            publish,
            socket: s,
            ack_id,
            bytes,
            accepted: Instant::now(),
        };
        if let Err(mpsc::error::SendError(entry)) = q.tx.send(entry) {
            q.pending.fetch_sub(entry.bytes, Ordering::AcqRel);
            let e = "publish not accepted: the namespace is closing";
            let r = Refused::new(Code::Unavailable, e);
            self.refuse(&entry.socket, entry.ack_id, Refusal::Closed, r);
        }
    }
}

/// Hands a socket's publishes to the cluster one by one, in order, and acks each.
///
/// The publisher's own packet buffer (`--socket-buffer-packets`, 16,384 by default) carries
/// its acks and, when it is a member of the room, its own copies: two packets per publish,
/// 40,000 for a burst of 20,000. They fit because the socket's writer drains the buffer while
/// this loop fills it: the first ack wakes the writer on this thread, and the loop yields every
/// [`YIELD_EVERY`] publishes so the writer runs at the latest then (tokio also forces a yield
/// once a task's budget is spent, but that is its detail, not a promise). For a client that
/// reads, the buffer then does not grow with the length of the burst (tests/tests/burst.rs:
/// 20,000 at once, nothing dropped, no ack waited). Raising the default instead would only
/// move the limit, and a full buffer is harmful in itself: engineioxide closes a socket whose
/// ping does not fit in it. When the buffer is full anyway (a client that reads too slowly or
/// not at all), the ack waits for room instead of being dropped: that stalls this socket's
/// publishes only, its byte-bounded queue fills, and its further publishes are refused.
async fn publish_loop(
    mut rx: mpsc::UnboundedReceiver<Queued>,
    pending: Arc<AtomicUsize>,
    io: SocketIo<Adapter>,
    app: Arc<App>,
) {
    // After that long a client that does not read has failed its heartbeat and is gone.
    let ack_wait = Config::ms(app.config.ping_interval_ms + app.config.ping_timeout_ms);
    let mut handed: u32 = 0;
    while let Some(q) = rx.recv().await {
        let Some(ns) = io.of(NAMESPACE) else { return };
        let Queued {
            publish,
            socket,
            ack_id,
            bytes,
            accepted,
        } = q;
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
        pending.fetch_sub(bytes, Ordering::AcqRel);
        drop(publish);
        if ack_id.is_some() {
            ack_ok(&socket, ack_id, ack_wait, &app).await;
            metrics.pubsub_stage(PubsubStage::Ack, emitted.elapsed());
        }
        handed = handed.wrapping_add(1);
        if handed.is_multiple_of(YIELD_EVERY) {
            tokio::task::yield_now().await;
        }
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
        assert_eq!(queued_bytes(&p), 1 + 14 + std::mem::size_of::<Queued>());
    }

    #[test]
    fn acks() {
        assert_eq!(
            serde_json::to_value(ACK_OK).unwrap(),
            serde_json::json!({"ok": true})
        );
    }
}
