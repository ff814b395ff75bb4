//! `compare`: reduces a directory of reports (several runs of several implementations, as
//! `bench.sh` writes them) to one table of medians, with the ratios of the subject (ioscale)
//! to each peer and to the ceiling.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::{Context as _, Result, ensure};

use crate::config::CompareArgs;
use crate::report::{HeldReport, Report};

mod faults;
mod rooms;

pub use faults::FaultRow;
pub use rooms::RoomsRow;

/// Medians of runs: shared with the soak's verdict, so it lives with the other statistics.
pub use crate::stats::median;

/// Medians of one implementation's runs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Row {
    pub label: String,
    pub runs: usize,
    pub deliveries_per_s: f64,
    pub sends_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub lost: f64,
    pub rss_mb_per_node: f64,
    pub cpu_cores_per_node: f64,
    pub redis_cpu_cores: f64,
    /// Server CPU (every server process, Redis apart) per delivery over the sending window.
    pub server_cpu_us_per_delivery: f64,
    /// The generator's CPU per delivery, and the share of its threads it used.
    pub gen_cpu_us_per_delivery: f64,
    pub gen_cpu_util: f64,
    /// Runs whose figure the generator limited (reported, never passed off as the server's).
    pub gen_bound_runs: usize,
    /// Ramp runs (the held step) rather than fixed-rate runs (the whole run).
    pub ramp: bool,
    /// The cluster's figures, for `rooms` runs.
    pub rooms: Option<RoomsRow>,
}

fn is_redis(name: &str) -> bool {
    name.starts_with("redis")
}

/// Reports without a `ramp` parameter predate fixed-rate comparisons and were ramps.
fn is_ramp(r: &Report) -> bool {
    r.params["ramp"].as_bool().unwrap_or(true)
}

/// What a run is summed up by: a ramp by the highest step it held; a fixed-rate run (latency
/// at a given load, or a burst) by the whole run, whether or not it met the p99 bound.
fn summary(r: &Report) -> Option<HeldReport> {
    if is_ramp(r) {
        return r.held.clone();
    }
    r.deliveries.as_ref().map(|d| HeldReport {
        step: 0,
        rate_per_s: r.params["rate_per_s"].as_f64().unwrap_or(0.0),
        deliveries_per_s: d.per_s,
        latency_ms: d.latency_ms,
    })
}

fn mean(v: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = v.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    if n == 0 { 0.0 } else { sum / n as f64 }
}

/// One row per label, medians over that label's reports.
pub fn rows(reports: &[Report]) -> Vec<Row> {
    let mut by_label: BTreeMap<&str, Vec<&Report>> = BTreeMap::new();
    for r in reports {
        by_label.entry(r.label.as_str()).or_default().push(r);
    }
    by_label
        .into_iter()
        .map(|(label, rs)| {
            let col = |f: &dyn Fn(&Report) -> f64| median(rs.iter().map(|r| f(r)).collect());
            let held = |f: &dyn Fn(&HeldReport) -> f64| {
                col(&|r: &Report| summary(r).as_ref().map_or(0.0, f))
            };
            Row {
                label: label.to_owned(),
                runs: rs.len(),
                ramp: rs.iter().any(|r| is_ramp(r)),
                deliveries_per_s: held(&|h| h.deliveries_per_s),
                sends_per_s: held(&|h| h.rate_per_s),
                p50_ms: held(&|h| h.latency_ms.p50_ms),
                p99_ms: held(&|h| h.latency_ms.p99_ms),
                p999_ms: held(&|h| h.latency_ms.p999_ms),
                lost: col(&|r| r.deliveries.as_ref().map_or(0.0, |d| d.lost as f64)),
                rss_mb_per_node: col(&|r| {
                    mean(
                        r.processes
                            .iter()
                            .filter(|p| !is_redis(&p.name))
                            .map(|p| p.peak_rss_mb),
                    )
                }),
                cpu_cores_per_node: col(&|r| {
                    mean(
                        r.processes
                            .iter()
                            .filter(|p| !is_redis(&p.name))
                            .map(|p| p.cpu_cores_avg),
                    )
                }),
                redis_cpu_cores: col(&|r| {
                    mean(
                        r.processes
                            .iter()
                            .filter(|p| is_redis(&p.name))
                            .map(|p| p.cpu_cores_avg),
                    )
                }),
                server_cpu_us_per_delivery: col(&server_cpu_us_per_delivery),
                gen_cpu_us_per_delivery: col(&|r| {
                    r.generator.as_ref().map_or(0.0, |g| g.cpu_us_per_delivery)
                }),
                gen_cpu_util: col(&|r| r.generator.as_ref().map_or(0.0, |g| g.cpu_util)),
                gen_bound_runs: rs
                    .iter()
                    .filter(|r| r.generator.as_ref().is_some_and(|g| g.bound))
                    .count(),
                rooms: RoomsRow::of(&rs),
            }
        })
        .collect()
}

/// CPU seconds of the server processes (Redis apart) over the sending window, per delivery.
fn server_cpu_us_per_delivery(r: &Report) -> f64 {
    let received = r.deliveries.as_ref().map_or(0, |d| d.received);
    let cpu: f64 = r
        .processes
        .iter()
        .filter(|p| !is_redis(&p.name))
        .map(|p| p.cpu_seconds)
        // Not `sum()`: the sum of no f64 is -0.0, which the table would print as "-0.00".
        .fold(0.0, |a, b| a + b);
    if received == 0 {
        0.0
    } else {
        cpu * 1e6 / received as f64
    }
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}", a / b)
    } else {
        "n/a".to_owned()
    }
}

/// The markdown table: subject first, ceiling last; the last column is subject ÷ row
/// (held deliveries/s).
pub fn table(rows: &[Row], subject: &str, ceiling: &str) -> String {
    let mut ordered: Vec<&Row> = rows.iter().filter(|r| r.label == subject).collect();
    ordered.extend(
        rows.iter()
            .filter(|r| r.label != subject && r.label != ceiling),
    );
    ordered.extend(
        rows.iter()
            .filter(|r| r.label == ceiling && r.label != subject),
    );
    let subj = rows.iter().find(|r| r.label == subject);
    let mut s = String::new();
    // A table of `rooms` runs has the cluster's columns too, after the usual ones.
    let with_rooms = rows.iter().any(|r| r.rooms.is_some());
    let held = if rows.iter().any(|r| r.ramp) {
        " held"
    } else {
        ""
    };
    let _ = writeln!(
        s,
        "| implementation | runs | deliveries/s{held} | sends/s{held} | p50 ms | p99 ms | p999 ms | lost | RSS/node MB | CPU/node cores | Redis CPU cores | server CPU µs/delivery | generator CPU µs/delivery (threads used) | {subject} ÷ this |{}",
        if with_rooms { rooms::HEADER } else { "" }
    );
    let _ = writeln!(
        s,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|{}",
        if with_rooms { rooms::ALIGN } else { "" }
    );
    for r in ordered {
        // A figure the generator limited is the generator's, not the server's: say so.
        let label = if r.gen_bound_runs > 0 {
            format!(
                "{} (generator-bound in {}/{})",
                r.label, r.gen_bound_runs, r.runs
            )
        } else {
            r.label.clone()
        };
        let _ = writeln!(
            s,
            "| {} | {} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {:.0} | {:.1} | {:.2} | {:.2} | {:.2} | {:.2} ({:.0} %) | {} |{}",
            label,
            r.runs,
            r.deliveries_per_s,
            r.sends_per_s,
            r.p50_ms,
            r.p99_ms,
            r.p999_ms,
            r.lost,
            r.rss_mb_per_node,
            r.cpu_cores_per_node,
            r.redis_cpu_cores,
            r.server_cpu_us_per_delivery,
            r.gen_cpu_us_per_delivery,
            r.gen_cpu_util * 100.0,
            subj.map_or_else(
                || "n/a".to_owned(),
                |x| ratio(x.deliveries_per_s, r.deliveries_per_s)
            ),
            if with_rooms {
                rooms::cells(r.rooms.as_ref())
            } else {
                String::new()
            },
        );
    }
    s
}

/// Medians of one implementation's `connect` runs (the idle-connection memory scenario).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConnectRow {
    pub label: String,
    pub runs: usize,
    pub attempted: f64,
    pub connected: f64,
    pub connects_per_s: f64,
    pub handshake_p50_ms: f64,
    pub handshake_p99_ms: f64,
    /// Resident memory of the server process(es) before the first connection, per node.
    pub rss_mb_before: f64,
    /// ... and with every connection held, per node.
    pub rss_mb_held: f64,
    /// `(held - before) / connected`, per node, in KB.
    pub rss_kb_per_connection: f64,
}

/// One row per label of the `connect` reports; Redis processes are left out of the memory
/// columns (they hold no client connection).
pub fn connect_rows(reports: &[Report]) -> Vec<ConnectRow> {
    let mut by_label: BTreeMap<&str, Vec<&Report>> = BTreeMap::new();
    for r in reports.iter().filter(|r| r.scenario == "connect") {
        by_label.entry(r.label.as_str()).or_default().push(r);
    }
    by_label
        .into_iter()
        .map(|(label, rs)| {
            let col = |f: &dyn Fn(&Report) -> f64| median(rs.iter().map(|r| f(r)).collect());
            let servers = |r: &Report, f: &dyn Fn(&crate::stats::ProcReport) -> f64| {
                mean(r.processes.iter().filter(|p| !is_redis(&p.name)).map(f))
            };
            ConnectRow {
                label: label.to_owned(),
                runs: rs.len(),
                attempted: col(&|r| r.clients.attempted as f64),
                connected: col(&|r| r.clients.connected as f64),
                connects_per_s: col(&|r| r.connect.as_ref().map_or(0.0, |c| c.connects_per_s)),
                handshake_p50_ms: col(&|r| r.clients.handshake_ms.p50_ms),
                handshake_p99_ms: col(&|r| r.clients.handshake_ms.p99_ms),
                rss_mb_before: col(&|r| servers(r, &|p| p.rss_mb_start)),
                rss_mb_held: col(&|r| servers(r, &|p| p.rss_mb_end)),
                rss_kb_per_connection: col(&|r| {
                    // Per node: the connections spread evenly over the watched servers.
                    let n = r
                        .processes
                        .iter()
                        .filter(|p| !is_redis(&p.name))
                        .count()
                        .max(1) as f64;
                    let per_node = r.clients.connected as f64 / n;
                    if per_node > 0.0 {
                        servers(r, &|p| (p.rss_mb_end - p.rss_mb_start) * 1024.0) / per_node
                    } else {
                        0.0
                    }
                }),
            }
        })
        .collect()
}

/// The markdown table of the `connect` runs: subject first; the last column is this row's
/// memory per connection ÷ the subject's.
pub fn connect_table(rows: &[ConnectRow], subject: &str) -> String {
    let mut ordered: Vec<&ConnectRow> = rows.iter().filter(|r| r.label == subject).collect();
    ordered.extend(rows.iter().filter(|r| r.label != subject));
    let subj = rows.iter().find(|r| r.label == subject);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| implementation | runs | connected | connects/s | handshake p50 ms | p99 ms | RSS before MB | RSS held MB | KB per connection | this ÷ {subject} |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in ordered {
        let _ = writeln!(
            s,
            "| {} | {} | {:.0}/{:.0} | {:.0} | {:.2} | {:.2} | {:.1} | {:.1} | {:.2} | {} |",
            r.label,
            r.runs,
            r.connected,
            r.attempted,
            r.connects_per_s,
            r.handshake_p50_ms,
            r.handshake_p99_ms,
            r.rss_mb_before,
            r.rss_mb_held,
            r.rss_kb_per_connection,
            subj.map_or_else(
                || "n/a".to_owned(),
                |x| ratio(r.rss_kb_per_connection, x.rss_kb_per_connection)
            ),
        );
    }
    s
}

/// Runs `compare`.
///
/// # Errors
/// If the directory cannot be read or holds no report.
pub fn run(args: &CompareArgs) -> Result<()> {
    let mut reports = Vec::new();
    let entries =
        std::fs::read_dir(&args.dir).with_context(|| format!("reading {}", args.dir.display()))?;
    let mut paths: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    for p in paths {
        reports.push(Report::read(&p)?);
    }
    ensure!(
        !reports.is_empty(),
        "no *.json report in {}",
        args.dir.display()
    );
    // A directory holds one scenario (bench.sh writes one per invocation); the connection
    // storm is a memory benchmark and has a table of its own.
    let mut t = if reports.iter().all(|r| r.scenario == "connect") {
        connect_table(&connect_rows(&reports), &args.subject)
    } else {
        table(&rows(&reports), &args.subject, &args.ceiling)
    };
    let fault_rows = faults::rows(&reports);
    if !fault_rows.is_empty() {
        t.push_str("\nFaults (medians over runs; lost: acknowledged publishes a subscriber never received):\n\n");
        t.push_str(&faults::table(&fault_rows));
    }
    print!("{t}");
    if let Some(md) = &args.markdown {
        std::fs::write(md, &t).with_context(|| format!("writing {}", md.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{DeliveryReport, HeldReport};
    use crate::stats::{Percentiles, ProcReport};

    fn report(label: &str, dps: f64, p99: f64) -> Report {
        Report {
            label: label.to_owned(),
            held: Some(HeldReport {
                deliveries_per_s: dps,
                rate_per_s: dps / 300.0,
                latency_ms: Percentiles {
                    p99_ms: p99,
                    ..Percentiles::default()
                },
                step: 0,
            }),
            deliveries: Some(DeliveryReport::default()),
            processes: vec![
                ProcReport {
                    name: "node1".to_owned(),
                    peak_rss_mb: 10.0,
                    cpu_cores_avg: 0.5,
                    ..ProcReport::default()
                },
                ProcReport {
                    name: "redis".to_owned(),
                    cpu_cores_avg: 0.1,
                    ..ProcReport::default()
                },
            ],
            ..Report::default()
        }
    }

    fn connect_report(label: &str, connected: u64, before_mb: f64, held_mb: f64) -> Report {
        Report {
            scenario: "connect".to_owned(),
            label: label.to_owned(),
            clients: crate::report::ClientsReport {
                attempted: 20_000,
                connected,
                ..Default::default()
            },
            processes: vec![
                ProcReport {
                    name: "node1".to_owned(),
                    rss_mb_start: before_mb,
                    rss_mb_end: held_mb,
                    ..ProcReport::default()
                },
                ProcReport {
                    name: "redis".to_owned(),
                    rss_mb_start: 5.0,
                    rss_mb_end: 500.0,
                    ..ProcReport::default()
                },
            ],
            ..Report::default()
        }
    }

    #[test]
    fn connect_table_reports_memory_per_connection_without_redis() {
        let reports = vec![
            connect_report("ioscale", 20_000, 10.0, 10.0 + 20_000.0 * 4.0 / 1024.0),
            connect_report("ioscale", 20_000, 10.0, 10.0 + 20_000.0 * 5.0 / 1024.0),
            connect_report("ioscale", 20_000, 10.0, 10.0 + 20_000.0 * 6.0 / 1024.0),
            connect_report(
                "node-socketio",
                10_000,
                50.0,
                50.0 + 10_000.0 * 20.0 / 1024.0,
            ),
        ];
        let rows = connect_rows(&reports);
        let io = rows.iter().find(|r| r.label == "ioscale").unwrap();
        assert_eq!(io.runs, 3);
        assert!((io.rss_kb_per_connection - 5.0).abs() < 1e-6, "{io:?}");
        let node = rows.iter().find(|r| r.label == "node-socketio").unwrap();
        // Per connection actually held, not per attempt.
        assert!((node.rss_kb_per_connection - 20.0).abs() < 1e-6, "{node:?}");
        let t = connect_table(&rows, "ioscale");
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[2].starts_with("| ioscale |") && lines[2].ends_with("| 1.00 |"));
        assert!(lines[3].contains("| 10000/20000 |") && lines[3].ends_with("| 4.00 |"));
    }

    #[test]
    fn fixed_rate_runs_are_summed_up_by_the_whole_run_even_when_over_the_bound() {
        let mut r = report("ioscale", 0.0, 0.0);
        r.params = serde_json::json!({"ramp": false, "rate_per_s": 100.0});
        // Over the p99 bound: no held step, but the run's own figures are what was asked.
        r.held = None;
        r.deliveries = Some(DeliveryReport {
            per_s: 30_000.0,
            latency_ms: Percentiles {
                p99_ms: 60.0,
                ..Percentiles::default()
            },
            ..DeliveryReport::default()
        });
        let rows = rows(&[r]);
        assert!((rows[0].deliveries_per_s - 30_000.0).abs() < 1e-9);
        assert!((rows[0].sends_per_s - 100.0).abs() < 1e-9);
        assert!((rows[0].p99_ms - 60.0).abs() < 1e-9);
        assert!(!rows[0].ramp);
        let t = table(&rows, "ioscale", "raw-ws");
        assert!(
            t.starts_with("| implementation | runs | deliveries/s | sends/s |"),
            "{t}"
        );
    }

    #[test]
    fn medians() {
        assert!((median(vec![3.0, 1.0, 2.0]) - 2.0).abs() < 1e-9);
        assert!((median(vec![4.0, 1.0, 2.0, 3.0]) - 2.5).abs() < 1e-9);
        assert!(median(vec![]).abs() < 1e-9);
    }

    #[test]
    fn table_has_ratios_in_order() {
        let reports = vec![
            report("raw-ws", 400.0, 1.0),
            report("ioscale", 100.0, 5.0),
            report("ioscale", 300.0, 7.0),
            report("ioscale", 200.0, 6.0),
            report("node-socketio", 50.0, 9.0),
        ];
        let rows = rows(&reports);
        let io = rows.iter().find(|r| r.label == "ioscale").unwrap();
        assert_eq!(io.runs, 3);
        assert!((io.deliveries_per_s - 200.0).abs() < 1e-9);
        assert!((io.p99_ms - 6.0).abs() < 1e-9);
        assert!((io.rss_mb_per_node - 10.0).abs() < 1e-9);
        assert!((io.redis_cpu_cores - 0.1).abs() < 1e-9);
        let t = table(&rows, "ioscale", "raw-ws");
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[2].starts_with("| ioscale |"));
        assert!(lines[3].starts_with("| node-socketio |") && lines[3].ends_with("| 4.00 |"));
        assert!(lines[4].starts_with("| raw-ws |") && lines[4].ends_with("| 0.50 |"));
    }

    #[test]
    fn generator_bound_runs_are_marked_and_costs_per_delivery_shown() {
        let mut a = report("raw-ws", 1000.0, 1.0);
        a.deliveries = Some(DeliveryReport {
            received: 1_000_000,
            ..DeliveryReport::default()
        });
        a.processes[0].cpu_seconds = 2.0;
        a.generator = Some(crate::report::GeneratorReport {
            threads: 2,
            cpu_s: 1.0,
            wall_s: 1.0,
            cpu_util: 0.9,
            cpu_us_per_delivery: 1.0,
            bound: true,
        });
        let b = report("ioscale", 500.0, 2.0);
        let rows = rows(&[a, b]);
        let raw = rows.iter().find(|r| r.label == "raw-ws").unwrap();
        assert!(
            (raw.server_cpu_us_per_delivery - 2.0).abs() < 1e-9,
            "redis excluded"
        );
        assert_eq!(raw.gen_bound_runs, 1);
        let t = table(&rows, "ioscale", "raw-ws");
        assert!(t.contains("| raw-ws (generator-bound in 1/1) |"), "{t}");
        assert!(t.contains("| 2.00 | 1.00 (90 %) |"), "{t}");
    }
}
