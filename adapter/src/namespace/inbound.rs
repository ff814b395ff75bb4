//! Messages from other nodes: decoded, filtered, counted, then dispatched by kind. Everything
//! here runs on the broker's dispatcher task, in channel order, so it never awaits: replies
//! are published from spawned tasks.

use std::{
    fmt::Display,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use futures_util::StreamExt as _;
use socketioxide_core::{
    adapter::{BroadcastOptions, Room, SocketEmitter},
    packet::Packet,
};

use super::{RedisAdapter, now_us};
use crate::{
    bounds,
    broker::Inbound,
    history,
    metrics::{DropReason, Origin},
    wire::{self, Body, Envelope, RequestId, WIRE_VERSION, WirePacket, WireSocket, WireValue},
};

impl<E: SocketEmitter> Inbound for RedisAdapter<E> {
    fn on_message(self: Arc<Self>, channel: &str, payload: &[u8]) {
        let metrics = &self.cluster.driver.metrics;
        let (offset, seq, payload) = match history::unstamp(payload) {
            Ok(split) => split,
            Err(_) => {
                self.cluster.driver.drop_messages(DropReason::Decode, 1);
                return;
            }
        };
        if let Some(offset) = offset {
            if let Some(mut stamped) = self.decode_entry(offset, seq, payload) {
                stamped.channel = Some(channel.to_owned());
                let mut span = None;
                if !stamped.own {
                    self.members.seen(&stamped.origin, None, None);
                    self.count_in("broadcast", payload.len());
                    let trace = stamped.trace.take();
                    span = self.received(&stamped.origin, stamped.sent_at_us, trace);
                    metrics.remote_deliveries.inc();
                }
                let _entered = span.as_ref().map(|s| s.enter());
                self.on_stamped(stamped);
            }
            return;
        }
        let Some(env) = self.admit(payload) else {
            return;
        };
        if env.origin == self.cluster.config.node_id {
            // Our own publish, looped back by the broker.
            return;
        }
        self.count_in(env.body.kind(), payload.len());
        self.handle(env);
    }

    fn on_reconnect(self: Arc<Self>) {
        self.send_detached(self.all_chan.clone(), self.hello());
    }

    fn on_subscription_lost(self: Arc<Self>) {
        self.hold();
    }

    fn on_resubscribed(self: Arc<Self>) {
        if self.history.is_some() {
            tokio::spawn(self.catch_up());
        }
    }
}

/// Most server-side events from other nodes one namespace handles at once. Each runs the
/// application's handler in its own task; without a bound a flood of them on Redis would
/// spawn tasks without end. Beyond it they are refused and counted (the sender sees this node
/// as not answering).
pub(crate) const MAX_SERVER_EVENTS_RUNNING: usize = 256;

/// One server-side event being handled; frees its place when dropped.
struct Running(Arc<AtomicUsize>);

impl Running {
    fn take(counter: &Arc<AtomicUsize>) -> Option<Self> {
        counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_SERVER_EVENTS_RUNNING).then_some(n + 1)
            })
            .ok()
            .map(|_| Running(counter.clone()))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<E: SocketEmitter> RedisAdapter<E> {
    /// Decodes a message from another node and checks it before anything acts on it: its
    /// size, its msgpack shape, its version, its fields' ranges and room for its node in the
    /// membership table. `None` when refused, counted under the reason and logged at debug
    /// (the drop counter's own warning is rate-limited).
    pub(super) fn admit(&self, payload: &[u8]) -> Option<Envelope> {
        let refuse = |reason: DropReason, detail: &dyn Display| {
            tracing::debug!(ns = %self.ns, reason = reason.as_str(), %detail, "message from another node refused");
            self.cluster.driver.drop_messages(reason, 1);
            None
        };
        let limit = self.cluster.config.max_message_bytes;
        if payload.len() > limit {
            return refuse(DropReason::TooLarge, &payload.len());
        }
        let env = match wire::decode(payload) {
            Ok(env) => env,
            Err(e) => return refuse(DropReason::Decode, &e),
        };
        if env.v > WIRE_VERSION {
            return refuse(DropReason::Version, &env.v);
        }
        if let Err(e) = bounds::check(&env) {
            return refuse(DropReason::OutOfRange, &e);
        }
        if env.origin != self.cluster.config.node_id && !self.members.admits(&env.origin) {
            return refuse(DropReason::TooManyNodes, &"membership table full");
        }
        Some(env)
    }

    /// Requests aimed at one server id that is not ours are not for us.
    fn for_us(&self, opts: &BroadcastOptions) -> bool {
        opts.server_id
            .is_none_or(|uid| uid == self.local.server_id())
    }

    /// Handles one decoded message from another node.
    fn handle(self: &Arc<Self>, env: Envelope) {
        let origin = env.origin;
        self.members.seen(&origin, None, None);
        if let Some(req) = env.body.response_to() {
            if !self.pending.dispatch(req, &origin, env.body) {
                tracing::debug!(req, %origin, "late response ignored");
            }
            return;
        }
        match env.body {
            Body::Broadcast {
                packet,
                opts,
                sent_at_us,
                trace,
            } if self.for_us(&opts) => self.on_broadcast(&origin, packet, opts, sent_at_us, trace),
            Body::BroadcastWithAck {
                req,
                packet,
                opts,
                timeout_ms,
            } if self.for_us(&opts) => {
                self.on_broadcast_with_ack(origin, req, packet, opts, timeout_ms)
            }
            Body::AddSockets { opts, rooms, req } if self.for_us(&opts) => {
                self.on_add_sockets(origin, req, opts, rooms);
            }
            Body::DelSockets { opts, rooms, req } if self.for_us(&opts) => {
                self.local.del_sockets(opts, rooms.clone());
                self.rooms_may_be_empty(rooms);
                self.confirm(req, &origin);
            }
            Body::DisconnectSockets { opts, req } if self.for_us(&opts) => {
                if let Err(errs) = self.disconnect_local(opts) {
                    tracing::debug!(?errs, "some sockets were already gone");
                }
                self.confirm(req, &origin);
            }
            Body::FetchSockets { req, opts } if self.for_us(&opts) => {
                self.on_fetch_sockets(&origin, req, opts);
            }
            Body::AllRooms { req, opts } if self.for_us(&opts) => {
                let rooms = self.local.rooms(opts).into_iter().map(|r| r.into_owned());
                let body = Body::AllRoomsResponse {
                    req,
                    rooms: rooms.collect(),
                };
                self.send_detached(self.node_channel(&origin), body);
            }
            Body::ServerEvent { req, event, args } => {
                self.on_server_event(origin, req, event, &args)
            }
            Body::Heartbeat { uid, sockets } => self.on_heartbeat(&origin, &uid, sockets),
            Body::Hello { uid, sockets } => {
                self.members.seen(&origin, Some(&uid), Some(sockets));
                tracing::info!(node = %origin, "node joined");
                // Answer at once so the new node need not wait a heartbeat interval.
                self.send_detached(self.node_channel(&origin), self.heartbeat());
            }
            Body::Leave => self.on_leave(&origin),
            _ => {}
        }
    }

    /// Applies a join asked by another node and confirms it once the rooms' channels are
    /// subscribed here, so a broadcast made after the join returns reaches the new members.
    fn on_add_sockets(
        self: &Arc<Self>,
        origin: String,
        req: Option<RequestId>,
        opts: BroadcastOptions,
        rooms: Vec<String>,
    ) {
        let names = rooms.iter().map(|r| Room::Owned(r.clone())).collect();
        self.add_local_sockets(opts, names);
        let this = self.clone();
        tokio::spawn(async move {
            this.subscribe_occupied(&rooms).await;
            this.confirm(req, &origin);
        });
    }

    fn on_heartbeat(&self, origin: &str, uid: &str, sockets: u32) {
        if self.members.seen(origin, Some(uid), Some(sockets)) {
            tracing::info!(node = %origin, "node joined");
        }
    }

    fn on_leave(&self, origin: &str) {
        if self.members.remove(origin) {
            tracing::info!(node = %origin, "node left");
        }
    }

    /// Tells `origin` a join, leave or disconnect it asked for was applied here.
    fn confirm(self: &Arc<Self>, req: Option<RequestId>, origin: &str) {
        if let Some(req) = req {
            self.send_detached(self.node_channel(origin), Body::Applied { req });
        }
    }

    fn on_broadcast(
        &self,
        origin: &str,
        packet: WirePacket,
        opts: BroadcastOptions,
        sent_at_us: u64,
        trace: Option<String>,
    ) {
        let span = self.received(origin, sent_at_us, trace);
        let _entered = span.as_ref().map(|s| s.enter());
        match Packet::try_from(packet) {
            Ok(packet) => {
                self.cluster.driver.metrics.remote_deliveries.inc();
                let _ = self.deliver_local(packet, opts, Origin::Remote);
            }
            Err(e) => {
                tracing::debug!(error = %e, "bad packet");
                self.cluster.driver.drop_messages(DropReason::Decode, 1);
            }
        }
    }

    /// Counts a broadcast from another node and observes its latency; returns the span its
    /// delivery runs in, child of the publisher's, when tracing is on.
    fn received(
        &self,
        origin: &str,
        sent_at_us: u64,
        trace: Option<String>,
    ) -> Option<tracing::Span> {
        let span = match (self.cluster.propagator(), trace) {
            (Some(p), Some(tp)) => {
                let span = tracing::info_span!("adapter.deliver", ns = %self.ns, node = %self.node_id(), from = %origin);
                p.set_parent(&span, &tp);
                Some(span)
            }
            _ => None,
        };
        let metrics = &self.cluster.driver.metrics;
        metrics.broadcasts_received.inc();
        let now = now_us();
        if sent_at_us > 0 && now >= sent_at_us {
            metrics
                .broadcast_latency
                .observe((now - sent_at_us) as f64 / 1e6);
        }
        span
    }

    /// Delivers to the local sockets and sends back their count, then each ack as it comes.
    fn on_broadcast_with_ack(
        self: &Arc<Self>,
        origin: String,
        req: RequestId,
        packet: WirePacket,
        opts: BroadcastOptions,
        timeout_ms: u64,
    ) {
        let Ok(packet) = Packet::try_from(packet) else {
            self.cluster.driver.drop_messages(DropReason::Decode, 1);
            return;
        };
        let timeout = Some(Duration::from_millis(timeout_ms));
        let (stream, count) = self.local.broadcast_with_ack(packet, opts, timeout);
        self.cluster
            .driver
            .metrics
            .delivered(Origin::Remote, u64::from(count));
        let this = self.clone();
        let chan = self.node_channel(&origin);
        tokio::spawn(async move {
            if this
                .send(chan.clone(), Body::AckCount { req, count })
                .await
                .is_err()
            {
                return;
            }
            let mut stream = std::pin::pin!(stream);
            while let Some((sid, result)) = stream.next().await {
                let result = match result {
                    Ok(v) => Ok(WireValue::from(&v)),
                    Err(e) => Err(wire::encode_ack_error(&e)),
                };
                let body = Body::Ack {
                    req,
                    sid: sid.to_string(),
                    result,
                };
                if this.send(chan.clone(), body).await.is_err() {
                    return;
                }
            }
        });
    }

    fn on_fetch_sockets(self: &Arc<Self>, origin: &str, req: RequestId, opts: BroadcastOptions) {
        let uid = self.uid();
        let sockets = self
            .local_socket_infos(opts)
            .into_iter()
            .map(|s| WireSocket {
                data: wire::json_bytes(&s.data),
                id: s.id,
                node: s.node,
                uid: uid.clone(),
                rooms: s.rooms,
            })
            .collect();
        let body = Body::FetchSocketsResponse { req, sockets };
        self.send_detached(self.node_channel(origin), body);
    }

    /// Runs the node's server-event handler and, when asked, sends its response back. Arguments
    /// that do not decode are counted and the event is not handled (the sender sees this node
    /// as not answering).
    fn on_server_event(
        self: &Arc<Self>,
        origin: String,
        req: Option<RequestId>,
        event: String,
        args: &[u8],
    ) {
        let Some(running) = Running::take(&self.server_events_running) else {
            tracing::debug!(ns = %self.ns, %origin, "server event refused: too many running");
            let reason = DropReason::ServerEventsBusy;
            self.cluster.driver.drop_messages(reason, 1);
            return;
        };
        let Some(args) = self.cluster.decoded(wire::json_value(args)) else {
            return;
        };
        let handler = self.cluster.server_event_handler();
        let this = self.clone();
        tokio::spawn(async move {
            let _running = running;
            let response = match handler {
                Some(h) => h.on_event(&this.ns, &origin, &event, args).await,
                None => serde_json::Value::Null,
            };
            if let Some(req) = req {
                let response = wire::json_bytes(&response);
                let chan = this.node_channel(&origin);
                let body = Body::ServerEventResponse { req, response };
                if let Err(e) = this.send(chan, body).await {
                    tracing::debug!(error = %e, "server event response not sent");
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_events_beyond_the_bound_are_refused_until_one_ends() {
        let counter = Arc::new(AtomicUsize::new(0));
        let running: Vec<Running> = (0..MAX_SERVER_EVENTS_RUNNING)
            .map(|_| Running::take(&counter).unwrap())
            .collect();
        assert!(Running::take(&counter).is_none());
        drop(running);
        assert_eq!(counter.load(Ordering::Acquire), 0);
        assert!(Running::take(&counter).is_some());
    }
}
