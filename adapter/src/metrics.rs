//! Prometheus metrics of the adapter, registered once per node in the caller's registry.
//!
//! Names follow `ioscale_adapter_<name>_<unit>`; label values come from bounded sets
//! (message kinds and drop reasons), never socket ids or rooms.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

/// Why a message was dropped. Each one is counted under its own label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Redis was unreachable when the message had to be published.
    RedisUnavailable,
    /// Redis refused or failed the publish.
    PublishFailed,
    /// The subscriber fell behind and the Redis client's buffer overflowed.
    SubscriberLagged,
    /// A message from the wire could not be decoded.
    Decode,
    /// A message came in a newer wire version.
    Version,
    /// A socket's send buffer was full.
    SocketBufferFull,
    /// A message was larger than the configured maximum.
    TooLarge,
    /// A node caught up after its subscription was lost, but the history no longer reached
    /// back to where it was: one count per gap (the entries lost in it are unknown).
    HistoryGap,
    /// A recorded broadcast found the outbox full while Redis was unreachable.
    OutboxFull,
    /// A recorded broadcast waited in the outbox longer than its age limit.
    OutboxExpired,
    /// Recorded broadcasts this node never received: its publisher's numbers on the channel
    /// jumped by that many (counted once the next one arrives; each node counts its own).
    SequenceGap,
    /// A message from another node decoded, but a field was out of its range (a node id of
    /// the wrong shape, an ack timeout or a socket count beyond the bounds of `bounds.rs`).
    OutOfRange,
    /// A message from a node not yet known while the namespace already knows the most nodes
    /// it keeps (forged node ids would otherwise grow the table without end).
    TooManyNodes,
    /// A server-side event from another node while the most this node runs at once were
    /// already running.
    ServerEventsBusy,
}

impl DropReason {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::RedisUnavailable => "redis_unavailable",
            DropReason::PublishFailed => "publish_failed",
            DropReason::SubscriberLagged => "subscriber_lagged",
            DropReason::Decode => "decode",
            DropReason::Version => "version",
            DropReason::SocketBufferFull => "socket_buffer_full",
            DropReason::TooLarge => "too_large",
            DropReason::HistoryGap => "history_gap",
            DropReason::OutboxFull => "outbox_full",
            DropReason::OutboxExpired => "outbox_expired",
            DropReason::SequenceGap => "sequence_gap",
            DropReason::OutOfRange => "out_of_range",
            DropReason::TooManyNodes => "too_many_nodes",
            DropReason::ServerEventsBusy => "server_events_busy",
        }
    }
}

/// Where a broadcast was made, for the fan-out counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// On this node.
    Local,
    /// On another node, received through Redis.
    Remote,
}

impl Origin {
    /// The label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Origin::Local => "local",
            Origin::Remote => "remote",
        }
    }
}

/// The adapter's metrics.
#[derive(Clone)]
pub struct Metrics {
    /// Broadcasts this node published to the cluster.
    pub(crate) broadcasts_published: IntCounter,
    /// Broadcasts this node received from other nodes.
    pub(crate) broadcasts_received: IntCounter,
    /// Messages published, by kind.
    pub(crate) messages_out: IntCounterVec,
    /// Messages received from other nodes, by kind.
    pub(crate) messages_in: IntCounterVec,
    /// Bytes published, by kind.
    pub(crate) bytes_out: IntCounterVec,
    /// Bytes received, by kind.
    pub(crate) bytes_in: IntCounterVec,
    /// Requests this node made to the cluster, by kind.
    pub(crate) requests: IntCounterVec,
    /// Requests that timed out waiting for some node, by kind.
    pub(crate) request_timeouts: IntCounterVec,
    /// Request duration, by kind.
    pub(crate) request_duration: HistogramVec,
    /// Dropped messages, by reason.
    pub(crate) dropped: IntCounterVec,
    /// Reconnections of the Redis clients.
    pub(crate) redis_reconnects: IntCounter,
    /// Connections found stalled: a `PING` not answered within the Redis timeout.
    pub(crate) redis_stalls: IntCounter,
    /// 1 while both Redis connections are up.
    pub(crate) redis_connected: IntGauge,
    /// Other nodes currently alive (summed over namespaces).
    pub(crate) nodes_alive: IntGauge,
    /// Messages waiting in the publish queue.
    pub(crate) publish_queue_depth: IntGauge,
    pub(crate) outbox_messages: IntGauge,
    /// Broadcasts from other nodes handed to the local sockets.
    pub(crate) remote_deliveries: IntCounter,
    /// Packets handed to sockets by broadcasts (the fan-out), by where the broadcast came
    /// from: `local` (made on this node) or `remote` (received from another node).
    pub(crate) packets_delivered: IntCounterVec,
    /// Publish-to-receive latency of broadcasts from other nodes.
    pub(crate) broadcast_latency: Histogram,
    /// Room channels this node is subscribed to (or subscribing), summed over namespaces.
    pub(crate) room_channels: IntGauge,
    /// Room channels subscribed and unsubscribed, by `op` (`subscribe`, `unsubscribe`).
    pub(crate) room_channel_ops: IntCounterVec,
    /// Subscribe and unsubscribe commands sent to Redis, by `op`: against `room_channel_ops`,
    /// how well they are batched.
    pub(crate) subscription_commands: IntCounterVec,
    /// Broadcasts received from other nodes that matched no local socket: the traffic room
    /// channels exist to avoid (near zero with them on).
    pub(crate) broadcasts_untargeted: IntCounter,
    /// Time spent in each stage of a broadcast's path through this node, by [`Stage`]: where
    /// a latency tail comes from.
    #[cfg_attr(
        not(test),
        allow(dead_code, reason = "the registry exports it; tests read it")
    )]
    pub(crate) stage_duration: HistogramVec,
    /// Its series, resolved once: [`Metrics::stage`] runs per message on the broadcast path,
    /// and a labelled lookup hashes and locks each time.
    stages: [Histogram; 3],
}

/// A stage of a broadcast's path through a node (the `stage` label; a bounded set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// From `publish` to the message being handed to the Redis client (the wait for room under
    /// the in-flight bound).
    PublishQueue,
    /// One publish that was not answered at once, from handed to the Redis client to answered.
    RedisPipeline,
    /// Handing one broadcast to this node's matching sockets (their buffers, not the wire).
    LocalDelivery,
}

impl Stage {
    const ALL: [Stage; 3] = [
        Stage::PublishQueue,
        Stage::RedisPipeline,
        Stage::LocalDelivery,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Stage::PublishQueue => "publish_queue",
            Stage::RedisPipeline => "redis_pipeline",
            Stage::LocalDelivery => "local_delivery",
        }
    }
}

/// Broadcasts published and received, and the fan-out they made.
fn broadcast_counters(
    r: &Registry,
) -> prometheus::Result<(IntCounter, IntCounter, IntCounter, IntCounterVec)> {
    Ok((
        counter(
            r,
            "broadcasts_published_total",
            "Broadcasts published to the other nodes",
        )?,
        counter(
            r,
            "broadcasts_received_total",
            "Broadcasts received from other nodes",
        )?,
        counter(
            r,
            "remote_deliveries_total",
            "Broadcasts from other nodes delivered to at least the matching local sockets",
        )?,
        counter_vec(
            r,
            "packets_delivered_total",
            "Packets handed to sockets by broadcasts, by origin of the broadcast",
            &["origin"],
        )?,
    ))
}

/// Messages and bytes out and in, by kind.
fn traffic_counters(
    r: &Registry,
) -> prometheus::Result<(IntCounterVec, IntCounterVec, IntCounterVec, IntCounterVec)> {
    let kind = &["kind"];
    Ok((
        counter_vec(r, "messages_out_total", "Messages published, by kind", kind)?,
        counter_vec(
            r,
            "messages_in_total",
            "Messages received from other nodes, by kind",
            kind,
        )?,
        counter_vec(r, "bytes_out_total", "Bytes published, by kind", kind)?,
        counter_vec(r, "bytes_in_total", "Bytes received, by kind", kind)?,
    ))
}

/// Requests to other nodes: how many, how many timed out, how long they took.
fn request_metrics(
    r: &Registry,
) -> prometheus::Result<(IntCounterVec, IntCounterVec, HistogramVec)> {
    let kind = &["kind"];
    let buckets = vec![
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ];
    Ok((
        counter_vec(
            r,
            "requests_total",
            "Requests made to the other nodes, by kind",
            kind,
        )?,
        counter_vec(
            r,
            "request_timeouts_total",
            "Requests that stopped waiting for a node, by kind",
            kind,
        )?,
        histogram_vec(
            r,
            "ioscale_adapter_request_duration_seconds",
            "Time until every live node answered a request, by kind",
            buckets,
            kind,
        )?,
    ))
}

/// The broker connection, the live nodes and the publish queue.
/// Room channels and what they save.
fn room_metrics(
    r: &Registry,
) -> prometheus::Result<(IntGauge, IntCounterVec, IntCounterVec, IntCounter)> {
    let op = &["op"];
    Ok((
        gauge(
            r,
            "room_channels",
            "Room channels subscribed, summed over namespaces",
        )?,
        counter_vec(
            r,
            "room_channel_ops_total",
            "Room channels subscribed and unsubscribed, by op",
            op,
        )?,
        counter_vec(
            r,
            "subscription_commands_total",
            "Subscribe and unsubscribe commands sent to Redis, by op",
            op,
        )?,
        counter(
            r,
            "broadcasts_untargeted_total",
            "Broadcasts from other nodes that matched no local socket",
        )?,
    ))
}

fn connection_metrics(
    r: &Registry,
) -> prometheus::Result<(IntCounter, IntCounter, IntGauge, IntGauge, IntGauge)> {
    Ok((
        counter(r, "redis_reconnects_total", "Reconnections to Redis")?,
        counter(
            r,
            "redis_stalls_total",
            "Redis connections that did not answer a PING within the Redis timeout (each is reconnected)",
        )?,
        gauge(r, "redis_connected", "1 while the Redis connections are up")?,
        gauge(
            r,
            "nodes_alive",
            "Other nodes alive, summed over namespaces",
        )?,
        gauge(
            r,
            "publish_queue_depth",
            "Messages published and not yet answered by Redis",
        )?,
    ))
}

/// Publish-to-receive latency across nodes, and the time in each stage on this node.
fn latency_metrics(r: &Registry) -> prometheus::Result<(Histogram, HistogramVec)> {
    let latency = Histogram::with_opts(
        HistogramOpts::new(
            "ioscale_adapter_broadcast_latency_seconds",
            "Publish-to-receive latency of broadcasts from other nodes",
        )
        .buckets(latency_buckets()),
    )?;
    r.register(Box::new(latency.clone()))?;
    let stages = histogram_vec(
        r,
        "ioscale_adapter_stage_duration_seconds",
        "Time a broadcast spends in each stage of its path through this node",
        latency_buckets(),
        &["stage"],
    )?;
    Ok((latency, stages))
}

/// Registers `ioscale_adapter_<name>`, a counter.
fn counter(r: &Registry, name: &str, help: &str) -> prometheus::Result<IntCounter> {
    let c = IntCounter::new(format!("ioscale_adapter_{name}"), help)?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

/// Registers `ioscale_adapter_<name>`, a counter with `labels`.
fn counter_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntCounterVec> {
    let c = IntCounterVec::new(Opts::new(format!("ioscale_adapter_{name}"), help), labels)?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

/// Registers `ioscale_adapter_<name>`, a gauge.
fn gauge(r: &Registry, name: &str, help: &str) -> prometheus::Result<IntGauge> {
    let g = IntGauge::new(format!("ioscale_adapter_{name}"), help)?;
    r.register(Box::new(g.clone()))?;
    Ok(g)
}

/// Registers the histogram `name` with `buckets` and `labels`.
fn histogram_vec(
    r: &Registry,
    name: &str,
    help: &str,
    buckets: Vec<f64>,
    labels: &[&str],
) -> prometheus::Result<HistogramVec> {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)?;
    r.register(Box::new(h.clone()))?;
    Ok(h)
}

/// From 10 µs to 1 s: local stages take microseconds, a tail tens of milliseconds.
fn latency_buckets() -> Vec<f64> {
    vec![
        0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025,
        0.05, 0.1, 0.25, 0.5, 1.0,
    ]
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The collectors' own Debug prints every series; the name is what a log needs.
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Creates the metrics and registers them in `registry`.
    ///
    /// # Errors
    /// If a metric with the same name is already registered.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let r = registry;
        let (broadcasts_published, broadcasts_received, remote_deliveries, packets_delivered) =
            broadcast_counters(r)?;
        let (messages_out, messages_in, bytes_out, bytes_in) = traffic_counters(r)?;
        let (requests, request_timeouts, request_duration) = request_metrics(r)?;
        let (redis_reconnects, redis_stalls, redis_connected, nodes_alive, publish_queue_depth) =
            connection_metrics(r)?;
        let dropped = counter_vec(
            r,
            "dropped_total",
            "Messages dropped, by reason",
            &["reason"],
        )?;
        let (broadcast_latency, stage_duration) = latency_metrics(r)?;
        let outbox_messages = gauge(
            r,
            "outbox_messages",
            "Recorded broadcasts waiting for Redis to be reachable",
        )?;
        let (room_channels, room_channel_ops, subscription_commands, broadcasts_untargeted) =
            room_metrics(r)?;
        Ok(Self {
            broadcasts_published,
            broadcasts_received,
            messages_out,
            messages_in,
            bytes_out,
            bytes_in,
            requests,
            request_timeouts,
            request_duration,
            dropped,
            redis_reconnects,
            redis_stalls,
            redis_connected,
            nodes_alive,
            publish_queue_depth,
            outbox_messages,
            remote_deliveries,
            packets_delivered,
            broadcast_latency,
            room_channels,
            room_channel_ops,
            subscription_commands,
            broadcasts_untargeted,
            stages: Stage::ALL.map(|st| stage_duration.with_label_values(&[st.as_str()])),
            stage_duration,
        })
    }

    /// Metrics registered in a private registry, for tests and embedders that don't export them.
    #[allow(
        clippy::expect_used,
        reason = "registering fixed, distinct names in a new registry cannot fail"
    )]
    pub fn unregistered() -> Self {
        Self::new(&Registry::new()).expect("a fresh registry has no duplicate names")
    }

    /// Counts `n` packets handed to sockets by a broadcast from `origin`.
    pub(crate) fn delivered(&self, origin: Origin, n: u64) {
        if n > 0 {
            self.packets_delivered
                .with_label_values(&[origin.as_str()])
                .inc_by(n);
        }
    }

    /// Records `d` spent in `stage`.
    pub(crate) fn stage(&self, stage: Stage, d: std::time::Duration) {
        self.stages[stage as usize].observe(d.as_secs_f64());
    }

    /// Counts `n` dropped messages.
    pub fn drop_n(&self, reason: DropReason, n: u64) {
        self.dropped.with_label_values(&[reason.as_str()]).inc_by(n);
    }
}

#[cfg(test)]
mod stage_tests {
    use super::*;

    #[test]
    fn each_stage_records_under_its_own_label() {
        let m = Metrics::unregistered();
        for (i, st) in Stage::ALL.into_iter().enumerate() {
            for _ in 0..=i {
                m.stage(st, std::time::Duration::from_micros(5));
            }
        }
        for (i, st) in Stage::ALL.into_iter().enumerate() {
            let n = m
                .stage_duration
                .with_label_values(&[st.as_str()])
                .get_sample_count();
            assert_eq!(n, i as u64 + 1, "{}", st.as_str());
        }
    }
}
