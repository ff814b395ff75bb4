//! `compose.yaml` on a real Docker engine: runs `deploy/e2e/compose-e2e.sh`
//! (private dockerd, image builds, `docker compose up --wait`, 90 socket.io
//! clients through the load balancer, Prometheus, a drained node, teardown).
//!
//! It needs root and takes about 15 minutes from a cold machine (most of it the
//! release build inside the image), so it only runs with
//! `IOSCALE_COMPOSE_E2E=1`; otherwise it says so and passes.

use std::time::Duration;

use anyhow::Result;
use ioscale_cluster_tests::TestLogs;
use ioscale_cluster_tests::extra::with_timeout_of;
use ioscale_cluster_tests::logs::workspace_root;
use ioscale_cluster_tests::tools::{self, deploy_dir, expect_success};

/// Below the 30 minutes .config/nextest.toml allows this binary.
const LIMIT: Duration = Duration::from_secs(28 * 60);

#[tokio::test]
async fn compose_stack_end_to_end() -> Result<()> {
    if std::env::var("IOSCALE_COMPOSE_E2E").as_deref() != Ok("1") {
        eprintln!("skipped: set IOSCALE_COMPOSE_E2E=1 to run deploy/e2e/compose-e2e.sh");
        return Ok(());
    }
    with_timeout_of(LIMIT, async {
        let logs = TestLogs::for_current_test()?;
        let log = logs.file("compose-e2e.log");
        let script = deploy_dir().join("e2e").join("compose-e2e.sh");
        // The engine's data, images and the Debian rootfs stay in target/compose-e2e
        // (or E2E_ROOT) between runs, so a second run only rebuilds what changed.
        let out = tools::run(
            std::path::Path::new("bash"),
            &[&script.to_string_lossy()],
            &workspace_root(),
            &[],
            LIMIT - Duration::from_secs(30),
            Some(&log),
        )
        .await?;
        expect_success("deploy/e2e/compose-e2e.sh", &out, &log)
    })
    .await
}
