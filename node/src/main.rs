//! `ioscale-node`: parse the config, start telemetry, bind, and run until SIGTERM or Ctrl-C.

use anyhow::Context;
use clap::Parser;
use ioscale_node::{config::Config, shutdown, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let telemetry = telemetry::init(config.log_format);
    config.validate().context("invalid configuration")?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let result = ioscale_node::run(config, listener, shutdown::signal()).await;
    telemetry.shutdown();
    result
}
