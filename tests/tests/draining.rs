//! A node that got SIGTERM drains before it shuts down: it turns not ready, refuses new
//! sessions with a 503 `unavailable` (counted) that a load balancer retries elsewhere, keeps
//! serving the sockets it holds, then tells them to go one after another from an eighth to
//! half of the drain (their connections closed: the client reconnects); then it exits.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use ioscale_cluster_tests::extra::{metric, with_timeout_of};
use ioscale_cluster_tests::{Agent, Cluster, ConnectOpts, Transport};
use serde_json::json;

const ACK: Duration = Duration::from_secs(5);
/// Long enough for the checks of its first eighth to run inside it on a slow machine.
const DRAIN_MS: u64 = 24_000;
/// The sockets on the draining node.
const HELD: [&str; 5] = ["held-0", "held-1", "held-2", "held-3", "held-4"];
/// Scheduling on a loaded machine.
const SLACK: Duration = Duration::from_secs(1);

/// When each of [`HELD`] was seen disconnected, since `since`, sorted.
async fn disconnect_times(agent: &Agent, since: Instant, drain: Duration) -> Result<Vec<Duration>> {
    let mut seen: Vec<Option<Duration>> = vec![None; HELD.len()];
    while seen.iter().any(Option::is_none) {
        ensure!(
            since.elapsed() < drain + SLACK,
            "still connected at the end of the drain: {seen:?}"
        );
        for (i, c) in HELD.iter().enumerate() {
            if seen[i].is_none() && !agent.state(c).await?.connected {
                seen[i] = Some(since.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut times: Vec<Duration> = seen.into_iter().flatten().collect();
    times.sort();
    Ok(times)
}

fn pubsub() -> ConnectOpts {
    // Reconnection is off by default: the disconnect at the end is seen as final.
    ConnectOpts::new(Transport::Websocket).namespace("/pubsub")
}

#[tokio::test]
async fn a_draining_node_refuses_new_sessions_and_tells_its_clients_to_go_over_the_drain()
-> Result<()> {
    with_timeout_of(Duration::from_secs(90), async {
        let drain = DRAIN_MS.to_string();
        let cluster = Cluster::builder()
            .nodes(2)
            .node_args(["--shutdown-drain-delay-ms", drain.as_str()])
            .start()
            .await?;
        let agent = Agent::spawn().await?;
        let (draining, other) = (cluster.node(0).url(), cluster.node(1).url());
        for c in HELD {
            agent.connect(c, &draining, &pubsub()).await?;
        }
        agent.connect("peer", &other, &pubsub()).await?;
        for c in HELD.iter().chain(&["peer"]) {
            let ack = agent
                .emit_with_ack(c, "join", vec![json!("r")], ACK)
                .await?;
            ensure!(ack == [json!({"ok": true})], "{c} join: {ack:?}");
        }

        let api = cluster.api(0);
        cluster.node(0).sigterm()?;
        let asked = Instant::now();
        loop {
            if api.readyz().await? == 503 {
                break;
            }
            ensure!(
                asked.elapsed() < Duration::from_secs(5),
                "still ready after SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        // A new session is refused before it exists, with a 503 a load balancer retries on
        // another node (and a client without one retries with its backoff).
        let handshake = format!("{draining}/socket.io/?EIO=4&transport=polling");
        let resp = reqwest::get(&handshake).await?;
        let status = resp.status().as_u16();
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        ensure!(
            status == 503 && body["ok"] == false && body["code"] == "unavailable",
            "a handshake while draining: {status} {body}"
        );
        ensure!(
            agent.connect("late", &draining, &pubsub()).await.is_err(),
            "a draining node accepted a new socket"
        );
        let refused = metric(
            &api,
            "ioscale_connect_refused_total",
            &[("reason", "draining")],
        );
        ensure!(refused.await? >= 2.0, "the refusals are not counted");

        // The sockets it holds still get the cluster's messages while it drains.
        let data = json!({"room": "r", "data": {"n": 1}});
        let ack = agent
            .emit_with_ack("peer", "publish", vec![data], ACK)
            .await?;
        ensure!(ack == [json!({"ok": true})], "publish: {ack:?}");
        for c in HELD {
            let got = agent.wait_count(c, "msg", 1, ACK).await?;
            ensure!(got[0][0]["data"]["n"] == 1, "{c}: {got:?}");
        }
        ensure!(
            asked.elapsed() < Duration::from_millis(DRAIN_MS / 8),
            "the checks outlasted the first eighth of the drain: raise DRAIN_MS"
        );

        // Then it tells them to go, one after another from an eighth to half of the drain:
        // their connections close, which socket.io-client reconnects from ("transport
        // close"), unlike a DISCONNECT ("io server disconnect").
        let gone = disconnect_times(&agent, asked, Duration::from_millis(DRAIN_MS)).await?;
        let (first, last) = (gone[0], gone[gone.len() - 1]);
        let drain = Duration::from_millis(DRAIN_MS);
        ensure!(
            first >= drain / 8 - Duration::from_millis(500) && last <= drain / 2 + SLACK,
            "told to go at {gone:?}, not from an eighth to half of a {drain:?} drain"
        );
        ensure!(
            last - first >= drain / 4,
            "told to go at {gone:?}: not spread over the drain"
        );
        for c in HELD {
            let st = agent.state(c).await?;
            ensure!(
                st.disconnect_reasons == ["transport close"],
                "{c} disconnected with {:?}",
                st.disconnect_reasons
            );
        }
        let told = metric(
            &api,
            "ioscale_http_connections_closed_total",
            &[("reason", "draining")],
        );
        ensure!(
            told.await? == HELD.len() as f64,
            "the connections told to go are not counted"
        );
        let labelled = metric(
            &api,
            "ioscale_disconnections_total",
            &[("namespace", "/pubsub"), ("reason", "draining")],
        );
        ensure!(
            labelled.await? == HELD.len() as f64,
            "disconnects not counted as draining"
        );
        Ok(())
    })
    .await
}
