//! The node's shared state, handed to socket handlers and HTTP routes.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
};

use ioscale_adapter::{Cluster, RedisAdapter};
use prometheus::Registry;
use socketioxide::{SocketIo, adapter::Emitter, extract::SocketRef};

use crate::{
    admission::Admission, api_keys::ApiKeys, config::Config, metrics::NodeMetrics,
    session::registry::Sessions,
};

/// The adapter every namespace of the node uses.
pub type Adapter = RedisAdapter<Emitter>;

/// Registers a socket's event handlers. Run by the connect middleware, before socketioxide
/// sends CONNECT: a client emits as soon as it sees CONNECT, and socketioxide drops an event
/// that finds no handler, so handlers registered by the connect hook (which socketioxide calls
/// after queueing CONNECT, on whatever thread is free) lose a client's first events now and
/// then: measured, 1-4 `join`s of 300 raw clients joining right after CONNECT.
pub type Register = fn(&SocketRef<Adapter>, &SocketIo<Adapter>, &Arc<App>);

/// Everything a handler may need.
#[derive(Debug)]
pub struct App {
    /// Effective configuration.
    pub config: Config,
    /// This node's id.
    pub node_id: String,
    /// The cluster (or the node alone).
    pub cluster: Cluster,
    /// Node metrics.
    pub metrics: NodeMetrics,
    /// Registry of every metric.
    pub registry: Registry,
    /// Who may open sockets.
    pub admission: Admission,
    /// Who may call the server API.
    pub api_keys: ApiKeys,
    /// The recovering sockets of this node.
    pub sessions: Sessions<Adapter>,
    /// Each namespace's registrations of event handlers, set once its namespaces are served.
    pub registers: OnceLock<BTreeMap<String, Vec<Register>>>,
    /// Told of every socket's life (the Admin UI, when served).
    pub observer: OnceLock<Arc<dyn crate::observe::SocketObserver>>,
    shutting_down: AtomicBool,
}

impl App {
    /// Bundles the state.
    pub fn new(
        config: Config,
        node_id: String,
        cluster: Cluster,
        metrics: NodeMetrics,
        registry: Registry,
        admission: Admission,
        api_keys: ApiKeys,
    ) -> Arc<Self> {
        Arc::new(Self {
            config,
            node_id,
            cluster,
            metrics,
            registry,
            admission,
            api_keys,
            sessions: Sessions::default(),
            registers: OnceLock::new(),
            observer: OnceLock::new(),
            shutting_down: AtomicBool::new(false),
        })
    }

    /// Marks the node as leaving: readiness turns false.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    /// Whether new sockets are admitted: not while the node is shutting down.
    pub fn is_accepting(&self) -> bool {
        !self.shutting_down.load(Ordering::SeqCst)
    }

    /// Whether the node should receive new traffic.
    pub fn is_ready(&self) -> bool {
        !self.shutting_down.load(Ordering::SeqCst) && self.cluster.is_ready()
    }
}

/// The state of the HTTP routes.
#[derive(Clone, Debug)]
pub struct HttpState {
    /// Shared node state.
    pub app: Arc<App>,
    /// Socket.IO server handle.
    pub io: SocketIo<Adapter>,
}
