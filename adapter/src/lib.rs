//! `ioscale-adapter`: a Redis pub/sub cluster adapter for socketioxide, on `fred`.
//!
//! Several socketioxide servers on one Redis behave as one: a broadcast, a room join, a
//! `fetchSockets` or a `serverSideEmit` on one node reaches the sockets of every node.
//!
//! # Quick start
//! ```no_run
//! use ioscale_adapter::{AdapterConfig, Cluster, RedisAdapter};
//! use socketioxide::{SocketIo, adapter::Adapter, extract::{Data, SocketRef}};
//!
//! async fn on_connect<A: Adapter>(socket: SocketRef<A>) {
//!     socket.on("chat", async |s: SocketRef<A>, Data::<String>(text)| {
//!         // Reaches the other sockets of every node.
//!         let _ = s.broadcast().emit("chat", &text).await;
//!     });
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let cluster = Cluster::connect(AdapterConfig::new("redis://127.0.0.1:6379")).await?;
//! let (layer, io) = SocketIo::builder()
//!     .with_adapter::<RedisAdapter<_>>(cluster.clone())
//!     .build_layer();
//! io.ns("/", on_connect).await?;
//! # let _ = layer; Ok(()) }
//! ```
//! Serve `layer` with axum or hyper as with any socketioxide adapter; the crate's
//! `examples/chat.rs` is a whole chat server, and its README the guide from socketioxide-redis.
//!
//! # Metrics
//! Optional: [`AdapterConfig::with_metrics`] with [`Metrics::new`] registers the
//! `ioscale_adapter_*` series in your Prometheus registry; without it nothing is exported.
//!
//! # How it works
//! Every node keeps its sockets and rooms in memory (socketioxide's local adapter) and talks to
//! the other nodes through Redis pub/sub: `PUBLISH`/`SUBSCRIBE` on a standalone Redis or
//! Sentinel, sharded `SPUBLISH`/`SSUBSCRIBE` on a Redis Cluster (chosen from the URL scheme).
//!
//! | channel | subscribers | messages |
//! |---|---|---|
//! | `{prefix}#{ns}#` | every node serving `ns` | broadcasts, join/leave/disconnect, requests, heartbeats |
//! | `{prefix}#{ns}#{node}#` | `node` only | responses, requests aimed at that node |
//! | `{prefix}#{ns}##{room}` | the nodes with a socket in `room` (room channels on) | broadcasts to `room` |
//!
//! Life of a broadcast: `io.to("room").emit(..)` on node A publishes one msgpack message on the
//! namespace channel (or, with [`AdapterConfig::with_room_channels`], on the room's channel),
//! then delivers to A's own sockets; every node subscribed receives it on its dispatcher, in
//! order, and delivers to its matching sockets. With room channels a node subscribes a room's
//! channel when its first socket joins the room: call [`Cluster::rooms_joined`] after
//! `socket.join(..)` (socketioxide does not tell the adapter) and [`Cluster::rooms_left`]
//! after `socket.leave(..)`; `socketsJoin` and `socketsLeave` need nothing.
//!
//! Requests (broadcast with acks, fetchSockets, rooms, serverSideEmit) wait for the nodes
//! known alive by heartbeats, never for a subscriber count: a stray subscriber changes nothing,
//! and a node that dies stops being waited for within two heartbeat intervals. A timeout is not
//! silent: the reports say which nodes did not answer.
//!
//! The broker is a seam (`broker`): Redis on fred in production, nothing for a node alone, and
//! a [`MemoryBus`] that joins several nodes inside one process, for tests of multi-node
//! behaviour that run in milliseconds ([`Cluster::in_memory`]).
//!
//! Nothing is dropped silently: the publish queue is bounded and applies backpressure; what
//! must be dropped (Redis down, subscriber overflow, full socket buffers, undecodable input) is
//! counted in `ioscale_adapter_dropped_total{reason}` and logged at most once per second.

// Beyond the workspace lints: nothing public by accident, every public type printable, and
// no unwrap or expect outside tests (client and Redis input must never panic a node).
#![warn(unreachable_pub, missing_debug_implementations)]
#![deny(missing_docs)]
#![warn(clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod ack;
mod bounds;
mod broker;
mod channel;
mod cluster;
mod config;
mod error;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
#[allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]
pub mod fuzzing;
mod history;
mod maps;
mod membership;
mod metrics;
mod namespace;
mod reports;
mod request;
mod shape;
mod wire;

pub use ack::AckFailure;
pub use bounds::{MAX_ACK_TIMEOUT_MS, MAX_EVENT_NAME_BYTES, MAX_ID_BYTES, MAX_SOCKETS_PER_NODE};
pub use broker::{memory::MemoryBus, outbox::OutboxLimits};
pub use channel::{all_nodes as all_nodes_channel, one_node as node_channel, room as room_channel};
pub use cluster::{Cluster, ServerEventHandler, TracePropagator};
pub use config::*;
pub use error::{Error, Result};
pub use history::{BadOffset, Offset, RestoreError};
pub use membership::{MAX_NODES, NodeInfo};
pub use metrics::{DropReason, Metrics};
pub use namespace::{InitRes, OFFSET_KEY, RedisAdapter, all_sockets};
/// The Prometheus crate [`Metrics::new`] registers into, so a user's registry has the same type.
pub use prometheus;
pub use reports::{
    AckEntry, AckReport, FetchReport, NamespaceHandle, RoomsReport, ServerEmitReport, SocketInfo,
};
