//! `/pubsub` room names: a client can neither join nor publish into another socket's own room
//! (the room named by its id, on any node). Both are refused visibly with `ok: false`, and the
//! other socket receives nothing; ordinary rooms still work.

use std::time::Duration;

use anyhow::{Result, ensure};
use ioscale_cluster_tests::extra::with_timeout_of;
use ioscale_cluster_tests::{Agent, Cluster, ConnectOpts, Transport};
use serde_json::json;

const ACK: Duration = Duration::from_secs(5);
const RESERVED: &str = "room names shaped like socket ids, and user: rooms, are reserved";

#[tokio::test]
async fn a_client_cannot_join_or_publish_to_another_sockets_id_room() -> Result<()> {
    with_timeout_of(Duration::from_secs(90), async {
        let cluster = Cluster::start(2).await?;
        let agent = Agent::spawn().await?;
        let opts = ConnectOpts::new(Transport::Websocket).namespace("/pubsub");
        let victim = agent
            .connect("victim", &cluster.node(0).url(), &opts)
            .await?;
        agent.connect("spy", &cluster.node(1).url(), &opts).await?;

        let ack = agent
            .emit_with_ack("spy", "join", vec![json!(victim)], ACK)
            .await?;
        ensure!(
            ack == [json!({"ok": false, "code": "forbidden", "error": RESERVED})],
            "joining another socket's id room must be refused: {ack:?}"
        );
        let publish = json!({"room": victim, "data": "private?"});
        let ack = agent
            .emit_with_ack("spy", "publish", vec![publish], ACK)
            .await?;
        ensure!(
            ack == [json!({"ok": false, "code": "forbidden", "error": RESERVED})],
            "publishing into another socket's id room must be refused: {ack:?}"
        );

        // An ordinary room across the two nodes still works, and is all the victim receives.
        for name in ["victim", "spy"] {
            let ack = agent
                .emit_with_ack(name, "join", vec![json!("lobby")], ACK)
                .await?;
            ensure!(ack == [json!({"ok": true})], "{name} join lobby: {ack:?}");
        }
        let ack = agent
            .emit_with_ack(
                "spy",
                "publish",
                vec![json!({"room": "lobby", "data": 1})],
                ACK,
            )
            .await?;
        ensure!(ack == [json!({"ok": true})], "publish to lobby: {ack:?}");
        agent.wait_count("victim", "msg", 1, ACK).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let got = agent.events("victim", "msg").await?;
        ensure!(
            got.len() == 1 && got[0][0] == json!({"room": "lobby", "data": 1}),
            "the victim must get the lobby message only: {got:?}"
        );
        Ok(())
    })
    .await
}
