//! What the node's API can ask of a namespace across the cluster, and the reports it gets
//! back: each says which live nodes did not answer in time, so a timeout is never silent.

use std::time::Duration;

use futures_util::future::BoxFuture;
use socketioxide_core::{Sid, Value, adapter::BroadcastOptions, packet::Packet};

use crate::{
    ack::AckFailure,
    error::Result,
    history::{Offset, RestoreError},
    membership::NodeInfo,
};

/// One socket's answer to a broadcast with acks.
#[derive(Debug, Clone)]
pub struct AckEntry {
    /// Socket id.
    pub socket: String,
    /// Node holding the socket.
    pub node: String,
    /// The parser-encoded ack payload, or why the socket did not ack.
    pub response: std::result::Result<Value, AckFailure>,
}

/// Every ack of a broadcast, and whether all targets answered.
#[derive(Debug, Clone, Default)]
pub struct AckReport {
    /// Acks received, in arrival order.
    pub acks: Vec<AckEntry>,
    /// True when every targeted socket on every live node acked in time.
    pub complete: bool,
    /// Live nodes that did not answer in time.
    pub missing_nodes: Vec<String>,
}

/// A socket anywhere in the cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct SocketInfo {
    /// Socket id.
    pub id: String,
    /// Node holding it.
    pub node: String,
    /// Rooms it is in (its own-id room included when the node joins it).
    pub rooms: Vec<String>,
    /// Its data (`Null` when none was set).
    pub data: serde_json::Value,
}

/// The result of fetchSockets across the cluster.
#[derive(Debug, Clone, Default)]
pub struct FetchReport {
    /// Matching sockets of this node and of every node that answered.
    pub sockets: Vec<SocketInfo>,
    /// Live nodes that did not answer in time.
    pub missing_nodes: Vec<String>,
}

/// The rooms of the whole cluster.
#[derive(Debug, Clone, Default)]
pub struct RoomsReport {
    /// Room names, sorted, without duplicates.
    pub rooms: Vec<String>,
    /// Live nodes that did not answer in time.
    pub missing_nodes: Vec<String>,
}

/// The answers to a server-to-server event.
#[derive(Debug, Clone, Default)]
pub struct ServerEmitReport {
    /// `(node, response)` of each node that answered.
    pub responses: Vec<(String, serde_json::Value)>,
    /// True when every live node answered.
    pub complete: bool,
    /// Live nodes that did not answer in time.
    pub missing_nodes: Vec<String>,
}

/// What the node's API can do with a namespace of the cluster.
pub trait NamespaceHandle: Send + Sync + 'static {
    /// The namespace path.
    fn path(&self) -> &str;
    /// Broadcasts `packet` and gathers every ack until all arrive or `timeout`.
    fn broadcast_with_ack_report(
        &self,
        packet: Packet,
        opts: BroadcastOptions,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<AckReport>>;
    /// The matching sockets of the whole cluster, with rooms and data.
    fn fetch_sockets_report(&self, opts: BroadcastOptions) -> BoxFuture<'_, Result<FetchReport>>;
    /// The rooms of the matching sockets of the whole cluster.
    fn rooms_report(&self, opts: BroadcastOptions) -> BoxFuture<'_, Result<RoomsReport>>;
    /// Sends an event to every other node; with `ack_timeout`, gathers their responses.
    fn server_side_emit(
        &self,
        event: String,
        args: serde_json::Value,
        ack_timeout: Option<Duration>,
    ) -> BoxFuture<'_, Result<ServerEmitReport>>;
    /// This node and the live other nodes.
    fn nodes(&self) -> Vec<NodeInfo>;
    /// Tells the other nodes this node leaves the namespace.
    fn leave(&self) -> BoxFuture<'_, ()>;
    /// Subscribes the channels of `rooms`, which a local socket just joined; resolves once
    /// broadcasts to them reach this node.
    fn rooms_joined(&self, rooms: Vec<String>) -> BoxFuture<'_, ()>;
    /// Says local sockets left `rooms`: their channels are unsubscribed once they stay empty
    /// for the unsubscribe delay.
    fn rooms_left(&self, rooms: Vec<String>);
    /// Whether broadcasts are recorded in a history ([`crate::AdapterConfig::with_history`]).
    fn keeps_history(&self) -> bool;
    /// The last history offset delivered on this node, if any.
    fn history_position(&self) -> Option<Offset>;
    /// Makes local socket `sid` a recovering one: recorded broadcasts reach it from the
    /// broker in stream order, each with `{"ioscale_offset": ..}` as its last argument, held
    /// back until [`NamespaceHandle::restore`]. Call it before the socket joins its rooms.
    fn recovery_begin(&self, sid: Sid);
    /// Gives recovering socket `sid` the recorded broadcasts after `from` that reach it (in
    /// its rooms now; not sent by one of its earlier ids `senders`), then what arrived
    /// meanwhile, and makes it live; returns how many came from the history. Live on an
    /// error too, which says what it may have missed.
    fn restore(
        &self,
        sid: Sid,
        from: Option<Offset>,
        senders: Vec<Sid>,
    ) -> BoxFuture<'_, std::result::Result<u64, RestoreError>>;
    /// Forgets recovering socket `sid` (disconnected).
    fn recovery_end(&self, sid: Sid);
}
