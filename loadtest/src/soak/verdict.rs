//! What a soak shows, from its samples, its events and its two workloads' reports: per node
//! the idle figures before the load, the figures early and late in the load (after warm-up),
//! and after the clients left; and whether each criterion held.

use serde::Serialize;

use super::side::SideReport;
use super::watch::Sample;
use crate::report::Report;
use crate::stats::median;

/// The bounds a soak is judged by.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Seconds after the load starts that are warm-up (not judged for growth).
    pub warmup_s: f64,
    /// Largest growth of resident memory from early to late in the load, in percent.
    pub max_rss_growth_pct: f64,
    /// Descriptors a node may hold above its idle count once the clients left, and by which
    /// its descriptors beyond its connections may grow during the load.
    pub fd_slack: f64,
    /// Tasks a node may run above its idle count once the clients left.
    pub task_slack: f64,
}

/// Medians over some samples of one node.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Figures {
    pub samples: usize,
    pub rss_mb: f64,
    /// What the program holds by its allocator's count (0: not told).
    pub heap_mb: f64,
    pub fds: f64,
    /// Descriptors beyond the public listener's connections: Redis, listeners, the runtime.
    pub fds_beyond_connections: f64,
    pub tasks: f64,
    pub sockets: f64,
}

/// One node over the soak.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NodeVerdict {
    pub node: String,
    /// Processes seen: 1 for a node never restarted.
    pub processes: usize,
    /// Before the first client.
    pub idle: Figures,
    /// The first and last stretch of the judged load (after warm-up), when one process of the
    /// node ran through all of it.
    pub early: Option<Figures>,
    pub late: Option<Figures>,
    pub rss_growth_pct: Option<f64>,
    /// After the last client left.
    pub after: Option<Figures>,
    pub peak_rss_mb: f64,
    pub peak_fds: f64,
    pub peak_tasks: f64,
}

/// The soak's verdict: every failed criterion, in words.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Verdict {
    pub passed: bool,
    pub failures: Vec<String>,
    pub nodes: Vec<NodeVerdict>,
    pub load_s: f64,
    pub judged_from_s: f64,
}

/// A soak's events: `(unix seconds, what)`, with `load-start` and `load-end` among them.
pub type Events = [(f64, String)];

fn figures(samples: &[&Sample]) -> Option<Figures> {
    if samples.is_empty() {
        return None;
    }
    let of = |f: fn(&Sample) -> f64| median(samples.iter().map(|s| f(s)).collect());
    Some(Figures {
        samples: samples.len(),
        rss_mb: of(|s| s.rss_bytes) / 1_048_576.0,
        heap_mb: of(|s| s.heap_bytes) / 1_048_576.0,
        fds: of(|s| s.fds),
        fds_beyond_connections: of(|s| s.fds - s.connections),
        tasks: of(|s| s.tasks),
        sockets: of(|s| s.sockets),
    })
}

fn event_at(events: &Events, what: &str) -> Option<f64> {
    events.iter().find(|(_, w)| w == what).map(|(t, _)| *t)
}

/// Judges one node from its samples (in time order).
fn node(
    name: &str,
    samples: &[&Sample],
    (start, judged_from, end, settled): (f64, f64, f64, f64),
    b: &Bounds,
) -> (NodeVerdict, Vec<String>) {
    let up: Vec<&Sample> = samples.iter().copied().filter(|s| s.up).collect();
    let mut starts: Vec<f64> = up.iter().map(|s| s.started_unix_s).collect();
    starts.dedup();
    let within = |from: f64, to: f64| -> Vec<&Sample> {
        up.iter()
            .copied()
            .filter(|s| s.unix_s >= from && s.unix_s < to)
            .collect()
    };
    let stretch = ((end - judged_from) * 0.15).max(1.0);
    let judged = within(judged_from, end);
    // Growth is judged on one process only: a restarted node starts from nothing again.
    let one_process = !judged.is_empty()
        && judged
            .iter()
            .all(|s| s.started_unix_s == judged[0].started_unix_s)
        && samples
            .iter()
            .filter(|s| s.unix_s >= judged_from && s.unix_s < end)
            .all(|s| s.up);
    let (early, late) = if one_process {
        (
            figures(&within(judged_from, judged_from + stretch)),
            figures(&within(end - stretch, end)),
        )
    } else {
        (None, None)
    };
    let peak = |f: fn(&Sample) -> f64| up.iter().map(|s| f(s)).fold(0.0, f64::max);
    let v = NodeVerdict {
        node: name.to_owned(),
        processes: starts.len(),
        idle: figures(&within(f64::MIN, start)).unwrap_or_default(),
        early,
        late,
        rss_growth_pct: early
            .zip(late)
            .map(|(e, l)| (l.rss_mb / e.rss_mb - 1.0) * 100.0),
        after: figures(&within(settled, f64::MAX)),
        peak_rss_mb: peak(|s| s.rss_bytes) / 1_048_576.0,
        peak_fds: peak(|s| s.fds),
        peak_tasks: peak(|s| s.tasks),
    };
    let failures = node_failures(&v, b);
    (v, failures)
}

/// What a node's figures break of the bounds: growth during the load (one process only),
/// and what it still holds once the clients left.
fn node_failures(v: &NodeVerdict, b: &Bounds) -> Vec<String> {
    let name = &v.node;
    let mut failures = Vec::new();
    if let (Some(e), Some(l), Some(growth)) = (v.early, v.late, v.rss_growth_pct) {
        if growth > b.max_rss_growth_pct {
            failures.push(format!(
                "{name}: resident memory grew {growth:.1} % during the load ({:.1} → {:.1} MB), \
                 over {} %",
                e.rss_mb, l.rss_mb, b.max_rss_growth_pct
            ));
        }
        let fd_growth = l.fds_beyond_connections - e.fds_beyond_connections;
        if fd_growth > b.fd_slack {
            failures.push(format!(
                "{name}: descriptors beyond its connections grew by {fd_growth:.0} during the load"
            ));
        }
    }
    match v.after {
        None => failures.push(format!("{name}: no sample after the load")),
        Some(a) if v.idle.samples > 0 => {
            if a.fds > v.idle.fds + b.fd_slack {
                failures.push(format!(
                    "{name}: {:.0} descriptors open after the clients left, {:.0} before them",
                    a.fds, v.idle.fds
                ));
            }
            if a.tasks > v.idle.tasks + b.task_slack {
                failures.push(format!(
                    "{name}: {:.0} tasks alive after the clients left, {:.0} before them",
                    a.tasks, v.idle.tasks
                ));
            }
        }
        Some(_) => failures.push(format!("{name}: no idle sample before the load")),
    }
    failures
}

/// Judges the nodes' samples and both workloads.
pub fn judge(
    samples: &[Sample],
    events: &Events,
    fanout: &Report,
    side: Option<&SideReport>,
    b: &Bounds,
) -> Verdict {
    let mut failures = Vec::new();
    let (Some(start), Some(end)) = (event_at(events, "load-start"), event_at(events, "load-end"))
    else {
        return Verdict {
            failures: vec!["the events lack load-start or load-end".to_owned()],
            ..Verdict::default()
        };
    };
    let judged_from = start + b.warmup_s;
    // The clients' sockets close after the load ends: idle again is judged from `settled`.
    let settled = event_at(events, "settled").unwrap_or(end);
    let mut names: Vec<&str> = samples.iter().map(|s| s.node.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let mut nodes = Vec::new();
    for name in names {
        let mine: Vec<&Sample> = samples.iter().filter(|s| s.node == name).collect();
        let (v, f) = node(name, &mine, (start, judged_from, end, settled), b);
        nodes.push(v);
        failures.extend(f);
    }
    if !nodes.iter().any(|n| n.rss_growth_pct.is_some()) {
        failures.push("no node ran through the judged load in one process".to_owned());
    }
    failures.extend(fanout_failures(fanout));
    match side {
        Some(s) => failures.extend(s.failures()),
        None => failures.push("no side workload report".to_owned()),
    }
    Verdict {
        passed: failures.is_empty(),
        failures,
        nodes,
        load_s: end - start,
        judged_from_s: b.warmup_s,
    }
}

/// The fan-out's losses, duplicates, reorderings, clients that never came back and faults that
/// did not happen.
fn fanout_failures(r: &Report) -> Vec<String> {
    let mut f = Vec::new();
    match &r.deliveries {
        Some(d) => {
            if d.expected == 0 {
                f.push("fan-out: nothing was expected (no send?)".to_owned());
            }
            for (what, n) in [
                ("lost", d.lost),
                ("duplicated", d.duplicated),
                ("reordered", d.reordered),
                ("misrouted", d.misrouted),
            ] {
                if n > 0 {
                    f.push(format!("fan-out: {n} deliveries {what}"));
                }
            }
        }
        None => f.push("fan-out: the report has no deliveries".to_owned()),
    }
    if let Some(p) = &r.publishes
        && p.unacked > 0
    {
        f.push(format!(
            "fan-out: {} publishes unanswered on a connection that stayed up",
            p.unacked
        ));
    }
    match &r.faults {
        Some(faults) => {
            for e in faults.events.iter().filter(|e| !e.ok) {
                f.push(format!(
                    "fault {} at {:.0} s failed: {}",
                    e.kind, e.at_s, e.detail
                ));
            }
            if faults.reconnects.never_back > 0 {
                f.push(format!(
                    "fan-out: {} clients never came back",
                    faults.reconnects.never_back
                ));
            }
        }
        None => f.push("fan-out: no fault was injected".to_owned()),
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(node: &str, t: f64, rss_mb: f64, fds: f64, tasks: f64, started: f64) -> Sample {
        Sample {
            unix_s: t,
            node: node.to_owned(),
            up: started > 0.0,
            rss_bytes: rss_mb * 1_048_576.0,
            fds,
            tasks,
            sockets: 10.0,
            connections: 10.0,
            started_unix_s: started,
            heap_bytes: 0.0,
        }
    }

    const B: Bounds = Bounds {
        warmup_s: 10.0,
        max_rss_growth_pct: 5.0,
        fd_slack: 2.0,
        task_slack: 2.0,
    };

    fn run(samples: &[Sample]) -> Vec<NodeVerdict> {
        let refs: Vec<&Sample> = samples.iter().collect();
        let (v, _) = node("n", &refs, (100.0, 110.0, 200.0, 201.0), &B);
        vec![v]
    }

    #[test]
    fn a_flat_node_passes_and_a_leaking_one_fails() {
        let mut flat = vec![sample("n", 95.0, 20.0, 30.0, 50.0, 1.0)];
        flat.extend(
            (100..200)
                .step_by(2)
                .map(|t| sample("n", t as f64, 60.0 + (t % 3) as f64 * 0.1, 60.0, 400.0, 1.0)),
        );
        flat.push(sample("n", 205.0, 40.0, 31.0, 51.0, 1.0));
        let refs: Vec<&Sample> = flat.iter().collect();
        let (v, failures) = node("n", &refs, (100.0, 110.0, 200.0, 201.0), &B);
        assert!(failures.is_empty(), "{failures:?}");
        assert!(v.rss_growth_pct.unwrap().abs() < 1.0);
        assert_eq!((v.idle.fds, v.after.unwrap().tasks), (30.0, 51.0));

        // Memory climbing 20 % over the judged load, and descriptors left behind.
        let mut leak = flat.clone();
        for s in leak
            .iter_mut()
            .filter(|s| s.unix_s >= 100.0 && s.unix_s < 200.0)
        {
            s.rss_bytes *= 1.0 + (s.unix_s - 100.0) / 500.0;
        }
        let last = leak.len() - 1;
        leak[last].fds = 40.0;
        let refs: Vec<&Sample> = leak.iter().collect();
        let (_, failures) = node("n", &refs, (100.0, 110.0, 200.0, 201.0), &B);
        assert_eq!(failures.len(), 2, "{failures:?}");
        assert!(failures[0].contains("resident memory grew"));
        assert!(failures[1].contains("descriptors open after"));
    }

    #[test]
    fn a_restarted_node_is_not_judged_for_growth_but_for_what_it_leaves() {
        let mut s = vec![sample("n", 95.0, 20.0, 30.0, 50.0, 1.0)];
        s.extend((100..150).map(|t| sample("n", t as f64, 60.0, 60.0, 400.0, 1.0)));
        s.push(sample("n", 151.0, 0.0, 0.0, 0.0, 0.0));
        s.extend((152..200).map(|t| sample("n", t as f64, 30.0, 60.0, 400.0, 152.0)));
        s.push(sample("n", 205.0, 25.0, 30.0, 60.0, 152.0));
        let v = &run(&s)[0];
        assert_eq!(v.processes, 2);
        assert!(v.rss_growth_pct.is_none() && v.early.is_none());
        let refs: Vec<&Sample> = s.iter().collect();
        let (_, failures) = node("n", &refs, (100.0, 110.0, 200.0, 201.0), &B);
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert!(failures[0].contains("tasks alive after"));
    }
}
