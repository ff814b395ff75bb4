//! Redis dies (SIGKILL) under a running 3-node cluster and comes back on the
//! same port: readiness follows Redis, local delivery never stops, and the
//! cluster heals by itself (subscriptions restored, no node restarted). Nodes started while
//! Redis is down start not ready and join when it comes up.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use ioscale_cluster_tests::extra::{metric_all, readyz_full, wait_until, with_timeout_of};
use ioscale_cluster_tests::fixture::{pubsub_crosses, wait_ready};
use ioscale_cluster_tests::{
    Agent, Client, Cluster, Emit, NodeOpts, NodeProc, RedisServer, TestLogs, Transport,
    connect_spread, expect_delivery, with_timeout,
};
use serde_json::json;

const RECONNECTS: &str = "ioscale_adapter_redis_reconnects_total";

/// Polls `/readyz` of every node until each answers `want`; returns, per node,
/// how long after `since` it first did. Fails after `limit`.
async fn wait_ready_state(
    cluster: &Cluster,
    want: u16,
    since: Instant,
    limit: Duration,
) -> Result<Vec<Duration>> {
    let n = cluster.nodes().len();
    let mut reached: Vec<Option<Duration>> = vec![None; n];
    let deadline = since + limit;
    loop {
        for (i, slot) in reached.iter_mut().enumerate() {
            if slot.is_none()
                && let Ok(s) = cluster.api(i).readyz().await
                && s == want
            {
                *slot = Some(since.elapsed());
            }
        }
        if reached.iter().all(Option::is_some) {
            return Ok(reached.into_iter().flatten().collect());
        }
        ensure!(
            Instant::now() < deadline,
            "/readyz did not become {want} on every node within {limit:?}: {reached:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn cluster_survives_a_redis_restart_without_restarting_nodes() -> Result<()> {
    with_timeout(async {
        let mut cluster = Cluster::builder().heartbeat_ms(500).start().await?;
        let agent = Agent::spawn().await?;
        // Two clients per node.
        let clients = connect_spread(&cluster, &agent, Transport::Websocket, "/", "c", 6).await?;
        let all: Vec<&Client> = clients.iter().collect();
        let on_a: Vec<&Client> = clients.iter().filter(|c| c.node == 0).collect();

        // Positive control: the cluster works before the outage.
        cluster
            .api(0)
            .emit(&Emit::new("before", vec![json!(1)]))
            .await?;
        expect_delivery(&agent, &clients, &all, "before", Some(&[json!(1)])).await?;
        for i in 0..3 {
            let (status, body) = readyz_full(&cluster.api(i)).await?;
            ensure!(
                status == 200 && body["redis"] == "up" && body["ready"] == true,
                "node {i} not ready before the outage: {status} {body}"
            );
        }
        let reconnects_before = metric_all(&cluster, RECONNECTS, &[]).await?;

        // --- Redis dies.
        cluster.redis_mut().standalone().kill();
        let killed_at = Instant::now();
        let times = wait_ready_state(&cluster, 503, killed_at, Duration::from_secs(5)).await?;
        eprintln!("/readyz turned 503 after {times:?}");
        for i in 0..3 {
            let (status, body) = readyz_full(&cluster.api(i)).await?;
            ensure!(
                status == 503 && body["redis"] == "down" && body["ready"] == false,
                "node {i} while Redis is down: {status} {body}"
            );
            ensure!(
                cluster.api(i).healthz().await? == 200,
                "node {i}: /healthz must stay 200 (the process is alive) while Redis is down"
            );
        }

        // Local delivery goes on: an emit through A reaches A's own clients,
        // promptly (a dead Redis must not hold up the local part).
        let (took, r) = ioscale_cluster_tests::extra::timed(
            cluster
                .api(0)
                .emit(&Emit::new("during", vec![json!("local")])),
        )
        .await;
        r?;
        ensure!(
            took < Duration::from_secs(2),
            "emit through A took {took:?} while Redis was down"
        );
        for c in &on_a {
            let got = agent
                .wait_count(&c.name, "during", 1, Duration::from_secs(5))
                .await?;
            ensure!(got.len() == 1, "{} got {got:?}", c.name);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        for c in &on_a {
            let got = agent.events(&c.name, "during").await?;
            ensure!(
                got == vec![vec![json!("local")]],
                "A's client {} must get the emit exactly once while Redis is down, got {got:?}",
                c.name
            );
        }

        // --- Redis comes back on the same port (empty: persistence is off).
        cluster.redis_mut().standalone().restart().await?;
        let restarted_at = Instant::now();
        let times = wait_ready_state(&cluster, 200, restarted_at, Duration::from_secs(15)).await?;
        eprintln!("/readyz back to 200 after {times:?}");

        // Cross-node delivery resumes by itself: probe until one broadcast from
        // A reaches every client on B and C (subscriptions restored, and A
        // knows B and C are alive again).
        let remote: Vec<&Client> = clients.iter().filter(|c| c.node != 0).collect();
        let mut attempt = 0u32;
        let resumed_after = wait_until(
            Duration::from_secs(15),
            Duration::from_millis(500),
            "a broadcast from A to reach every client of B and C after the Redis restart",
            || {
                attempt += 1;
                let probe = attempt;
                let agent = &agent;
                let cluster = &cluster;
                let remote = &remote;
                async move {
                    cluster
                        .api(0)
                        .emit(&Emit::new("probe", vec![json!(probe)]))
                        .await?;
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    for c in remote {
                        let got = agent.events(&c.name, "probe").await?;
                        if !got.contains(&vec![json!(probe)]) {
                            return Ok(None);
                        }
                    }
                    Ok(Some(restarted_at.elapsed()))
                }
            },
        )
        .await?;
        eprintln!(
            "cross-node delivery resumed {resumed_after:?} after the restart ({attempt} probes)"
        );

        // A fresh message reaches every client exactly once.
        cluster
            .api(0)
            .emit(&Emit::new("after", vec![json!({"fresh": true})]))
            .await?;
        expect_delivery(
            &agent,
            &clients,
            &all,
            "after",
            Some(&[json!({"fresh": true})]),
        )
        .await?;
        // And the other direction: from C to everyone.
        cluster
            .api(2)
            .emit(&Emit::new("after-c", vec![json!(3)]))
            .await?;
        expect_delivery(&agent, &clients, &all, "after-c", Some(&[json!(3)])).await?;

        // Membership healed too, and no client was ever disconnected.
        cluster.wait_nodes_visible(3).await?;
        for c in &clients {
            let st = agent.state(&c.name).await?;
            ensure!(
                st.connected && st.disconnect_reasons.is_empty(),
                "client {} was disturbed by the Redis outage: {st:?}",
                c.name
            );
        }

        let reconnects_after = metric_all(&cluster, RECONNECTS, &[]).await?;
        for i in 0..3 {
            ensure!(
                reconnects_after[i] > reconnects_before[i],
                "node {i}: {RECONNECTS} did not increase ({} -> {})",
                reconnects_before[i],
                reconnects_after[i]
            );
        }
        Ok(())
    })
    .await
}

#[tokio::test]
async fn nodes_started_while_redis_is_down_become_ready_when_it_comes_up() -> Result<()> {
    with_timeout_of(Duration::from_secs(90), async {
        let logs = TestLogs::for_current_test()?;
        let mut redis = RedisServer::start_with(&logs, &[]).await?;
        redis.kill();
        let opts = |name: &str| {
            NodeOpts::new(name)
                .with_redis(redis.url())
                .with_api_key("k")
                .with_args(["--redis-connect-wait-ms", "500"])
        };
        let mut a = NodeProc::start_in(&logs, opts("early-a")).await?;
        let mut b = NodeProc::start_in(&logs, opts("early-b")).await?;
        // Past the Redis command timeout (3 s), which used to end such a start.
        tokio::time::sleep(Duration::from_secs(5)).await;
        for node in [&mut a, &mut b] {
            ensure!(
                node.is_running(),
                "{} exited:\n{}",
                node.node_id(),
                node.log()
            );
            let status = node.api().readyz().await?;
            ensure!(
                status == 503,
                "{} ready without redis: {status}",
                node.node_id()
            );
        }
        redis.restart().await?;
        for node in [&a, &b] {
            wait_ready(node, Duration::from_secs(15)).await?;
        }
        // Their subscriptions were made on connection: a publish crosses nodes.
        let agent = Agent::spawn_in(&logs).await?;
        pubsub_crosses(&agent, &a.url(), &b.url(), json!(7)).await?;
        Ok(())
    })
    .await
}
