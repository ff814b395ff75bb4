//! The Redis driver: one publishing and one subscribing connection per node, an ordered
//! publish queue with backpressure, and the dispatcher that routes incoming messages to the
//! namespace that subscribed to their channel.
//!
//! Guarantees:
//! - messages published by one node arrive at every other node in publish order (one queue,
//!   one connection, pipelines written in order);
//! - a caller waits when the queue is full instead of losing the message;
//! - while Redis is unreachable, publishing fails fast (the message is counted as dropped) so
//!   that local delivery is never held up;
//! - after a reconnect every subscription is restored by the client's subscription manager;
//! - every message that cannot be delivered is counted in `ioscale_adapter_dropped_total` and
//!   logged at most once per second.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, RwLock, Weak},
    time::{Duration, Instant},
};

use bytes::Bytes;
use fred::{
    clients::{Client, SubscriberClient},
    interfaces::{ClientLike, EventInterface, PubsubInterface},
    types::{
        Builder,
        config::{Config, ReconnectPolicy, UnresponsiveConfig},
    },
};
use tokio::sync::{broadcast::error::RecvError, mpsc};

use crate::{
    AdapterConfig, Error, Result,
    metrics::{DropReason, Metrics, Stage},
};

/// Receives the raw messages of the channels it subscribed to, in arrival order.
pub(crate) trait Inbound: Send + Sync {
    /// Handles one message. Must not block: it runs on the dispatcher task.
    fn on_message(self: Arc<Self>, payload: &[u8]);
    /// Called after the connection to Redis was re-established.
    fn on_reconnect(self: Arc<Self>);
}

struct Outgoing {
    channel: String,
    payload: Bytes,
    kind: &'static str,
    queued_at: std::time::Instant,
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

/// The node's connection to Redis, shared by every namespace. Without Redis (a single node on
/// the embedded default) there are no connections: nothing needs publishing since no other
/// node exists, and the node is always ready.
pub(crate) struct Driver {
    redis: Option<Redis>,
    sharded: bool,
    queue: mpsc::Sender<Outgoing>,
    handlers: RwLock<HashMap<String, Weak<dyn Inbound>>>,
    pub(crate) metrics: Metrics,
    max_message_bytes: usize,
    drop_log: Arc<BurstLog>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("sharded", &self.sharded)
            .finish_non_exhaustive()
    }
}

struct Redis {
    publisher: Client,
    subscriber: SubscriberClient,
}

impl Driver {
    /// A driver without Redis, for a node that runs alone.
    pub(crate) fn memory(config: &AdapterConfig, metrics: Metrics) -> Arc<Self> {
        // The queue is never read: `publish` returns before using it.
        let (tx, _rx) = mpsc::channel(1);
        metrics.redis_connected.set(0);
        Arc::new(Self {
            redis: None,
            sharded: false,
            queue: tx,
            handlers: RwLock::new(HashMap::new()),
            metrics,
            max_message_bytes: config.max_message_bytes,
            drop_log: Arc::new(BurstLog::default()),
        })
    }

    /// The client used for publishing; also usable for other commands (the node's stores).
    pub(crate) fn client(&self) -> Option<Client> {
        self.redis.as_ref().map(|r| r.publisher.clone())
    }

    /// Builds the clients and starts connecting. Returns once connected, or after
    /// `connect_wait` with the clients still retrying in the background (the node then starts
    /// not ready, and becomes ready when Redis comes up).
    pub(crate) async fn connect(
        config: &AdapterConfig,
        metrics: Metrics,
        connect_wait: Duration,
    ) -> Result<Arc<Self>> {
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
        let subscriber = builder.build_subscriber_client()?;
        builder.with_performance_config(|p| {
            p.broadcast_channel_capacity = crate::config::publisher_event_buffer();
        });
        let publisher = builder.build()?;

        let (tx, rx) = mpsc::channel(config.publish_queue);
        let driver = Arc::new(Self {
            redis: Some(Redis {
                publisher,
                subscriber,
            }),
            sharded,
            queue: tx,
            handlers: RwLock::new(HashMap::new()),
            metrics,
            max_message_bytes: config.max_message_bytes,
            drop_log: Arc::new(BurstLog::default()),
        });

        let redis = driver.redis.as_ref().expect("just built with redis");
        // Subscriptions are replayed by `spawn_reconnect_watch` after every (re)connection.
        // fred's own `manage_subscriptions` is not used: it sends `SUBSCRIBE` with an empty
        // channel list on a sharded cluster, which Redis rejects, and the error can land on a
        // pipelined `SSUBSCRIBE` of ours.
        redis.publisher.connect();
        redis.subscriber.connect();
        Self::spawn_dispatcher(&driver);
        Self::spawn_reconnect_watch(&driver);
        tokio::spawn(publish_loop(
            Arc::downgrade(&driver),
            rx,
            config.publish_batch,
        ));

        let wait = async {
            redis.publisher.wait_for_connect().await?;
            redis.subscriber.wait_for_connect().await
        };
        match tokio::time::timeout(connect_wait, wait).await {
            Ok(Ok(())) => tracing::info!(sharded, "connected to redis"),
            Ok(Err(e)) => tracing::warn!(error = %e, "redis not reachable yet, retrying"),
            Err(_) => tracing::warn!("redis not reachable yet, retrying in the background"),
        }
        driver.update_connected_gauge();
        Ok(driver)
    }

    /// Whether both connections are up (always true without Redis).
    pub(crate) fn is_connected(&self) -> bool {
        self.redis
            .as_ref()
            .is_none_or(|r| r.publisher.is_connected() && r.subscriber.is_connected())
    }

    /// Whether the node talks to other nodes through Redis.
    pub(crate) fn has_redis(&self) -> bool {
        self.redis.is_some()
    }

    fn update_connected_gauge(&self) {
        if self.redis.is_none() {
            return;
        }
        self.metrics
            .redis_connected
            .set(i64::from(self.is_connected()));
    }

    /// Whether the channels are sharded (Redis Cluster).
    pub(crate) fn sharded(&self) -> bool {
        self.sharded
    }

    /// Subscribes `handler` to `channel`. The handler is held weakly: it unsubscribes by dropping.
    pub(crate) async fn subscribe(&self, channel: &str, handler: Weak<dyn Inbound>) -> Result<()> {
        self.handlers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(channel.to_owned(), handler);
        let Some(redis) = &self.redis else {
            return Ok(());
        };
        if self.sharded {
            redis.subscriber.ssubscribe(channel).await?;
        } else {
            redis.subscriber.subscribe(channel).await?;
        }
        Ok(())
    }

    /// Unsubscribes from `channel`.
    pub(crate) async fn unsubscribe(&self, channel: &str) -> Result<()> {
        self.handlers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(channel);
        let Some(redis) = &self.redis else {
            return Ok(());
        };
        if self.sharded {
            redis.subscriber.sunsubscribe(channel).await?;
        } else {
            redis.subscriber.unsubscribe(channel).await?;
        }
        Ok(())
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
        if self.redis.is_none() {
            return Ok(());
        }
        if payload.len() > self.max_message_bytes {
            self.drop_messages(DropReason::TooLarge, 1);
            return Err(Error::TooLarge {
                size: payload.len(),
                limit: self.max_message_bytes,
            });
        }
        self.metrics.publish_queue_depth.inc();
        let out = Outgoing {
            channel,
            payload: Bytes::from(payload),
            kind,
            queued_at: std::time::Instant::now(),
        };
        self.queue.send(out).await.map_err(|_| {
            self.metrics.publish_queue_depth.dec();
            Error::Closed
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

    fn spawn_dispatcher(driver: &Arc<Self>) {
        let Some(redis) = &driver.redis else { return };
        let mut rx = redis.subscriber.message_rx();
        let weak = Arc::downgrade(driver);
        tokio::spawn(async move {
            loop {
                let msg = rx.recv().await;
                let Some(driver) = weak.upgrade() else { break };
                match msg {
                    Ok(msg) => {
                        let handler = driver
                            .handlers
                            .read()
                            .unwrap_or_else(|e| e.into_inner())
                            .get(&*msg.channel)
                            .and_then(Weak::upgrade);
                        match (handler, msg.value.as_bytes()) {
                            (Some(h), Some(bytes)) => h.on_message(bytes),
                            // A channel we no longer serve (unsubscribe in flight) or a
                            // non-bytes payload: neither is ours to deliver.
                            (None, _) => {}
                            (Some(_), None) => driver.drop_messages(DropReason::Decode, 1),
                        }
                    }
                    Err(RecvError::Lagged(n)) => {
                        driver.drop_messages(DropReason::SubscriberLagged, n);
                    }
                    Err(RecvError::Closed) => break,
                }
            }
        });
    }

    fn spawn_reconnect_watch(driver: &Arc<Self>) {
        let Some(redis) = &driver.redis else { return };
        for (client, is_subscriber) in [
            (redis.publisher.clone(), false),
            (redis.subscriber.to_client(), true),
        ] {
            // Set when a connection fails; the next successful connection is a reconnection.
            // (The client also announces its first connections, one per cluster shard.)
            let lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let weak = Arc::downgrade(driver);
            let mut reconnects = client.reconnect_rx();
            let lost_r = lost.clone();
            tokio::spawn(async move {
                while reconnects.recv().await.is_ok() {
                    let Some(driver) = weak.upgrade() else { break };
                    driver.update_connected_gauge();
                    if is_subscriber {
                        driver.resubscribe().await;
                    }
                    if lost_r.swap(false, std::sync::atomic::Ordering::SeqCst) {
                        driver.metrics.redis_reconnects.inc();
                        tracing::warn!("reconnected to redis");
                        let handlers: Vec<_> = driver
                            .handlers
                            .read()
                            .unwrap_or_else(|e| e.into_inner())
                            .values()
                            .filter_map(Weak::upgrade)
                            .collect();
                        // A namespace owns two channels; greet the cluster once per namespace.
                        let mut seen = std::collections::HashSet::new();
                        for h in handlers {
                            if seen.insert(Arc::as_ptr(&h).cast::<()>()) {
                                h.on_reconnect();
                            }
                        }
                    }
                }
            });
            let weak = Arc::downgrade(driver);
            let mut errors = client.error_rx();
            tokio::spawn(async move {
                while let Ok(e) = errors.recv().await {
                    let Some(driver) = weak.upgrade() else { break };
                    lost.store(true, std::sync::atomic::Ordering::SeqCst);
                    driver.update_connected_gauge();
                    tracing::warn!(error = %e.0, "redis connection error");
                }
            });
        }
    }

    /// Subscribes again to every channel a namespace listens on (after a reconnection the
    /// server has forgotten them; on a first connection this is a harmless repeat).
    async fn resubscribe(&self) {
        let Some(redis) = &self.redis else { return };
        let channels: Vec<String> = self
            .handlers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        for channel in channels {
            let res = if self.sharded {
                redis.subscriber.ssubscribe(channel.as_str()).await
            } else {
                redis.subscriber.subscribe(channel.as_str()).await
            };
            if let Err(e) = res {
                tracing::warn!(error = %e, channel, "resubscribe failed");
            }
        }
    }

    /// Closes both connections.
    pub(crate) async fn quit(&self) {
        if let Some(redis) = &self.redis {
            // QUIT waits for a connection; one that never came up must not hold shutdown.
            let quit = async {
                let _ = redis.publisher.quit().await;
                let _ = redis.subscriber.quit().await;
            };
            let _ = tokio::time::timeout(Duration::from_secs(1), quit).await;
        }
    }
}

/// Drains the queue in order, writing up to `batch` messages per Redis pipeline.
async fn publish_loop(driver: Weak<Driver>, mut rx: mpsc::Receiver<Outgoing>, batch: usize) {
    let mut buf = Vec::with_capacity(batch);
    loop {
        buf.clear();
        if rx.recv_many(&mut buf, batch).await == 0 {
            return;
        }
        let Some(driver) = driver.upgrade() else {
            return;
        };
        let Some(redis) = &driver.redis else { return };
        let n = buf.len();
        driver.metrics.publish_queue_depth.sub(n as i64);
        if !redis.publisher.is_connected() {
            driver.update_connected_gauge();
            driver.drop_messages(DropReason::RedisUnavailable, n as u64);
            continue;
        }
        let taken = std::time::Instant::now();
        for m in &buf {
            driver
                .metrics
                .stage(Stage::PublishQueue, taken.duration_since(m.queued_at));
        }
        let pipeline = redis.publisher.pipeline();
        for m in &buf {
            let queued: std::result::Result<(), _> = if driver.sharded {
                pipeline
                    .spublish(m.channel.as_str(), m.payload.clone())
                    .await
            } else {
                pipeline
                    .publish(m.channel.as_str(), m.payload.clone())
                    .await
            };
            if let Err(e) = queued {
                tracing::debug!(error = %e, "queueing publish failed");
            }
        }
        let results = pipeline.try_all::<fred::types::Value>().await;
        driver.metrics.stage(Stage::RedisPipeline, taken.elapsed());
        let mut failed = 0u64;
        for (m, r) in buf.iter().zip(results.iter()) {
            match r {
                Ok(_) => {
                    driver
                        .metrics
                        .messages_out
                        .with_label_values(&[m.kind])
                        .inc();
                    driver
                        .metrics
                        .bytes_out
                        .with_label_values(&[m.kind])
                        .inc_by(m.payload.len() as u64);
                }
                Err(_) => failed += 1,
            }
        }
        failed += n.saturating_sub(results.len()) as u64;
        if failed > 0 {
            if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
                tracing::debug!(error = %e, "publish failed");
            }
            driver.update_connected_gauge();
            driver.drop_messages(DropReason::PublishFailed, failed);
        }
    }
}
