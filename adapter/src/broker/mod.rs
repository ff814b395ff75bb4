//! The broker seam: what the adapter needs from whatever carries messages between nodes
//! (publish in order, subscribe and unsubscribe channels, inbound messages routed to their
//! namespace, connection state), with the Redis implementation on fred ([`redis`]), an
//! in-process one that joins several nodes inside one process ([`memory`]), and none at all
//! for a node that runs alone.
//!
//! [`Driver`] is what the namespaces hold: it checks sizes, counts drops and keeps the
//! channel → namespace routes that every broker delivers through.

mod batch;
pub(crate) mod memory;
pub(crate) mod outbox;
pub(crate) mod redis;
pub(crate) mod sequence;
mod subscriptions;

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, RwLock, Weak},
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures_util::{FutureExt as _, future::BoxFuture};

use crate::{
    error::{Error, Result},
    history::Offset,
    metrics::{DropReason, Metrics},
};

/// One entry of a history stream.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) offset: Offset,
    /// Its publisher's number on its channel (entries of older builds have none).
    pub(crate) seq: Option<crate::history::Seq>,
    pub(crate) payload: Bytes,
}

/// A broadcast to record: the channel it is published on and its envelope.
pub(crate) struct Recorded {
    pub(crate) channel: String,
    pub(crate) payload: Vec<u8>,
    pub(crate) kind: &'static str,
}

/// Receives the raw messages of the channels it subscribed to, in arrival order.
pub(crate) trait Inbound: Send + Sync {
    /// Handles one message. Must not block: it runs on the broker's dispatcher task.
    fn on_message(self: Arc<Self>, channel: &str, payload: &[u8]);
    /// Called after the connection to the broker was re-established.
    fn on_reconnect(self: Arc<Self>);
    /// Called when the subscription was lost, before it is restored.
    fn on_subscription_lost(self: Arc<Self>) {}
    /// Called once the subscription was restored after it was lost.
    fn on_resubscribed(self: Arc<Self>) {}
}

/// What the adapter needs from a message broker.
///
/// Guarantees an implementation gives: messages one node publishes arrive at every subscriber
/// of their channel in publish order; `publish` waits while the outgoing queue is full rather
/// than losing a message, and fails fast (counted) while the broker is unreachable; after a
/// reconnection every subscription is restored and [`Hub::reconnected`] is called.
pub(crate) trait Broker: Send + Sync + 'static {
    /// Queues `payload` for `channel`.
    fn publish(
        &self,
        channel: String,
        payload: Vec<u8>,
        kind: &'static str,
    ) -> BoxFuture<'_, Result<()>>;
    /// Starts receiving `channels` (delivered through the [`Hub`] the broker was built with).
    /// The request is queued when this is called, not when the future is polled: calls take
    /// effect in call order. The future resolves once the broker applied it.
    fn subscribe(&self, channels: Vec<String>) -> BoxFuture<'static, Result<()>>;
    /// Stops receiving `channels`; queued like [`Broker::subscribe`], in the same order.
    fn unsubscribe(&self, channels: Vec<String>) -> BoxFuture<'static, Result<()>>;
    /// Whether the broker is reachable now.
    fn is_connected(&self) -> bool;
    /// Whether other nodes can be reached through it at all (false for a node alone).
    fn reaches_peers(&self) -> bool;
    /// Whether channels are sharded (Redis Cluster).
    fn sharded(&self) -> bool {
        false
    }
    /// Appends `payload` to the history `stream` (trimmed to about `max_len` entries) and
    /// publishes it on `channel` stamped with the id the stream gave it (see
    /// [`crate::history`]), as one step: every subscriber sees stream ids in stream order.
    /// Queued in order with [`Broker::publish`], which it otherwise behaves like.
    fn record(
        &self,
        stream: String,
        max_len: usize,
        message: Recorded,
    ) -> BoxFuture<'_, Result<()>> {
        let _ = (stream, max_len, message);
        async { Err(Error::NoHistory) }.boxed()
    }
    /// Up to `count` entries of `stream` from `start` on (inclusive), in order.
    fn range(
        &self,
        stream: String,
        start: Offset,
        count: usize,
    ) -> BoxFuture<'static, Result<Vec<Entry>>> {
        let _ = (stream, start, count);
        async { Err(Error::NoHistory) }.boxed()
    }
    /// Whether [`Broker::record`] and [`Broker::range`] work.
    fn keeps_history(&self) -> bool {
        false
    }
    /// A Redis client on the publishing connection, for the node's own data.
    fn redis_client(&self) -> Option<fred::clients::Client> {
        None
    }
    /// Closes the connections.
    fn quit(&self) -> BoxFuture<'_, ()>;
}

/// Logs a condition at most once per second, with the number of occurrences since the last log.
#[derive(Debug, Default)]
pub(crate) struct BurstLog {
    state: Mutex<(Option<Instant>, u64)>,
}

impl BurstLog {
    /// Records `n` occurrences; returns the count to log if a log line is due.
    pub(crate) fn hit(&self, n: u64) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.1 += n;
        let due = s.0.is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
        if due {
            s.0 = Some(Instant::now());
            Some(std::mem::take(&mut s.1))
        } else {
            None
        }
    }
}

/// What a broker shares with the adapter: the routes of inbound messages, the metrics and the
/// drop counter.
pub(crate) struct Hub {
    routes: RwLock<HashMap<String, Weak<dyn Inbound>>>,
    pub(crate) metrics: Metrics,
    drop_log: BurstLog,
}

impl Hub {
    pub(crate) fn new(metrics: Metrics) -> Arc<Self> {
        Arc::new(Self {
            routes: RwLock::new(HashMap::new()),
            metrics,
            drop_log: BurstLog::default(),
        })
    }

    /// Counts and (at most once per second) logs dropped messages.
    pub(crate) fn drop_messages(&self, reason: DropReason, n: u64) {
        self.metrics.drop_n(reason, n);
        if let Some(count) = self.drop_log.hit(n) {
            tracing::warn!(
                reason = reason.as_str(),
                count,
                "adapter dropped messages (see ioscale_adapter_dropped_total)"
            );
        }
    }

    /// Hands one inbound message to the namespace that subscribed its channel. A channel no
    /// longer served (an unsubscribe in flight) is not ours to deliver.
    pub(crate) fn deliver(&self, channel: &str, payload: &[u8]) {
        let handler = self
            .routes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(channel)
            .and_then(Weak::upgrade);
        if let Some(h) = handler {
            h.on_message(channel, payload);
        }
    }

    /// The channels subscribed now, to restore after a reconnection.
    pub(crate) fn channels(&self) -> Vec<String> {
        let routes = self.routes.read().unwrap_or_else(|e| e.into_inner());
        routes.keys().cloned().collect()
    }

    /// Tells every namespace once that the broker reconnected (a namespace owns two channels).
    pub(crate) fn reconnected(&self) {
        for h in self.handlers() {
            h.on_reconnect();
        }
    }

    /// Tells every namespace once that the subscription was lost.
    pub(crate) fn subscription_lost(&self) {
        for h in self.handlers() {
            h.on_subscription_lost();
        }
    }

    /// Tells every namespace once that the subscription was restored after a loss.
    pub(crate) fn resubscribed(&self) {
        for h in self.handlers() {
            h.on_resubscribed();
        }
    }

    /// Every namespace handler, once each.
    fn handlers(&self) -> Vec<Arc<dyn Inbound>> {
        let handlers: Vec<_> = {
            let routes = self.routes.read().unwrap_or_else(|e| e.into_inner());
            routes.values().filter_map(Weak::upgrade).collect()
        };
        let mut seen = HashSet::new();
        handlers
            .into_iter()
            .filter(|h| seen.insert(Arc::as_ptr(h).cast::<()>()))
            .collect()
    }

    fn route(&self, channel: &str, handler: Option<Weak<dyn Inbound>>) {
        let mut routes = self.routes.write().unwrap_or_else(|e| e.into_inner());
        match handler {
            Some(h) => routes.insert(channel.to_owned(), h),
            None => {
                routes.remove(channel);
                crate::maps::shrink_if_sparse(&mut routes);
                None
            }
        };
    }
}

/// A node alone: nothing to publish to, always ready.
struct Alone;

impl Broker for Alone {
    fn publish(&self, _: String, _: Vec<u8>, _: &'static str) -> BoxFuture<'_, Result<()>> {
        async { Ok(()) }.boxed()
    }
    fn subscribe(&self, _: Vec<String>) -> BoxFuture<'static, Result<()>> {
        async { Ok(()) }.boxed()
    }
    fn unsubscribe(&self, _: Vec<String>) -> BoxFuture<'static, Result<()>> {
        async { Ok(()) }.boxed()
    }
    fn is_connected(&self) -> bool {
        true
    }
    fn reaches_peers(&self) -> bool {
        false
    }
    fn quit(&self) -> BoxFuture<'_, ()> {
        async {}.boxed()
    }
}

/// The node's connection to the other nodes, shared by every namespace.
pub(crate) struct Driver {
    broker: Box<dyn Broker>,
    hub: Arc<Hub>,
    pub(crate) metrics: Metrics,
    max_message_bytes: usize,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("sharded", &self.broker.sharded())
            .finish_non_exhaustive()
    }
}

impl Driver {
    /// A driver over `broker`, which delivers through `hub`.
    pub(crate) fn new(broker: Box<dyn Broker>, hub: Arc<Hub>, max_message_bytes: usize) -> Self {
        Self {
            broker,
            metrics: hub.metrics.clone(),
            hub,
            max_message_bytes,
        }
    }

    /// A driver for a node that runs alone.
    pub(crate) fn alone(metrics: Metrics, max_message_bytes: usize) -> Self {
        metrics.redis_connected.set(0);
        Self::new(Box::new(Alone), Hub::new(metrics), max_message_bytes)
    }

    /// The client used for publishing, when the broker is Redis.
    pub(crate) fn client(&self) -> Option<fred::clients::Client> {
        self.broker.redis_client()
    }

    /// Whether the broker is reachable (always true for a node alone).
    pub(crate) fn is_connected(&self) -> bool {
        self.broker.is_connected()
    }

    /// Whether the node can reach other nodes at all.
    pub(crate) fn reaches_peers(&self) -> bool {
        self.broker.reaches_peers()
    }

    /// Whether the channels are sharded (Redis Cluster).
    pub(crate) fn sharded(&self) -> bool {
        self.broker.sharded()
    }

    /// Routes `channels` to `handler` and subscribes them. The handler is held weakly. Routed
    /// and queued when called (see [`Broker::subscribe`]); the future waits for the broker.
    pub(crate) fn subscribe(
        &self,
        channels: Vec<String>,
        handler: &Weak<dyn Inbound>,
    ) -> BoxFuture<'static, Result<()>> {
        for channel in &channels {
            self.hub.route(channel, Some(handler.clone()));
        }
        self.broker.subscribe(channels)
    }

    /// Unroutes and unsubscribes `channels`, in call order with [`Driver::subscribe`].
    pub(crate) fn unsubscribe(&self, channels: Vec<String>) -> BoxFuture<'static, Result<()>> {
        for channel in &channels {
            self.hub.route(channel, None);
        }
        self.broker.unsubscribe(channels)
    }

    /// Queues a message for publishing, waiting while the queue is full (backpressure).
    ///
    /// # Errors
    /// [`Error::TooLarge`] for oversized messages, [`Error::Closed`] after shutdown.
    pub(crate) async fn publish(
        &self,
        channel: String,
        payload: Vec<u8>,
        kind: &'static str,
    ) -> Result<()> {
        if !self.broker.reaches_peers() {
            return Ok(());
        }
        if payload.len() > self.max_message_bytes {
            self.drop_messages(DropReason::TooLarge, 1);
            return Err(Error::TooLarge {
                size: payload.len(),
                limit: self.max_message_bytes,
            });
        }
        self.broker.publish(channel, payload, kind).await
    }

    /// Like [`Driver::publish`], for a broadcast kept in the history `stream`.
    ///
    /// # Errors
    /// As [`Driver::publish`]; [`Error::NoHistory`] when the broker keeps none.
    pub(crate) async fn record(
        &self,
        stream: String,
        max_len: usize,
        message: Recorded,
    ) -> Result<()> {
        if message.payload.len() > self.max_message_bytes {
            self.drop_messages(DropReason::TooLarge, 1);
            return Err(Error::TooLarge {
                size: message.payload.len(),
                limit: self.max_message_bytes,
            });
        }
        self.broker.record(stream, max_len, message).await
    }

    /// Up to `count` history entries of `stream` from `start` on.
    ///
    /// # Errors
    /// The broker's, or [`Error::NoHistory`].
    pub(crate) async fn range(
        &self,
        stream: String,
        start: Offset,
        count: usize,
    ) -> Result<Vec<Entry>> {
        self.broker.range(stream, start, count).await
    }

    /// Whether the broker keeps history.
    pub(crate) fn keeps_history(&self) -> bool {
        self.broker.keeps_history()
    }

    /// Counts and (at most once per second) logs dropped messages.
    pub(crate) fn drop_messages(&self, reason: DropReason, n: u64) {
        self.hub.drop_messages(reason, n);
    }

    /// Closes the connections.
    pub(crate) async fn quit(&self) {
        self.broker.quit().await;
    }
}
