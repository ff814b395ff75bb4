//! Cross-node broadcasts through `POST /api/v1/emit`: to everyone, to a
//! namespace, to rooms, except rooms, no duplicates, and to one socket id.
//!
//! Cases 1–7 of the "Default test suite for all adapters"
//! (socket.io-redis-adapter `test/index.ts`, see shared/reference/anchors.md
//! §1.7 A). Each runs with 3 nodes on one Redis and clients spread over the
//! nodes, over WebSocket and over HTTP long-polling.

use anyhow::Result;
use ioscale_cluster_tests::{
    Agent, Client, Cluster, Emit, Selector, Transport, binary, connect_spread, expect_delivery,
    expect_none, transport_tests,
};
use serde_json::{Value, json};

transport_tests!(
    broadcasts_to_all_clients,
    broadcasts_to_all_clients_in_a_namespace,
    broadcasts_to_all_clients_in_a_room,
    broadcasts_to_all_clients_except_in_room,
    broadcasts_to_all_clients_once,
    broadcasts_to_a_single_client,
    broadcasts_to_local_clients_only,
);

/// The payload of case 1: a number, a string and binary, which must survive
/// the trip through Redis and both transports byte for byte.
fn mixed_payload() -> Vec<Value> {
    vec![json!(1), json!("2"), binary(&[1, 2, 3])]
}

/// Makes `members` join `room` through node 0, so a following emit through
/// node 0 is guaranteed to see the membership.
async fn join(cluster: &Cluster, members: &[&Client], room: &str) -> Result<()> {
    let ids: Vec<&str> = members.iter().map(|c| c.id.as_str()).collect();
    cluster.api(0).join(&Selector::sockets(ids), &[room]).await
}

/// 1: one emit reaches every client on every node exactly once, binary intact.
async fn broadcasts_to_all_clients(transport: Transport) -> Result<()> {
    let cluster = Cluster::start(3).await?;
    let agent = Agent::spawn().await?;
    let clients = connect_spread(&cluster, &agent, transport, "/", "c", 3).await?;

    // Emitted through node B, so two receivers are remote and one is local.
    cluster
        .api(1)
        .emit(&Emit::new("test", mixed_payload()))
        .await?;

    let all: Vec<&Client> = clients.iter().collect();
    expect_delivery(&agent, &clients, &all, "test", Some(&mixed_payload())).await
}

/// 2: an emit to `/custom` reaches every `/custom` client and no `/` client.
async fn broadcasts_to_all_clients_in_a_namespace(transport: Transport) -> Result<()> {
    let cluster = Cluster::start(3).await?;
    let agent = Agent::spawn().await?;
    let custom = connect_spread(&cluster, &agent, transport, "/custom", "custom", 3).await?;
    let root = connect_spread(&cluster, &agent, transport, "/", "root", 3).await?;

    cluster
        .api(0)
        .emit(&Emit::new("test", mixed_payload()).namespace("/custom"))
        .await?;

    let all: Vec<&Client> = custom.iter().collect();
    expect_delivery(&agent, &custom, &all, "test", Some(&mixed_payload())).await?;
    expect_none(&agent, &root, "test").await
}

/// 3: an emit to a room reaches exactly its members, wherever they are.
async fn broadcasts_to_all_clients_in_a_room(transport: Transport) -> Result<()> {
    let cluster = Cluster::start(3).await?;
    let agent = Agent::spawn().await?;
    // Two clients per node; the room spans all three nodes.
    let clients = connect_spread(&cluster, &agent, transport, "/", "c", 6).await?;
    let members = [&clients[0], &clients[4], &clients[5]];
    join(&cluster, &members, "room1").await?;

    cluster
        .api(0)
        .emit(&Emit::new("test", vec![json!("hello")]).to(["room1"]))
        .await?;

    expect_delivery(&agent, &clients, &members, "test", Some(&[json!("hello")])).await
}

/// 4: an emit except a room reaches everyone else and no member.
async fn broadcasts_to_all_clients_except_in_room(transport: Transport) -> Result<()> {
    let cluster = Cluster::start(3).await?;
    let agent = Agent::spawn().await?;
    let clients = connect_spread(&cluster, &agent, transport, "/", "c", 6).await?;
    join(&cluster, &[&clients[1], &clients[3]], "room1").await?;

    cluster
        .api(0)
        .emit(&Emit::new("test", vec![json!("hello")]).except(["room1"]))
        .await?;

    let receivers = [&clients[0], &clients[2], &clients[4], &clients[5]];
    expect_delivery(
        &agent,
        &clients,
        &receivers,
        "test",
        Some(&[json!("hello")]),
    )
    .await
}

/// 5: to(room1).to(room2).except(room3) reaches the union minus room3, and a
/// socket in both room1 and room2 gets the event once, not twice.
async fn broadcasts_to_all_clients_once(transport: Transport) -> Result<()> {
    let cluster = Cluster::start(3).await?;
    let agent = Agent::spawn().await?;
    let clients = connect_spread(&cluster, &agent, transport, "/", "c", 6).await?;
    // c1 is in both rooms; c3 is in room2 and room3, so it is excluded; c5 is
    // only in room3; c4 is in nothing.
    join(&cluster, &[&clients[0], &clients[1]], "room1").await?;
    join(&cluster, &[&clients[1], &clients[2], &clients[3]], "room2").await?;
    join(&cluster, &[&clients[3], &clients[5]], "room3").await?;

    cluster
        .api(0)
        .emit(
            &Emit::new("test", vec![json!("once")])
                .to(["room1", "room2"])
                .except(["room3"]),
        )
        .await?;

    let receivers = [&clients[0], &clients[1], &clients[2]];
    expect_delivery(&agent, &clients, &receivers, "test", Some(&[json!("once")])).await
}

/// 7: an emit to a socket id (its own room) reaches only that socket, on
/// another node than the one handling the request.
async fn broadcasts_to_a_single_client(transport: Transport) -> Result<()> {
    let cluster = Cluster::start(3).await?;
    let agent = Agent::spawn().await?;
    let clients = connect_spread(&cluster, &agent, transport, "/", "c", 6).await?;
    let target = &clients[2];
    assert_eq!(target.node, 2, "the target must live on node C");

    cluster
        .api(0)
        .emit(&Emit::new("test", vec![json!("just you")]).to([target.id.as_str()]))
        .await?;

    expect_delivery(
        &agent,
        &clients,
        &[target],
        "test",
        Some(&[json!("just you")]),
    )
    .await
}

/// 6: a `local` emit reaches only the clients of the node it went through.
async fn broadcasts_to_local_clients_only(transport: Transport) -> Result<()> {
    let cluster = Cluster::start(3).await?;
    let agent = Agent::spawn().await?;
    // Two clients per node; clients i and i+3 are on node i.
    let clients = connect_spread(&cluster, &agent, transport, "/", "c", 6).await?;
    cluster
        .api(1)
        .emit(&Emit::new("test", vec![json!("local")]).local())
        .await?;
    let on_b: Vec<&Client> = clients.iter().filter(|c| c.node == 1).collect();
    assert_eq!(on_b.len(), 2, "two clients on node B");
    expect_delivery(&agent, &clients, &on_b, "test", Some(&[json!("local")])).await
}
