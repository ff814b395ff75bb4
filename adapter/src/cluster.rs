//! The cluster handle shared by every namespace of a node: the broker driver, the namespace
//! registry the node's API uses, cluster-visible socket data and the server-event handler.

use std::{
    collections::HashMap,
    sync::{
        Arc, RwLock, Weak,
        atomic::{AtomicU64, Ordering},
    },
};

use futures_util::future::BoxFuture;
use socketioxide_core::Sid;

use crate::{
    broker::{Broker as _, Driver, Hub, memory::MemoryBus, redis::RedisBroker},
    config::AdapterConfig,
    error::Result,
    metrics::{DropReason, Metrics},
    reports::NamespaceHandle,
};

/// Answers server-to-server events sent with [`NamespaceHandle::server_side_emit`].
pub trait ServerEventHandler: Send + Sync + 'static {
    /// Handles `event` with `args` sent by node `from` on namespace `ns`; the returned value is
    /// the response the sender receives when it asked for one.
    fn on_event(
        &self,
        ns: &str,
        from: &str,
        event: &str,
        args: serde_json::Value,
    ) -> BoxFuture<'static, serde_json::Value>;
}

/// Carries trace context across nodes inside adapter messages, so a broadcast from node A and
/// its delivery on node C show under one trace. The node implements it with OpenTelemetry; the
/// adapter only sees W3C `traceparent` strings.
pub trait TracePropagator: Send + Sync + 'static {
    /// The `traceparent` of `span`, if it is being traced.
    fn inject(&self, span: &tracing::Span) -> Option<String>;
    /// Makes the remote context `traceparent` the parent of `span`.
    fn set_parent(&self, span: &tracing::Span, traceparent: &str);
}

/// Per-socket data, readable by every node through fetchSockets. The node that holds a socket
/// keeps its data; other nodes ask for it, so nothing outlives the socket.
#[derive(Debug, Default)]
struct SocketData {
    map: RwLock<HashMap<(String, Sid), serde_json::Value>>,
}

pub(crate) struct ClusterInner {
    pub(crate) config: AdapterConfig,
    pub(crate) driver: Driver,
    namespaces: RwLock<HashMap<String, Weak<dyn NamespaceHandle>>>,
    socket_data: SocketData,
    server_events: RwLock<Option<Arc<dyn ServerEventHandler>>>,
    propagator: RwLock<Option<Arc<dyn TracePropagator>>>,
    next_req: AtomicU64,
}

/// A node's membership in the cluster. Pass it to
/// `SocketIo::builder().with_adapter::<RedisAdapter<_>>(cluster.clone())`; keep a clone for the
/// node's API.
#[derive(Clone)]
pub struct Cluster {
    pub(crate) inner: Arc<ClusterInner>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node_id", &self.inner.config.node_id)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Connects to Redis at the configured URL. Waits up to the configured connect wait
    /// (5 s by default) for the first connection; past that the cluster is returned not ready
    /// ([`is_ready`](Self::is_ready)) and keeps retrying in the background, so a node can
    /// start before its Redis.
    ///
    /// ```no_run
    /// # async fn run() -> ioscale_adapter::Result<()> {
    /// use ioscale_adapter::{AdapterConfig, Cluster};
    ///
    /// let cluster = Cluster::connect(AdapterConfig::new("redis://127.0.0.1:6379")).await?;
    /// assert!(cluster.is_ready());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// An invalid configuration or Redis URL.
    pub async fn connect(config: AdapterConfig) -> Result<Self> {
        config.validate()?;
        let hub = Hub::new(config.metrics_or_default());
        let broker = RedisBroker::connect(&config, hub.clone(), config.connect_wait).await?;
        if config.history_max_len > 0 && !broker.keeps_history() {
            tracing::warn!(
                "no broadcast history: it needs a standalone or Sentinel Redis, not a Redis Cluster"
            );
        }
        let driver = Driver::new(Box::new(broker), hub, config.max_message_bytes);
        Ok(Self::with_driver(config, driver))
    }

    /// A node on an in-process [`MemoryBus`] instead of Redis: several of them in one process
    /// form a cluster, for tests of multi-node behaviour that run in milliseconds.
    ///
    /// # Errors
    /// An invalid configuration.
    pub fn in_memory(config: AdapterConfig, bus: &MemoryBus) -> Result<Self> {
        config.validate()?;
        let hub = Hub::new(config.metrics_or_default());
        let broker = bus.attach(&config.node_id, hub.clone());
        let driver = Driver::new(Box::new(broker), hub, config.max_message_bytes);
        Ok(Self::with_driver(config, driver))
    }

    /// A node alone, without Redis: the same API, over the local sockets only.
    ///
    /// # Errors
    /// An invalid configuration.
    pub fn standalone(config: AdapterConfig) -> Result<Self> {
        config.validate()?;
        let driver = Driver::alone(config.metrics_or_default(), config.max_message_bytes);
        Ok(Self::with_driver(config, driver))
    }

    fn with_driver(config: AdapterConfig, driver: Driver) -> Self {
        Self {
            inner: Arc::new(ClusterInner {
                config,
                driver,
                namespaces: RwLock::new(HashMap::new()),
                socket_data: SocketData::default(),
                server_events: RwLock::new(None),
                propagator: RwLock::new(None),
                next_req: AtomicU64::new(1),
            }),
        }
    }

    /// Whether the node talks to other nodes through Redis.
    pub fn has_redis(&self) -> bool {
        self.inner.driver.client().is_some()
    }

    /// A Redis client on the adapter's publishing connection, for the node's own data.
    pub fn redis_client(&self) -> Option<fred::clients::Client> {
        self.inner.driver.client()
    }

    /// The adapter configuration.
    pub fn config(&self) -> &AdapterConfig {
        &self.inner.config
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.inner.config.node_id
    }

    /// Whether Redis is reachable (both connections up).
    pub fn is_ready(&self) -> bool {
        self.inner.driver.is_connected()
    }

    /// Whether channels are sharded (Redis Cluster, `SPUBLISH`/`SSUBSCRIBE`).
    pub fn is_sharded(&self) -> bool {
        self.inner.driver.sharded()
    }

    /// The adapter's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.driver.metrics
    }

    /// The adapter of namespace `ns`, once it is initialised: the cluster-wide requests with
    /// reports that say whether every live node answered.
    ///
    /// ```no_run
    /// # async fn run(cluster: ioscale_adapter::Cluster) -> ioscale_adapter::Result<()> {
    /// use ioscale_adapter::all_sockets;
    ///
    /// if let Some(ns) = cluster.namespace("/") {
    ///     let report = ns.fetch_sockets_report(all_sockets()).await?;
    ///     if !report.missing_nodes.is_empty() {
    ///         eprintln!("no answer from {:?}", report.missing_nodes);
    ///     }
    ///     println!("{} sockets in the cluster", report.sockets.len());
    /// }
    /// # Ok(()) }
    /// ```
    pub fn namespace(&self, ns: &str) -> Option<Arc<dyn NamespaceHandle>> {
        self.inner
            .namespaces
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(ns)
            .and_then(Weak::upgrade)
    }

    /// Subscribes this node to the channels of `rooms` of namespace `ns`, which a local socket
    /// just joined with `socket.join(..)` (socketioxide does not tell the adapter); resolves
    /// once broadcasts to them from any node reach this one. A no-op for rooms already
    /// subscribed, an unknown namespace, or with room channels off.
    pub async fn rooms_joined(&self, ns: &str, rooms: Vec<String>) {
        if let Some(handle) = self.namespace(ns) {
            handle.rooms_joined(rooms).await;
        }
    }

    /// Says local sockets of namespace `ns` left `rooms` (`socket.leave(..)`, or a disconnect):
    /// a room's channel is unsubscribed once no local socket is in it for the unsubscribe
    /// delay. Rooms emptied without this hint are found by a slower sweep.
    pub fn rooms_left(&self, ns: &str, rooms: Vec<String>) {
        if let Some(handle) = self.namespace(ns) {
            handle.rooms_left(rooms);
        }
    }

    /// Sets the data of socket `sid` of namespace `ns`, visible to every node through fetchSockets.
    pub fn set_socket_data(&self, ns: &str, sid: Sid, data: serde_json::Value) {
        self.inner
            .socket_data
            .map
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert((ns.to_owned(), sid), data);
    }

    /// The data of a local socket (`Null` if none was set).
    pub fn socket_data(&self, ns: &str, sid: Sid) -> serde_json::Value {
        self.inner.socket_data(ns, sid)
    }

    /// Forgets a socket's data (call on disconnect).
    pub fn remove_socket_data(&self, ns: &str, sid: Sid) {
        self.inner
            .socket_data
            .map
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(ns.to_owned(), sid));
    }

    /// Installs the handler of server-to-server events.
    pub fn on_server_event(&self, handler: impl ServerEventHandler) {
        *self
            .inner
            .server_events
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(handler));
    }

    /// Installs the trace propagator: from then on broadcasts carry their trace context and
    /// deliveries on other nodes are traced as its children.
    pub fn set_trace_propagator(&self, propagator: impl TracePropagator) {
        *self
            .inner
            .propagator
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(propagator));
    }

    /// Tells the other nodes this node leaves (graceful shutdown), on every namespace, so they
    /// stop waiting for it at once.
    pub async fn leave(&self) {
        let namespaces: Vec<_> = self
            .inner
            .namespaces
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter_map(Weak::upgrade)
            .collect();
        for ns in namespaces {
            ns.leave().await;
        }
    }

    /// Closes the Redis connections.
    pub async fn shutdown(&self) {
        self.inner.driver.quit().await;
    }
}

impl ClusterInner {
    /// A value decoded from another node's message, or `None` when it did not decode: that is
    /// counted as a decode drop and logged, never replaced silently.
    pub(crate) fn decoded<T>(&self, value: Result<T>) -> Option<T> {
        match value {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::debug!(error = %e, "undecodable value from another node");
                self.driver.drop_messages(DropReason::Decode, 1);
                None
            }
        }
    }

    pub(crate) fn next_request_id(&self) -> u64 {
        self.next_req.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn register(&self, ns: &str, handle: Weak<dyn NamespaceHandle>) {
        self.namespaces
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(ns.to_owned(), handle);
    }

    pub(crate) fn deregister(&self, ns: &str) {
        self.namespaces
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(ns);
    }

    pub(crate) fn socket_data(&self, ns: &str, sid: Sid) -> serde_json::Value {
        self.socket_data
            .map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(ns.to_owned(), sid))
            .cloned()
            .unwrap_or(serde_json::Value::Null)
    }

    pub(crate) fn propagator(&self) -> Option<Arc<dyn TracePropagator>> {
        self.propagator
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn server_event_handler(&self) -> Option<Arc<dyn ServerEventHandler>> {
        self.server_events
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}
