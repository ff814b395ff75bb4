//! The node API's requests across the cluster (fetchSockets, rooms, serverSideEmit), each
//! through the one request skeleton, and the [`NamespaceHandle`] face that serves them.

use std::{collections::HashSet, time::Duration};

use futures_util::{FutureExt as _, future::BoxFuture};
use socketioxide_core::{
    Sid,
    adapter::{BroadcastOptions, SocketEmitter},
    packet::Packet,
};

use super::{RedisAdapter, Target};
use crate::{
    error::Result,
    history::{Offset, RestoreError},
    membership::NodeInfo,
    reports::{AckReport, FetchReport, NamespaceHandle, RoomsReport, ServerEmitReport, SocketInfo},
    request,
    wire::{self, Body},
};

impl<E: SocketEmitter> RedisAdapter<E> {
    pub(super) async fn fetch_report(&self, opts: BroadcastOptions) -> Result<FetchReport> {
        let target = self.target(&opts);
        let body = |req| Body::FetchSockets {
            req,
            opts: opts.clone(),
        };
        let flight = self.start("fetch_sockets", &target, body).await?;
        let mut sockets = if target.includes_local() {
            self.local_socket_infos(opts)
        } else {
            Vec::new()
        };
        let mut remote = Vec::new();
        let timeout = self.cluster.config.request_timeout;
        let missing = flight
            .finish(timeout, |_, body| match body {
                Body::FetchSocketsResponse { sockets, .. } => {
                    remote.extend(sockets);
                    true
                }
                _ => false,
            })
            .await;
        sockets.extend(remote.into_iter().map(|s| {
            SocketInfo {
                // Data that does not decode is counted as a decode drop; the socket is still listed.
                data: self
                    .cluster
                    .decoded(wire::json_value(&s.data))
                    .unwrap_or_default(),
                id: s.id,
                node: s.node,
                rooms: s.rooms,
            }
        }));
        Ok(FetchReport {
            sockets,
            missing_nodes: missing,
        })
    }

    pub(super) async fn rooms_report_inner(&self, opts: BroadcastOptions) -> Result<RoomsReport> {
        let target = self.target(&opts);
        let body = |req| Body::AllRooms {
            req,
            opts: opts.clone(),
        };
        let flight = self.start("all_rooms", &target, body).await?;
        let mut rooms: HashSet<String> = if target.includes_local() {
            let local = self.local.rooms(opts).into_iter();
            local.map(|r| r.into_owned()).collect()
        } else {
            HashSet::new()
        };
        let timeout = self.cluster.config.request_timeout;
        let missing = flight
            .finish(timeout, |_, body| match body {
                Body::AllRoomsResponse { rooms: r, .. } => {
                    rooms.extend(r);
                    true
                }
                _ => false,
            })
            .await;
        let mut rooms: Vec<String> = rooms.into_iter().collect();
        rooms.sort();
        Ok(RoomsReport {
            rooms,
            missing_nodes: missing,
        })
    }

    /// Sends a server-to-server event to every other node (published whoever is known alive);
    /// with `ack_timeout`, gathers the live nodes' responses.
    async fn server_emit_inner(
        &self,
        event: String,
        args: serde_json::Value,
        ack_timeout: Option<Duration>,
    ) -> Result<ServerEmitReport> {
        let args = wire::json_bytes(&args);
        let body = |req| Body::ServerEvent { req, event, args };
        let Some(timeout) = ack_timeout else {
            let started = std::time::Instant::now();
            self.send(self.all_chan.clone(), body(None)).await?;
            request::observe(&self.cluster.driver.metrics, "server_event", started, &[]);
            return Ok(ServerEmitReport {
                complete: true,
                ..Default::default()
            });
        };
        let flight = self
            .start("server_event", &Target::All, |req| body(Some(req)))
            .await?;
        let mut responses = Vec::new();
        let missing = flight
            .finish(timeout, |node, body| match body {
                Body::ServerEventResponse { response, .. } => {
                    // An undecodable response is counted and leaves that node unanswered.
                    match self.cluster.decoded(wire::json_value(&response)) {
                        Some(v) => {
                            responses.push((node.to_owned(), v));
                            true
                        }
                        None => false,
                    }
                }
                _ => false,
            })
            .await;
        Ok(ServerEmitReport {
            responses,
            complete: missing.is_empty(),
            missing_nodes: missing,
        })
    }
}

impl<E: SocketEmitter> NamespaceHandle for RedisAdapter<E> {
    fn path(&self) -> &str {
        &self.ns
    }

    fn broadcast_with_ack_report(
        &self,
        packet: Packet,
        opts: BroadcastOptions,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<AckReport>> {
        self.ack_report(packet, opts, timeout).boxed()
    }

    fn fetch_sockets_report(&self, opts: BroadcastOptions) -> BoxFuture<'_, Result<FetchReport>> {
        self.fetch_report(opts).boxed()
    }

    fn rooms_report(&self, opts: BroadcastOptions) -> BoxFuture<'_, Result<RoomsReport>> {
        self.rooms_report_inner(opts).boxed()
    }

    fn server_side_emit(
        &self,
        event: String,
        args: serde_json::Value,
        ack_timeout: Option<Duration>,
    ) -> BoxFuture<'_, Result<ServerEmitReport>> {
        self.server_emit_inner(event, args, ack_timeout).boxed()
    }

    fn nodes(&self) -> Vec<NodeInfo> {
        let mut nodes = vec![NodeInfo {
            id: self.node_id().to_owned(),
            sockets: self.local_sockets(),
            last_seen: Duration::ZERO,
        }];
        let mut others = self.members.snapshot();
        others.sort_by(|a, b| a.id.cmp(&b.id));
        nodes.extend(others);
        nodes
    }

    fn leave(&self) -> BoxFuture<'_, ()> {
        async move {
            if let Err(e) = self.send(self.all_chan.clone(), Body::Leave).await {
                tracing::debug!(error = %e, "leave not sent");
            }
        }
        .boxed()
    }

    fn rooms_joined(&self, rooms: Vec<String>) -> BoxFuture<'_, ()> {
        self.subscribe_rooms(rooms).boxed()
    }

    fn rooms_left(&self, rooms: Vec<String>) {
        self.rooms_may_be_empty(rooms);
    }

    fn keeps_history(&self) -> bool {
        self.history.is_some()
    }

    fn history_position(&self) -> Option<Offset> {
        self.history.as_ref().and_then(|h| h.last())
    }

    fn recovery_begin(&self, sid: Sid) {
        self.recovery_begin(sid);
    }

    fn restore(
        &self,
        sid: Sid,
        from: Option<Offset>,
        senders: Vec<Sid>,
    ) -> BoxFuture<'_, std::result::Result<u64, RestoreError>> {
        async move { RedisAdapter::restore(self, sid, from, &senders).await }.boxed()
    }

    fn recovery_end(&self, sid: Sid) {
        self.recovery_end(sid);
    }
}
