//! A node that got SIGTERM drains before it shuts down: it turns not ready, refuses new
//! handshakes with `unavailable` (counted), and keeps serving the sockets it holds until it
//! closes them; then it exits.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use ioscale_cluster_tests::extra::{metric, with_timeout_of};
use ioscale_cluster_tests::{Agent, Cluster, ConnectOpts, Transport};
use serde_json::json;

const ACK: Duration = Duration::from_secs(5);
/// Long enough for the checks below to run inside it on a slow machine.
const DRAIN_MS: u64 = 10_000;

fn pubsub() -> ConnectOpts {
    // Reconnection is off by default: the disconnect at the end is seen as final.
    ConnectOpts::new(Transport::Websocket).namespace("/pubsub")
}

#[tokio::test]
async fn a_draining_node_refuses_new_handshakes_and_keeps_serving_its_sockets() -> Result<()> {
    with_timeout_of(Duration::from_secs(90), async {
        let drain = DRAIN_MS.to_string();
        let cluster = Cluster::builder()
            .nodes(2)
            .node_args(["--shutdown-drain-delay-ms", drain.as_str()])
            .start()
            .await?;
        let agent = Agent::spawn().await?;
        let (draining, other) = (cluster.node(0).url(), cluster.node(1).url());
        agent.connect("held", &draining, &pubsub()).await?;
        agent.connect("peer", &other, &pubsub()).await?;
        for c in ["held", "peer"] {
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

        let err = agent
            .connect("late", &draining, &pubsub())
            .await
            .err()
            .context("a draining node accepted a new socket")?;
        ensure!(
            format!("{err:#}").contains("connect_error: unavailable:"),
            "{err:#}"
        );
        let refused = metric(
            &api,
            "ioscale_connect_refused_total",
            &[("reason", "draining")],
        );
        ensure!(refused.await? == 1.0, "the refusal is not counted");

        // The socket it holds still gets the cluster's messages while it drains.
        let data = json!({"room": "r", "data": {"n": 1}});
        let ack = agent
            .emit_with_ack("peer", "publish", vec![data], ACK)
            .await?;
        ensure!(ack == [json!({"ok": true})], "publish: {ack:?}");
        let got = agent.wait_count("held", "msg", 1, ACK).await?;
        ensure!(got[0][0]["data"]["n"] == 1, "{got:?}");
        ensure!(
            asked.elapsed() < Duration::from_millis(DRAIN_MS),
            "the checks outlasted the drain delay: raise DRAIN_MS"
        );

        // Then the node closes it (the client would reconnect elsewhere) and exits.
        let wait = Duration::from_millis(DRAIN_MS) + Duration::from_secs(10);
        agent.wait_disconnect("held", 1, wait).await?;
        Ok(())
    })
    .await
}
