//! `ioscale-node`: parse the config, start the runtime and telemetry, bind, and run until
//! SIGTERM or Ctrl-C.

use anyhow::Context;
use clap::Parser;
use ioscale_node::{config::Config, shutdown, telemetry};

fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    // Before the runtime, which is sized by the configuration.
    config.validate().context("invalid configuration")?;
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    // Without the flag tokio picks one thread per usable core (or `TOKIO_WORKER_THREADS`).
    if let Some(n) = config.worker_threads {
        runtime.worker_threads(n);
    }
    runtime
        .build()
        .context("starting the tokio runtime")?
        .block_on(run(config))
}

async fn run(config: Config) -> anyhow::Result<()> {
    let telemetry = telemetry::init(config.log_format);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let result = ioscale_node::run(config, listener, shutdown::signal()).await;
    telemetry.shutdown();
    result
}
