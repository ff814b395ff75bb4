//! Cross-node `GET /api/v1/sockets` (fetchSockets): every node lists every
//! socket with the node it lives on, its rooms and its data.
//!
//! Cases 19–20 of the "Default test suite for all adapters" (anchors.md §1.7 A).
//! Case 21, "returns only local socket instances", has no HTTP equivalent: the
//! API always asks the whole cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{Result, bail, ensure};
use ioscale_cluster_tests::http::SocketInfo;
use ioscale_cluster_tests::{Agent, Cluster, Selector, Transport, connect_spread, transport_tests};
use serde_json::{Value, json};

transport_tests!(
    returns_all_socket_instances,
    returns_a_single_socket_instance,
    returns_sockets_of_the_requested_namespace_only,
);

/// Polls `GET /sockets` on node `via` until `pred` holds (the contract allows
/// 1 s for changes to show); returns the last answer.
async fn sockets_until(
    cluster: &Cluster,
    via: usize,
    ns: &str,
    rooms: &[&str],
    pred: impl Fn(&[SocketInfo]) -> bool,
) -> Result<Vec<SocketInfo>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    loop {
        let got = cluster.api(via).sockets(ns, rooms).await?;
        if pred(&got) {
            return Ok(got);
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "GET /sockets?namespace={ns}&rooms={rooms:?} on node {via}: condition not met: {got:#?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// 19: each node returns the same three sockets, each once, with the right
/// node id and its own-id room.
async fn returns_all_socket_instances(transport: Transport) -> Result<()> {
    let cluster = Cluster::start(3).await?;
    let agent = Agent::spawn().await?;
    let clients = connect_spread(&cluster, &agent, transport, "/", "c", 3).await?;
    let ids = cluster.node_ids();
    let want: BTreeMap<String, String> = clients
        .iter()
        .map(|c| (c.id.clone(), ids[c.node].clone()))
        .collect();

    for via in 0..3 {
        let got = cluster.api(via).sockets("/", &[]).await?;
        ensure!(
            got.len() == 3,
            "node {via}: exactly 3 sockets, no duplicates: {got:#?}"
        );
        let by_id: BTreeMap<String, String> =
            got.iter().map(|s| (s.id.clone(), s.node.clone())).collect();
        ensure!(
            by_id == want,
            "node {via}: socket -> node map: {by_id:?}, want {want:?}"
        );
        for s in &got {
            ensure!(
                s.rooms.contains(&s.id),
                "node {via}: {} lacks its own-id room: {s:?}",
                s.id
            );
        }
    }
    Ok(())
}

/// 20: data set on node A through the socket's `set-data` event, and rooms
/// joined through the API, are visible from node C's API for that one socket.
async fn returns_a_single_socket_instance(transport: Transport) -> Result<()> {
    let cluster = Cluster::start(3).await?;
    let agent = Agent::spawn().await?;
    let clients = connect_spread(&cluster, &agent, transport, "/", "c", 3).await?;
    let target = &clients[0];
    ensure!(target.node == 0);

    let ack = agent
        .emit_with_ack(
            &target.name,
            "set-data",
            vec![json!({"user": "alice", "n": 1})],
            Duration::from_secs(5),
        )
        .await?;
    ensure!(ack == [json!({"ok": true})], "set-data ack: {ack:?}");
    // A second call merges rather than replaces.
    let ack = agent
        .emit_with_ack(
            &target.name,
            "set-data",
            vec![json!({"n": 2, "bin": [1, 2]})],
            Duration::from_secs(5),
        )
        .await?;
    ensure!(ack == [json!({"ok": true})], "set-data ack: {ack:?}");
    // Not an object: refused, and the data kept.
    let ack = agent
        .emit_with_ack(
            &target.name,
            "set-data",
            vec![json!("not an object")],
            Duration::from_secs(5),
        )
        .await?;
    ensure!(
        ack == [json!({"ok": false, "code": "bad_request", "error": "set-data expects an object"})],
        "set-data of a string: {ack:?}"
    );
    cluster
        .api(1)
        .join(&Selector::sockets([&target.id]), &["room1", "room2"])
        .await?;

    let want_rooms: BTreeSet<String> = [target.id.clone(), "room1".into(), "room2".into()].into();
    let rooms_of = |s: &SocketInfo| s.rooms.iter().cloned().collect::<BTreeSet<_>>();
    let got = sockets_until(&cluster, 2, "/", &[&target.id], |got| {
        got.len() == 1 && rooms_of(&got[0]) == want_rooms && got[0].data.get("n") == Some(&json!(2))
    })
    .await?;
    let s = &got[0];
    ensure!(
        s.id == target.id && s.node == cluster.node(0).node_id(),
        "{s:?}"
    );
    let data = s
        .data
        .as_object()
        .ok_or_else(|| anyhow::anyhow!("data is not an object: {s:?}"))?;
    ensure!(
        data.get("user") == Some(&json!("alice")),
        "merged data keeps user: {s:?}"
    );
    ensure!(data.get("bin") == Some(&json!([1, 2])), "{s:?}");

    // The other sockets' data is untouched.
    let others = cluster.api(2).sockets("/", &[&clients[1].id]).await?;
    ensure!(others.len() == 1, "{others:?}");
    ensure!(
        others[0].data.get("user").is_none() && others[0].data.get("n").is_none(),
        "data leaked to another socket: {others:?}"
    );
    // Filtering by a room returns exactly its one member.
    let in_room = cluster.api(1).sockets("/", &["room2"]).await?;
    ensure!(
        in_room.len() == 1 && in_room[0].id == target.id,
        "{in_room:?}"
    );
    Ok(())
}

/// Sockets of `/custom` are listed under `/custom` only, and vice versa.
async fn returns_sockets_of_the_requested_namespace_only(transport: Transport) -> Result<()> {
    let cluster = Cluster::start(3).await?;
    let agent = Agent::spawn().await?;
    let root = connect_spread(&cluster, &agent, transport, "/", "root", 3).await?;
    let custom = connect_spread(&cluster, &agent, transport, "/custom", "custom", 3).await?;
    let ids = |v: &[SocketInfo]| v.iter().map(|s| s.id.clone()).collect::<BTreeSet<_>>();
    let want_root: BTreeSet<String> = root.iter().map(|c| c.id.clone()).collect();
    let want_custom: BTreeSet<String> = custom.iter().map(|c| c.id.clone()).collect();
    for via in 0..3 {
        let got_root = cluster.api(via).sockets("/", &[]).await?;
        let got_custom = cluster.api(via).sockets("/custom", &[]).await?;
        ensure!(
            ids(&got_root) == want_root && got_root.len() == 3,
            "node {via} /: {got_root:#?}"
        );
        ensure!(
            ids(&got_custom) == want_custom && got_custom.len() == 3,
            "node {via} /custom: {got_custom:#?}"
        );
    }
    // Data set in /custom shows up there.
    agent
        .emit_with_ack(
            &custom[1].name,
            "set-data",
            vec![json!({"k": "v"})],
            Duration::from_secs(5),
        )
        .await?;
    let got = sockets_until(&cluster, 0, "/custom", &[&custom[1].id], |g| {
        g.len() == 1 && g[0].data.get("k") == Some(&Value::from("v"))
    })
    .await?;
    ensure!(got[0].node == cluster.node(1).node_id(), "{got:?}");
    Ok(())
}
