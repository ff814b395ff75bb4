//! `ioscale-loadtest`: a load generator for Socket.IO clusters that speaks Engine.IO v4 /
//! Socket.IO v5 itself (WebSocket and HTTP long-polling), so one process drives tens of
//! thousands of clients.
//!
//! Scenarios (`scenario::*`): `connect` (connection storm), `fanout` (room fan-out with an
//! open-loop publish schedule and exact loss/duplicate accounting), `rooms` (many small rooms
//! at random over the nodes: the cluster's cost against the ideal), `chat` (the chat demo) and
//! `rpc` (emit-with-ack round trips). Latency is measured from each message's *scheduled* send
//! time, so a server that falls behind cannot hide it by slowing the generator down.

pub mod client;
pub mod compare;
pub mod config;
pub mod probe;
pub mod progress;
pub mod protocol;
pub mod report;
pub mod scenario;
pub mod soak;
pub mod stats;
pub mod ws;

use anyhow::{Context as _, Result};

pub use config::{Command, Config};
pub use report::Report;

/// Raises the soft open-files limit to the hard limit: every client is a socket.
///
/// # Errors
/// If the limits cannot be read or set.
pub fn raise_fd_limit() -> Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).context("getrlimit(NOFILE)")?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).context("setrlimit(NOFILE)")?;
    }
    Ok(hard)
}

/// Runs one command; prints the summary and writes the report files.
///
/// # Errors
/// Setup failures (bad arguments, unreachable servers, no publisher connected).
pub async fn run(config: Config) -> Result<()> {
    let (report, path) = match config.command {
        Command::Connect(a) => {
            let path = a.common.report_json.clone();
            (scenario::connect::run(a).await?, path)
        }
        Command::Fanout(a) => {
            let path = a.common.report_json.clone();
            (scenario::fanout::run(a).await?, path)
        }
        Command::Rooms(a) => {
            let path = a.common.report_json.clone();
            (scenario::rooms::run(a).await?, path)
        }
        Command::Chat(a) => {
            let path = a.common.report_json.clone();
            (scenario::chat::run(a).await?, path)
        }
        Command::Rpc(a) => {
            let path = a.common.report_json.clone();
            (scenario::rpc::run(a).await?, path)
        }
        Command::Compare(a) => return compare::run(&a),
        Command::SoakWatch(a) => return soak::watch::run(&a).await,
        Command::SoakReport(a) => return soak::report(&a),
        Command::Plot { report } => {
            let svg = report.with_extension("svg");
            std::fs::write(&svg, report::svg(&Report::read(&report)?))
                .with_context(|| format!("writing {}", svg.display()))?;
            println!("{}", svg.display());
            return Ok(());
        }
        Command::FreePorts { count } => {
            // Bound all at once so the ports differ; the caller races others for them, which is
            // acceptable for a benchmark script on one machine.
            let listeners: Vec<std::net::TcpListener> = (0..count)
                .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
                .collect::<std::io::Result<_>>()
                .context("binding a free port")?;
            for l in &listeners {
                println!("{}", l.local_addr()?.port());
            }
            return Ok(());
        }
    };
    print!("{}", report.summary());
    if let Some(path) = path {
        let svg = report.write(&path)?;
        println!("report     {} (plot {})", path.display(), svg.display());
    }
    Ok(())
}
