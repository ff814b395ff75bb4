//! Cross-node `POST /api/v1/disconnect`: all sockets, the sockets of a room, or
//! one socket id; clients see reason "io server disconnect" and the sockets
//! disappear from every node's `GET /api/v1/sockets`.
//!
//! Case 18 of the "Default test suite for all adapters" (anchors.md §1.7 A),
//! plus the filtered variants the API offers.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Result, bail, ensure};
use ioscale_cluster_tests::fixture::sids;
use ioscale_cluster_tests::{
    Agent, Client, Cluster, EVENT_TIMEOUT, SETTLE, Selector, Transport, connect_spread,
    transport_tests,
};

transport_tests!(
    makes_all_socket_instances_disconnect,
    makes_the_matching_socket_instances_disconnect,
    makes_the_given_socket_instance_disconnect,
);

/// What socket.io-client reports when the server closed the socket on purpose
/// (and after which it does not reconnect by itself).
const SERVER_DISCONNECT: &str = "io server disconnect";

/// Waits until every node lists exactly `want` in namespace `/`.
async fn expect_sockets(cluster: &Cluster, want: &[&Client]) -> Result<()> {
    let want = sids(want);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    loop {
        let mut views = Vec::new();
        for i in 0..cluster.nodes().len() {
            let got: BTreeSet<String> = cluster
                .api(i)
                .sockets("/", &[])
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
            bail!("want sockets {want:?} on every node, got per node {views:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `gone` were disconnected by the server exactly once; `kept` still connected.
async fn expect_disconnected(agent: &Agent, gone: &[&Client], kept: &[&Client]) -> Result<()> {
    for c in gone {
        let reasons = agent.wait_disconnect(&c.name, 1, EVENT_TIMEOUT).await?;
        ensure!(
            reasons == [SERVER_DISCONNECT],
            "{}: reasons {reasons:?}",
            c.name
        );
    }
    tokio::time::sleep(SETTLE).await;
    for c in gone {
        let st = agent.state(&c.name).await?;
        ensure!(
            !st.connected && st.disconnect_reasons == [SERVER_DISCONNECT],
            "{}: {st:?}",
            c.name
        );
    }
    for c in kept {
        let st = agent.state(&c.name).await?;
        ensure!(
            st.connected && st.disconnect_reasons.is_empty(),
            "{} must stay connected: {st:?}",
            c.name
        );
    }
    Ok(())
}

async fn setup(transport: Transport) -> Result<(Cluster, Agent, Vec<Client>)> {
    let cluster = Cluster::start(3).await?;
    let agent = Agent::spawn().await?;
    let clients = connect_spread(&cluster, &agent, transport, "/", "c", 6).await?;
    Ok((cluster, agent, clients))
}

/// 18: every socket on every node is disconnected.
async fn makes_all_socket_instances_disconnect(transport: Transport) -> Result<()> {
    let (cluster, agent, clients) = setup(transport).await?;
    let all: Vec<&Client> = clients.iter().collect();
    expect_sockets(&cluster, &all).await?;
    cluster.api(1).disconnect(&Selector::all()).await?;
    expect_disconnected(&agent, &all, &[]).await?;
    expect_sockets(&cluster, &[]).await
}

/// Only the members of a room are disconnected, wherever they are.
async fn makes_the_matching_socket_instances_disconnect(transport: Transport) -> Result<()> {
    let (cluster, agent, clients) = setup(transport).await?;
    let gone = [&clients[0], &clients[4]];
    let kept = [&clients[1], &clients[2], &clients[3], &clients[5]];
    cluster
        .api(0)
        .join(
            &Selector::sockets([&clients[0].id, &clients[4].id]),
            &["room1"],
        )
        .await?;
    cluster
        .api(2)
        .disconnect(&Selector::rooms(["room1"]))
        .await?;
    expect_disconnected(&agent, &gone, &kept).await?;
    expect_sockets(&cluster, &kept).await
}

/// Only the given socket, on another node, is disconnected.
async fn makes_the_given_socket_instance_disconnect(transport: Transport) -> Result<()> {
    let (cluster, agent, clients) = setup(transport).await?;
    let target = &clients[2];
    ensure!(target.node == 2);
    cluster
        .api(0)
        .disconnect(&Selector::sockets([&target.id]))
        .await?;
    let kept: Vec<&Client> = clients.iter().filter(|c| c.name != target.name).collect();
    expect_disconnected(&agent, &[target], &kept).await?;
    expect_sockets(&cluster, &kept).await
}
