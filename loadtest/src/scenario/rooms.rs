//! `rooms`: many small rooms on `/pubsub`, their members spread at random over the nodes
//! (seeded), publishers sending to uniformly random rooms at an open-loop total rate. Besides
//! latency and exact loss it measures what the cluster spends: CPU of every watched process
//! per million deliveries, the adapter messages the nodes received against the fewest the
//! placement needs (a node should only receive broadcasts for rooms it has a member of), and
//! Redis's output bytes.

use anyhow::{Result, ensure};

use super::load::{self, Flavor, Layout, Plan, Probes};
use crate::config::RoomsArgs;
use crate::report::Report;

/// Runs the rooms scenario.
///
/// # Errors
/// Bad arguments, unreachable probes; see [`load::run`].
pub async fn run(args: RoomsArgs) -> Result<Report> {
    ensure!(args.rooms > 0, "--rooms must be positive");
    ensure!(args.room_size > 0, "--room-size must be positive");
    let params = serde_json::json!({
        "rooms": args.rooms,
        "room_size": args.room_size,
        "subscribers": args.rooms * args.room_size,
        "publishers": args.publishers,
        "seed": args.seed,
        "node_metrics_urls": args.node_metrics_urls,
        "redis_urls": args.redis_urls,
    });
    load::run(Plan {
        scenario: "rooms",
        flavor: Flavor::PubSub,
        layout: Layout::Scattered { seed: args.seed },
        subscribers: args.rooms * args.room_size,
        room_size: args.room_size,
        publishers: args.publishers,
        probes: Some(Probes {
            node_metrics_urls: args.node_metrics_urls,
            redis_urls: args.redis_urls,
        }),
        common: args.common,
        rate: args.rate,
        params,
        faults: crate::config::FaultArgs::default(),
    })
    .await
}
