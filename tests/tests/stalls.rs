//! Network stalls: a process stops answering for 10 s while its sockets stay open (SIGSTOP),
//! then resumes (SIGCONT).
//!
//! - Redis stalls: every node notices within its Redis timeout (`--redis-timeout-ms`, plus one
//!   probe interval), turns not ready, keeps delivering to its own clients, and after SIGCONT
//!   turns ready again and delivers across nodes, with no node restarted.
//! - One node stalls: its peers stop waiting for it within two heartbeats (requests answer
//!   promptly with what the live nodes have; it leaves their node lists) and take it back when
//!   it resumes (listed again, its clients get broadcasts, its broadcasts reach the others).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use ioscale_cluster_tests::extra::{
    Checks, metric_all, readyz_full, timed, wait_until, with_timeout_of,
};
use ioscale_cluster_tests::failover::{Probe, wait_delivery, wait_ready_state};
use ioscale_cluster_tests::http::{Method, REQUEST_TIMEOUT};
use ioscale_cluster_tests::{
    Agent, Client, Cluster, Emit, Transport, connect_spread, expect_delivery,
};
use serde_json::json;

/// How long each stall lasts.
const STALL: Duration = Duration::from_secs(10);
/// The nodes' `--redis-timeout-ms` in the Redis stall test.
const REDIS_TIMEOUT: Duration = Duration::from_millis(1_500);
/// The nodes' heartbeat interval; a node silent for two is dead.
const HEARTBEAT: Duration = Duration::from_millis(500);
/// Scheduling slack on a shared 2-core machine, added to every bound.
const SLACK: Duration = Duration::from_millis(1_500);

#[tokio::test]
async fn a_stalled_redis_is_noticed_within_the_timeout_and_everything_resumes() -> Result<()> {
    with_timeout_of(Duration::from_secs(90), async {
        let cluster = Cluster::builder()
            .nodes(2)
            .heartbeat_ms(HEARTBEAT.as_millis() as u64)
            .node_args([
                "--redis-timeout-ms".to_owned(),
                REDIS_TIMEOUT.as_millis().to_string(),
            ])
            .start()
            .await?;
        let agent = Agent::spawn().await?;
        let clients = connect_spread(&cluster, &agent, Transport::Websocket, "/", "c", 4).await?;
        let all: Vec<&Client> = clients.iter().collect();
        cluster
            .api(0)
            .emit(&Emit::new("before", vec![json!(1)]))
            .await?;
        expect_delivery(&agent, &clients, &all, "before", Some(&[json!(1)])).await?;

        let mut cluster = cluster;
        let redis = cluster.redis_mut().standalone();
        redis.sigstop()?;
        let stopped_at = Instant::now();
        // Everything runs in a block so Redis is continued even when a check fails.
        let stalled = during_redis_stall(&cluster, &agent, &clients, stopped_at).await;
        let remaining = STALL.saturating_sub(stopped_at.elapsed());
        tokio::time::sleep(remaining).await;
        cluster.redis_mut().standalone().sigcont()?;
        let resumed_at = Instant::now();
        stalled?;
        eprintln!("redis continued after {:?}", stopped_at.elapsed());

        let ready =
            wait_ready_state(&cluster, &[0, 1], 200, resumed_at, Duration::from_secs(10)).await?;
        eprintln!("/readyz back to 200 after SIGCONT: {ready:?}");
        for (via, to) in [(0, 1), (1, 0)] {
            let remote: Vec<&Client> = clients.iter().filter(|c| c.node == to).collect();
            let event = format!("probe-{via}");
            let probe = Probe {
                via,
                to: &remote,
                rooms: &[],
                event: &event,
            };
            let r =
                wait_delivery(&cluster, &agent, probe, resumed_at, Duration::from_secs(10)).await?;
            eprintln!(
                "delivery from node {via} to node {to} resumed {:?} after SIGCONT ({} probes)",
                r.seen, r.probes
            );
        }
        cluster.wait_nodes_visible(2).await?;
        cluster
            .api(1)
            .emit(&Emit::new("after", vec![json!(2)]))
            .await?;
        expect_delivery(&agent, &clients, &all, "after", Some(&[json!(2)])).await?;
        let stalls = metric_all(&cluster, "ioscale_adapter_redis_stalls_total", &[]).await?;
        ensure!(
            stalls.iter().all(|n| *n >= 1.0),
            "every node must count the stall: {stalls:?}"
        );
        for c in &clients {
            let st = agent.state(&c.name).await?;
            ensure!(
                st.connected && st.disconnect_reasons.is_empty(),
                "{} was disturbed by the Redis stall: {st:?}",
                c.name
            );
        }
        Ok(())
    })
    .await
}

/// While Redis is stopped: both nodes turn not ready within the timeout, stay alive, and
/// deliver to their own clients promptly.
async fn during_redis_stall(
    cluster: &Cluster,
    agent: &Agent,
    clients: &[Client],
    stopped_at: Instant,
) -> Result<()> {
    // The probe pings every third of the timeout: noticed within 4/3 of it.
    let bound = REDIS_TIMEOUT + REDIS_TIMEOUT / 3 + SLACK;
    let times = wait_ready_state(cluster, &[0, 1], 503, stopped_at, bound).await?;
    eprintln!("/readyz turned 503 after {times:?} (timeout {REDIS_TIMEOUT:?})");
    for i in 0..2 {
        let (status, body) = readyz_full(&cluster.api(i)).await?;
        ensure!(
            status == 503 && body["redis"] == "down",
            "node {i} while Redis is stopped: {status} {body}"
        );
        ensure!(
            cluster.api(i).healthz().await? == 200,
            "node {i}: /healthz must stay 200"
        );
    }
    for node in 0..2 {
        let event = format!("during-{node}");
        let (took, r) = timed(
            cluster
                .api(node)
                .emit(&Emit::new(event.as_str(), vec![json!(node)])),
        )
        .await;
        r?;
        ensure!(
            took < Duration::from_secs(2),
            "emit through node {node} took {took:?} while Redis was stopped"
        );
        for c in clients.iter().filter(|c| c.node == node) {
            let got = agent
                .wait_count(&c.name, &event, 1, Duration::from_secs(3))
                .await?;
            ensure!(got == [vec![json!(node)]], "{}: {got:?}", c.name);
        }
    }
    Ok(())
}

#[tokio::test]
async fn a_stalled_node_is_skipped_within_two_heartbeats_and_taken_back() -> Result<()> {
    with_timeout_of(Duration::from_secs(90), async {
        let mut checks = Checks::new();
        let cluster = Cluster::builder()
            .heartbeat_ms(HEARTBEAT.as_millis() as u64)
            .start()
            .await?;
        let agent = Agent::spawn().await?;
        let clients = connect_spread(&cluster, &agent, Transport::Websocket, "/", "c", 6).await?;
        let ids = cluster.node_ids();
        let live: BTreeSet<String> = clients
            .iter()
            .filter(|c| c.node != 2)
            .map(|c| c.id.clone())
            .collect();

        cluster.node(2).sigstop()?;
        let stopped_at = Instant::now();
        let stalled = during_node_stall(&cluster, &mut checks, &ids, &live, stopped_at).await;
        tokio::time::sleep(STALL.saturating_sub(stopped_at.elapsed())).await;
        cluster.node(2).sigcont()?;
        let resumed_at = Instant::now();
        stalled?;

        // Taken back: listed again by every node, its clients get broadcasts from A, and
        // its own broadcasts reach the clients of A and B.
        let back = wait_until(
            Duration::from_secs(10),
            Duration::from_millis(50),
            "every node to list node-c again",
            || async {
                for i in 0..3 {
                    if cluster.api(i).nodes().await?.len() != 3 {
                        return Ok(None);
                    }
                }
                Ok(Some(resumed_at.elapsed()))
            },
        )
        .await?;
        eprintln!("{} listed by every node {back:?} after SIGCONT", ids[2]);
        let on_c: Vec<&Client> = clients.iter().filter(|c| c.node == 2).collect();
        let not_c: Vec<&Client> = clients.iter().filter(|c| c.node != 2).collect();
        let limit = Duration::from_secs(10);
        let probe = Probe {
            via: 0,
            to: &on_c,
            rooms: &[],
            event: "to-c",
        };
        let r = wait_delivery(&cluster, &agent, probe, resumed_at, limit).await?;
        eprintln!(
            "broadcasts from A reach C's clients {:?} after SIGCONT",
            r.seen
        );
        let probe = Probe {
            via: 2,
            to: &not_c,
            rooms: &[],
            event: "from-c",
        };
        let r = wait_delivery(&cluster, &agent, probe, resumed_at, limit).await?;
        eprintln!(
            "broadcasts from C reach A's and B's clients {:?} after SIGCONT",
            r.seen
        );
        let all: BTreeSet<String> = clients.iter().map(|c| c.id.clone()).collect();
        let sockets = cluster.api(0).sockets("/", &[]).await?;
        let got: BTreeSet<String> = sockets.into_iter().map(|s| s.id).collect();
        checks.check(got == all, || {
            format!("fetchSockets through A after C resumed: {got:?}, want {all:?}")
        });
        for c in &clients {
            let st = agent.state(&c.name).await?;
            checks.check(st.connected && st.disconnect_reasons.is_empty(), || {
                format!("{} was disturbed by the stall: {st:?}", c.name)
            });
        }
        checks.finish()
    })
    .await
}

/// While node C is stopped: a fetchSockets and a serverSideEmit with acks made through A at
/// once answer within two heartbeats (plus slack), without C's part, and C leaves the node
/// lists of A and B within two heartbeats.
async fn during_node_stall(
    cluster: &Cluster,
    checks: &mut Checks,
    ids: &[String],
    live: &BTreeSet<String>,
    stopped_at: Instant,
) -> Result<()> {
    let prompt = HEARTBEAT * 2 + SLACK;
    let api_a = cluster.api(0);
    let (fetch, server) = tokio::join!(
        timed(api_a.raw(
            Method::GET,
            "/api/v1/sockets?namespace=%2F",
            None,
            REQUEST_TIMEOUT
        )),
        timed(api_a.server_emit_with_ack(None, "ping", vec![json!(1)], 4_000)),
    );
    let (took, fetch) = fetch;
    eprintln!("fetchSockets through A right after C stopped took {took:?}");
    let body = fetch?.json()?;
    let got: BTreeSet<String> = body["sockets"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    checks.check(&got == live && took < prompt, || {
        format!("fetchSockets while C is stopped: took {took:?} (bound {prompt:?}), got {body}, want {live:?}")
    });
    let (took, server) = server;
    eprintln!("serverSideEmit with acks through A right after C stopped took {took:?}");
    let server = server?;
    let responders: Vec<&str> = server.responses.iter().map(|r| r.node.as_str()).collect();
    checks.check(responders == [ids[1].as_str()] && took < prompt, || {
        format!("serverSideEmit while C is stopped: took {took:?} (bound {prompt:?}): {server:?}")
    });
    for i in [0, 1] {
        let gone = wait_until(
            prompt,
            Duration::from_millis(25),
            "node-c to leave the node list",
            || async {
                let listed = cluster.api(i).nodes().await?;
                Ok((!listed.iter().any(|n| n.id == ids[2])).then(|| stopped_at.elapsed()))
            },
        )
        .await;
        if let Some(t) = checks.ok(gone, &format!("node {i} dropping node-c")) {
            eprintln!("node {i} dropped {} {t:?} after it stopped", ids[2]);
            checks.check(t < prompt, || {
                format!("node {i} dropped node-c {t:?} after it stopped (bound {prompt:?})")
            });
        }
    }
    Ok(())
}
