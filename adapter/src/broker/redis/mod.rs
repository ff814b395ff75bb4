//! The Redis broker on fred: one publishing and one subscribing connection per node, ordered
//! publishing with a bound on what is in flight, and the dispatcher that hands incoming
//! messages to the [`Hub`].
//!
//! Guarantees:
//! - messages published by one node arrive at every other node in publish order (each publish
//!   is handed to fred's command queue by the caller itself, before `publish` returns, and one
//!   connection writes that queue in order);
//! - a caller waits when `publish_queue` messages are in flight instead of losing the message;
//! - recorded broadcasts go out in batches while earlier ones are unanswered (`batch`), and a
//!   plain publish never overtakes one waiting in the batch forming;
//! - while Redis is unreachable, publishing fails fast (the message is counted as dropped) so
//!   that local delivery is never held up;
//! - after a reconnect every subscription is restored;
//! - a Redis that stops answering while its sockets stay open (a stalled process, a network
//!   black hole) is noticed within the Redis timeout plus one probe interval (`probe`): the
//!   broker reports itself down and reconnects until Redis answers again;
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
    interfaces::{ClientLike, LuaInterface, PubsubInterface, StreamsInterface},
    types::{
        Builder, Value,
        config::{Config, ReconnectPolicy, UnresponsiveConfig},
    },
};
use futures_util::{FutureExt as _, future::BoxFuture};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{
    Broker, Entry, Hub, Recorded,
    batch::{self, Batch, Batches, Record},
    outbox::{Outbox, Queue, Waiting},
    sequence::ChannelSeqs,
    subscriptions::{Op, SubscriptionQueue},
};

mod probe;
mod range;
mod tasks;

use probe::spawn_prober;
use range::parse_range;
use tasks::{spawn_counter_sweeper, spawn_dispatcher, spawn_outbox_flusher, watch_reconnects};

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
    /// Per connection (publisher, subscriber): set when it failed or stalled, so the next
    /// connection counts as a reconnection (and, for the subscriber, one that missed messages).
    lost: [AtomicBool; 2],
    /// Set while a connection's `PING` went unanswered and no later one was answered: fred
    /// may still call such a connection connected.
    stalled: AtomicBool,
    /// How long Redis has to answer the probe's `PING`.
    redis_timeout: Duration,
    /// Per connection: answers (publisher) or messages (subscriber) received, so the probe
    /// tells a busy connection, whose `PING` waits behind a backlog, from a stalled one.
    progress: [AtomicU64; 2],
}

/// Which of the broker's two connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Conn {
    Publisher = 0,
    Subscriber = 1,
}

impl Conn {
    /// A log field value.
    fn as_str(self) -> &'static str {
        match self {
            Conn::Publisher => "publisher",
            Conn::Subscriber => "subscriber",
        }
    }
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
            p.default_command_timeout = config.redis_timeout;
            // Commands handed over together are written with one flush, up to this many.
            p.max_feed_count = config.publish_batch as u64;
        })
        .with_connection_config(|c| {
            c.connection_timeout = Duration::from_secs(2);
            c.internal_command_timeout = config.redis_timeout;
            // fred's own check only fires when nothing was written for `max_timeout` while an
            // answer is due, which steady publishing (heartbeats) never allows; `probe` is what
            // notices a stall. This one stays as a backstop.
            c.unresponsive = UnresponsiveConfig {
                max_timeout: Some(config.redis_timeout * 2),
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
            lost: [AtomicBool::new(false), AtomicBool::new(false)],
            stalled: AtomicBool::new(false),
            redis_timeout: config.redis_timeout,
            progress: [AtomicU64::new(0), AtomicU64::new(0)],
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
        spawn_counter_sweeper(&inner);
        spawn_prober(&inner);
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
        self.publisher.is_connected()
            && self.subscriber.is_connected()
            && !self.stalled.load(Ordering::SeqCst)
    }

    /// `conn` failed or stalled: the namespaces hold what arrives until they caught up (once,
    /// for the subscriber), and the next connection counts as a reconnection.
    fn connection_lost(&self, conn: Conn) {
        let was_lost = self.lost[conn as usize].swap(true, Ordering::SeqCst);
        if conn == Conn::Subscriber && !was_lost {
            self.hub.subscription_lost();
        }
        self.update_connected_gauge();
    }

    fn update_connected_gauge(&self) {
        self.hub
            .metrics
            .redis_connected
            .set(i64::from(self.is_connected()));
    }

    /// Times an answer that was not in at once; a failed one may mean a lost connection.
    fn answered(&self, sent: Instant, ok: bool) {
        self.hub.metrics.stage(Stage::RedisPipeline, sent.elapsed());
        if ok {
            // Only a real answer is progress: a command that timed out is not one.
            self.progress[Conn::Publisher as usize].fetch_add(1, Ordering::Relaxed);
        } else {
            self.update_connected_gauge();
        }
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
        // Nothing overtakes a broadcast waiting in the forming batch.
        let mut queue = self.outbox.lock();
        if let Some(open) = queue.batches.open.take() {
            self.issue_batch(&mut queue.batches, open);
        }
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
                inner.answered(sent, answer.is_ok());
                account(&inner.hub, kind, bytes, answer);
            }
        });
    }

    /// Issues a recorded broadcast, or keeps it in the outbox while Redis is unreachable or
    /// older ones still wait there.
    fn issue_or_hold(self: &Arc<Self>, record: Record, permit: OwnedSemaphorePermit) {
        let mut queue = self.outbox.lock();
        if self.publisher.is_connected() && queue.is_empty() {
            return self.enqueue(&mut queue, record, Some(permit));
        }
        drop(permit);
        if queue
            .push(Waiting::new(record), &self.outbox.limits)
            .is_err()
        {
            self.hub.drop_messages(DropReason::OutboxFull, 1);
        }
        self.hub.metrics.outbox_messages.set(queue.len() as i64);
    }

    /// Numbers `record` (under the outbox's lock: numbers go out in order) and issues it in a
    /// batch of its own while few batches are unanswered, or adds it to the batch forming.
    fn enqueue(
        self: &Arc<Self>,
        queue: &mut Queue,
        record: Record,
        permit: Option<OwnedSemaphorePermit>,
    ) {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        // Numbered once, when the broadcast leaves for Redis (never one the outbox drops), so
        // receivers see a gap only for what Redis had.
        let numbered = self.channel_seqs.next(&record.message.channel);
        let batches = &mut queue.batches;
        if let Some(open) = batches.open.take_if(|b| !b.accepts(&record)) {
            self.issue_batch(batches, open);
        }
        let mut open = batches
            .open
            .take()
            .unwrap_or_else(|| Batch::for_record(&record));
        open.push(record, seq, numbered, permit);
        if open.is_full() || batches.in_flight < batch::MAX_IN_FLIGHT {
            self.issue_batch(batches, open);
        } else {
            batches.open = Some(open);
        }
    }

    /// Writes `batch` (one script call) and counts its broadcasts once the answer is in; the
    /// answer lets the batch formed meanwhile go.
    fn issue_batch(self: &Arc<Self>, batches: &mut Batches, mut batch: Batch) {
        // Issued even if the connection just went: these were admitted while it was up, and
        // fred keeps a command through its reconnection (or fails it, counted, after the
        // command timeout), as it does for the ones already written.
        self.hub.metrics.publish_queue_depth.add(batch.len() as i64);
        let sent = Instant::now();
        let (keys, args) = batch.take_command(&self.origin);
        let client = self.publisher.clone();
        let mut answer = async move {
            client
                .eval::<Value, _, _, _>(batch::RECORD_MANY, keys, args)
                .await
        }
        .boxed();
        if let Some(answer) = (&mut answer).now_or_never() {
            return account_batch(&self.hub, &batch, answer.map(drop));
        }
        batches.in_flight += 1;
        let inner = Arc::downgrade(self);
        tokio::spawn(async move {
            let answer = answer.await.map(drop);
            // The places in flight are free once Redis answered.
            batch.permits.clear();
            if let Some(inner) = inner.upgrade() {
                inner.answered(sent, answer.is_ok());
                account_batch(&inner.hub, &batch, answer);
                inner.batch_answered();
            }
        });
    }

    /// One batch fewer unanswered: the one formed meanwhile leaves.
    fn batch_answered(self: &Arc<Self>) {
        let mut queue = self.outbox.lock();
        let batches = &mut queue.batches;
        batches.in_flight = batches.in_flight.saturating_sub(1);
        if batches.in_flight < batch::MAX_IN_FLIGHT
            && let Some(open) = batches.open.take()
        {
            self.issue_batch(batches, open);
        }
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
            self.enqueue(&mut queue, w.record, None);
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
            let record = Record {
                stream,
                max_len,
                message,
            };
            self.inner.issue_or_hold(record, permit);
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

/// What the broadcasts of a batch became, counted once its answer is in.
fn account_batch(hub: &Hub, batch: &Batch, answer: FredResult<()>) {
    hub.metrics.publish_queue_depth.sub(batch.len() as i64);
    match answer {
        Ok(()) => {
            for t in &batch.tallies {
                hub.metrics
                    .messages_out
                    .with_label_values(&[t.kind])
                    .inc_by(t.messages);
                let out = hub.metrics.bytes_out.with_label_values(&[t.kind]);
                out.inc_by(t.bytes);
            }
        }
        Err(e) => {
            tracing::debug!(error = %e, "recording failed");
            hub.drop_messages(DropReason::PublishFailed, batch.len() as u64);
        }
    }
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
