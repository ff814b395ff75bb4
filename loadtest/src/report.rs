//! Results of a run: the JSON report (`--report-json`), the human summary printed at the end,
//! and the SVG plot written next to the JSON (latency percentiles over time, throughput, and
//! the watched processes' CPU), drawn by hand so the tool needs no plotting library.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

use crate::stats::{Percentiles, ProcReport};

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

fn pct(p: &Percentiles) -> String {
    if p.count == 0 {
        return "n/a".to_owned();
    }
    format!(
        "p50 {:.2} / p90 {:.2} / p99 {:.2} / p999 {:.2} / max {:.2} ms",
        p.p50_ms, p.p90_ms, p.p99_ms, p.p999_ms, p.max_ms
    )
}

// ---- SVG ----

const WIDTH: f64 = 960.0;
const PANEL_H: f64 = 170.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 190.0;
const TOP: f64 = 50.0;
const GAP: f64 = 60.0;
const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf",
];

struct Series {
    name: String,
    points: Vec<(f64, f64)>,
    dashed: bool,
}

struct Panel {
    title: String,
    log_y: bool,
    series: Vec<Series>,
}

/// Round tick spacing near `range / 5`.
fn nice_step(range: f64) -> f64 {
    if range <= 0.0 || !range.is_finite() {
        return 1.0;
    }
    let raw = range / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let m = raw / mag;
    let nice = if m < 1.5 {
        1.0
    } else if m < 3.5 {
        2.0
    } else if m < 7.5 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else if a >= 10.0 || a == 0.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Draws the panels stacked, sharing the x axis (seconds).
fn render(title: &str, panels: &[Panel], x_max: f64, markers: &[(f64, String)]) -> String {
    let height = TOP + panels.len() as f64 * (PANEL_H + GAP) + 10.0;
    let plot_w = WIDTH - LEFT - RIGHT;
    let x_max = if x_max > 0.0 { x_max } else { 1.0 };
    let sx = |x: f64| LEFT + x / x_max * plot_w;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(
        s,
        r#"<rect width="100%" height="100%" fill="white"/><text x="{LEFT}" y="24" font-size="15" font-weight="bold">{}</text>"#,
        esc(title)
    );
    for (pi, panel) in panels.iter().enumerate() {
        let top = TOP + pi as f64 * (PANEL_H + GAP);
        let bottom = top + PANEL_H;
        let all: Vec<f64> = panel
            .series
            .iter()
            .flat_map(|se| se.points.iter().map(|p| p.1))
            .filter(|v| v.is_finite())
            .collect();
        let (lo, hi) = if panel.log_y {
            let pos: Vec<f64> = all.iter().copied().filter(|v| *v > 0.0).collect();
            let min = pos.iter().copied().fold(f64::INFINITY, f64::min);
            let max = pos.iter().copied().fold(0.0, f64::max);
            if pos.is_empty() {
                (-1.0, 2.0)
            } else {
                let lo = min.log10().floor();
                let hi = max.log10().ceil().max(lo + 1.0);
                (lo, hi)
            }
        } else {
            let max = all.iter().copied().fold(0.0, f64::max);
            let step = nice_step(max);
            (0.0, ((max / step).ceil() * step).max(step))
        };
        let sy = |v: f64| {
            let v = if panel.log_y {
                if v > 0.0 { v.log10() } else { lo }
            } else {
                v
            };
            bottom - (v - lo) / (hi - lo) * PANEL_H
        };
        let _ = writeln!(
            s,
            r##"<text x="{LEFT}" y="{}" font-size="12" font-weight="bold">{}</text><rect x="{LEFT}" y="{top}" width="{plot_w}" height="{PANEL_H}" fill="none" stroke="#888"/>"##,
            top - 8.0,
            esc(&panel.title)
        );
        // Y grid and labels.
        let ticks: Vec<f64> = if panel.log_y {
            (lo as i32..=hi as i32).map(|e| 10f64.powi(e)).collect()
        } else {
            let step = nice_step(hi);
            (0..=((hi / step).round() as usize))
                .map(|i| i as f64 * step)
                .collect()
        };
        for t in ticks {
            let y = sy(t);
            let _ = writeln!(
                s,
                r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                LEFT + plot_w,
                LEFT - 6.0,
                y + 4.0,
                fmt_num(t)
            );
        }
        // X labels.
        let xstep = nice_step(x_max);
        let mut x = 0.0;
        while x <= x_max + 1e-9 {
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                sx(x),
                bottom + 14.0,
                fmt_num(x)
            );
            x += xstep;
        }
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">s</text>"#,
            LEFT + plot_w,
            bottom + 28.0
        );
        for (mx, label) in markers {
            let x = sx(*mx);
            let _ = writeln!(
                s,
                r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{bottom}" stroke="#bbb" stroke-dasharray="3,3"/>"##
            );
            if pi == 0 {
                let _ = writeln!(
                    s,
                    r##"<text x="{:.1}" y="{:.1}" font-size="9" fill="#666">{}</text>"##,
                    x + 2.0,
                    top + 10.0,
                    esc(label)
                );
            }
        }
        for (si, se) in panel.series.iter().enumerate() {
            let color = COLORS[si % COLORS.len()];
            let pts: Vec<String> = se
                .points
                .iter()
                .filter(|(_, v)| v.is_finite() && (!panel.log_y || *v > 0.0))
                .map(|(x, v)| format!("{:.1},{:.1}", sx(*x), sy(*v)))
                .collect();
            if !pts.is_empty() {
                let dash = if se.dashed {
                    r#" stroke-dasharray="6,4""#
                } else {
                    ""
                };
                let _ = writeln!(
                    s,
                    r#"<polyline fill="none" stroke="{color}" stroke-width="1.6"{dash} points="{}"/>"#,
                    pts.join(" ")
                );
            }
            let ly = top + 14.0 + si as f64 * 16.0;
            let lx = LEFT + plot_w + 12.0;
            let _ = writeln!(
                s,
                r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="2"/><text x="{}" y="{}">{}</text>"#,
                lx + 18.0,
                lx + 22.0,
                ly + 4.0,
                esc(&se.name)
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

/// The plot of a report.
pub fn svg(r: &Report) -> String {
    let t: Vec<f64> = r.timeline.iter().map(|p| p.t_s).collect();
    let line = |name: &str, f: &dyn Fn(&TimePoint) -> f64, dashed: bool| Series {
        name: name.to_owned(),
        points: r.timeline.iter().map(|p| (p.t_s, f(p))).collect(),
        dashed,
    };
    let (what, sends) = match r.scenario.as_str() {
        "rpc" => ("acks", "requests"),
        "connect" => ("connects", "connect attempts"),
        _ => ("deliveries", "sends"),
    };
    let mut panels = vec![Panel {
        title: format!("{what}: latency from the scheduled time (ms, log scale), per second"),
        log_y: true,
        series: vec![
            line("p50", &|p| p.p50_ms, false),
            line("p99", &|p| p.p99_ms, false),
            line("p999", &|p| p.p999_ms, false),
            line("max", &|p| p.max_ms, true),
        ],
    }];
    panels.push(Panel {
        title: format!("{what} received per second"),
        log_y: false,
        series: vec![line(&format!("{what}/s"), &|p| p.received_per_s, false)],
    });
    panels.push(Panel {
        title: format!("{sends} per second: offered by the schedule, and actually made"),
        log_y: false,
        series: vec![
            line("offered", &|p| p.rate_per_s, true),
            line("made", &|p| p.sent_per_s, false),
        ],
    });
    if !r.processes.is_empty() {
        panels.push(Panel {
            title: "CPU of watched processes (cores)".to_owned(),
            log_y: false,
            series: r
                .processes
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    line(
                        &p.name,
                        &|tp: &TimePoint| tp.cpu_cores.get(i).copied().unwrap_or(0.0),
                        false,
                    )
                })
                .collect(),
        });
    }
    let x_max = t.iter().copied().fold(0.0, f64::max);
    let step_s = r
        .params
        .get("ramp_step_s")
        .and_then(serde_json::Value::as_f64)
        .unwrap_or(0.0);
    let markers: Vec<(f64, String)> = if r.steps.len() > 1 && step_s > 0.0 {
        r.steps
            .iter()
            .map(|s| (s.index as f64 * step_s, format!("{:.0}/s", s.rate_per_s)))
            .collect()
    } else {
        Vec::new()
    };
    let title = format!(
        "ioscale-loadtest {} {} ({})",
        r.scenario,
        if r.label.is_empty() { "" } else { &r.label },
        r.protocol
    );
    render(&title, &panels, x_max, &markers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_steps() {
        assert!((nice_step(100.0) - 20.0).abs() < 1e-9);
        assert!((nice_step(7.0) - 1.0).abs() < 1e-9);
        assert!((nice_step(0.0) - 1.0).abs() < 1e-9);
        assert_eq!(fmt_num(25_000.0), "25k");
        assert_eq!(fmt_num(0.5), "0.50");
    }

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
