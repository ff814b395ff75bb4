//! Results of a run: the JSON report (`--report-json`), the human summary printed at the end,
//! and (`svg`) the plot written next to the JSON.

mod faults;
mod storm;
pub(crate) mod svg;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

use crate::stats::{Percentiles, ProcReport};

pub use faults::{FaultEvent, FaultReport, ReconnectReport, SubscriberLosses};
pub use storm::StormReport;
pub use svg::svg;

/// Everything one run measured. Sections that do not apply to a scenario are absent.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    pub tool: String,
    pub version: String,
    pub scenario: String,
    /// What was measured (e.g. `ioscale`, `node-socketio`); set with `--label`.
    pub label: String,
    pub protocol: String,
    pub urls: Vec<String>,
    pub started_unix_ms: u64,
    /// From the first send (or connect) to the end of the drain.
    pub duration_s: f64,
    /// The scenario's parameters as given.
    pub params: serde_json::Value,
    pub clients: ClientsReport,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub publishes: Option<PublishReport>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub deliveries: Option<DeliveryReport>,
    /// Rate steps (one for a fixed-rate run).
    #[serde(default)]
    pub steps: Vec<StepReport>,
    /// The highest step that passed (no loss, p99 within the bound).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub held: Option<HeldReport>,
    #[serde(default)]
    pub stop_reason: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub connect: Option<ConnectReport>,
    /// One point per second.
    #[serde(default)]
    pub timeline: Vec<TimePoint>,
    /// Watched server processes (`--watch-pids`), over the sending window.
    #[serde(default)]
    pub processes: Vec<ProcReport>,
    /// The generator's own cost over the sending window.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub generator: Option<GeneratorReport>,
    /// What the whole cluster spent, and the adapter traffic it took (`rooms`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cluster: Option<ClusterReport>,
    /// The faults injected (`fanout --kill-node-at-s` …) and what they cost the clients.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub faults: Option<FaultReport>,
    /// The reconnect storm (`connect --fault-at-s`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub storm: Option<StormReport>,
}

/// The cluster's cost of the run (`rooms`): CPU of every watched process per delivery, the
/// adapter messages the nodes received against the fewest the placement needs, and Redis's
/// output. A figure is null when the run had nothing to measure it from (no `--watch-pids`,
/// no `--node-metrics-urls`: not an ioscale node, no `--redis-urls`), or, for the two room
/// channel counters, when the nodes do not expose them (older builds).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterReport {
    /// Publishes the server accepted (sent − rejected): the per-publish denominator.
    pub publishes: u64,
    /// Deliveries received: the per-delivery denominator.
    pub deliveries: u64,
    /// CPU seconds (utime + stime) of every watched process over the sending window.
    pub cpu_s: Option<f64>,
    /// ... of the watched processes whose name starts with `redis`.
    pub redis_cpu_s: Option<f64>,
    pub cpu_s_per_million_deliveries: Option<f64>,
    pub redis_cpu_s_per_million_deliveries: Option<f64>,
    /// Nodes whose `/metrics` were read.
    pub nodes_scraped: usize,
    /// `ioscale_adapter_messages_in_total{kind="broadcast"}` over the nodes, from just before
    /// the sending window to the end of the drain.
    pub adapter_messages_in: Option<u64>,
    pub adapter_messages_in_per_publish: Option<f64>,
    /// The fewest adapter messages the placement needs: per publish, the nodes other than the
    /// publisher's that hold a member of the room, summed over the accepted publishes.
    pub ideal_adapter_messages_in: u64,
    pub ideal_adapter_messages_in_per_publish: Option<f64>,
    /// Measured ÷ ideal (1 is the least possible).
    pub adapter_messages_in_vs_ideal: Option<f64>,
    /// `ioscale_adapter_broadcasts_untargeted_total` over the nodes, over the same window:
    /// broadcasts that reached a node with no member of the room.
    pub broadcasts_untargeted: Option<u64>,
    /// `ioscale_adapter_room_channels` summed over the nodes at the end.
    pub room_channels: Option<u64>,
    /// Redis servers whose `INFO stats` were read.
    pub redis_scraped: usize,
    /// `total_net_output_bytes` summed over the Redis servers, over the same window.
    pub redis_net_output_bytes: Option<u64>,
    pub redis_net_output_bytes_per_delivery: Option<f64>,
}

/// What the generator itself spent: the instrument's share, reported with every figure.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GeneratorReport {
    pub threads: usize,
    pub cpu_s: f64,
    pub wall_s: f64,
    /// `cpu_s / (wall_s · threads)`.
    pub cpu_util: f64,
    /// CPU microseconds per delivery received.
    pub cpu_us_per_delivery: f64,
    /// The figure this run is summed up by (its held step for a ramp, the first failing step
    /// or the whole run otherwise) was limited by the generator.
    pub bound: bool,
}

/// Connection outcomes of the run's clients.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ClientsReport {
    pub attempted: u64,
    pub connected: u64,
    /// Clients on HTTP long-polling.
    pub polling: u64,
    /// Failed handshakes by cause.
    pub failed: BTreeMap<String, u64>,
    /// Handshake (connect + namespace connect) latency.
    pub handshake_ms: Percentiles,
    /// Clients whose session ended before the run did.
    pub dropped: u64,
    /// Room joins sent again because the first was not acknowledged within a second (a server
    /// that drops events arriving right after the namespace connect).
    #[serde(default)]
    pub join_retries: u64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub first_error: Option<String>,
}

/// What the publishers sent and how the server acknowledged it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PublishReport {
    pub sent: u64,
    pub acked_ok: u64,
    /// Acked with an error (e.g. `publish queue full`): not expected to be delivered.
    pub rejected: u64,
    /// Never acked by the end of the drain.
    pub unacked: u64,
    /// Sent on a connection that was lost before their ack (not expected: the server may
    /// never have had them).
    #[serde(default)]
    pub orphaned: u64,
    pub ack_ms: Percentiles,
    /// How late the generator issued sends behind their schedule.
    pub send_lag_ms: Percentiles,
}

/// Deliveries to subscribers, counted exactly from per-publisher sequence numbers.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DeliveryReport {
    pub expected: u64,
    /// First deliveries.
    pub received: u64,
    pub lost: u64,
    pub duplicated: u64,
    /// Delivered after a later message of the same publisher (order broken, nothing lost).
    pub reordered: u64,
    /// Delivered to a client outside the target room.
    pub misrouted: u64,
    /// Received per second over the sending window.
    pub per_s: f64,
    /// From the scheduled send time to receipt.
    pub latency_ms: Percentiles,
}

/// One rate step.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StepReport {
    pub index: usize,
    /// Offered send rate.
    pub rate_per_s: f64,
    pub sent: u64,
    pub expected: u64,
    /// Received by the time the step was judged.
    pub received: u64,
    pub deliveries_per_s: f64,
    pub latency_ms: Percentiles,
    pub passed: bool,
    /// Share of its threads' CPU the generator used during the step (0 to 1).
    #[serde(default)]
    pub generator_cpu_util: f64,
    /// The generator, not the server, limited the step: it used over 80 % of its threads or
    /// fell behind its schedule.
    #[serde(default)]
    pub generator_bound: bool,
    /// The warm-up step (never held, never stops the ramp).
    #[serde(default)]
    pub warmup: bool,
    pub note: String,
}

/// The highest rate held.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HeldReport {
    pub step: usize,
    pub rate_per_s: f64,
    pub deliveries_per_s: f64,
    pub latency_ms: Percentiles,
}

/// The connection storm's results.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConnectReport {
    pub target_rate_per_s: f64,
    /// Successful connects per second, first scheduled attempt to last success.
    pub connects_per_s: f64,
    pub concurrent_peak: u64,
    /// From the scheduled attempt time (includes any lag of the generator).
    pub scheduled_ms: Percentiles,
    /// Until the Engine.IO session was open.
    pub transport_ms: Percentiles,
    /// Resident memory added per held connection, per watched process (KB).
    #[serde(default)]
    pub rss_kb_per_connection: BTreeMap<String, f64>,
}

/// One second of the run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TimePoint {
    pub t_s: f64,
    /// Offered send rate at that time.
    pub rate_per_s: f64,
    pub sent_per_s: f64,
    pub received_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// Per watched process.
    #[serde(default)]
    pub cpu_cores: Vec<f64>,
    #[serde(default)]
    pub rss_mb: Vec<f64>,
}

impl TimePoint {
    /// The point at `t_s`: the offered rate, the second's sends and receipts, its latency
    /// percentiles, and each watched process' `(cores, rss_mb)` sample.
    #[allow(clippy::cast_precision_loss)]
    pub fn of_second(
        t_s: f64,
        rate_per_s: f64,
        (sent, received): (u64, u64),
        p: &Percentiles,
        sampled: &[(f64, f64)],
    ) -> Self {
        Self {
            t_s,
            rate_per_s,
            sent_per_s: sent as f64,
            received_per_s: received as f64,
            p50_ms: p.p50_ms,
            p99_ms: p.p99_ms,
            p999_ms: p.p999_ms,
            max_ms: p.max_ms,
            cpu_cores: sampled.iter().map(|s| s.0).collect(),
            rss_mb: sampled.iter().map(|s| s.1).collect(),
        }
    }
}

impl Report {
    /// A report skeleton for `scenario`.
    pub fn new(scenario: &str, label: &str, protocol: &str, urls: &[String]) -> Self {
        Self {
            tool: "ioscale-loadtest".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            scenario: scenario.to_owned(),
            label: label.to_owned(),
            protocol: protocol.to_owned(),
            urls: urls.to_vec(),
            started_unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                .unwrap_or(0),
            ..Self::default()
        }
    }

    /// Writes the JSON to `path` and the SVG next to it (same name, `.svg`); returns the SVG path.
    ///
    /// # Errors
    /// If either file cannot be written.
    pub fn write(&self, path: &Path) -> Result<PathBuf> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let json = serde_json::to_string_pretty(self)?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
        let svg_path = path.with_extension("svg");
        std::fs::write(&svg_path, svg(self))
            .with_context(|| format!("writing {}", svg_path.display()))?;
        Ok(svg_path)
    }

    /// Reads a report written by [`Report::write`].
    ///
    /// # Errors
    /// If the file cannot be read or parsed.
    pub fn read(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// The human summary.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let label = if self.label.is_empty() {
            String::new()
        } else {
            format!(" [{}]", self.label)
        };
        let _ = writeln!(
            s,
            "== {}{label}: {} over {} target(s), {:.1} s",
            self.scenario,
            self.protocol,
            self.urls.len(),
            self.duration_s
        );
        let c = &self.clients;
        let _ = writeln!(
            s,
            "clients    {} connected of {} ({} polling), {} dropped during the run; handshake {}",
            c.connected,
            c.attempted,
            c.polling,
            c.dropped,
            pct(&c.handshake_ms)
        );
        if c.join_retries > 0 {
            let _ = writeln!(
                s,
                "joins      {} re-sent: the server did not answer them within 1 s (event dropped?)",
                c.join_retries
            );
        }
        if !c.failed.is_empty() {
            let causes: Vec<String> = c.failed.iter().map(|(k, v)| format!("{k}: {v}")).collect();
            let _ = writeln!(s, "failures   {}", causes.join(", "));
            if let Some(e) = &c.first_error {
                let _ = writeln!(s, "           first: {e}");
            }
        }
        if let Some(k) = &self.connect {
            let _ = writeln!(
                s,
                "connects   {:.0}/s achieved (target {:.0}/s), peak {} open; from schedule {}",
                k.connects_per_s,
                k.target_rate_per_s,
                k.concurrent_peak,
                pct(&k.scheduled_ms)
            );
            let _ = writeln!(s, "           engine.io open {}", pct(&k.transport_ms));
            for (name, kb) in &k.rss_kb_per_connection {
                let _ = writeln!(s, "           {name}: {kb:.1} KB RSS per connection");
            }
        }
        if let Some(p) = &self.publishes {
            let _ = writeln!(
                s,
                "sends      {} sent, {} acked, {} rejected, {} unacked; ack {}",
                p.sent,
                p.acked_ok,
                p.rejected,
                p.unacked,
                pct(&p.ack_ms)
            );
            let _ = writeln!(s, "           generator lag {}", pct(&p.send_lag_ms));
        }
        if let Some(d) = &self.deliveries {
            let _ = writeln!(
                s,
                "deliveries {} of {} expected ({:.0}/s): lost {}, duplicated {}, reordered {}, misrouted {}",
                d.received, d.expected, d.per_s, d.lost, d.duplicated, d.reordered, d.misrouted
            );
            let _ = writeln!(s, "           latency {}", pct(&d.latency_ms));
        }
        if self.steps.len() > 1 {
            let _ = writeln!(
                s,
                "steps      rate/s    deliveries/s   p50 ms   p99 ms  p999 ms  ok"
            );
            for st in &self.steps {
                let _ = writeln!(
                    s,
                    "           {:>7.0} {:>14.0} {:>8.2} {:>8.2} {:>8.2}  {}{}",
                    st.rate_per_s,
                    st.deliveries_per_s,
                    st.latency_ms.p50_ms,
                    st.latency_ms.p99_ms,
                    st.latency_ms.p999_ms,
                    if st.warmup {
                        "-"
                    } else if st.passed {
                        "yes"
                    } else {
                        "NO"
                    },
                    if st.note.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", st.note)
                    }
                );
            }
        }
        if let Some(h) = &self.held {
            let _ = writeln!(
                s,
                "held       {:.0} sends/s = {:.0} deliveries/s; {}",
                h.rate_per_s,
                h.deliveries_per_s,
                pct(&h.latency_ms)
            );
        } else if !self.steps.is_empty() {
            let _ = writeln!(s, "held       no step passed");
        }
        if !self.stop_reason.is_empty() {
            let _ = writeln!(s, "stopped    {}", self.stop_reason);
        }
        for p in &self.processes {
            let _ = writeln!(
                s,
                "process    {} (pid {}): {:.2} cores avg, {:.2} max; RSS peak {:.1} MB",
                p.name, p.pid, p.cpu_cores_avg, p.cpu_cores_max, p.peak_rss_mb
            );
        }
        if let Some(c) = &self.cluster {
            s.push_str(&c.summary());
        }
        if let Some(f) = &self.faults {
            s.push_str(&f.summary());
        }
        if let Some(st) = &self.storm {
            s.push_str(&st.summary());
        }
        if let Some(g) = &self.generator {
            let _ = writeln!(
                s,
                "generator  {:.2} CPU-s over {:.1} s: {:.0} % of its {} threads, {:.2} µs per delivery{}",
                g.cpu_s,
                g.wall_s,
                g.cpu_util * 100.0,
                g.threads,
                g.cpu_us_per_delivery,
                if g.bound {
                    "; GENERATOR-BOUND: the figure is the generator's, not the server's"
                } else {
                    ""
                }
            );
        }
        s
    }
}

impl ClusterReport {
    /// The summary's lines of the cluster's figures.
    pub fn summary(&self) -> String {
        let f = |v: Option<f64>, digits: usize| {
            v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.digits$}"))
        };
        let n = |v: Option<u64>| v.map_or_else(|| "n/a".to_owned(), |v| v.to_string());
        let mut s = String::new();
        let _ = match self.cpu_s_per_million_deliveries {
            Some(cpu) => writeln!(
                s,
                "cluster    {cpu:.2} CPU-s per million deliveries, every watched process ({} of it Redis)",
                f(self.redis_cpu_s_per_million_deliveries, 2)
            ),
            None => writeln!(s, "cluster    CPU per delivery n/a (no --watch-pids)"),
        };
        let ideal = f(self.ideal_adapter_messages_in_per_publish, 3);
        let _ = match self.adapter_messages_in_per_publish {
            Some(m) => writeln!(
                s,
                "adapter    {m:.3} broadcast messages in per publish over {} node(s), ideal {ideal}: {}x the ideal; untargeted {}, room channels {}",
                self.nodes_scraped,
                f(self.adapter_messages_in_vs_ideal, 2),
                n(self.broadcasts_untargeted),
                n(self.room_channels)
            ),
            None => writeln!(
                s,
                "adapter    ideal {ideal} broadcast messages in per publish; measured n/a (no --node-metrics-urls)"
            ),
        };
        let _ = match self.redis_net_output_bytes {
            Some(b) => writeln!(
                s,
                "redis      {b} bytes out over {} server(s), {} per delivery",
                self.redis_scraped,
                f(self.redis_net_output_bytes_per_delivery, 1)
            ),
            None => writeln!(s, "redis      bytes out n/a (no --redis-urls)"),
        };
        s
    }
}

fn pct(p: &Percentiles) -> String {
    if p.count == 0 {
        return "n/a".to_owned();
    }
    format!(
        "p50 {:.2} / p90 {:.2} / p99 {:.2} / p999 {:.2} / max {:.2} ms",
        p.p50_ms, p.p90_ms, p.p99_ms, p.p999_ms, p.max_ms
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn svg_is_well_formed_and_json_round_trips() {
        let mut r = Report::new("fanout", "x<y", "socketio", &["http://a".to_owned()]);
        r.params = serde_json::json!({"ramp_step_s": 1.0});
        r.steps = vec![
            StepReport::default(),
            StepReport {
                index: 1,
                ..StepReport::default()
            },
        ];
        r.timeline = (0..5)
            .map(|i| TimePoint {
                t_s: f64::from(i),
                p50_ms: 1.0,
                p99_ms: 5.0 + f64::from(i),
                p999_ms: 9.0,
                max_ms: 20.0,
                received_per_s: 1000.0 * f64::from(i),
                cpu_cores: vec![0.5],
                ..TimePoint::default()
            })
            .collect();
        r.processes = vec![ProcReport {
            name: "n1".to_owned(),
            ..ProcReport::default()
        }];
        let s = svg(&r);
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
        assert!(s.contains("x&lt;y"));
        assert_eq!(s.matches("<polyline").count(), 4 + 1 + 2 + 1);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        let svg_path = r.write(&path).unwrap();
        assert!(svg_path.ends_with("r.svg"));
        let back = Report::read(&path).unwrap();
        assert_eq!(back.label, "x<y");
        assert_eq!(back.timeline.len(), 5);
        assert!(r.summary().contains("fanout [x<y]"));
    }
}
