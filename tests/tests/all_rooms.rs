//! Cross-node `GET /api/v1/rooms` (allRooms): every node lists the union of
//! the rooms of all nodes, per namespace, and a room disappears once empty.
//!
//! The Redis-specific "allRooms: returns all rooms across several nodes" case
//! (anchors.md §1.7 B). Clients only hold room memberships here, so one
//! transport is enough; membership over both transports is covered in
//! `sockets_join_leave.rs`.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Result, bail};
use ioscale_cluster_tests::{
    Agent, Client, Cluster, Selector, Transport, connect_spread, with_timeout,
};

/// Rooms of namespace `ns` seen by node `via`, without the sockets' own-id
/// rooms (whether those are listed is not part of the contract).
async fn named_rooms(
    cluster: &Cluster,
    via: usize,
    ns: &str,
    clients: &[Client],
) -> Result<BTreeSet<String>> {
    let sids: BTreeSet<&str> = clients.iter().map(|c| c.id.as_str()).collect();
    Ok(cluster
        .api(via)
        .rooms(ns)
        .await?
        .into_iter()
        .filter(|r| !sids.contains(r.as_str()))
        .collect())
}

/// Waits (contract: 1 s) until every node lists exactly `want` for `ns`.
async fn expect_rooms(
    cluster: &Cluster,
    ns: &str,
    clients: &[Client],
    want: &[&str],
) -> Result<()> {
    let want: BTreeSet<String> = want.iter().map(|s| (*s).to_owned()).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    loop {
        let mut views = Vec::new();
        for via in 0..cluster.nodes().len() {
            views.push(named_rooms(cluster, via, ns, clients).await?);
        }
        if views.iter().all(|v| *v == want) {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("namespace {ns}: want rooms {want:?} on every node, got per node {views:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Each node's sockets hold different rooms; every node lists all of them,
/// a shared room once, and a room no one is in any more disappears.
#[tokio::test]
async fn returns_all_rooms_across_several_nodes() -> Result<()> {
    with_timeout(async {
        let cluster = Cluster::start(3).await?;
        let agent = Agent::spawn().await?;
        let clients = connect_spread(&cluster, &agent, Transport::Websocket, "/", "c", 3).await?;
        let api = cluster.api(0);
        api.join(&Selector::sockets([&clients[0].id]), &["room-a", "shared"])
            .await?;
        api.join(&Selector::sockets([&clients[1].id]), &["room-b", "shared"])
            .await?;
        api.join(&Selector::sockets([&clients[2].id]), &["room-c"])
            .await?;

        expect_rooms(
            &cluster,
            "/",
            &clients,
            &["room-a", "room-b", "room-c", "shared"],
        )
        .await?;

        api.leave(&Selector::sockets([&clients[1].id]), &["room-b"])
            .await?;
        expect_rooms(&cluster, "/", &clients, &["room-a", "room-c", "shared"]).await?;

        // A disconnected socket takes its rooms with it.
        agent.disconnect(&clients[2].name).await?;
        expect_rooms(&cluster, "/", &clients, &["room-a", "shared"]).await
    })
    .await
}

/// Rooms are per namespace: rooms of `/custom` sockets are not listed for `/`.
#[tokio::test]
async fn returns_rooms_of_the_requested_namespace_only() -> Result<()> {
    with_timeout(async {
        let cluster = Cluster::start(3).await?;
        let agent = Agent::spawn().await?;
        let root = connect_spread(&cluster, &agent, Transport::Websocket, "/", "root", 3).await?;
        let custom = connect_spread(
            &cluster,
            &agent,
            Transport::Websocket,
            "/custom",
            "custom",
            3,
        )
        .await?;
        let api = cluster.api(1);
        api.join(&Selector::all(), &["root-room"]).await?;
        api.join(&Selector::all().namespace("/custom"), &["custom-room"])
            .await?;
        api.join(
            &Selector::sockets([&custom[2].id]).namespace("/custom"),
            &["custom-only-c"],
        )
        .await?;

        let all: Vec<Client> = root.iter().chain(custom.iter()).cloned().collect();
        expect_rooms(&cluster, "/", &all, &["root-room"]).await?;
        expect_rooms(&cluster, "/custom", &all, &["custom-room", "custom-only-c"]).await
    })
    .await
}
