//! `rpc`: emit-with-ack round trips on `/pubsub` at an open-loop total rate over `--clients`:
//! `join` of a private room (answered by the node the client is on) or `publish` to a room no
//! one is in (answered once handed to the cluster). The ack is the delivery; a missing ack is
//! lost.

use anyhow::Result;

use super::load::{self, Flavor, Layout, Plan};
use crate::config::{RpcArgs, RpcEvent};
use crate::report::Report;

/// Runs the rpc scenario.
///
/// # Errors
/// See [`load::run`].
pub async fn run(args: RpcArgs) -> Result<Report> {
    let params = serde_json::json!({
        "clients": args.clients,
        "event": args.event,
    });
    load::run(Plan {
        scenario: "rpc",
        flavor: Flavor::Rpc {
            publish: args.event == RpcEvent::Publish,
        },
        subscribers: 0,
        room_size: 1,
        publishers: args.clients,
        layout: Layout::Striped,
        probes: None,
        common: args.common,
        rate: args.rate,
        params,
        faults: crate::config::FaultArgs::default(),
    })
    .await
}
