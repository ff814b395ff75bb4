//! The Redis broker on fred: one publishing and one subscribing connection per node, ordered
//! publishing with a bound on what is in flight, and the dispatcher that hands incoming
//! messages to the [`Hub`].
//!
//! Guarantees:
//! - messages published by one node arrive at every other node in publish order (each publish
//!   is handed to fred's command queue by the caller itself, before `publish` returns, and one
//!   connection writes that queue in order);
//! - a caller waits when `publish_queue` messages are in flight instead of losing the message;
//! - while Redis is unreachable, publishing fails fast (the message is counted as dropped) so
//!   that local delivery is never held up;
//! - after a reconnect every subscription is restored;
//! - every message that cannot be delivered is counted in `ioscale_adapter_dropped_total` and
//!   logged at most once per second.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use fred::{
    clients::{Client, SubscriberClient},
    error::Error as FredError,
    interfaces::{ClientLike, EventInterface, LuaInterface, PubsubInterface, StreamsInterface},
    types::{
        Builder, Value,
        config::{Config, ReconnectPolicy, UnresponsiveConfig},
    },
};
use futures_util::{FutureExt as _, future::BoxFuture};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast::error::RecvError};

use super::{
    Broker, Entry, Hub, Recorded,
    outbox::{Command, Outbox, Waiting},
    sequence::ChannelSeqs,
    subscriptions::{Op, SubscriptionQueue},
};

type FredResult<T> = std::result::Result<T, FredError>;
use crate::{
    config::AdapterConfig,
    error::{Error, Result},
    history::Offset,
    metrics::{DropReason, Stage},
};

struct Inner {
    outbox: Outbox,
    /// This process's name as a publisher of recorded broadcasts: the node id and a nonce,
    /// so a restarted node's sequence starts afresh.
    origin: String,
    next_seq: AtomicU64,
    /// The numbers receivers find gaps by, per channel.
    channel_seqs: Arc<ChannelSeqs>,
    publisher: Client,
    subscriber: SubscriberClient,
    sharded: bool,
    hub: Arc<Hub>,
    /// One permit per message published and not yet answered: the backpressure bound.
    in_flight: Arc<Semaphore>,
    /// Subscribes and unsubscribes, in order and batched.
    subscriptions: SubscriptionQueue,
}

/// The Redis broker of one node.
pub(crate) struct RedisBroker {
    inner: Arc<Inner>,
}

fn fred_builder(config: &AdapterConfig) -> Result<(Builder, bool)> {
    let mut fred_config = Config::from_url(&config.redis_url)?;
    // Keep retrying the first connection too: a node may start before Redis.
    fred_config.fail_fast = false;
    let sharded = fred_config.server.is_clustered();
    let mut builder = Builder::from_config(fred_config);
    builder
        .with_performance_config(|p| {
            p.broadcast_channel_capacity = config.subscriber_buffer;
            // A publish must not wait forever on a dead connection; local delivery
            // depends on the queue draining.
            p.default_command_timeout = Duration::from_secs(3);
            // Commands handed over together are written with one flush, up to this many.
            p.max_feed_count = config.publish_batch as u64;
        })
        .with_connection_config(|c| {
            c.connection_timeout = Duration::from_secs(2);
            c.internal_command_timeout = Duration::from_secs(3);
            c.unresponsive = UnresponsiveConfig {
                max_timeout: Some(Duration::from_secs(5)),
                interval: Duration::from_secs(1),
            };
        })
        // Unlimited attempts, 100 ms doubling to 2 s: a Redis restart is survived.
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2));
    Ok((builder, sharded))
}

impl RedisBroker {
    /// Builds the clients and starts connecting. Returns once connected, or after
    /// `connect_wait` with the clients still retrying in the background (the node then starts
    /// not ready, and becomes ready when Redis comes up).
    pub(crate) async fn connect(
        config: &AdapterConfig,
        hub: Arc<Hub>,
        connect_wait: Duration,
    ) -> Result<Self> {
        let (mut builder, sharded) = fred_builder(config)?;
        let subscriber = builder.build_subscriber_client()?;
        builder.with_performance_config(|p| {
            p.broadcast_channel_capacity = crate::config::publisher_event_buffer();
        });
        let publisher = builder.build()?;
        let subscriptions =
            SubscriptionQueue::start(subscriber.clone(), sharded, hub.metrics.clone());
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
            ^ u128::from(std::process::id());
        let inner = Arc::new(Inner {
            outbox: Outbox::new(config.outbox),
            origin: format!("{}~{nonce:x}", config.node_id),
            next_seq: AtomicU64::new(0),
            channel_seqs: Arc::default(),
            publisher,
            subscriber,
            sharded,
            hub,
            in_flight: Arc::new(Semaphore::new(config.publish_queue)),
            subscriptions,
        });
        // Subscriptions are replayed by `watch_reconnects` after every (re)connection. fred's
        // own `manage_subscriptions` is not used: it sends `SUBSCRIBE` with an empty channel
        // list on a sharded cluster, which Redis rejects, and the error can land on a
        // pipelined `SSUBSCRIBE` of ours.
        inner.publisher.connect();
        inner.subscriber.connect();
        spawn_dispatcher(&inner);
        watch_reconnects(&inner);
        spawn_outbox_flusher(&inner);
        let wait = async {
            inner.publisher.wait_for_connect().await?;
            inner.subscriber.wait_for_connect().await
        };
        match tokio::time::timeout(connect_wait, wait).await {
            Ok(Ok(())) => tracing::info!(sharded, "connected to redis"),
            Ok(Err(e)) => tracing::warn!(error = %e, "redis not reachable yet, retrying"),
            Err(_) => tracing::warn!("redis not reachable yet, retrying in the background"),
        }
        inner.update_connected_gauge();
        Ok(Self { inner })
    }
}

impl Inner {
    fn is_connected(&self) -> bool {
        self.publisher.is_connected() && self.subscriber.is_connected()
    }

    fn update_connected_gauge(&self) {
        self.hub
            .metrics
            .redis_connected
            .set(i64::from(self.is_connected()));
    }

    /// Hands one message to fred and, when its answer is not in at once, leaves a task to
    /// count it. The first poll of fred's command future puts the command in the client's
    /// queue (fred's `basic_request_response` sends before its first await), so messages go
    /// out in the order of `send` calls, without a hop through a task of ours: at a few
    /// hundred publishes a second that hop was a scheduler wake (0.1-0.25 ms median) ahead of
    /// every message.
    fn send(
        self: &Arc<Self>,
        channel: String,
        payload: Vec<u8>,
        kind: &'static str,
        permit: OwnedSemaphorePermit,
    ) {
        let sharded = self.sharded;
        self.issue(payload.len(), kind, Some(permit), move |client| {
            async move {
                let payload = Bytes::from(payload);
                if sharded {
                    client.spublish::<Value, _, _>(channel, payload).await
                } else {
                    client.publish::<Value, _, _>(channel, payload).await
                }
            }
            .boxed()
        });
    }

    /// Queues `command` on the publishing connection, in call order with every other publish,
    /// and accounts for its answer without waiting for it (the connection pipelines).
    fn issue(
        self: &Arc<Self>,
        bytes: usize,
        kind: &'static str,
        permit: Option<OwnedSemaphorePermit>,
        command: impl FnOnce(Client) -> BoxFuture<'static, FredResult<Value>>,
    ) {
        if !self.publisher.is_connected() {
            self.update_connected_gauge();
            self.hub.drop_messages(DropReason::RedisUnavailable, 1);
            return;
        }
        self.hub.metrics.publish_queue_depth.inc();
        let sent = Instant::now();
        let mut answer = command(self.publisher.clone());
        if let Some(answer) = (&mut answer).now_or_never() {
            return account(&self.hub, kind, bytes, answer);
        }
        let inner = Arc::downgrade(self);
        tokio::spawn(async move {
            let answer = answer.await;
            drop(permit);
            if let Some(inner) = inner.upgrade() {
                inner
                    .hub
                    .metrics
                    .stage(Stage::RedisPipeline, sent.elapsed());
                if answer.is_err() {
                    inner.update_connected_gauge();
                }
                account(&inner.hub, kind, bytes, answer);
            }
        });
    }

    /// Issues a recorded broadcast, or keeps it in the outbox while Redis is unreachable or
    /// older ones still wait there.
    fn issue_or_hold(self: &Arc<Self>, w: Waiting, permit: OwnedSemaphorePermit) {
        let mut queue = self.outbox.lock();
        if self.publisher.is_connected() && queue.is_empty() {
            // Issued under the lock: sequence numbers go out in order.
            let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
            let command = w.command;
            return self.issue(w.bytes, w.kind, Some(permit), move |c| command(c, seq));
        }
        drop(permit);
        if queue.push(w, &self.outbox.limits).is_err() {
            self.hub.drop_messages(DropReason::OutboxFull, 1);
        }
        self.hub.metrics.outbox_messages.set(queue.len() as i64);
    }

    /// Sends what waits in the outbox, oldest first, while Redis is reachable; drops (counted)
    /// what waited too long.
    fn flush_outbox(self: &Arc<Self>) {
        let mut queue = self.outbox.lock();
        if queue.is_empty() {
            return;
        }
        while self.publisher.is_connected() {
            let (next, expired) = queue.pop(&self.outbox.limits);
            if expired > 0 {
                self.hub.drop_messages(DropReason::OutboxExpired, expired);
            }
            let Some(w) = next else { break };
            let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
            let command = w.command;
            self.issue(w.bytes, w.kind, None, move |c| command(c, seq));
        }
        self.hub.metrics.outbox_messages.set(queue.len() as i64);
    }

    async fn resubscribe(&self) {
        let channels = self.hub.channels();
        let n = channels.len();
        if let Err(e) = self.subscriptions.request(Op::Subscribe, channels).await {
            tracing::warn!(error = %e, channels = n, "resubscribe failed");
        }
    }
}

impl RedisBroker {
    /// A place in the publish queue, waiting while it is full (backpressure).
    async fn permit(&self) -> Result<OwnedSemaphorePermit> {
        let asked = Instant::now();
        let permit = self.inner.in_flight.clone().acquire_owned().await;
        let permit = permit.map_err(|_| Error::Closed)?;
        self.inner
            .hub
            .metrics
            .stage(Stage::PublishQueue, asked.elapsed());
        Ok(permit)
    }
}

impl Broker for RedisBroker {
    fn publish(
        &self,
        channel: String,
        payload: Vec<u8>,
        kind: &'static str,
    ) -> BoxFuture<'_, Result<()>> {
        async move {
            let permit = self.permit().await?;
            self.inner.send(channel, payload, kind, permit);
            Ok(())
        }
        .boxed()
    }

    fn record(
        &self,
        stream: String,
        max_len: usize,
        message: Recorded,
    ) -> BoxFuture<'_, Result<()>> {
        async move {
            let permit = self.permit().await?;
            let Recorded {
                channel,
                payload,
                kind,
            } = message;
            let bytes = payload.len();
            let last_seq = format!("{stream}#from#{}", self.inner.origin);
            let channel_seqs = self.inner.channel_seqs.clone();
            // Called once, when the broadcast leaves for Redis (never for one the outbox
            // drops), so receivers see a gap only for what Redis had.
            let command: Command = Box::new(move |client: Client, seq: u64| {
                let numbered = channel_seqs.next(&channel);
                async move {
                    let args: Vec<Value> = vec![
                        Value::from(max_len as i64),
                        Value::from(channel),
                        Value::Bytes(Bytes::from(payload)),
                        Value::from(seq.to_string()),
                        Value::from(numbered.to_string()),
                    ];
                    let keys = vec![stream, last_seq];
                    client.eval::<Value, _, _, _>(RECORD, keys, args).await
                }
                .boxed()
            });
            self.inner
                .issue_or_hold(Waiting::new(command, bytes, kind), permit);
            Ok(())
        }
        .boxed()
    }

    fn range(
        &self,
        stream: String,
        start: Offset,
        count: usize,
    ) -> BoxFuture<'static, Result<Vec<Entry>>> {
        let client = self.inner.publisher.clone();
        async move {
            let answer: Value = client
                .xrange(stream, start.to_string(), "+", Some(count as u64))
                .await?;
            parse_range(answer)
        }
        .boxed()
    }

    fn keeps_history(&self) -> bool {
        // A script may only touch keys of one hash slot; a room channel's slot is not the
        // stream's, so sharded publishes cannot be recorded in the same step.
        !self.inner.sharded
    }

    // While the subscriber is down both answer at once: the hub routes the channel already,
    // and every (re)connection subscribes every routed channel (`watch_reconnects`), so a
    // node that starts while Redis is down (or refuses its credentials) starts not ready
    // instead of failing; an unsubscribed channel is unrouted, so it is not subscribed again.
    fn subscribe(&self, channels: Vec<String>) -> BoxFuture<'static, Result<()>> {
        self.inner
            .subscriptions
            .request(Op::Subscribe, channels)
            .boxed()
    }

    fn unsubscribe(&self, channels: Vec<String>) -> BoxFuture<'static, Result<()>> {
        self.inner
            .subscriptions
            .request(Op::Unsubscribe, channels)
            .boxed()
    }

    fn is_connected(&self) -> bool {
        self.inner.is_connected()
    }

    fn reaches_peers(&self) -> bool {
        true
    }

    fn sharded(&self) -> bool {
        self.inner.sharded
    }

    fn redis_client(&self) -> Option<Client> {
        Some(self.inner.publisher.clone())
    }

    fn quit(&self) -> BoxFuture<'_, ()> {
        async move {
            // Publishes after this fail with `Closed` instead of waiting for a permit.
            self.inner.in_flight.close();
            // QUIT waits for a connection; one that never came up must not hold shutdown.
            let quit = async {
                let _ = self.inner.publisher.quit().await;
                let _ = self.inner.subscriber.quit().await;
            };
            let _ = tokio::time::timeout(Duration::from_secs(1), quit).await;
        }
        .boxed()
    }
}

fn spawn_dispatcher(inner: &Arc<Inner>) {
    let mut rx = inner.subscriber.message_rx();
    let weak = Arc::downgrade(inner);
    tokio::spawn(async move {
        loop {
            let msg = rx.recv().await;
            let Some(inner) = weak.upgrade() else { break };
            match msg {
                Ok(msg) => match msg.value.as_bytes() {
                    Some(bytes) => inner.hub.deliver(&msg.channel, bytes),
                    None => inner.hub.drop_messages(DropReason::Decode, 1),
                },
                Err(RecvError::Lagged(n)) => {
                    inner.hub.drop_messages(DropReason::SubscriberLagged, n);
                }
                Err(RecvError::Closed) => break,
            }
        }
    });
}

/// Flushes the outbox soon after Redis is back (the reconnection handler flushes too; this
/// also expires what waits while the connection comes and goes).
fn spawn_outbox_flusher(inner: &Arc<Inner>) {
    let weak = Arc::downgrade(inner);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let Some(inner) = weak.upgrade() else { break };
            inner.flush_outbox();
        }
    });
}

fn watch_reconnects(inner: &Arc<Inner>) {
    for (client, is_subscriber) in [
        (inner.publisher.clone(), false),
        (inner.subscriber.to_client(), true),
    ] {
        // Set when a connection fails; the next successful connection is a reconnection.
        // (The client also announces its first connections, one per cluster shard.)
        let lost = Arc::new(AtomicBool::new(false));
        let weak = Arc::downgrade(inner);
        let mut reconnects = client.reconnect_rx();
        let lost_r = lost.clone();
        tokio::spawn(async move {
            let mut connected_before = false;
            while reconnects.recv().await.is_ok() {
                let Some(inner) = weak.upgrade() else { break };
                inner.update_connected_gauge();
                if is_subscriber {
                    // A new subscriber connection after an earlier one missed whatever was
                    // published in between: what arrives now waits until the namespaces
                    // caught up from their history, which they read once resubscribed.
                    let again = std::mem::replace(&mut connected_before, !inner.sharded);
                    if again {
                        inner.hub.subscription_lost();
                    }
                    inner.resubscribe().await;
                    if again {
                        inner.hub.resubscribed();
                    }
                } else {
                    inner.flush_outbox();
                }
                if lost_r.swap(false, Ordering::SeqCst) {
                    inner.hub.metrics.redis_reconnects.inc();
                    tracing::warn!("reconnected to redis");
                    inner.hub.reconnected();
                }
            }
        });
        let weak = Arc::downgrade(inner);
        let mut errors = client.error_rx();
        tokio::spawn(async move {
            while let Ok(e) = errors.recv().await {
                let Some(inner) = weak.upgrade() else { break };
                if is_subscriber && !lost.load(Ordering::SeqCst) {
                    inner.hub.subscription_lost();
                }
                lost.store(true, Ordering::SeqCst);
                inner.update_connected_gauge();
                tracing::warn!(error = %e.0, "redis connection error");
            }
        });
    }
}

/// Appends the broadcast to the namespace's history and publishes it stamped with its stream
/// id, atomically: Redis runs scripts one at a time, so subscribers see ids in stream order.
/// Once per publish: `KEYS[2]` keeps the last sequence number this publisher recorded, so a
/// command the client sends again after a lost connection (it may have run before the
/// connection broke) is not recorded twice. `ARGV[5]` is the broadcast's number on its channel
/// (`history::Seq`), kept with the entry (`q`) and sent after the id.
const RECORD: &str = "local last = tonumber(redis.call('GET', KEYS[2]) or '-1')\n\
if tonumber(ARGV[4]) <= last then return false end\n\
redis.call('SET', KEYS[2], ARGV[4], 'PX', 3600000)\n\
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'm', ARGV[3], 'q', ARGV[5])\n\
redis.call('PUBLISH', ARGV[2], '!' .. id .. ' ' .. ARGV[5] .. '\\n' .. ARGV[3])\n\
return id";

/// The entries of an `XRANGE` answer: `[[id, [field, value, ..]], ..]`, the values of `m` (the
/// envelope) and `q` (its number, when it has one).
fn parse_range(answer: Value) -> Result<Vec<Entry>> {
    let Value::Array(entries) = answer else {
        return match answer {
            Value::Null => Ok(Vec::new()),
            _ => Err(Error::MalformedHistory),
        };
    };
    entries
        .into_iter()
        .map(|entry| {
            let Value::Array(mut parts) = entry else {
                return Err(Error::MalformedHistory);
            };
            let fields = parts.pop();
            let id = parts.pop().and_then(|v| v.as_string());
            let offset = id
                .and_then(|id| id.parse().ok())
                .ok_or(Error::MalformedHistory)?;
            let Some(Value::Array(fields)) = fields else {
                return Err(Error::MalformedHistory);
            };
            let field = |name: &str| {
                fields.chunks(2).find_map(|kv| match kv {
                    [k, Value::Bytes(b)] if k.as_str().as_deref() == Some(name) => Some(b.clone()),
                    [k, Value::String(s)] if k.as_str().as_deref() == Some(name) => {
                        Some(Bytes::copy_from_slice(s.as_bytes()))
                    }
                    _ => None,
                })
            };
            let seq = field("q").and_then(|q| std::str::from_utf8(&q).ok()?.parse().ok());
            Ok(Entry {
                offset,
                seq,
                payload: field("m").ok_or(Error::MalformedHistory)?,
            })
        })
        .collect()
}

/// What a publish became, counted once its answer is in.
fn account(hub: &Hub, kind: &'static str, bytes: usize, answer: FredResult<Value>) {
    hub.metrics.publish_queue_depth.dec();
    match answer {
        Ok(_) => {
            hub.metrics.messages_out.with_label_values(&[kind]).inc();
            let out = hub.metrics.bytes_out.with_label_values(&[kind]);
            out.inc_by(bytes as u64);
        }
        Err(e) => {
            tracing::debug!(error = %e, "publish failed");
            hub.drop_messages(DropReason::PublishFailed, 1);
        }
    }
}
