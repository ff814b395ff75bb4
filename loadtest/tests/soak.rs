//! The soak's one-minute version (`loadtest/soak.sh`, the script a person runs for ten minutes
//! or hours): three real nodes behind a real nginx on a real Redis, the fan-out with every
//! subscriber recovering and the official socket.io-client's churn and CRUD, node 3 SIGKILLed
//! and restarted twice, subscribers' connections dropped three times, Redis SIGKILLed and
//! restarted once. The script's own verdict must pass (0 lost or duplicated, no wrong CRUD
//! answer, nothing unanswered on a live connection, every node back to its idle descriptors
//! and tasks once the clients left), and the test reads the verdict to check that every fault
//! happened and cut clients off, so a soak that injected nothing cannot pass.

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use ioscale_cluster_tests::{TestLogs, agent::ensure_node_modules, node::node_binary};

#[tokio::test]
async fn a_minute_of_mixed_load_under_faults_loses_nothing_and_leaves_nodes_as_idle() -> Result<()>
{
    let logs = TestLogs::for_current_test()?;
    // The script's own steps are bounded (a start, a hook, the drain); the whole is bounded
    // here: about two minutes when all is well.
    let body = async {
        ensure_node_modules().await?;
        let node = node_binary().await?;
        let script = ioscale_cluster_tests::logs::workspace_root().join("loadtest/soak.sh");
        let out_dir = logs.file("soak");
        let mut cmd = tokio::process::Command::new(&script);
        cmd.args([
            "--duration-s",
            "60",
            "--kill-every-s",
            "20",
            "--warmup-s",
            "20",
            // Debug builds on a shared machine: a light load, the faults as in the long run.
            "--rate-per-s",
            "50",
            "--subscribers",
            "60",
            "--room-size",
            "20",
            "--churners",
            "6",
            "--crud-clients",
            "2",
            "--interval-s",
            "2",
            // A minute is mostly warm-up (allocator pools, the first sessions and histories);
            // the 5 % bound holds for the ten-minute run in README.
            "--max-rss-growth-pct",
            "50",
        ])
        .arg("--out")
        .arg(&out_dir)
        .arg("--node-bin")
        .arg(&node)
        .arg("--loadtest-bin")
        .arg(env!("CARGO_BIN_EXE_ioscale-loadtest"))
        .kill_on_drop(true);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("IOSCALE_") {
                cmd.env_remove(k);
            }
        }
        let run = cmd.output().await.context("running loadtest/soak.sh")?;
        std::fs::write(logs.file("soak.stdout.log"), &run.stdout)?;
        std::fs::write(logs.file("soak.stderr.log"), &run.stderr)?;
        ensure!(
            run.status.success(),
            "soak.sh failed ({}); its files are in {}:\n{}\n{}",
            run.status,
            out_dir.display(),
            String::from_utf8_lossy(&run.stdout),
            String::from_utf8_lossy(&run.stderr)
        );
        let fanout = ioscale_loadtest::Report::read(&out_dir.join("fanout.json"))?;
        let faults = fanout.faults.context("the fan-out report has no faults")?;
        let kinds: Vec<&str> = faults.events.iter().map(|e| e.kind.as_str()).collect();
        ensure!(
            kinds.iter().filter(|k| **k == "kill-node").count() == 2
                && kinds.iter().filter(|k| **k == "drop-clients").count() == 3
                && kinds.contains(&"restart-redis"),
            "faults injected: {kinds:?}"
        );
        ensure!(
            faults.events.iter().all(|e| e.ok && e.affected > 0),
            "every fault must happen and reach subscribers: {:?}",
            faults.events
        );
        ensure!(
            faults.reconnects.recovered > 0
                && faults.reconnects.recovered == faults.reconnects.reconnected,
            "every reconnection must recover its session: {:?}",
            faults.reconnects
        );
        let verdict: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out_dir.join("soak.json"))?)?;
        let processes: Vec<u64> = verdict["nodes"]
            .as_array()
            .context("no nodes in the verdict")?
            .iter()
            .filter_map(|n| n["processes"].as_u64())
            .collect();
        ensure!(
            processes == [1, 1, 3],
            "nodes 1 and 2 run through, node 3 restarted twice: {processes:?}"
        );
        Ok(())
    };
    match tokio::time::timeout(Duration::from_secs(400), body).await {
        Ok(r) => r,
        Err(_) => anyhow::bail!("the soak did not finish within 400 s"),
    }
}
