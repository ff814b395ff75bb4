//! The SVG plot written next to a JSON report: latency percentiles over time, throughput, and
//! the watched processes' CPU, drawn by hand so the tool needs no plotting library.

use std::fmt::Write as _;

use super::{Report, TimePoint};

const WIDTH: f64 = 960.0;
const PANEL_H: f64 = 170.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 190.0;
const TOP: f64 = 50.0;
const GAP: f64 = 60.0;
const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf",
];

pub(crate) struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub dashed: bool,
}

pub(crate) struct Panel {
    pub title: String,
    pub log_y: bool,
    pub series: Vec<Series>,
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
pub(crate) fn render(
    title: &str,
    panels: &[Panel],
    x_max: f64,
    markers: &[(f64, String)],
) -> String {
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
}
