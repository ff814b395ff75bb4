//! `ioscale-adapter`: a Redis pub/sub cluster adapter for socketioxide, on `fred`.
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
//! | `{prefix}#{ns}##{room}` | the nodes with a socket in `room` | broadcasts to `room` |
//!
//! Life of a broadcast: `io.to("room").emit(..)` on node A publishes one msgpack message on the
//! room's channel, then delivers to A's own sockets; every node with a socket in the room
//! receives it on its dispatcher, in order, and delivers to its matching sockets. A node
//! subscribes a room's channel when its first socket joins the room: call
//! [`Cluster::rooms_joined`] after `socket.join(..)` (socketioxide does not tell the adapter)
//! and [`Cluster::rooms_left`] after `socket.leave(..)`; `socketsJoin` and `socketsLeave` need
//! nothing. Broadcasts to everyone go on the namespace channel.
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
#![warn(clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod ack;
mod broker;
mod channel;
mod cluster;
mod config;
mod error;
mod membership;
pub mod metrics;
mod namespace;
mod reports;
mod request;
pub mod wire;

pub use ack::AckFailure;
pub use broker::memory::MemoryBus;
pub use channel::{all_nodes as all_nodes_channel, one_node as node_channel, room as room_channel};
pub use cluster::{Cluster, ServerEventHandler, TracePropagator};
pub use config::*;
pub use error::{Error, Result};
pub use membership::NodeInfo;
pub use metrics::Metrics;
pub use namespace::{InitRes, RedisAdapter, all_sockets};
pub use reports::{
    AckEntry, AckReport, FetchReport, NamespaceHandle, RoomsReport, ServerEmitReport, SocketInfo,
};
