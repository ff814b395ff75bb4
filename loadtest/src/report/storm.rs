//! The report's `storm` section (`connect --fault-at-s`): how the clients a fault cut off came
//! back.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// The reconnect storm's results. A share's time is null when fewer clients than that share
/// came back within the window.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StormReport {
    /// Seconds into the hold the fault ran.
    pub fault_at_s: f64,
    pub fault_cmd: String,
    /// Connections lost after the fault.
    pub dropped: u64,
    pub reconnected: u64,
    pub never_back: u64,
    /// From the fault until that share of the dropped clients was connected again (ms).
    pub back_50_ms: Option<f64>,
    pub back_99_ms: Option<f64>,
    pub back_100_ms: Option<f64>,
    /// How long that share of clients was each without a connection, from its own drop (a
    /// draining node closes its connections over its drain, on purpose) (ms).
    pub gone_50_ms: Option<f64>,
    pub gone_99_ms: Option<f64>,
    pub gone_100_ms: Option<f64>,
    /// From the fault until that share of the dropped clients had its session restored (rooms
    /// and missed broadcasts back), as the server said; null without session recovery (ms).
    #[serde(default)]
    pub restored_50_ms: Option<f64>,
    #[serde(default)]
    pub restored_99_ms: Option<f64>,
    #[serde(default)]
    pub restored_100_ms: Option<f64>,
    /// The last drop, from the fault (ms).
    pub last_drop_ms: Option<f64>,
    /// Reconnection attempts, and the failed ones by cause (`http-429`: a per-address budget,
    /// `http-503`: a draining node, `refused`: nothing listening, `timeout`, ...).
    pub attempts: u64,
    pub failed_attempts: BTreeMap<String, u64>,
    /// Reconnections whose session the server restored (`--recovery`), and those that began a
    /// fresh one (every one without `--recovery`).
    #[serde(default)]
    pub recovered: u64,
    #[serde(default)]
    pub fresh: u64,
}

impl StormReport {
    /// The summary lines.
    pub fn summary(&self) -> String {
        let ms = |v: Option<f64>| v.map_or_else(|| "never".to_owned(), |v| format!("{v:.0} ms"));
        let mut s = String::new();
        let _ = writeln!(
            s,
            "storm      `{}` at {:.1} s: {} dropped (the last {} after it), {} back, {} never",
            self.fault_cmd,
            self.fault_at_s,
            self.dropped,
            ms(self.last_drop_ms),
            self.reconnected,
            self.never_back
        );
        let _ = writeln!(
            s,
            "           back from the fault: 50 % {}, 99 % {}, 100 % {}",
            ms(self.back_50_ms),
            ms(self.back_99_ms),
            ms(self.back_100_ms)
        );
        let _ = writeln!(
            s,
            "           each one's outage: 50 % {}, 99 % {}, 100 % {}",
            ms(self.gone_50_ms),
            ms(self.gone_99_ms),
            ms(self.gone_100_ms)
        );
        let failed: Vec<String> = self
            .failed_attempts
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let _ = writeln!(
            s,
            "           {} attempts, failed: {}",
            self.attempts,
            if failed.is_empty() {
                "none".to_owned()
            } else {
                failed.join(", ")
            }
        );
        let _ = writeln!(
            s,
            "           sessions: {} recovered, {} fresh; restored from the fault: 50 % {}, 99 % {}, 100 % {}",
            self.recovered,
            self.fresh,
            ms(self.restored_50_ms),
            ms(self.restored_99_ms),
            ms(self.restored_100_ms)
        );
        s
    }
}
