//! `ioscale-loadtest` binary: parses the command line and runs the scenario (see the library).

use anyhow::Context as _;
use clap::Parser as _;

fn main() -> anyhow::Result<()> {
    let config = ioscale_loadtest::Config::parse();
    if let Err(e) = ioscale_loadtest::raise_fd_limit() {
        eprintln!("warning: could not raise the open-files limit: {e:#}");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(ioscale_loadtest::run(config))
}
