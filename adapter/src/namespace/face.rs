//! socketioxide's `CoreAdapter` face of [`RedisAdapter`]: each method says what it asks of the
//! cluster and leaves the how to the sibling modules.

use std::{
    future::Future,
    pin::Pin,
    str::FromStr as _,
    sync::{Arc, atomic::Ordering},
    task::{Context, Poll},
    time::Duration,
};

use futures_util::{FutureExt as _, future::BoxFuture};
use socketioxide_core::{
    Sid, Str, Uid,
    adapter::{
        BroadcastOptions, CoreAdapter, CoreLocalAdapter, DefinedAdapter, RemoteSocketData, Room,
        RoomParam, SocketEmitter, Spawnable, errors::BroadcastError,
    },
    packet::Packet,
};

use super::{RedisAdapter, Target, acks::AckStream, history::History, now_us, rooms};
use crate::{
    channel,
    cluster::Cluster,
    error::{Error, Result},
    membership::Membership,
    metrics::Origin,
    reports::NamespaceHandle,
    request::Pending,
    wire::{Body, WirePacket},
};

/// The future returned by `io.ns(..)` with this adapter: await it before serving the namespace.
#[must_use = "await it: the namespace exists only once its channels are subscribed"]
pub struct InitRes(BoxFuture<'static, Result<()>>);

impl std::fmt::Debug for InitRes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InitRes")
    }
}

impl Future for InitRes {
    type Output = Result<()>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.as_mut().poll(cx)
    }
}

impl Spawnable for InitRes {
    fn spawn(self) {
        tokio::spawn(async move {
            if let Err(e) = self.0.await {
                tracing::error!(error = %e, "namespace adapter failed to initialise");
            }
        });
    }
}

impl<E> DefinedAdapter for RedisAdapter<E> {}

impl<E: SocketEmitter> RedisAdapter<E> {
    /// Subscribes the namespace's channels, starts its heartbeats and greets the cluster.
    async fn join_cluster(self: Arc<Self>) -> Result<()> {
        channel::check_namespace(&self.ns)?;
        let handle: Arc<dyn NamespaceHandle> = self.clone();
        self.cluster.register(&self.ns, Arc::downgrade(&handle));
        let weak = rooms::inbound_of(&self);
        let driver = &self.cluster.driver;
        let channels = vec![self.all_chan.clone(), self.own_chan.clone()];
        driver.subscribe(channels, &weak).await?;
        self.room_channels.set_handler(weak);
        tokio::spawn(Self::heartbeat_loop(
            Arc::downgrade(&self),
            self.cluster.config.heartbeat_interval,
        ));
        tokio::spawn(Self::sweep_loop(
            Arc::downgrade(&self),
            self.cluster.config.room_unsubscribe_delay,
        ));
        self.send(self.all_chan.clone(), self.hello()).await?;
        tokio::time::sleep(self.hello_wait()).await;
        tracing::info!(ns = %self.ns, nodes = self.members.live().len(), "namespace joined the cluster");
        Ok(())
    }
}

impl<E: SocketEmitter> RedisAdapter<E> {
    /// Publishes a broadcast to the other nodes: one copy per room on the rooms' channels
    /// (see `rooms::room_routes`), or one message where [`Target`] says; each recorded in the
    /// history when `record` (see `history`).
    async fn publish_broadcast(
        &self,
        packet: &Packet,
        opts: &BroadcastOptions,
        record: bool,
        trace: Option<String>,
    ) {
        let target = self.target(opts);
        let body = |opts: BroadcastOptions| Body::Broadcast {
            packet: WirePacket::from(packet),
            opts,
            sent_at_us: now_us(),
            trace: trace.clone(),
        };
        let published = match (&target, self.room_routes(opts)) {
            (Target::All, Some(routes)) => {
                let mut published = Ok(true);
                for (channel, opts) in routes {
                    let sent = self.send_maybe_recorded(channel, body(opts), record).await;
                    if let Err(e) = sent {
                        published = Err(e);
                    }
                }
                published
            }
            (Target::All, None) if record => self
                .send_maybe_recorded(self.all_chan.clone(), body(opts.clone()), true)
                .await
                .map(|()| true),
            _ => self.publish_to(&target, body(opts.clone())).await,
        };
        match published {
            Ok(true) => self.cluster.driver.metrics.broadcasts_published.inc(),
            Ok(false) => {}
            Err(e) => tracing::debug!(error = %e, "broadcast not published"),
        }
    }

    /// Disconnects the matching local sockets; their rooms may have emptied.
    pub(super) fn disconnect_local(
        &self,
        opts: BroadcastOptions,
    ) -> std::result::Result<(), Vec<socketioxide_core::adapter::errors::SocketError>> {
        let rooms = self.local.rooms(opts.clone());
        let result = self.local.disconnect_socket(opts);
        self.rooms_may_be_empty(rooms.into_iter().map(|r| r.into_owned()));
        result
    }
}

impl<E: SocketEmitter> CoreAdapter<E> for RedisAdapter<E> {
    type Error = Error;
    type State = Cluster;
    type AckStream = AckStream<E>;
    type InitRes = InitRes;

    fn new(state: &Self::State, local: CoreLocalAdapter<E>) -> Self {
        let cluster = state.inner.clone();
        let ns = local.path().as_str().to_owned();
        let prefix = &cluster.config.prefix;
        Self {
            all_chan: channel::all_nodes(prefix, &ns),
            own_chan: channel::one_node(prefix, &ns, &cluster.config.node_id),
            members: Arc::new(Membership::new(cluster.config.heartbeat_timeout)),
            pending: Arc::new(Pending::default()),
            room_channels: Default::default(),
            history: (cluster.config.history_max_len > 0 && cluster.driver.keeps_history()).then(
                || {
                    History::new(
                        channel::history(prefix, &ns),
                        cluster.config.history_max_len,
                    )
                },
            ),
            recovery: Default::default(),
            closed: Default::default(),
            server_events_running: Default::default(),
            ns,
            local,
            cluster,
        }
    }

    fn init(self: Arc<Self>, on_success: impl FnOnce() + Send + 'static) -> Self::InitRes {
        InitRes(
            async move {
                self.join_cluster().await?;
                on_success();
                Ok(())
            }
            .boxed(),
        )
    }

    async fn close(&self) -> Result<()> {
        self.closed.store(true, Ordering::Relaxed);
        let _ = self.send(self.all_chan.clone(), Body::Leave).await;
        self.cluster.deregister(&self.ns);
        self.unsubscribe_all_rooms();
        let channels = vec![self.all_chan.clone(), self.own_chan.clone()];
        self.cluster.driver.unsubscribe(channels).await?;
        Ok(())
    }

    async fn server_count(&self) -> Result<u16> {
        Ok(1 + self.members.live().len() as u16)
    }

    /// Published to the other nodes (on the channels of its rooms, or on the namespace channel
    /// whoever is known alive), then delivered to this node's sockets whatever happened to the
    /// publish.
    async fn broadcast(
        &self,
        packet: Packet,
        opts: BroadcastOptions,
    ) -> std::result::Result<(), BroadcastError> {
        // Traced only when a propagator is installed: no span cost otherwise.
        let traced = self.cluster.propagator().map(|p| {
            let span =
                tracing::info_span!("adapter.broadcast", ns = %self.ns, node = %self.node_id());
            let traceparent = p.inject(&span);
            (span, traceparent)
        });
        let record = self.records(&packet, &opts);
        if !opts.is_local(self.local.server_id()) {
            let trace = traced.as_ref().and_then(|(_, tp)| tp.clone());
            self.publish_broadcast(&packet, &opts, record, trace).await;
        }
        let _entered = traced.as_ref().map(|(span, _)| span.enter());
        // A recorded broadcast reaches this node's recovering sockets from the broker, in
        // stream order; the others get it now.
        let delivered = if record {
            self.deliver_split(packet, opts, Origin::Local, true, None)
        } else {
            self.deliver_local(packet, opts, Origin::Local)
        };
        delivered.map_err(BroadcastError::from)
    }

    async fn broadcast_with_ack(
        &self,
        packet: Packet,
        opts: BroadcastOptions,
        timeout: Option<Duration>,
    ) -> Result<Self::AckStream> {
        let timeout = timeout.unwrap_or_else(|| self.local.ack_timeout());
        self.ack_stream(packet, opts, timeout).await
    }

    // The cluster-wide operations act here first, on the sockets there are now, and then ask
    // the other nodes: waiting for the other nodes' answers first (up to the request timeout
    // when one has just died) would apply the local part to whatever sockets match by then,
    // e.g. a client's newer connection when the call was meant for its older one.
    async fn add_sockets(&self, opts: BroadcastOptions, rooms: impl RoomParam) -> Result<()> {
        let rooms: Vec<Room> = rooms.into_room_iter().collect();
        let names: Vec<String> = rooms.iter().map(|r| r.to_string()).collect();
        self.add_local_sockets(opts.clone(), rooms);
        self.subscribe_occupied(&names).await;
        self.send_confirmed(&opts, "add_sockets", |req| Body::AddSockets {
            opts: opts.clone(),
            rooms: names.clone(),
            req,
        })
        .await
    }

    async fn del_sockets(&self, opts: BroadcastOptions, rooms: impl RoomParam) -> Result<()> {
        let rooms: Vec<Room> = rooms.into_room_iter().collect();
        let names: Vec<String> = rooms.iter().map(|r| r.to_string()).collect();
        self.local.del_sockets(opts.clone(), rooms);
        self.rooms_may_be_empty(names.clone());
        self.send_confirmed(&opts, "del_sockets", |req| Body::DelSockets {
            opts: opts.clone(),
            rooms: names,
            req,
        })
        .await
    }

    async fn disconnect_socket(
        &self,
        opts: BroadcastOptions,
    ) -> std::result::Result<(), BroadcastError> {
        let local = self.disconnect_local(opts.clone());
        let body = |req| Body::DisconnectSockets {
            opts: opts.clone(),
            req,
        };
        if let Err(e) = self.send_confirmed(&opts, "disconnect_sockets", body).await {
            return Err(BroadcastError::Adapter(e.into()));
        }
        local.map_err(BroadcastError::Socket)
    }

    async fn rooms(&self, opts: BroadcastOptions) -> Result<Vec<Room>> {
        let report = self.rooms_report_inner(opts).await?;
        Ok(report.rooms.into_iter().map(Room::from).collect())
    }

    async fn fetch_sockets(&self, opts: BroadcastOptions) -> Result<Vec<RemoteSocketData>> {
        let report = self.fetch_report(opts).await?;
        let ns = Str::from(self.ns.clone());
        let own = self.local.server_id();
        Ok(report
            .sockets
            .into_iter()
            .filter_map(|s| {
                let server_id = if s.node == self.node_id() {
                    own
                } else {
                    Uid::from_str(&self.members.uid_of(&s.node)?).ok()?
                };
                Some(RemoteSocketData {
                    id: Sid::from_str(&s.id).ok()?,
                    server_id,
                    ns: ns.clone(),
                })
            })
            .collect())
    }

    fn get_local(&self) -> &CoreLocalAdapter<E> {
        &self.local
    }
}
