//! Adapter configuration: channel prefix, timeouts, heartbeats and buffer sizes, with documented defaults.

use std::time::Duration;

use crate::{broker::outbox::OutboxLimits, metrics::Metrics};

/// Default prefix of every Redis channel the adapter uses.
pub const DEFAULT_PREFIX: &str = "ioscale";
/// Default time a request (fetchSockets, rooms, serverSideEmit) waits for the other nodes.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Default interval between two heartbeats of a node.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// Default capacity of the ordered publish queue. Callers wait (backpressure) when it is full
/// rather than losing messages.
pub const DEFAULT_PUBLISH_QUEUE: usize = 16_384;
/// Default capacity of the subscriber's broadcast channel inside the Redis client. Messages
/// arriving faster than they are dispatched for longer than this are lost (and counted).
/// The client allocates every slot of each of its event channels up front (about 20 MB at
/// this size), so it is not made larger by default; the dispatcher drains it far faster than
/// Redis fills it.
pub const DEFAULT_SUBSCRIBER_BUFFER: usize = 16_384;
/// Capacity of the publishing client's event channels: it receives no messages, only
/// connection events.
const PUBLISHER_EVENT_BUFFER: usize = 64;
/// Capacity of the publishing client's event channels.
pub(crate) const fn publisher_event_buffer() -> usize {
    PUBLISHER_EVENT_BUFFER
}

/// Default largest encoded message the adapter publishes (Redis' own limit is 512 MiB).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// Default most commands the Redis client writes with one flush.
pub const DEFAULT_PUBLISH_BATCH: usize = 512;

/// Default time a room channel stays subscribed after the room's last local socket left, so a
/// room that empties and fills again does not cost an unsubscribe and a subscribe each time.
pub const DEFAULT_ROOM_UNSUBSCRIBE_DELAY: Duration = Duration::from_secs(2);
/// Default most rooms a broadcast is published to one by one, on their room channels; a
/// broadcast to more rooms goes once to the namespace channel (one message instead of many).
pub const DEFAULT_MAX_ROOM_CHANNELS_PER_BROADCAST: usize = 16;

/// URL schemes the adapter accepts: standalone, TLS, Redis Cluster (sharded pub/sub),
/// Sentinel, and a Unix socket.
pub const REDIS_SCHEMES: [&str; 7] = [
    "redis",
    "rediss",
    "redis-cluster",
    "rediss-cluster",
    "redis-sentinel",
    "rediss-sentinel",
    "redis+unix",
];

/// Default time [`Cluster::connect`](crate::Cluster::connect) waits for the first Redis
/// connection before it returns a cluster that is not ready yet (and keeps retrying).
pub const DEFAULT_CONNECT_WAIT: Duration = Duration::from_secs(5);

/// Default time Redis has to answer a command, and a periodic `PING` on each connection,
/// before the connection counts as stalled: the node turns not ready and reconnects.
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_secs(3);

/// Configuration of the adapter: the Redis URL and every tunable, with documented defaults.
///
/// Build it with [`AdapterConfig::new`] and the `with_*` methods, then hand it to
/// [`Cluster::connect`](crate::Cluster::connect):
///
/// ```
/// use std::time::Duration;
/// use ioscale_adapter::AdapterConfig;
///
/// let config = AdapterConfig::new("redis://127.0.0.1:6379")
///     .with_node_id("web-1")
///     .with_request_timeout(Duration::from_secs(2));
/// assert_eq!(config.node_id(), "web-1");
/// # config.validate().unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct AdapterConfig {
    /// Redis URL: `redis://`, `rediss://`, `redis-cluster://` (sharded pub/sub) or `redis-sentinel://`.
    pub(crate) redis_url: String,
    /// This node's id, unique in the cluster. Appears in logs, metrics and the API.
    pub(crate) node_id: String,
    /// Prefix of every channel name.
    pub(crate) prefix: String,
    /// How long a request waits for the other nodes before answering with what it has.
    pub(crate) request_timeout: Duration,
    /// Interval between heartbeats. A node not heard from for `heartbeat_timeout` is dead.
    pub(crate) heartbeat_interval: Duration,
    /// Time after which a silent node is considered dead. Defaults to two intervals.
    pub(crate) heartbeat_timeout: Duration,
    /// Most messages published and not yet answered by Redis; `publish` waits beyond it.
    pub(crate) publish_queue: usize,
    /// Capacity of the Redis client's subscriber broadcast channel.
    pub(crate) subscriber_buffer: usize,
    /// Largest message published; larger ones fail with [`crate::Error::TooLarge`].
    pub(crate) max_message_bytes: usize,
    /// Most commands the Redis client writes with one flush.
    pub(crate) publish_batch: usize,
    /// Whether broadcasts to rooms travel on per-room channels, which only the nodes with a
    /// member of the room subscribe to. Every node of a cluster must use the same setting.
    pub(crate) room_channels: bool,
    /// How long a room channel stays subscribed after the room's last local socket left.
    pub(crate) room_unsubscribe_delay: Duration,
    /// Most rooms a broadcast is published to on their own channels (beyond it: once, on the
    /// namespace channel).
    pub(crate) max_room_channels_per_broadcast: usize,
    /// Entries kept (about) in each namespace's history stream; 0: no history.
    pub(crate) history_max_len: usize,
    /// How much of what is recorded may wait while Redis is unreachable.
    pub(crate) outbox: OutboxLimits,
    /// How long `Cluster::connect` waits for the first connection.
    pub(crate) connect_wait: Duration,
    /// How long Redis has to answer a command or the periodic `PING` of a connection.
    pub(crate) redis_timeout: Duration,
    /// Where the adapter counts; `None`: counters nobody exports.
    pub(crate) metrics: Option<Metrics>,
}

impl AdapterConfig {
    /// The defaults for `redis_url`, with a generated node id (`{HOSTNAME}-{8 hex digits}`).
    ///
    /// An empty URL is accepted by [`Cluster::standalone`](crate::Cluster::standalone) and
    /// [`Cluster::in_memory`](crate::Cluster::in_memory), which use no Redis.
    pub fn new(redis_url: impl Into<String>) -> Self {
        Self {
            redis_url: redis_url.into(),
            node_id: generated_node_id(),
            prefix: DEFAULT_PREFIX.to_owned(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            heartbeat_timeout: DEFAULT_HEARTBEAT_INTERVAL * 2,
            publish_queue: DEFAULT_PUBLISH_QUEUE,
            subscriber_buffer: DEFAULT_SUBSCRIBER_BUFFER,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            publish_batch: DEFAULT_PUBLISH_BATCH,
            // Off by default: socketioxide's `socket.join` does not tell the adapter, so room
            // channels need the application to call `Cluster::rooms_joined` (the node does).
            room_channels: false,
            room_unsubscribe_delay: DEFAULT_ROOM_UNSUBSCRIBE_DELAY,
            max_room_channels_per_broadcast: DEFAULT_MAX_ROOM_CHANNELS_PER_BROADCAST,
            connect_wait: DEFAULT_CONNECT_WAIT,
            redis_timeout: DEFAULT_REDIS_TIMEOUT,
            history_max_len: 0,
            outbox: OutboxLimits::default(),
            metrics: None,
        }
    }

    /// The Redis URL.
    pub fn redis_url(&self) -> &str {
        &self.redis_url
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Sets this node's id, unique in the cluster (no `#`). Requests name the nodes that did
    /// not answer by it; a fixed id (the pod name) makes logs and reports easier to read.
    pub fn with_node_id(mut self, node_id: impl Into<String>) -> Self {
        self.node_id = node_id.into();
        self
    }

    /// Counts into `metrics` (see [`Metrics::new`] to register them in your Prometheus
    /// registry). Without it the adapter counts into metrics nobody exports.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Sets how long [`Cluster::connect`](crate::Cluster::connect) waits for the first Redis
    /// connection (default [`DEFAULT_CONNECT_WAIT`]); past it the cluster starts not ready
    /// and connects in the background.
    pub fn with_connect_wait(mut self, wait: Duration) -> Self {
        self.connect_wait = wait;
        self
    }

    /// Sets how long Redis has to answer (default [`DEFAULT_REDIS_TIMEOUT`]): a command not
    /// answered in time fails, and a connection whose periodic `PING` is not answered in time
    /// counts as stalled (a Redis that stopped answering but keeps its sockets open): the
    /// cluster turns not ready and reconnects until Redis answers again.
    pub fn with_redis_timeout(mut self, timeout: Duration) -> Self {
        self.redis_timeout = timeout;
        self
    }

    /// Sets the channel prefix.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Sets the request timeout.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets the heartbeat interval; the heartbeat timeout becomes two intervals.
    pub fn with_heartbeat_interval(mut self, interval: Duration) -> Self {
        self.heartbeat_interval = interval;
        self.heartbeat_timeout = interval * 2;
        self
    }

    /// Sets the time after which a silent node is considered dead (after
    /// [`with_heartbeat_interval`](Self::with_heartbeat_interval), which resets it to two
    /// intervals); it must be longer than the interval.
    pub fn with_heartbeat_timeout(mut self, timeout: Duration) -> Self {
        self.heartbeat_timeout = timeout;
        self
    }

    /// Sets the bound on messages in flight to Redis (default [`DEFAULT_PUBLISH_QUEUE`]).
    pub fn with_publish_queue(mut self, capacity: usize) -> Self {
        self.publish_queue = capacity;
        self
    }

    /// Sets the capacity of the Redis client's subscriber channel (default
    /// [`DEFAULT_SUBSCRIBER_BUFFER`]).
    pub fn with_subscriber_buffer(mut self, capacity: usize) -> Self {
        self.subscriber_buffer = capacity;
        self
    }

    /// Sets the largest message published (default [`DEFAULT_MAX_MESSAGE_BYTES`]); larger
    /// broadcasts fail with [`crate::Error::TooLarge`] instead of reaching Redis.
    pub fn with_max_message_bytes(mut self, bytes: usize) -> Self {
        self.max_message_bytes = bytes;
        self
    }

    /// Sets the most commands the Redis client writes with one flush (default
    /// [`DEFAULT_PUBLISH_BATCH`]).
    pub fn with_publish_batch(mut self, commands: usize) -> Self {
        self.publish_batch = commands;
        self
    }

    /// Turns per-room channels on, or off (the default: every broadcast on the namespace
    /// channel, received by every node).
    ///
    /// On, a broadcast to a room reaches only the nodes with a member, which subscribe the
    /// room's channel when their first socket joins it. socketioxide's `socket.join` and
    /// `socket.leave` do not tell the adapter: call [`Cluster::rooms_joined`] after every
    /// `join` and [`Cluster::rooms_left`] after every `leave` (`socketsJoin`, `socketsLeave`
    /// and disconnects need nothing), or a room joined without it misses the broadcasts of
    /// other nodes. Every node of a cluster must use the same setting.
    ///
    /// [`Cluster::rooms_joined`]: crate::Cluster::rooms_joined
    /// [`Cluster::rooms_left`]: crate::Cluster::rooms_left
    pub fn with_room_channels(mut self, on: bool) -> Self {
        self.room_channels = on;
        self
    }

    /// Keeps a history of each namespace's broadcasts in a Redis stream of about `max_len`
    /// entries (0, the default: none). With it, a node whose subscription was interrupted
    /// catches up from the stream, and clients that keep offsets can recover what they
    /// missed (see [`Cluster::namespace`](crate::Cluster::namespace)). Recorded: events
    /// without an ack, not volatile, to the whole cluster. Needs a standalone or Sentinel
    /// Redis (a script records and publishes in one step, which a Redis Cluster cannot do
    /// across slots): on a Redis Cluster, or without Redis, there is none (logged).
    pub fn with_history(mut self, max_len: usize) -> Self {
        self.history_max_len = max_len;
        self
    }

    /// Bounds what waits while Redis is unreachable: recorded broadcasts (see
    /// [`AdapterConfig::with_history`]) published meanwhile are kept, in order, and sent when
    /// it is back; beyond the bounds they are dropped and counted (`outbox_full`,
    /// `outbox_expired`). Default: 10,000 messages, 16 MiB, 30 s.
    pub fn with_outbox(mut self, limits: OutboxLimits) -> Self {
        self.outbox = limits;
        self
    }

    /// Entries kept in each namespace's history (0: none).
    pub fn history_max_len(&self) -> usize {
        self.history_max_len
    }

    /// Sets how long a room channel stays subscribed after its last local socket left.
    pub fn with_room_unsubscribe_delay(mut self, delay: Duration) -> Self {
        self.room_unsubscribe_delay = delay;
        self
    }

    /// Sets the most rooms a broadcast is published to on their own channels.
    pub fn with_max_room_channels_per_broadcast(mut self, rooms: usize) -> Self {
        self.max_room_channels_per_broadcast = rooms;
        self
    }

    /// Checks that the values can work together.
    ///
    /// # Errors
    /// [`crate::Error::Config`] naming the first bad value.
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |m: &str| Err(crate::Error::Config(m.to_owned()));
        let scheme = self.redis_url.split("://").next().unwrap_or_default();
        if !self.redis_url.is_empty() && !REDIS_SCHEMES.contains(&scheme) {
            return Err(crate::Error::Config(format!(
                "redis url scheme {scheme:?} is not one of {}",
                REDIS_SCHEMES.join(", ")
            )));
        }
        // The other nodes refuse messages from an id of another shape (bounds.rs).
        if !crate::bounds::valid_id(&self.node_id) {
            return Err(crate::Error::Config(format!(
                "node id must be 1-{} bytes, without '#' or control characters",
                crate::bounds::MAX_ID_BYTES
            )));
        }
        if self.prefix.is_empty() || self.prefix.contains('#') {
            return bad("prefix must be non-empty and must not contain '#'");
        }
        if self.heartbeat_interval.is_zero() || self.heartbeat_timeout <= self.heartbeat_interval {
            return bad("heartbeat timeout must be longer than a non-zero heartbeat interval");
        }
        if self.request_timeout.is_zero() {
            return bad("request timeout must be non-zero");
        }
        if self.redis_timeout < Duration::from_millis(100) {
            return bad("redis timeout must be at least 100 ms");
        }
        if self.publish_queue == 0 || self.publish_batch == 0 || self.subscriber_buffer == 0 {
            return bad("queue, batch and buffer sizes must be non-zero");
        }
        if self.max_message_bytes == 0 {
            return bad("max message bytes must be non-zero");
        }
        Ok(())
    }

    /// The metrics to count into: the configured ones, or a fresh unexported set.
    pub(crate) fn metrics_or_default(&self) -> Metrics {
        self.metrics.clone().unwrap_or_else(Metrics::unregistered)
    }
}

/// `{HOSTNAME}-{8 hex digits}`: readable in logs, and distinct for two processes on one host.
fn generated_node_id() -> String {
    use std::hash::{BuildHasher as _, Hasher as _};
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "node".to_owned());
    let host: String = host
        .chars()
        .filter(|c| *c != '#' && !c.is_control())
        .take(40)
        .collect();
    // RandomState is seeded from the OS per process; mixed with the pid and the time.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    format!("{host}-{:08x}", h.finish() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_timeout_is_two_intervals() {
        let c = AdapterConfig::new("redis://127.0.0.1")
            .with_heartbeat_interval(Duration::from_millis(300));
        c.validate().unwrap();
        assert_eq!(c.heartbeat_timeout, Duration::from_millis(600));
    }

    #[test]
    fn accepts_documented_schemes_only() {
        for url in [
            "redis://h:1",
            "rediss://h:1",
            "redis://:pw@h:1",
            "redis-cluster://h:1?node=h:2",
            "redis-sentinel://h:26379?sentinelServiceName=m",
        ] {
            AdapterConfig::new(url).validate().unwrap();
        }
        let err = AdapterConfig::new("http://h").validate().unwrap_err();
        assert!(err.to_string().contains("redis url scheme"), "{err}");
    }

    #[test]
    fn redis_timeout_defaults_to_3_s_and_must_be_at_least_100_ms() {
        let c = AdapterConfig::new("redis://127.0.0.1");
        assert_eq!(c.redis_timeout, DEFAULT_REDIS_TIMEOUT);
        let short = c.clone().with_redis_timeout(Duration::from_millis(99));
        assert!(short.validate().is_err());
        c.with_redis_timeout(Duration::from_millis(100))
            .validate()
            .unwrap();
    }

    #[test]
    fn rejects_node_ids_other_nodes_would_refuse() {
        let long = "a".repeat(crate::bounds::MAX_ID_BYTES + 1);
        for id in ["a#b", "", "a\nb", long.as_str()] {
            let c = AdapterConfig::new("redis://127.0.0.1").with_node_id(id);
            assert!(c.validate().is_err(), "{id:?}");
        }
    }

    #[test]
    fn generated_node_ids_differ_and_validate() {
        let (a, b) = (AdapterConfig::new(""), AdapterConfig::new(""));
        assert_ne!(a.node_id(), b.node_id());
        a.validate().unwrap();
    }
}
