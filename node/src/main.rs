//! `ioscale-node`: parse the config, start the runtime and telemetry, bind, and run the core
//! with the seed applications until SIGTERM or Ctrl-C.

use anyhow::Context;
use clap::Parser;
use ioscale_node::{
    NodeCommand, NodeConfig, application::Application, config::Config, edge, server, shutdown,
    telemetry, token,
};

/// jemalloc, whose unused pages go back to the system within seconds (glibc's allocator kept
/// what every peak of connections and replays took: a 10-minute soak grew 10 %).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> anyhow::Result<()> {
    let config = NodeConfig::parse();
    if let Some(NodeCommand::Token(args)) = &config.command {
        println!("{}", token::mint(args).context("minting a token")?);
        return Ok(());
    }
    // Before the runtime, which is sized by the configuration.
    let applications = config.applications().context("invalid configuration")?;
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    // Without the flag tokio picks one thread per usable core (or `TOKIO_WORKER_THREADS`).
    if let Some(n) = config.core.worker_threads {
        runtime.worker_threads(n);
    }
    runtime
        .build()
        .context("starting the tokio runtime")?
        .block_on(run(config.core, applications))
}

async fn run(config: Config, applications: Vec<Box<dyn Application>>) -> anyhow::Result<()> {
    let telemetry = telemetry::init(config.log_format);
    let listener = edge::connections::bind(config.listen, config.listen_backlog_connections)
        .with_context(|| format!("binding {}", config.listen))?;
    let result = server::run(config, applications, listener, shutdown::signal()).await;
    telemetry.shutdown();
    result
}
