//! The adapter of one namespace: its state, how it addresses the other nodes and how it hands
//! broadcasts to its own sockets. The rest is split by concern:
//!
//! | module | what |
//! |---|---|
//! | `face` | socketioxide's `CoreAdapter` face: each method says what it asks of the cluster |
//! | `inbound` | messages from other nodes, dispatched by kind |
//! | `acks` | broadcasts with acks: the remote acks' progress, the stream and the report |
//! | `reports` | the node API's requests (fetchSockets, rooms, serverSideEmit) |
//! | `heartbeat` | announcing this node and noticing dead ones |
//! | `rooms` | room channels: subscribed on a room's first local socket, unsubscribed after its last |
//! | `history` | broadcasts recorded in the namespace's stream, delivered in its order, caught up after a lost subscription |
//! | `recovery` | recovering sockets: recorded broadcasts with their offsets, and what a reconnected client missed |

mod acks;
mod face;
mod heartbeat;
mod history;
mod inbound;
mod recovery;
mod reports;
mod rooms;

use std::{
    collections::HashSet,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use socketioxide_core::{
    adapter::{
        BroadcastFlags, BroadcastOptions, CoreLocalAdapter, SocketEmitter, errors::SocketError,
    },
    packet::Packet,
};

pub use self::{face::InitRes, recovery::OFFSET_KEY};
use crate::{
    channel,
    cluster::ClusterInner,
    error::Result,
    membership::Membership,
    metrics::{DropReason, Origin, Stage},
    reports::SocketInfo,
    request::{InFlight, Pending},
    wire::{self, Body, Envelope, RequestId, WIRE_VERSION},
};

/// The Redis cluster adapter of one namespace. Use it with
/// `SocketIo::builder().with_adapter::<RedisAdapter<_>>(cluster)` and `.await` every `io.ns(..)`.
pub struct RedisAdapter<E> {
    local: CoreLocalAdapter<E>,
    cluster: Arc<ClusterInner>,
    ns: String,
    all_chan: String,
    own_chan: String,
    members: Arc<Membership>,
    pending: Arc<Pending>,
    room_channels: rooms::RoomChannels,
    history: Option<history::History>,
    recovery: recovery::RecoverySockets,
    closed: AtomicBool,
    /// Server-side events from other nodes being handled now (bounded: `inbound.rs`).
    server_events_running: Arc<AtomicUsize>,
}

impl<E> std::fmt::Debug for RedisAdapter<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisAdapter")
            .field("ns", &self.ns)
            .finish_non_exhaustive()
    }
}

/// Where a request goes.
enum Target {
    /// Every node: published on the namespace channel whoever is known alive, so that a node
    /// not heard from yet still gets it; answers are awaited from the live ones.
    All,
    /// One other node, by its id.
    Node(String),
    /// This node only.
    OnlyLocal,
    /// A server id no live node has announced: no node can own it, so nothing is sent and
    /// nobody is waited for (waiting would only report innocent nodes as missing).
    Nowhere,
}

impl Target {
    /// Whether this node's own sockets take part.
    fn includes_local(&self) -> bool {
        matches!(self, Target::All | Target::OnlyLocal)
    }
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Options selecting every socket: without rooms, socketioxide matches all sockets only when
/// the broadcast flag is set (and none at all otherwise).
pub fn all_sockets() -> BroadcastOptions {
    let mut opts = BroadcastOptions::default();
    opts.add_flag(BroadcastFlags::Broadcast);
    opts
}

impl<E: SocketEmitter> RedisAdapter<E> {
    fn node_id(&self) -> &str {
        &self.cluster.config.node_id
    }

    fn uid(&self) -> String {
        self.local.server_id().to_string()
    }

    async fn send(&self, channel: String, body: Body) -> Result<()> {
        let kind = body.kind();
        let bytes = self.encode(body)?;
        self.cluster.driver.publish(channel, bytes, kind).await
    }

    /// `body` in this node's envelope, as it goes on the wire.
    fn encode(&self, body: Body) -> Result<Vec<u8>> {
        wire::encode(&Envelope {
            v: WIRE_VERSION,
            origin: self.node_id().to_owned(),
            body,
        })
    }

    /// Counts a message from another node of `kind` and `bytes`.
    fn count_in(&self, kind: &str, bytes: usize) {
        let metrics = &self.cluster.driver.metrics;
        metrics.messages_in.with_label_values(&[kind]).inc();
        metrics
            .bytes_in
            .with_label_values(&[kind])
            .inc_by(bytes as u64);
    }

    /// Publishes without waiting, for code that runs on the dispatcher and must not block it.
    fn send_detached(self: &Arc<Self>, channel: String, body: Body) {
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(e) = this.send(channel, body).await {
                tracing::debug!(error = %e, "detached publish failed");
            }
        });
    }

    fn node_channel(&self, node: &str) -> String {
        channel::one_node(&self.cluster.config.prefix, &self.ns, node)
    }

    fn local_sockets(&self) -> u32 {
        self.local.sockets(all_sockets()).len() as u32
    }

    /// Which nodes a request with `opts` concerns.
    fn target(&self, opts: &BroadcastOptions) -> Target {
        if opts.is_local(self.local.server_id()) {
            return Target::OnlyLocal;
        }
        match opts.server_id {
            Some(uid) if uid == self.local.server_id() => Target::OnlyLocal,
            Some(uid) => match self.members.node_of_uid(&uid.to_string()) {
                Some(node) => Target::Node(node),
                None => {
                    tracing::debug!(%uid, "request for a server id no live node has");
                    Target::Nowhere
                }
            },
            None => Target::All,
        }
    }

    /// Publishes `body` where `target` says; false when it goes nowhere (this node only, an
    /// unknown server id, or a node no longer alive).
    async fn publish_to(&self, target: &Target, body: Body) -> Result<bool> {
        let channel = match target {
            Target::All => self.all_chan.clone(),
            Target::Node(node) if self.members.is_alive(node) => self.node_channel(node),
            Target::Node(_) | Target::OnlyLocal | Target::Nowhere => return Ok(false),
        };
        self.send(channel, body).await?;
        Ok(true)
    }

    /// Publishes a request to its target; returns the nodes expected to answer (the live ones
    /// as of the publish: only requests need them, so a plain broadcast never builds the set).
    async fn send_request(&self, target: &Target, body: Body) -> Result<HashSet<String>> {
        let waiting = match target {
            Target::All => self.members.live().into_iter().collect(),
            Target::Node(node) => HashSet::from([node.clone()]),
            Target::OnlyLocal | Target::Nowhere => HashSet::new(),
        };
        if self.publish_to(target, body).await? {
            Ok(waiting)
        } else {
            Ok(HashSet::new())
        }
    }

    /// Registers a request of `kind`, then publishes it to `target`: registered first so that
    /// no answer can arrive unrouted. The returned [`InFlight`] collects the answers.
    async fn start(
        &self,
        kind: &'static str,
        target: &Target,
        body: impl FnOnce(RequestId) -> Body,
    ) -> Result<InFlight> {
        let started = Instant::now();
        let req = self.cluster.next_request_id();
        let guard = self.pending.register(req);
        let waiting = self.send_request(target, body(req)).await?;
        Ok(InFlight {
            kind,
            started,
            guard,
            waiting,
            members: self.members.clone(),
            metrics: self.cluster.driver.metrics.clone(),
        })
    }

    /// Sends a join, leave or disconnect and waits until every live node applied it, so that
    /// once it returns any read on any node sees the change.
    async fn send_confirmed(
        &self,
        opts: &BroadcastOptions,
        kind: &'static str,
        body: impl FnOnce(Option<RequestId>) -> Body,
    ) -> Result<()> {
        let target = self.target(opts);
        if matches!(target, Target::OnlyLocal | Target::Nowhere) {
            return Ok(());
        }
        let timeout = self.cluster.config.request_timeout;
        self.start(kind, &target, |req| body(Some(req)))
            .await?
            .finish(timeout, |_, body| matches!(body, Body::Applied { .. }))
            .await;
        Ok(())
    }

    /// This node's sockets matching `opts`, with their rooms and data.
    fn local_socket_infos(&self, opts: BroadcastOptions) -> Vec<SocketInfo> {
        self.local
            .sockets(opts)
            .into_iter()
            .map(|sid| {
                let mut rooms: Vec<String> = self
                    .local
                    .socket_rooms(sid)
                    .into_iter()
                    .map(|r| r.into_owned())
                    .collect();
                rooms.sort();
                SocketInfo {
                    id: sid.to_string(),
                    node: self.node_id().to_owned(),
                    rooms,
                    data: self.cluster.socket_data(&self.ns, sid),
                }
            })
            .collect()
    }

    /// Hands a broadcast to the matching local sockets and counts the packets that reached a
    /// socket's buffer (the fan-out). The local adapter does not say how many sockets matched,
    /// so they are counted first, under the same rooms as the send; a socket that leaves in
    /// between fails its send and is subtracted as an error. That second walk of the room is
    /// the counter's whole cost: the room walks together took 0.5 % of a node's CPU samples at
    /// 90,000 deliveries/s, against 55 % in the kernel's TCP send path.
    fn deliver_local(
        &self,
        packet: Packet,
        opts: BroadcastOptions,
        origin: Origin,
    ) -> std::result::Result<(), Vec<SocketError>> {
        let matched = self.local.sockets(opts.clone()).len() as u64;
        self.deliver_matched(packet, opts, origin, matched)
    }

    /// [`Self::deliver_local`] once the matching sockets were counted (`matched`).
    fn deliver_matched(
        &self,
        packet: Packet,
        opts: BroadcastOptions,
        origin: Origin,
        matched: u64,
    ) -> std::result::Result<(), Vec<SocketError>> {
        let metrics = &self.cluster.driver.metrics;
        let started = Instant::now();
        let result = self.local.broadcast(packet, opts);
        metrics.stage(Stage::LocalDelivery, started.elapsed());
        let failed = result.as_ref().err().map_or(0, Vec::len) as u64;
        if let Err(errs) = &result {
            self.count_socket_errors(errs);
        }
        metrics.delivered(origin, matched.saturating_sub(failed));
        if matched == 0 && origin == Origin::Remote {
            metrics.broadcasts_untargeted.inc();
        }
        result
    }

    fn count_socket_errors(&self, errs: &[SocketError]) {
        let full = errs
            .iter()
            .filter(|e| matches!(e, SocketError::InternalChannelFull))
            .count();
        if full > 0 {
            self.cluster
                .driver
                .drop_messages(DropReason::SocketBufferFull, full as u64);
        }
    }

    /// How long a new namespace waits for the running nodes to answer its hello, so the first
    /// requests already know whom to wait for.
    fn hello_wait(&self) -> Duration {
        if self.cluster.driver.reaches_peers() {
            self.cluster
                .config
                .heartbeat_interval
                .min(Duration::from_millis(300))
        } else {
            Duration::ZERO
        }
    }
}
