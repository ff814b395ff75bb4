//! Adapter configuration: channel prefix, timeouts, heartbeats and buffer sizes, with documented defaults.

use std::time::Duration;

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

/// Configuration of the Redis adapter. Build it with [`AdapterConfig::new`] and the `with_*` methods.
#[derive(Debug, Clone)]
pub struct AdapterConfig {
    /// Redis URL: `redis://`, `rediss://`, `redis-cluster://` (sharded pub/sub) or `redis-sentinel://`.
    pub redis_url: String,
    /// This node's id, unique in the cluster. Appears in logs, metrics and the API.
    pub node_id: String,
    /// Prefix of every channel name.
    pub prefix: String,
    /// How long a request waits for the other nodes before answering with what it has.
    pub request_timeout: Duration,
    /// Interval between heartbeats. A node not heard from for `heartbeat_timeout` is dead.
    pub heartbeat_interval: Duration,
    /// Time after which a silent node is considered dead. Defaults to two intervals.
    pub heartbeat_timeout: Duration,
    /// Most messages published and not yet answered by Redis; `publish` waits beyond it.
    pub publish_queue: usize,
    /// Capacity of the Redis client's subscriber broadcast channel.
    pub subscriber_buffer: usize,
    /// Largest message published; larger ones fail with [`crate::Error::TooLarge`].
    pub max_message_bytes: usize,
    /// Most commands the Redis client writes with one flush.
    pub publish_batch: usize,
    /// Whether broadcasts to rooms travel on per-room channels, which only the nodes with a
    /// member of the room subscribe to. Every node of a cluster must use the same setting.
    pub room_channels: bool,
    /// How long a room channel stays subscribed after the room's last local socket left.
    pub room_unsubscribe_delay: Duration,
    /// Most rooms a broadcast is published to on their own channels (beyond it: once, on the
    /// namespace channel).
    pub max_room_channels_per_broadcast: usize,
}

impl AdapterConfig {
    /// A configuration with the defaults for the given Redis URL and node id.
    pub fn new(redis_url: impl Into<String>, node_id: impl Into<String>) -> Self {
        Self {
            redis_url: redis_url.into(),
            node_id: node_id.into(),
            prefix: DEFAULT_PREFIX.to_owned(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            heartbeat_timeout: DEFAULT_HEARTBEAT_INTERVAL * 2,
            publish_queue: DEFAULT_PUBLISH_QUEUE,
            subscriber_buffer: DEFAULT_SUBSCRIBER_BUFFER,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            publish_batch: DEFAULT_PUBLISH_BATCH,
            room_channels: true,
            room_unsubscribe_delay: DEFAULT_ROOM_UNSUBSCRIBE_DELAY,
            max_room_channels_per_broadcast: DEFAULT_MAX_ROOM_CHANNELS_PER_BROADCAST,
        }
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

    /// Sets the bound on messages in flight to Redis.
    pub fn with_publish_queue(mut self, capacity: usize) -> Self {
        self.publish_queue = capacity;
        self
    }

    /// Turns per-room channels on (the default) or off (every broadcast on the namespace
    /// channel, received by every node).
    pub fn with_room_channels(mut self, on: bool) -> Self {
        self.room_channels = on;
        self
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
        if self.node_id.is_empty() || self.node_id.contains('#') {
            return bad("node id must be non-empty and must not contain '#'");
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
        if self.publish_queue == 0 || self.publish_batch == 0 || self.subscriber_buffer == 0 {
            return bad("queue, batch and buffer sizes must be non-zero");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_timeout_is_two_intervals() {
        let c = AdapterConfig::new("redis://127.0.0.1", "a")
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
            AdapterConfig::new(url, "a").validate().unwrap();
        }
        let err = AdapterConfig::new("http://h", "a").validate().unwrap_err();
        assert!(err.to_string().contains("redis url scheme"), "{err}");
    }

    #[test]
    fn rejects_hash_in_node_id() {
        let c = AdapterConfig::new("redis://127.0.0.1", "a#b");
        assert!(c.validate().is_err());
    }
}
