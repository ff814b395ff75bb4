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
        "rate_per_s": args.rate.rate_per_s,
        "duration_s": args.rate.duration_s,
        "payload_bytes": args.rate.payload_bytes,
        "polling_share": args.common.polling_share,
        "ramp": args.rate.ramp,
        "ramp_factor": args.rate.ramp_factor,
        "ramp_step_s": args.rate.ramp_step_s,
        "ramp_p99_ms": args.rate.ramp_p99_ms,
        "ramp_grace_ms": args.rate.ramp_grace_ms,
        "drain_ms": args.rate.drain_ms,
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
    })
    .await
}
