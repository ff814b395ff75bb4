//! `compare`: reduces a directory of reports (several runs of several implementations, as
//! `bench.sh` writes them) to one table of medians, with the ratios of the subject (ioscale)
//! to each peer and to the ceiling.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::{Context as _, Result, ensure};

use crate::config::CompareArgs;
use crate::report::Report;

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
}

/// Median (mean of the middle two for an even count); 0 when empty.
pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        f64::midpoint(v[n / 2 - 1], v[n / 2])
    }
}

fn is_redis(name: &str) -> bool {
    name.starts_with("redis")
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
            let held = |f: &dyn Fn(&crate::report::HeldReport) -> f64| {
                col(&|r: &Report| r.held.as_ref().map_or(0.0, f))
            };
            Row {
                label: label.to_owned(),
                runs: rs.len(),
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
            }
        })
        .collect()
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
    let _ = writeln!(
        s,
        "| implementation | runs | deliveries/s held | sends/s held | p50 ms | p99 ms | p999 ms | lost | RSS/node MB | CPU/node cores | Redis CPU cores | {subject} ÷ this |"
    );
    let _ = writeln!(
        s,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in ordered {
        let _ = writeln!(
            s,
            "| {} | {} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {:.0} | {:.1} | {:.2} | {:.2} | {} |",
            r.label,
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
            subj.map_or_else(
                || "n/a".to_owned(),
                |x| ratio(x.deliveries_per_s, r.deliveries_per_s)
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
    let t = table(&rows(&reports), &args.subject, &args.ceiling);
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
}
