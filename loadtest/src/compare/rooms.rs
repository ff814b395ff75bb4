//! The `compare` table's columns for `rooms` runs: what the whole cluster spent per delivery
//! and how much adapter and Redis traffic it took, against the ideal of the placement. A
//! figure an implementation cannot give (no node metrics: not ioscale) shows as `–`.

use std::fmt::Write as _;

use super::median;
use crate::report::{ClusterReport, Report};

/// The header cells after the usual ones (each ends its cell with `|`).
pub const HEADER: &str = " cluster CPU-s/M deliveries | Redis CPU-s/M deliveries | adapter msgs in/publish | ideal/publish | measured ÷ ideal | untargeted/publish | room channels | Redis MB out | Redis bytes/delivery |";
/// Their alignment row.
pub const ALIGN: &str = "---:|---:|---:|---:|---:|---:|---:|---:|---:|";

/// Medians of one implementation's `rooms` figures; `None` where no run had the figure.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoomsRow {
    pub cpu_s_per_million_deliveries: Option<f64>,
    pub redis_cpu_s_per_million_deliveries: Option<f64>,
    pub adapter_messages_in_per_publish: Option<f64>,
    pub ideal_adapter_messages_in_per_publish: Option<f64>,
    pub adapter_messages_in_vs_ideal: Option<f64>,
    pub untargeted_per_publish: Option<f64>,
    pub room_channels: Option<f64>,
    pub redis_net_output_mb: Option<f64>,
    pub redis_net_output_bytes_per_delivery: Option<f64>,
}

/// Median of the runs that have the figure.
fn median_of(v: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let v: Vec<f64> = v.flatten().collect();
    (!v.is_empty()).then(|| median(v))
}

impl RoomsRow {
    /// The row of one implementation's reports; `None` when none of them is a `rooms` run.
    pub fn of(reports: &[&Report]) -> Option<Self> {
        let cs: Vec<&ClusterReport> = reports
            .iter()
            .filter(|r| r.scenario == "rooms")
            .filter_map(|r| r.cluster.as_ref())
            .collect();
        if cs.is_empty() {
            return None;
        }
        let col = |f: &dyn Fn(&ClusterReport) -> Option<f64>| median_of(cs.iter().map(|c| f(c)));
        let per_publish = |c: &ClusterReport, v: Option<u64>| {
            v.filter(|_| c.publishes > 0)
                .map(|v| v as f64 / c.publishes as f64)
        };
        Some(Self {
            cpu_s_per_million_deliveries: col(&|c| c.cpu_s_per_million_deliveries),
            redis_cpu_s_per_million_deliveries: col(&|c| c.redis_cpu_s_per_million_deliveries),
            adapter_messages_in_per_publish: col(&|c| c.adapter_messages_in_per_publish),
            ideal_adapter_messages_in_per_publish: col(&|c| {
                c.ideal_adapter_messages_in_per_publish
            }),
            adapter_messages_in_vs_ideal: col(&|c| c.adapter_messages_in_vs_ideal),
            untargeted_per_publish: col(&|c| per_publish(c, c.broadcasts_untargeted)),
            room_channels: col(&|c| c.room_channels.map(|v| v as f64)),
            redis_net_output_mb: col(&|c| c.redis_net_output_bytes.map(|b| b as f64 / 1e6)),
            redis_net_output_bytes_per_delivery: col(&|c| c.redis_net_output_bytes_per_delivery),
        })
    }
}

/// The cells of a row (`–` for a figure it does not have); all `–` for a row without them.
pub fn cells(r: Option<&RoomsRow>) -> String {
    let d = RoomsRow::default();
    let r = r.unwrap_or(&d);
    let mut s = String::new();
    let mut cell = |v: Option<f64>, digits: usize| {
        let _ = match v {
            Some(v) => write!(s, " {v:.digits$} |"),
            None => write!(s, " – |"),
        };
    };
    cell(r.cpu_s_per_million_deliveries, 2);
    cell(r.redis_cpu_s_per_million_deliveries, 2);
    cell(r.adapter_messages_in_per_publish, 2);
    cell(r.ideal_adapter_messages_in_per_publish, 2);
    cell(r.adapter_messages_in_vs_ideal, 2);
    cell(r.untargeted_per_publish, 2);
    cell(r.room_channels, 0);
    cell(r.redis_net_output_mb, 1);
    cell(r.redis_net_output_bytes_per_delivery, 0);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::{rows, table};

    fn rooms_report(label: &str, cluster: ClusterReport) -> Report {
        Report {
            scenario: "rooms".to_owned(),
            label: label.to_owned(),
            params: serde_json::json!({"ramp": false, "rate_per_s": 100.0}),
            cluster: Some(cluster),
            ..Report::default()
        }
    }

    fn ioscale(vs_ideal: f64) -> ClusterReport {
        ClusterReport {
            publishes: 1000,
            deliveries: 3000,
            cpu_s_per_million_deliveries: Some(2.0),
            redis_cpu_s_per_million_deliveries: Some(0.5),
            adapter_messages_in_per_publish: Some(1.4 * vs_ideal),
            ideal_adapter_messages_in_per_publish: Some(1.4),
            adapter_messages_in_vs_ideal: Some(vs_ideal),
            broadcasts_untargeted: Some(100),
            room_channels: Some(4000),
            redis_net_output_bytes: Some(2_500_000),
            redis_net_output_bytes_per_delivery: Some(833.3),
            ..ClusterReport::default()
        }
    }

    #[test]
    fn rooms_runs_get_the_cluster_columns_with_dashes_for_what_is_missing() {
        let peer = ClusterReport {
            publishes: 1000,
            cpu_s_per_million_deliveries: Some(5.0),
            ideal_adapter_messages_in_per_publish: Some(1.4),
            ..ClusterReport::default()
        };
        let reports = vec![
            rooms_report("ioscale", ioscale(1.0)),
            rooms_report("ioscale", ioscale(1.2)),
            rooms_report("ioscale", ioscale(1.1)),
            rooms_report("node-socketio", peer),
        ];
        let rows = rows(&reports);
        let io = rows.iter().find(|r| r.label == "ioscale").unwrap();
        let c = io.rooms.as_ref().unwrap();
        assert_eq!(c.adapter_messages_in_vs_ideal, Some(1.1));
        assert_eq!(c.untargeted_per_publish, Some(0.1));
        assert_eq!(c.redis_net_output_mb, Some(2.5));
        let t = table(&rows, "ioscale", "raw-ws");
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].ends_with("| Redis bytes/delivery |"), "{t}");
        assert_eq!(
            lines[0].matches('|').count(),
            lines[1].matches('|').count(),
            "{t}"
        );
        assert!(
            lines[2].ends_with("| 2.00 | 0.50 | 1.54 | 1.40 | 1.10 | 0.10 | 4000 | 2.5 | 833 |"),
            "{t}"
        );
        assert!(
            lines[3].ends_with("| 5.00 | – | – | 1.40 | – | – | – | – | – |"),
            "{t}"
        );
    }

    #[test]
    fn other_scenarios_have_no_cluster_columns() {
        let mut r = rooms_report("ioscale", ioscale(1.0));
        r.scenario = "fanout".to_owned();
        let rows = rows(&[r]);
        assert_eq!(rows[0].rooms, None);
        assert!(!table(&rows, "ioscale", "raw-ws").contains("ideal"));
    }
}
