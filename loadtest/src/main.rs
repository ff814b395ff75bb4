//! `ioscale-loadtest` binary: parses the command line and runs the scenario (see the library).

use anyhow::Context as _;
use clap::Parser as _;

fn main() -> anyhow::Result<()> {
    let config = ioscale_loadtest::Config::parse();
    if let Err(e) = ioscale_loadtest::raise_fd_limit() {
        eprintln!("warning: could not raise the open-files limit: {e:#}");
    }
    let mut rt = match config.threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(0) => anyhow::bail!("--threads must be at least 1"),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    let rt = rt
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(ioscale_loadtest::run(config))
}
