//! `soak-watch`: samples every node's `/metrics` at a fixed interval (resident memory, open
//! descriptors, live tasks, sockets, connections, start time) into a JSON-lines file, one line
//! per node and sample, written as it goes so a run cut short keeps what it had.

use std::io::Write as _;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use serde::{Deserialize, Serialize};

use super::SoakWatchArgs;
use crate::probe::sample_sum;

/// One node at one instant. `up: false` (the other figures 0) when its `/metrics` did not
/// answer: the node was dead or restarting.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Wall-clock time, seconds since the Unix epoch (the soak script's events use the same).
    pub unix_s: f64,
    pub node: String,
    pub up: bool,
    pub rss_bytes: f64,
    pub fds: f64,
    pub tasks: f64,
    /// Sockets connected, every namespace (`ioscale_connections_active`).
    pub sockets: f64,
    /// TCP connections of the public listener (`ioscale_http_connections_open`).
    pub connections: f64,
    /// When this node process started (`ioscale_process_start_time_seconds`): a new value is
    /// a new process.
    pub started_unix_s: f64,
    /// Bytes allocated and not freed, as the node's allocator counts them
    /// (`ioscale_process_heap_bytes`; 0 when it does not say).
    #[serde(default)]
    pub heap_bytes: f64,
}

/// The figures of one `/metrics` text.
///
/// # Errors
/// The text lacks the process gauges (not an ioscale node, or a build before them).
pub fn parse(text: &str, node: &str, unix_s: f64) -> Result<Sample> {
    let need = |name: &str| {
        sample_sum(text, name, None).with_context(|| format!("{node}: no {name} in its /metrics"))
    };
    Ok(Sample {
        unix_s,
        node: node.to_owned(),
        up: true,
        rss_bytes: need("ioscale_process_resident_memory_bytes")?,
        fds: need("ioscale_process_open_fds")?,
        tasks: need("ioscale_runtime_tasks_alive")?,
        // Gauge vectors show no sample before their first use: none means 0.
        sockets: sample_sum(text, "ioscale_connections_active", None).unwrap_or(0.0),
        connections: sample_sum(text, "ioscale_http_connections_open", None).unwrap_or(0.0),
        started_unix_s: need("ioscale_process_start_time_seconds")?,
        heap_bytes: sample_sum(text, "ioscale_process_heap_bytes", None).unwrap_or(0.0),
    })
}

fn now_unix_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// `name=url` pairs.
fn nodes(specs: &[String]) -> Result<Vec<(String, String)>> {
    specs
        .iter()
        .map(|s| {
            s.split_once('=')
                .map(|(n, u)| (n.to_owned(), u.to_owned()))
                .with_context(|| format!("--nodes entry `{s}` is not name=url"))
        })
        .collect()
}

/// Samples until `--duration-s` has passed, or until SIGTERM or SIGINT.
///
/// # Errors
/// Bad arguments, the output file, or a node whose first answer lacks the process gauges.
pub async fn run(args: &SoakWatchArgs) -> Result<()> {
    let nodes = nodes(&args.nodes)?;
    ensure!(!nodes.is_empty(), "--nodes is empty");
    ensure!(
        args.interval_s.is_finite() && args.interval_s >= 0.1,
        "--interval-s must be at least 0.1"
    );
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let mut out = std::fs::File::create(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let deadline = args
        .duration_s
        .map(|s| tokio::time::Instant::now() + Duration::from_secs_f64(s));
    let mut tick = tokio::time::interval(Duration::from_secs_f64(args.interval_s));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut first = true;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            break;
        }
        let scrapes = nodes.iter().map(|(name, url)| scrape(&http, name, url));
        for result in futures_util::future::join_all(scrapes).await {
            let sample = match result {
                Ok(s) => s,
                // A node that never answered properly is a mistake in the command line, not a
                // fault of the run.
                Err(e) if first => return Err(e),
                Err(_) => continue,
            };
            serde_json::to_writer(&mut out, &sample)?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
        first = false;
    }
    Ok(())
}

/// One node's sample; a node that does not answer is `up: false`, which is an error only
/// for the caller's first round.
async fn scrape(http: &reqwest::Client, name: &str, url: &str) -> Result<Sample> {
    let unix_s = now_unix_s();
    let answer = async { http.get(url).send().await?.error_for_status()?.text().await };
    match answer.await {
        Ok(text) => parse(&text, name, unix_s),
        Err(e) => {
            // A down node is expected in a soak (it is killed on purpose): one short line.
            eprintln!("soak-watch: {name} did not answer ({e})");
            Ok(Sample {
                unix_s,
                node: name.to_owned(),
                up: false,
                ..Sample::default()
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_metrics_text_gives_its_sample() {
        let text = "\
# HELP ioscale_process_resident_memory_bytes x
ioscale_process_resident_memory_bytes 52428800
ioscale_process_open_fds 40
ioscale_runtime_tasks_alive 120
ioscale_connections_active{namespace=\"/\",transport=\"websocket\"} 3
ioscale_connections_active{namespace=\"/pubsub\",transport=\"polling\"} 2
ioscale_http_connections_open 6
ioscale_process_start_time_seconds 1700000000
";
        let s = parse(text, "node1", 5.0).unwrap();
        assert_eq!(
            (s.rss_bytes, s.fds, s.tasks, s.sockets, s.connections),
            (52_428_800.0, 40.0, 120.0, 5.0, 6.0)
        );
        assert!(s.up && s.started_unix_s == 1.7e9);
        let old = text.replace("ioscale_runtime_tasks_alive 120\n", "");
        let e = parse(&old, "node1", 5.0).unwrap_err().to_string();
        assert!(e.contains("ioscale_runtime_tasks_alive"), "{e}");
        assert!(nodes(&["a=http://x".into(), "b".into()]).is_err());
    }
}
