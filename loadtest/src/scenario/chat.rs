//! `chat`: the chat demo at scale. Every client is on `/`; the first `--senders` of them send
//! `add-message {name, message}` at an open-loop total rate, and every client must receive
//! each `message-added` (the stamp travels inside the message text).

use anyhow::Result;

use super::load::{self, Flavor, Layout, Plan};
use crate::config::ChatArgs;
use crate::report::Report;

/// Runs the chat scenario.
///
/// # Errors
/// See [`load::run`].
pub async fn run(args: ChatArgs) -> Result<Report> {
    let params = serde_json::json!({
        "clients": args.clients,
        "senders": args.senders,
    });
    load::run(Plan {
        scenario: "chat",
        flavor: Flavor::Chat,
        subscribers: args.clients,
        room_size: args.clients.max(1),
        publishers: args.senders,
        layout: Layout::Striped,
        probes: None,
        common: args.common,
        rate: args.rate,
        params,
        faults: crate::config::FaultArgs::default(),
    })
    .await
}
