//! `/pubsub` room names: a client can neither join nor publish into another socket's own room
//! (the room named by its id, on any node). Both are refused visibly with `ok: false`, and the
//! other socket receives nothing; ordinary rooms still work. The CRUD dialects' model rooms
//! cannot be reached from `/pubsub` either.

use std::time::Duration;

use anyhow::{Result, ensure};
use ioscale_cluster_tests::dialects::{DialectAgent as _, changes, wait_changes};
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

/// The CRUD dialects' model rooms live in `/`, where clients have no `join`: a `/pubsub`
/// client that joins or publishes to rooms of the same names gets rooms of its own namespace,
/// and neither receives the model changes nor reaches the readers.
#[tokio::test]
async fn model_rooms_cannot_be_joined_or_published_to_from_pubsub() -> Result<()> {
    with_timeout_of(Duration::from_secs(90), async {
        let cluster = Cluster::start(2).await?;
        let agent = Agent::spawn().await?;
        let ws = ConnectOpts::new(Transport::Websocket);
        agent.connect("reader", &cluster.node(0).url(), &ws).await?;
        agent.connect("writer", &cluster.node(1).url(), &ws).await?;
        let pubsub = ws.clone().namespace("/pubsub");
        agent
            .connect("spy", &cluster.node(1).url(), &pubsub)
            .await?;
        // The reader enters the collection's room by reading it.
        agent
            .backbone("reader", "fetch", "todos", None, json!({}), None)
            .await?;
        for room in ["model:todos", "model:todos:1"] {
            let ack = agent
                .emit_with_ack("spy", "join", vec![json!(room)], ACK)
                .await?;
            ensure!(ack == [json!({"ok": true})], "spy join {room}: {ack:?}");
        }
        let forged = json!({"room": "model:todos", "data": {"verb": "destroy", "id": 1}});
        let ack = agent
            .emit_with_ack("spy", "publish", vec![forged], ACK)
            .await?;
        ensure!(ack == [json!({"ok": true})], "spy publish: {ack:?}");
        agent
            .backbone(
                "writer",
                "create",
                "todos",
                None,
                json!({"title": "x"}),
                None,
            )
            .await?;

        let got = wait_changes(&agent, "reader", "model-change", 1).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let got_all = changes(&agent, "reader", "model-change").await?;
        ensure!(
            got.len() == 1 && got_all.len() == 1 && got_all[0]["verb"] == "create",
            "the reader gets the real change only: {got_all:?}"
        );
        let leaked = agent.all_events("spy").await?;
        let leaked: Vec<_> = leaked.iter().filter(|e| e.event != "msg").collect();
        ensure!(
            leaked.is_empty(),
            "the /pubsub spy received model events: {leaked:?}"
        );
        Ok(())
    })
    .await
}
