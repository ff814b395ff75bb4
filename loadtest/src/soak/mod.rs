//! The soak (`loadtest/soak.sh` runs it): hours of mixed load under faults, and whether the
//! nodes stay flat. `soak-watch` samples every node's process figures over the run;
//! `soak-report` judges the samples with the fan-out's and the side workload's reports and
//! writes the page, the plot and the verdict.

pub mod render;
pub mod side;
pub mod verdict;
pub mod watch;

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use clap::Args;

use crate::report::Report;

/// `soak-watch`
#[derive(Debug, Clone, Args)]
pub struct SoakWatchArgs {
    /// The nodes' `/metrics` URLs as `name=url`, comma-separated.
    #[arg(
        long,
        env = "IOSCALE_LOADTEST_SOAK_NODES",
        value_delimiter = ',',
        required = true
    )]
    pub nodes: Vec<String>,
    /// Time between samples.
    #[arg(long, env = "IOSCALE_LOADTEST_SOAK_INTERVAL_S", default_value_t = 2.0)]
    pub interval_s: f64,
    /// Stop after this long (default: at SIGTERM or SIGINT).
    #[arg(long, env = "IOSCALE_LOADTEST_SOAK_DURATION_S")]
    pub duration_s: Option<f64>,
    /// The JSON-lines file of samples.
    #[arg(long, env = "IOSCALE_LOADTEST_SOAK_SAMPLES")]
    pub out: PathBuf,
}

/// `soak-report`
#[derive(Debug, Clone, Args)]
pub struct SoakReportArgs {
    /// `soak-watch`'s samples.
    #[arg(long, env = "IOSCALE_LOADTEST_SOAK_SAMPLES")]
    pub samples: PathBuf,
    /// The soak's events, one per line: `<unix seconds> <what>`, with `load-start` and
    /// `load-end` among them.
    #[arg(long, env = "IOSCALE_LOADTEST_SOAK_EVENTS")]
    pub events: PathBuf,
    /// The fan-out's JSON report.
    #[arg(long, env = "IOSCALE_LOADTEST_SOAK_FANOUT")]
    pub fanout: PathBuf,
    /// The side workload's JSON report (`tests/js/soak-side.mjs`).
    #[arg(long, env = "IOSCALE_LOADTEST_SOAK_SIDE")]
    pub side: PathBuf,
    /// Seconds after the load starts not judged for growth.
    #[arg(long, env = "IOSCALE_LOADTEST_SOAK_WARMUP_S", default_value_t = 120.0)]
    pub warmup_s: f64,
    /// Largest growth of a node's resident memory between early and late in the judged load.
    #[arg(
        long,
        env = "IOSCALE_LOADTEST_SOAK_MAX_RSS_GROWTH_PCT",
        default_value_t = 5.0
    )]
    pub max_rss_growth_pct: f64,
    /// Descriptors a node may hold beyond its idle count once the clients left.
    #[arg(long, env = "IOSCALE_LOADTEST_SOAK_FD_SLACK", default_value_t = 2.0)]
    pub fd_slack: f64,
    /// Tasks a node may run beyond its idle count once the clients left.
    #[arg(long, env = "IOSCALE_LOADTEST_SOAK_TASK_SLACK", default_value_t = 2.0)]
    pub task_slack: f64,
    /// Where the page (`.md`), the plot (`.svg`) and the verdict (`.json`) go: this path with
    /// each extension.
    #[arg(long, env = "IOSCALE_LOADTEST_SOAK_OUT")]
    pub out: PathBuf,
}

fn read_samples(path: &Path) -> Result<Vec<watch::Sample>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut samples: Vec<watch::Sample> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).with_context(|| format!("{} line {}", path.display(), i + 1))
        })
        .collect::<Result<_>>()?;
    samples.sort_by(|a, b| a.unix_s.total_cmp(&b.unix_s));
    Ok(samples)
}

fn read_events(path: &Path) -> Result<Vec<(f64, String)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut events = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let (t, what) = line.split_once(' ').unwrap_or((line, ""));
        let t: f64 = t
            .parse()
            .with_context(|| format!("{} line {}: no time", path.display(), i + 1))?;
        events.push((t, what.trim().to_owned()));
    }
    events.sort_by(|a, b| a.0.total_cmp(&b.0));
    Ok(events)
}

/// Writes the page, the plot and the verdict; fails when the soak did.
///
/// # Errors
/// Unreadable inputs, or a failed criterion (after the files are written).
pub fn report(args: &SoakReportArgs) -> Result<()> {
    let samples = read_samples(&args.samples)?;
    let events = read_events(&args.events)?;
    let fanout = Report::read(&args.fanout)?;
    // A side workload that wrote nothing is judged as missing, not a reason to stop here.
    let side: Option<side::SideReport> = std::fs::read_to_string(&args.side)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let bounds = verdict::Bounds {
        warmup_s: args.warmup_s,
        max_rss_growth_pct: args.max_rss_growth_pct,
        fd_slack: args.fd_slack,
        task_slack: args.task_slack,
    };
    let v = verdict::judge(&samples, &events, &fanout, side.as_ref(), &bounds);
    let page = render::markdown(&v, &samples, &events, &fanout, side.as_ref());
    let title = format!("soak: {:.0} s of load", v.load_s);
    let write = |ext: &str, body: &str| {
        let p = args.out.with_extension(ext);
        std::fs::write(&p, body).with_context(|| format!("writing {}", p.display()))
    };
    write("md", &page)?;
    write("svg", &render::svg(&samples, &events, &title))?;
    write("json", &serde_json::to_string_pretty(&v)?)?;
    print!("{page}");
    if !v.passed {
        bail!("the soak failed: {}", v.failures.join("; "));
    }
    Ok(())
}
