//! The report's `faults` section: the faults injected during a run, how the clients came
//! back, and what each subscriber lost, got twice or out of order.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::stats::Percentiles;

/// What the faults of a run cost the clients.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FaultReport {
    /// Each fault as it was injected.
    pub events: Vec<FaultEvent>,
    /// The clients' reconnections.
    pub reconnects: ReconnectReport,
    /// Per subscriber: of the publishes the servers acknowledged, how many it never received,
    /// received twice, or received after a later one of the same publisher.
    pub subscribers: SubscriberLosses,
    /// The session recovery the clients used (`off`, `ioscale`, `socketio`).
    pub recovery: String,
}

/// One injected fault.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FaultEvent {
    /// `kill-node`, `restart-redis` or `drop-clients`.
    pub kind: String,
    /// When it was due, seconds from the first send.
    pub at_s: f64,
    /// How long its action took (the hook command's run).
    pub took_ms: f64,
    pub ok: bool,
    pub detail: String,
    /// Subscribers it cut off: those whose connection was lost after it (and before the next
    /// fault); every subscriber for a Redis restart.
    pub affected: u64,
    /// Affected subscribers that received, from every publisher, a message published after
    /// the fault.
    pub resumed: u64,
    /// For the affected subscribers, from the fault until a message published at or after it
    /// had come from every publisher.
    pub resume_ms: Percentiles,
}

/// How the clients that lost their connection came back.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReconnectReport {
    /// Connections lost during the run (faults and anything else).
    pub lost: u64,
    /// Reconnections that completed.
    pub reconnected: u64,
    /// Of those, sessions the server restored (rooms back, missed messages replayed).
    pub recovered: u64,
    /// Of those, fresh sessions (the client joined its room again).
    pub fresh: u64,
    /// Connection attempts that failed (a dead node, a refused handshake).
    pub failed_attempts: u64,
    /// Clients still disconnected when the run ended.
    pub never_back: u64,
}

/// Loss, duplicates and reordering per subscriber.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SubscriberLosses {
    pub subscribers: u64,
    /// Subscribers that missed at least one acknowledged publish.
    pub with_loss: u64,
    pub lost_total: u64,
    pub lost_max: u64,
    /// Subscribers that received some message twice.
    pub with_duplicates: u64,
    pub duplicated_total: u64,
    /// Subscribers that received some message after a later one of the same publisher.
    pub with_reordering: u64,
    pub reordered_total: u64,
}

impl FaultReport {
    /// The human summary's lines.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        for e in &self.events {
            let _ = writeln!(
                s,
                "fault      {} at {:.1} s{}: {} subscribers cut off, {} resumed; resume p50 {:.0} ms, max {:.0} ms",
                e.kind,
                e.at_s,
                if e.ok { "" } else { " (FAILED)" },
                e.affected,
                e.resumed,
                e.resume_ms.p50_ms,
                e.resume_ms.max_ms
            );
        }
        let (r, l) = (&self.reconnects, &self.subscribers);
        let _ = writeln!(
            s,
            "reconnect  {} connections lost, {} back ({} recovered, {} fresh, recovery {}), {} failed attempts, {} never back",
            r.lost,
            r.reconnected,
            r.recovered,
            r.fresh,
            self.recovery,
            r.failed_attempts,
            r.never_back
        );
        let _ = writeln!(
            s,
            "per sub    of {}: {} lost something ({} in all, at most {}), {} got duplicates ({}), {} out of order ({})",
            l.subscribers,
            l.with_loss,
            l.lost_total,
            l.lost_max,
            l.with_duplicates,
            l.duplicated_total,
            l.with_reordering,
            l.reordered_total
        );
        s
    }
}
