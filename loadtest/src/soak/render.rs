//! A soak's report as people read it: a markdown page (the workloads' outcome, the faults, a
//! table per node over time, the verdict) and an SVG plot of every node's memory, descriptors,
//! tasks and sockets over the run, with the faults marked.

use std::fmt::Write as _;

use super::side::SideReport;
use super::verdict::{Events, Figures, Verdict};
use super::watch::Sample;
use crate::report::Report;
use crate::report::svg::{Panel, Series, render};

/// Rows of the over-time table: one per this many seconds.
const ROW_EVERY_S: f64 = 60.0;

fn fig(f: Option<&Figures>) -> String {
    f.map_or_else(
        || "–".to_owned(),
        |f| {
            format!(
                "{:.1} MB ({}), {:.0} fds ({:.0} beyond connections), {:.0} tasks, {:.0} sockets",
                f.rss_mb,
                if f.heap_mb > 0.0 {
                    format!("{:.1} MB allocated", f.heap_mb)
                } else {
                    "allocated: not told".to_owned()
                },
                f.fds,
                f.fds_beyond_connections,
                f.tasks,
                f.sockets
            )
        },
    )
}

fn num(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The markdown page.
pub fn markdown(
    v: &Verdict,
    samples: &[Sample],
    events: &Events,
    fanout: &Report,
    side: Option<&SideReport>,
) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Soak: {}\n\n{:.0} s of load, judged from {:.0} s (warm-up before).\n",
        if v.passed { "passed" } else { "FAILED" },
        v.load_s,
        v.judged_from_s
    );
    for f in &v.failures {
        let _ = writeln!(s, "- **{f}**");
    }
    fanout_section(&mut s, fanout);
    if let Some(side) = side {
        side_section(&mut s, side);
    }
    nodes_section(&mut s, v);
    s.push_str(&over_time(samples, events));
    s.push_str("\n## Events\n\n");
    let t0 = samples.first().map_or(0.0, |x| x.unix_s);
    for (t, what) in events {
        let _ = writeln!(s, "- {:.1} s: {what}", t - t0);
    }
    s
}

/// The fan-out's outcome and its faults.
fn fanout_section(s: &mut String, fanout: &Report) {
    s.push_str("\n## Fan-out (ioscale-loadtest, every subscriber recovering)\n\n");
    let param = |k: &str| fanout.params.get(k).and_then(serde_json::Value::as_f64);
    if let (Some(rate), Some(subs), Some(room)) = (
        param("rate_per_s"),
        param("subscribers"),
        param("room_size"),
    ) {
        let _ = writeln!(
            s,
            "{rate:.0} publishes/s to {subs:.0} subscribers in rooms of {room:.0} ({} \
             deliveries/s).",
            num((rate * room) as u64)
        );
    }
    if let (Some(d), Some(p)) = (&fanout.deliveries, &fanout.publishes) {
        let _ = writeln!(
            s,
            "{} publishes ({} acknowledged), {} deliveries expected, {} received: {} lost, {} \
             duplicated, {} out of order; p50 / p99 / max latency {:.1} / {:.1} / {:.0} ms.",
            num(p.sent),
            num(p.acked_ok),
            num(d.expected),
            num(d.received),
            d.lost,
            d.duplicated,
            d.reordered,
            d.latency_ms.p50_ms,
            d.latency_ms.p99_ms,
            d.latency_ms.max_ms
        );
    }
    if let Some(g) = &fanout.generator {
        let _ = writeln!(
            s,
            "The generator used {:.0} % of its {} thread(s).",
            g.cpu_util * 100.0,
            g.threads
        );
    }
    if let Some(f) = &fanout.faults {
        let r = &f.reconnects;
        let _ = writeln!(
            s,
            "\nReconnections: {} connections lost, {} reconnected, {} sessions recovered, {} \
             fresh, {} failed attempts, {} never back.\n\n| fault | at s | subscribers affected \
             | back to every publisher, p50 / max ms |\n|---|---:|---:|---:|",
            r.lost, r.reconnected, r.recovered, r.fresh, r.failed_attempts, r.never_back
        );
        for e in &f.events {
            let _ = writeln!(
                s,
                "| {}{} | {:.0} | {} of {} | {:.0} / {:.0} |",
                e.kind,
                if e.ok { "" } else { " (FAILED)" },
                e.at_s,
                e.resumed,
                e.affected,
                e.resume_ms.p50_ms,
                e.resume_ms.max_ms
            );
        }
    }
}

/// The official client's churn and CRUD.
fn side_section(s: &mut String, side: &SideReport) {
    let (c, d) = (&side.churn, &side.crud);
    let _ = writeln!(
        s,
        "\n## Side workload (socket.io-client)\n\nChurn: {} sessions, {} connected, {} \
         joins and {} leaves acknowledged, connect errors {:?}, refused {:?}, {} cut by a \
         fault, {} unanswered.\n\nCRUD (Backbone.sync): {} operations acknowledged {:?}, {} \
         wrong answers, refused {:?}, {} cut by a fault, {} unanswered.",
        num(c.sessions),
        num(c.connected),
        num(c.joins_ok),
        num(c.leaves_ok),
        c.connect_errors,
        c.refused,
        c.cut,
        c.unanswered,
        num(d.ops_ok),
        d.by_op,
        d.wrong,
        d.refused,
        d.cut,
        d.unanswered
    );
}

/// Per node: idle, early and late in the load, after it, peaks.
fn nodes_section(s: &mut String, v: &Verdict) {
    s.push_str("\n## Nodes\n\n| node | processes | idle | early in the load | late in the load | RSS growth | after the clients left | peaks |\n|---|---:|---|---|---|---:|---|---|\n");
    for n in &v.nodes {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {:.1} MB, {:.0} fds, {:.0} tasks |",
            n.node,
            n.processes,
            fig(Some(&n.idle)),
            fig(n.early.as_ref()),
            fig(n.late.as_ref()),
            n.rss_growth_pct
                .map_or_else(|| "–".to_owned(), |g| format!("{g:+.1} %")),
            fig(n.after.as_ref()),
            n.peak_rss_mb,
            n.peak_fds,
            n.peak_tasks
        );
    }
}

/// Per node and minute: RSS MB / fds / tasks / sockets, the minute's last sample.
fn over_time(samples: &[Sample], events: &Events) -> String {
    let Some(t0) = samples.first().map(|x| x.unix_s) else {
        return String::new();
    };
    let start = events
        .iter()
        .find(|(_, w)| w == "load-start")
        .map_or(t0, |(t, _)| *t);
    let mut names: Vec<&str> = samples.iter().map(|x| x.node.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let mut s = format!(
        "\n### Over time (from the load's start; each cell: RSS MB / fds / tasks / sockets)\n\n| s | {} |\n|---:|{}\n",
        names.join(" | "),
        "---|".repeat(names.len())
    );
    let last = samples.last().map_or(0.0, |x| x.unix_s);
    let mut at = start;
    while at <= last + ROW_EVERY_S {
        let cells: Vec<String> = names
            .iter()
            .map(|n| {
                samples
                    .iter()
                    .rfind(|x| x.node == *n && x.unix_s <= at && x.unix_s > at - ROW_EVERY_S)
                    .map_or_else(
                        || "–".to_owned(),
                        |x| {
                            if x.up {
                                format!(
                                    "{:.1} / {:.0} / {:.0} / {:.0}",
                                    x.rss_bytes / 1_048_576.0,
                                    x.fds,
                                    x.tasks,
                                    x.sockets
                                )
                            } else {
                                "down".to_owned()
                            }
                        },
                    )
            })
            .collect();
        let _ = writeln!(s, "| {:.0} | {} |", at - start, cells.join(" | "));
        at += ROW_EVERY_S;
    }
    s
}

/// The SVG plot: four panels sharing the time axis (seconds from the first sample).
pub fn svg(samples: &[Sample], events: &Events, title: &str) -> String {
    let t0 = samples.first().map_or(0.0, |x| x.unix_s);
    let mut names: Vec<&str> = samples.iter().map(|x| x.node.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let panel = |title: &str, f: fn(&Sample) -> f64| Panel {
        title: title.to_owned(),
        log_y: false,
        series: names
            .iter()
            .map(|n| Series {
                name: (*n).to_owned(),
                // A down node is left out (NaN is not drawn), not drawn as a drop to zero.
                points: samples
                    .iter()
                    .filter(|x| x.node == *n)
                    .map(|x| (x.unix_s - t0, if x.up { f(x) } else { f64::NAN }))
                    .collect(),
                dashed: false,
            })
            .collect(),
    };
    let panels = [
        panel("resident memory (MB)", |x| x.rss_bytes / 1_048_576.0),
        panel("allocated, by the allocator's count (MB)", |x| {
            x.heap_bytes / 1_048_576.0
        }),
        panel("open file descriptors", |x| x.fds),
        panel("tasks alive", |x| x.tasks),
        panel("sockets connected", |x| x.sockets),
    ];
    let markers: Vec<(f64, String)> = events.iter().map(|(t, w)| (t - t0, w.clone())).collect();
    let x_max = samples.last().map_or(1.0, |x| x.unix_s - t0);
    render(title, &panels, x_max, &markers)
}
