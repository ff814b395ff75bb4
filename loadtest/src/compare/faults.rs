//! The `compare` table of runs with faults (`bench.sh --kill-node-at` …): per implementation,
//! the medians over its runs of what the subscribers lost, got twice or out of order, and how
//! long until messages reached the subscribers the fault cut off.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::median;
use crate::report::{FaultReport, Report};

/// Medians of one implementation's fault runs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultRow {
    pub label: String,
    pub runs: usize,
    pub recovery: String,
    /// The faults of the first run (`kill-node@10s`, …).
    pub faults: String,
    pub affected: f64,
    /// Of those, the ones that had messages published after the fault from every publisher.
    pub resumed: f64,
    pub lost: f64,
    pub with_loss: f64,
    pub lost_max: f64,
    pub duplicated: f64,
    pub reordered: f64,
    pub recovered: f64,
    pub reconnected: f64,
    /// The median over runs of the slowest affected subscriber's resume (all faults).
    pub resume_p50_ms: f64,
    pub resume_max_ms: f64,
    pub never_back: f64,
    pub publishes_unacked: f64,
    pub publishes_orphaned: f64,
    pub generator_cpu_util: f64,
}

impl FaultRow {
    fn of(label: &str, runs: &[(&Report, &FaultReport)]) -> Self {
        let m = |f: &dyn Fn(&Report, &FaultReport) -> f64| {
            median(runs.iter().map(|(r, fr)| f(r, fr)).collect())
        };
        let resume = |pick: fn(&crate::stats::Percentiles) -> f64| {
            move |_: &Report, f: &FaultReport| {
                f.events
                    .iter()
                    .map(|e| pick(&e.resume_ms))
                    .fold(0.0, f64::max)
            }
        };
        let first = runs.first().map(|(_, f)| *f);
        Self {
            label: label.to_owned(),
            runs: runs.len(),
            recovery: first.map(|f| f.recovery.clone()).unwrap_or_default(),
            faults: first.map_or_else(String::new, |f| {
                f.events
                    .iter()
                    .map(|e| format!("{}@{}s", e.kind, e.at_s))
                    .collect::<Vec<_>>()
                    .join(" ")
            }),
            affected: m(&|_, f| f.events.iter().map(|e| e.affected as f64).sum()),
            resumed: m(&|_, f| f.events.iter().map(|e| e.resumed as f64).sum()),
            lost: m(&|_, f| f.subscribers.lost_total as f64),
            with_loss: m(&|_, f| f.subscribers.with_loss as f64),
            lost_max: m(&|_, f| f.subscribers.lost_max as f64),
            duplicated: m(&|_, f| f.subscribers.duplicated_total as f64),
            reordered: m(&|_, f| f.subscribers.reordered_total as f64),
            recovered: m(&|_, f| f.reconnects.recovered as f64),
            reconnected: m(&|_, f| f.reconnects.reconnected as f64),
            resume_p50_ms: m(&resume(|p| p.p50_ms)),
            resume_max_ms: m(&resume(|p| p.max_ms)),
            never_back: m(&|_, f| f.reconnects.never_back as f64),
            publishes_unacked: m(&|r, _| r.publishes.as_ref().map_or(0.0, |p| p.unacked as f64)),
            publishes_orphaned: m(&|r, _| r.publishes.as_ref().map_or(0.0, |p| p.orphaned as f64)),
            generator_cpu_util: m(&|r, _| r.generator.as_ref().map_or(0.0, |g| g.cpu_util)),
        }
    }
}

/// One row per implementation with fault runs, in label order.
pub fn rows(reports: &[Report]) -> Vec<FaultRow> {
    let mut by: BTreeMap<&str, Vec<(&Report, &FaultReport)>> = BTreeMap::new();
    for r in reports {
        if let Some(f) = &r.faults {
            by.entry(r.label.as_str()).or_default().push((r, f));
        }
    }
    by.iter()
        .map(|(label, runs)| FaultRow::of(label, runs))
        .collect()
}

/// The markdown table of `rows`.
pub fn table(rows: &[FaultRow]) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "| implementation | recovery | runs | faults | subscribers cut off (resumed) | lost | subscribers with loss | most lost by one | duplicated | reordered | reconnected (recovered) | resume p50 ms | resume max ms | never back | publishes never acked | publishes lost with their connection | generator CPU |"
    );
    let _ = writeln!(
        t,
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in rows {
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {:.0} ({:.0}) | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} ({:.0}) | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} % |",
            r.label,
            r.recovery,
            r.runs,
            r.faults,
            r.affected,
            r.resumed,
            r.lost,
            r.with_loss,
            r.lost_max,
            r.duplicated,
            r.reordered,
            r.reconnected,
            r.recovered,
            r.resume_p50_ms,
            r.resume_max_ms,
            r.never_back,
            r.publishes_unacked,
            r.publishes_orphaned,
            r.generator_cpu_util * 100.0,
        );
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{FaultEvent, GeneratorReport, SubscriberLosses};
    use crate::stats::Percentiles;

    fn run(label: &str, lost: u64, resume_max: f64) -> Report {
        Report {
            label: label.to_owned(),
            generator: Some(GeneratorReport {
                cpu_util: 0.25,
                ..GeneratorReport::default()
            }),
            faults: Some(FaultReport {
                recovery: "ioscale".to_owned(),
                events: vec![FaultEvent {
                    kind: "kill-node".to_owned(),
                    at_s: 10.0,
                    affected: 100,
                    resume_ms: Percentiles {
                        p50_ms: resume_max / 2.0,
                        max_ms: resume_max,
                        ..Percentiles::default()
                    },
                    ..FaultEvent::default()
                }],
                subscribers: SubscriberLosses {
                    lost_total: lost,
                    ..SubscriberLosses::default()
                },
                ..FaultReport::default()
            }),
            ..Report::default()
        }
    }

    #[test]
    fn fault_rows_are_medians_per_implementation() {
        let reports = [
            run("b", 10, 3000.0),
            run("a", 0, 1000.0),
            run("a", 5, 1500.0),
            run("a", 0, 1200.0),
            Report::default(),
        ];
        let rows = rows(&reports);
        assert_eq!(rows.len(), 2, "reports without faults have no row");
        assert_eq!((rows[0].label.as_str(), rows[0].runs), ("a", 3));
        assert_eq!((rows[0].lost, rows[0].resume_max_ms), (0.0, 1200.0));
        assert_eq!(rows[0].faults, "kill-node@10s");
        let t = table(&rows);
        assert!(
            t.contains("| a | ioscale | 3 | kill-node@10s | 100 (0) | 0 |"),
            "{t}"
        );
        assert!(t.contains("| 25 % |"), "{t}");
    }
}
