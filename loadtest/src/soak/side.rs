//! The side workload's report (`tests/js/soak-side.mjs` on the official socket.io-client:
//! clients that come and go, and Backbone.sync CRUD), as the soak reads it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Clients connecting to `/pubsub`, joining and leaving a room, and disconnecting.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Churn {
    pub sessions: u64,
    pub connected: u64,
    /// Failed connects by the client's error message.
    pub connect_errors: BTreeMap<String, u64>,
    pub joins_ok: u64,
    pub leaves_ok: u64,
    /// Acks with `ok: false`, by code.
    pub refused: BTreeMap<String, u64>,
    /// Requests left unanswered because their connection was lost (a node killed).
    pub cut: u64,
    /// Requests left unanswered on a connection that stayed up.
    pub unanswered: u64,
}

/// CRUD through Backbone.sync on `/`: create, read, update, read, delete per record.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Crud {
    pub ops_ok: u64,
    pub by_op: BTreeMap<String, u64>,
    /// Answers that contradict the last acknowledged write.
    pub wrong: u64,
    pub first_wrong: Option<String>,
    pub refused: BTreeMap<String, u64>,
    pub cut: u64,
    pub unanswered: u64,
}

/// The whole side report.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SideReport {
    pub churn: Churn,
    pub crud: Crud,
    pub duration_s: f64,
}

impl SideReport {
    /// What the side workload shows wrong: a wrong answer, a request unanswered on a live
    /// connection, or a workload that did nothing.
    pub fn failures(&self) -> Vec<String> {
        let mut f = Vec::new();
        if self.churn.connected == 0 {
            f.push("churn: no client connected".to_owned());
        }
        if self.crud.ops_ok == 0 {
            f.push("crud: no operation succeeded".to_owned());
        }
        if self.crud.wrong > 0 {
            f.push(format!(
                "crud: {} wrong answers, first: {}",
                self.crud.wrong,
                self.crud.first_wrong.as_deref().unwrap_or("?")
            ));
        }
        for (what, n) in [
            ("churn", self.churn.unanswered),
            ("crud", self.crud.unanswered),
        ] {
            if n > 0 {
                f.push(format!(
                    "{what}: {n} requests unanswered on a connection that stayed up"
                ));
            }
        }
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_report_reads_and_is_judged() {
        let text = r#"{"churn":{"sessions":10,"connected":9,"connect_errors":{"timeout":1},
            "joins_ok":9,"leaves_ok":8,"refused":{},"cut":1,"unanswered":0},
            "crud":{"ops_ok":50,"by_op":{"create":10},"wrong":0,"refused":{},"cut":2,
            "unanswered":0,"first_wrong":null},"duration_s":60.1}"#;
        let mut r: SideReport = serde_json::from_str(text).unwrap();
        assert!(r.failures().is_empty(), "{:?}", r.failures());
        r.crud.wrong = 1;
        r.crud.first_wrong = Some("read gave n=3".into());
        r.churn.unanswered = 2;
        let f = r.failures();
        assert_eq!(f.len(), 2, "{f:?}");
        assert!(f[0].contains("read gave n=3") && f[1].starts_with("churn: 2"));
    }
}
