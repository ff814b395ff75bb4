//! The Redis broker on fred: one publishing and one subscribing connection per node, an
//! ordered publish queue with backpressure, and the dispatcher that hands incoming messages to
//! the [`Hub`].
//!
//! Guarantees:
//! - messages published by one node arrive at every other node in publish order (one queue,
//!   one connection, pipelines written in order);
//! - a caller waits when the queue is full instead of losing the message;
//! - while Redis is unreachable, publishing fails fast (the message is counted as dropped) so
//!   that local delivery is never held up;
//! - after a reconnect every subscription is restored;
//! - every message that cannot be delivered is counted in `ioscale_adapter_dropped_total` and
//!   logged at most once per second.

use std::{
    sync::{
        Arc, Weak,
        atomic::{AtomicBool, Ordering},
    },
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
use futures_util::{FutureExt as _, future::BoxFuture};
use tokio::sync::{broadcast::error::RecvError, mpsc};

use super::{Broker, Hub};
use crate::{
    config::AdapterConfig,
    error::{Error, Result},
    metrics::{DropReason, Stage},
};

struct Outgoing {
    channel: String,
    payload: Bytes,
    kind: &'static str,
    queued_at: Instant,
}

struct Inner {
    publisher: Client,
    subscriber: SubscriberClient,
    sharded: bool,
    hub: Arc<Hub>,
}

/// The Redis broker of one node.
pub(crate) struct RedisBroker {
    inner: Arc<Inner>,
    queue: mpsc::Sender<Outgoing>,
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
        let inner = Arc::new(Inner {
            publisher,
            subscriber,
            sharded,
            hub,
        });
        // Subscriptions are replayed by `watch_reconnects` after every (re)connection. fred's
        // own `manage_subscriptions` is not used: it sends `SUBSCRIBE` with an empty channel
        // list on a sharded cluster, which Redis rejects, and the error can land on a
        // pipelined `SSUBSCRIBE` of ours.
        inner.publisher.connect();
        inner.subscriber.connect();
        spawn_dispatcher(&inner);
        watch_reconnects(&inner);
        let (queue, rx) = mpsc::channel(config.publish_queue);
        tokio::spawn(publish_loop(
            Arc::downgrade(&inner),
            rx,
            config.publish_batch,
        ));

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
        Ok(Self { inner, queue })
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

    async fn subscribe(&self, channel: &str) -> Result<()> {
        if self.sharded {
            self.subscriber.ssubscribe(channel).await?;
        } else {
            self.subscriber.subscribe(channel).await?;
        }
        Ok(())
    }

    /// Subscribes again to every routed channel (after a reconnection the server has forgotten
    /// them; on a first connection this is a harmless repeat).
    async fn resubscribe(&self) {
        for channel in self.hub.channels() {
            if let Err(e) = self.subscribe(&channel).await {
                tracing::warn!(error = %e, channel, "resubscribe failed");
            }
        }
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
            let metrics = &self.inner.hub.metrics;
            metrics.publish_queue_depth.inc();
            let out = Outgoing {
                channel,
                payload: Bytes::from(payload),
                kind,
                queued_at: Instant::now(),
            };
            self.queue.send(out).await.map_err(|_| {
                metrics.publish_queue_depth.dec();
                Error::Closed
            })
        }
        .boxed()
    }

    fn subscribe<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<()>> {
        self.inner.subscribe(channel).boxed()
    }

    fn unsubscribe<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<()>> {
        async move {
            if self.inner.sharded {
                self.inner.subscriber.sunsubscribe(channel).await?;
            } else {
                self.inner.subscriber.unsubscribe(channel).await?;
            }
            Ok(())
        }
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
            while reconnects.recv().await.is_ok() {
                let Some(inner) = weak.upgrade() else { break };
                inner.update_connected_gauge();
                if is_subscriber {
                    inner.resubscribe().await;
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
                lost.store(true, Ordering::SeqCst);
                inner.update_connected_gauge();
                tracing::warn!(error = %e.0, "redis connection error");
            }
        });
    }
}

/// Drains the queue in order, writing up to `batch` messages per Redis pipeline.
async fn publish_loop(inner: Weak<Inner>, mut rx: mpsc::Receiver<Outgoing>, batch: usize) {
    let mut buf = Vec::with_capacity(batch);
    loop {
        buf.clear();
        if rx.recv_many(&mut buf, batch).await == 0 {
            return;
        }
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let n = buf.len();
        inner.hub.metrics.publish_queue_depth.sub(n as i64);
        if !inner.publisher.is_connected() {
            inner.update_connected_gauge();
            inner
                .hub
                .drop_messages(DropReason::RedisUnavailable, n as u64);
            continue;
        }
        write_pipeline(&inner, &buf).await;
    }
}

/// Publishes one batch as one pipeline and counts what went out and what failed.
async fn write_pipeline(inner: &Inner, buf: &[Outgoing]) {
    let metrics = &inner.hub.metrics;
    let taken = Instant::now();
    for m in buf {
        metrics.stage(Stage::PublishQueue, taken.duration_since(m.queued_at));
    }
    let pipeline = inner.publisher.pipeline();
    for m in buf {
        let queued: std::result::Result<(), _> = if inner.sharded {
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
    metrics.stage(Stage::RedisPipeline, taken.elapsed());
    let mut failed = 0u64;
    for (m, r) in buf.iter().zip(results.iter()) {
        match r {
            Ok(_) => {
                metrics.messages_out.with_label_values(&[m.kind]).inc();
                metrics
                    .bytes_out
                    .with_label_values(&[m.kind])
                    .inc_by(m.payload.len() as u64);
            }
            Err(_) => failed += 1,
        }
    }
    failed += buf.len().saturating_sub(results.len()) as u64;
    if failed > 0 {
        if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
            tracing::debug!(error = %e, "publish failed");
        }
        inner.update_connected_gauge();
        inner.hub.drop_messages(DropReason::PublishFailed, failed);
    }
}
