//! Cross-node room membership through `POST /api/v1/join` and
//! `POST /api/v1/leave`: all sockets, the sockets of a room, or one socket id,
//! checked by a room broadcast right after the call (which the contract says
//! must already see the change) and by `GET /api/v1/sockets`.
//!
//! Cases 12–17 of the "Default test suite for all adapters" (anchors.md §1.7 A).

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Result, bail};
use ioscale_cluster_tests::fixture::sids;
use ioscale_cluster_tests::{
    Agent, Client, Cluster, Emit, Selector, Transport, connect_spread, expect_delivery,
    transport_tests,
};
use serde_json::json;

transport_tests!(
    makes_all_socket_instances_join_the_specified_room,
    makes_the_matching_socket_instances_join_the_specified_room,
    makes_the_given_socket_instance_join_the_specified_room,
    makes_all_socket_instances_leave_the_specified_room,
    makes_the_matching_socket_instances_leave_the_specified_room,
    makes_the_given_socket_instance_leave_the_specified_room,
);

/// The contract: `/sockets` reflects a join or leave within 1 s.
const VISIBLE_WITHIN: Duration = Duration::from_secs(1);

/// Waits until `GET /sockets?rooms=room` on every node returns exactly `want`.
async fn expect_room_members(cluster: &Cluster, room: &str, want: &[&Client]) -> Result<()> {
    let want = sids(want);
    let deadline = tokio::time::Instant::now() + VISIBLE_WITHIN;
    loop {
        let mut views = Vec::new();
        for i in 0..cluster.nodes().len() {
            let got: BTreeSet<String> = cluster
                .api(i)
                .sockets("/", &[room])
                .await?
                .into_iter()
                .map(|s| s.id)
                .collect();
            views.push(got);
        }
        if views.iter().all(|v| *v == want) {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("room {room}: want {want:?} on every node, got per node {views:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Emits `event` to `room` through node `via` and checks exactly `members` get it.
async fn expect_room_broadcast(
    cluster: &Cluster,
    agent: &Agent,
    clients: &[Client],
    via: usize,
    room: &str,
    members: &[&Client],
) -> Result<()> {
    cluster
        .api(via)
        .emit(&Emit::new("test", vec![json!(room)]).to([room]))
        .await?;
    expect_delivery(agent, clients, members, "test", Some(&[json!(room)])).await
}

async fn setup(transport: Transport) -> Result<(Cluster, Agent, Vec<Client>)> {
    let cluster = Cluster::start(3).await?;
    let agent = Agent::spawn().await?;
    let clients = connect_spread(&cluster, &agent, transport, "/", "c", 3).await?;
    Ok((cluster, agent, clients))
}

/// 12: socketsJoin without a filter puts every socket on every node in the room.
async fn makes_all_socket_instances_join_the_specified_room(transport: Transport) -> Result<()> {
    let (cluster, agent, clients) = setup(transport).await?;
    cluster.api(0).join(&Selector::all(), &["room1"]).await?;
    let all: Vec<&Client> = clients.iter().collect();
    expect_room_broadcast(&cluster, &agent, &clients, 0, "room1", &all).await?;
    expect_room_members(&cluster, "room1", &all).await
}

/// 13: socketsJoin filtered by room only affects that room's members.
async fn makes_the_matching_socket_instances_join_the_specified_room(
    transport: Transport,
) -> Result<()> {
    let (cluster, agent, clients) = setup(transport).await?;
    let api = cluster.api(0);
    api.join(
        &Selector::sockets([&clients[0].id, &clients[2].id]),
        &["room1"],
    )
    .await?;
    api.join(&Selector::rooms(["room1"]), &["room2"]).await?;
    let members = [&clients[0], &clients[2]];
    expect_room_broadcast(&cluster, &agent, &clients, 0, "room2", &members).await?;
    expect_room_members(&cluster, "room2", &members).await
}

/// 14: socketsJoin for one socket id, on another node, affects only it.
async fn makes_the_given_socket_instance_join_the_specified_room(
    transport: Transport,
) -> Result<()> {
    let (cluster, agent, clients) = setup(transport).await?;
    // Requested through node A for a socket living on node B.
    cluster
        .api(0)
        .join(&Selector::sockets([&clients[1].id]), &["room3"])
        .await?;
    expect_room_broadcast(&cluster, &agent, &clients, 0, "room3", &[&clients[1]]).await?;
    expect_room_members(&cluster, "room3", &[&clients[1]]).await?;
    // Its room list now holds its own-id room and room3, and nothing else.
    let info = cluster.api(2).sockets("/", &[&clients[1].id]).await?;
    let rooms: BTreeSet<&str> = info
        .iter()
        .flat_map(|s| s.rooms.iter().map(String::as_str))
        .collect();
    let want: BTreeSet<&str> = [clients[1].id.as_str(), "room3"].into();
    if info.len() != 1 || rooms != want {
        bail!("socket info for {}: {info:?}", clients[1].id);
    }
    Ok(())
}

/// 15: socketsLeave without a filter empties the room on every node.
async fn makes_all_socket_instances_leave_the_specified_room(transport: Transport) -> Result<()> {
    let (cluster, agent, clients) = setup(transport).await?;
    let api = cluster.api(1);
    api.join(&Selector::all(), &["room1"]).await?;
    api.leave(&Selector::all(), &["room1"]).await?;
    // Nobody is in room1 any more; "control" to everyone proves the emits flow.
    api.emit(&Emit::new("test", vec![json!("room1")]).to(["room1"]))
        .await?;
    api.emit(&Emit::new("control", vec![])).await?;
    let all: Vec<&Client> = clients.iter().collect();
    expect_delivery(&agent, &clients, &all, "control", None).await?;
    expect_delivery(&agent, &clients, &[], "test", None).await?;
    expect_room_members(&cluster, "room1", &[]).await
}

/// 16: socketsLeave filtered by room only affects that room's members.
async fn makes_the_matching_socket_instances_leave_the_specified_room(
    transport: Transport,
) -> Result<()> {
    let (cluster, agent, clients) = setup(transport).await?;
    let api = cluster.api(0);
    api.join(&Selector::all(), &["room1"]).await?;
    api.join(
        &Selector::sockets([&clients[0].id, &clients[2].id]),
        &["room2"],
    )
    .await?;
    api.leave(&Selector::rooms(["room2"]), &["room1"]).await?;
    expect_room_broadcast(&cluster, &agent, &clients, 0, "room1", &[&clients[1]]).await?;
    expect_room_members(&cluster, "room1", &[&clients[1]]).await?;
    // room2 itself is untouched.
    expect_room_members(&cluster, "room2", &[&clients[0], &clients[2]]).await
}

/// 17: socketsLeave for one socket id, on another node, affects only it.
async fn makes_the_given_socket_instance_leave_the_specified_room(
    transport: Transport,
) -> Result<()> {
    let (cluster, agent, clients) = setup(transport).await?;
    let api = cluster.api(2);
    api.join(&Selector::all(), &["room1"]).await?;
    api.leave(&Selector::sockets([&clients[1].id]), &["room1"])
        .await?;
    let members = [&clients[0], &clients[2]];
    expect_room_broadcast(&cluster, &agent, &clients, 2, "room1", &members).await?;
    expect_room_members(&cluster, "room1", &members).await
}
