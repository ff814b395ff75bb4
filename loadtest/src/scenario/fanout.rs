//! `fanout`: N subscribers in rooms of S on `/pubsub` (spread over the targets so every room
//! spans every node), P publishers sending `publish {room, data}` at an open-loop total rate;
//! measures publish → receive latency, deliveries/s, and lost / duplicated deliveries exactly.

use anyhow::Result;

use super::load::{self, Flavor, Layout, Plan};
use crate::config::FanoutArgs;
use crate::report::Report;

/// Runs the fan-out scenario.
///
/// # Errors
/// See [`load::run`].
pub async fn run(args: FanoutArgs) -> Result<Report> {
    let params = serde_json::json!({
        "subscribers": args.subscribers,
        "room_size": args.room_size,
        "rooms": args.subscribers.div_ceil(args.room_size.max(1)),
        "publishers": args.publishers,
        "faults": args.faults,
        "recovery": args.common.recovery,
    });
    load::run(Plan {
        scenario: "fanout",
        flavor: Flavor::PubSub,
        subscribers: args.subscribers,
        room_size: args.room_size,
        publishers: args.publishers,
        layout: Layout::Striped,
        probes: None,
        common: args.common,
        rate: args.rate,
        params,
        faults: args.faults,
    })
    .await
}
