//! `--max-payload-bytes`: a client message over the limit is not handled, and its connection is
//! closed and counted; messages under it still work on the other sockets.

use std::time::Duration;

use anyhow::{Result, ensure};
use ioscale_cluster_tests::extra::with_timeout_of;
use ioscale_cluster_tests::{Agent, Cluster, ConnectOpts, Transport};
use serde_json::json;

const ACK: Duration = Duration::from_secs(5);

#[tokio::test]
async fn a_message_over_the_payload_limit_closes_its_connection_and_is_counted() -> Result<()> {
    with_timeout_of(Duration::from_secs(60), async {
        let cluster = Cluster::builder()
            .nodes(1)
            .node_args(["--max-payload-bytes", "4096"])
            .start()
            .await?;
        let agent = Agent::spawn().await?;
        let url = cluster.node(0).url();
        let opts = ConnectOpts::new(Transport::Websocket).namespace("/pubsub");
        agent.connect("big", &url, &opts).await?;
        agent.connect("small", &url, &opts).await?;
        for c in ["big", "small"] {
            let a = agent
                .emit_with_ack(c, "join", vec![json!("r")], ACK)
                .await?;
            ensure!(a == [json!({"ok": true})], "{c} join: {a:?}");
        }
        let huge = "x".repeat(16 * 1024);
        agent
            .emit("big", "publish", vec![json!({"room": "r", "data": huge})])
            .await?;
        let mut closed = false;
        for _ in 0..50 {
            let st = agent.state("big").await?;
            if !st.connected && !st.disconnect_reasons.is_empty() {
                closed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        ensure!(closed, "the oversized message did not close its connection");
        // Nothing of it was delivered; the other socket works on.
        tokio::time::sleep(Duration::from_millis(300)).await;
        ensure!(
            agent.events("small", "msg").await?.is_empty(),
            "the oversized publish was delivered"
        );
        let a = agent
            .emit_with_ack(
                "small",
                "publish",
                vec![json!({"room": "r", "data": "fits"})],
                ACK,
            )
            .await?;
        ensure!(a == [json!({"ok": true})], "small publish: {a:?}");
        agent.wait_count("small", "msg", 1, ACK).await?;
        let text = cluster.api(0).metrics().await?;
        let closed_n: f64 = text
            .lines()
            .filter(|l| {
                l.starts_with("ioscale_disconnections_total{")
                    && l.contains("namespace=\"/pubsub\"")
            })
            .filter(|l| !l.contains("client_disconnect"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        ensure!(
            closed_n >= 1.0,
            "the closed connection is not counted:\n{text}"
        );
        Ok(())
    })
    .await
}
