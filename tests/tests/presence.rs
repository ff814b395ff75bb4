//! Presence per room across three nodes (`/pubsub` `join {room, presence: true, data}` and
//! `GET /api/v1/rooms/{room}/presence`): right on every node after joins, leaves, disconnects
//! and a node SIGKILLed (its members out within the heartbeat timeout, each with a
//! `presence:leave`); none of its traffic reaches a node holding no member; a member's joins
//! and leaves arrive in order; refusals say why.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Result, bail, ensure};
use ioscale_cluster_tests::extra::metric;
use ioscale_cluster_tests::http::Method;
use ioscale_cluster_tests::{Agent, Cluster, ConnectOpts, EVENT_TIMEOUT, Transport};
use serde_json::{Value, json};

const ROOM: &str = "hall";
/// Heartbeats of the test clusters: a node is dead after two (400 ms).
const HEARTBEAT_MS: u64 = 200;

fn pubsub() -> ConnectOpts {
    ConnectOpts::new(Transport::Websocket).namespace("/pubsub")
}

/// `GET /api/v1/rooms/{room}/presence` on node `i`.
async fn presence(cluster: &Cluster, i: usize, room: &str) -> Result<Value> {
    let r = cluster
        .api(i)
        .raw(
            Method::GET,
            &format!("/api/v1/rooms/{room}/presence"),
            None,
            Duration::from_secs(5),
        )
        .await?;
    r.json()
}

fn ids(snapshot: &Value) -> BTreeSet<String> {
    snapshot["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["id"].as_str().map(str::to_owned))
        .collect()
}

/// Waits until the presence of `room` is exactly `want` on each of `nodes`.
async fn expect_on(
    cluster: &Cluster,
    nodes: &[usize],
    room: &str,
    want: &BTreeSet<String>,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    loop {
        let mut views = Vec::new();
        for &i in nodes {
            let p = presence(cluster, i, room).await?;
            views.push((p["count"].as_u64(), ids(&p)));
        }
        if views
            .iter()
            .all(|(n, v)| v == want && *n == Some(want.len() as u64))
        {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            let counts: Vec<_> = views.iter().map(|(n, v)| (n, v.len())).collect();
            bail!(
                "want {} members on every node, got (count, listed) {counts:?}",
                want.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn join(agent: &Agent, client: &str, room: &str, data: Value) -> Result<Value> {
    let ack = agent
        .emit_with_ack(
            client,
            "join",
            vec![json!({"room": room, "presence": true, "data": data})],
            EVENT_TIMEOUT,
        )
        .await?;
    Ok(ack.into_iter().next().unwrap_or(Value::Null))
}

#[tokio::test]
async fn presence_of_a_room_of_300_over_three_nodes_is_right_on_every_node() -> Result<()> {
    let mut cluster = Cluster::builder()
        .nodes(3)
        .heartbeat_ms(HEARTBEAT_MS)
        .start()
        .await?;
    let agent = Agent::spawn().await?;
    let mut members = Vec::new();
    for i in 0..300 {
        let name = format!("m{i}");
        let id = agent
            .connect(&name, &cluster.node(i % 3).url(), &pubsub())
            .await?;
        let ack = join(&agent, &name, ROOM, json!({"n": i})).await?;
        ensure!(ack["ok"] == true, "{name}: {ack}");
        members.push((name, id, i % 3));
    }
    let mut want: BTreeSet<String> = members.iter().map(|(_, id, _)| id.clone()).collect();
    expect_on(&cluster, &[0, 1, 2], ROOM, &want).await?;
    let p = presence(&cluster, 1, ROOM).await?;
    let first = p["members"].as_array().and_then(|m| m.first()).cloned();
    ensure!(
        first.is_some_and(|m| m["data"]["n"].is_u64() && m["node"].is_string()),
        "a member's record: {p}"
    );

    // 30 leave the room, 30 disconnect.
    for (name, id, _) in &members[..30] {
        let ack = agent
            .emit_with_ack(name, "leave", vec![json!(ROOM)], EVENT_TIMEOUT)
            .await?;
        ensure!(
            ack.first().is_some_and(|a| a["ok"] == true),
            "{name}: {ack:?}"
        );
        want.remove(id);
    }
    for (name, id, _) in &members[30..60] {
        agent.disconnect(name).await?;
        want.remove(id);
    }
    expect_on(&cluster, &[0, 1, 2], ROOM, &want).await?;

    // Node 3 dies: its members leave, each with its leave event to the others.
    let dead: BTreeSet<String> = members[60..]
        .iter()
        .filter(|(_, _, n)| *n == 2)
        .map(|(_, id, _)| id.clone())
        .collect();
    cluster.node_mut(2).sigkill();
    for id in &dead {
        want.remove(id);
    }
    expect_on(&cluster, &[0, 1], ROOM, &want).await?;
    for (name, _, _) in members[60..].iter().filter(|(_, _, n)| *n != 2).take(10) {
        let leaves = agent
            .wait_count(name, "presence:leave", 60 + dead.len(), EVENT_TIMEOUT)
            .await?;
        let gone: BTreeSet<String> = leaves
            .iter()
            .filter_map(|a| a[0]["id"].as_str().map(str::to_owned))
            .collect();
        ensure!(
            dead.is_subset(&gone),
            "{name}: {} of node 3's {} members without a leave",
            dead.difference(&gone).count(),
            dead.len()
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_node_holding_no_member_receives_none_of_the_presence_traffic() -> Result<()> {
    let cluster = Cluster::builder().nodes(3).start().await?;
    let agent = Agent::spawn().await?;
    // Node 3 holds a socket, in another room.
    agent
        .connect("far", &cluster.node(2).url(), &pubsub())
        .await?;
    join(&agent, "far", "elsewhere", Value::Null).await?;
    let api = cluster.api(2);
    let received = async || {
        metric(
            &api,
            "ioscale_adapter_messages_in_total",
            &[("kind", "broadcast")],
        )
        .await
    };
    let before = received().await?;
    for i in 0..6 {
        let name = format!("m{i}");
        agent
            .connect(&name, &cluster.node(i % 2).url(), &pubsub())
            .await?;
        join(&agent, &name, ROOM, json!({"i": i})).await?;
    }
    for i in 0..3 {
        agent
            .emit_with_ack(&format!("m{i}"), "leave", vec![json!(ROOM)], EVENT_TIMEOUT)
            .await?;
    }
    agent
        .wait_count("m5", "presence:leave", 3, EVENT_TIMEOUT)
        .await?;
    let after = received().await?;
    ensure!(
        after == before,
        "node 3 received {} broadcasts of the room",
        after - before
    );
    let far = agent.events("far", "presence:join").await?;
    ensure!(far.is_empty(), "a socket of another room got {far:?}");
    Ok(())
}

#[tokio::test]
async fn a_members_joins_and_leaves_arrive_in_order() -> Result<()> {
    let cluster = Cluster::builder().nodes(2).start().await?;
    let agent = Agent::spawn().await?;
    agent
        .connect("watch", &cluster.node(1).url(), &pubsub())
        .await?;
    join(&agent, "watch", ROOM, Value::Null).await?;
    let id = agent
        .connect("m", &cluster.node(0).url(), &pubsub())
        .await?;
    for round in 0..5 {
        join(&agent, "m", ROOM, json!({"round": round})).await?;
        agent
            .emit_with_ack("m", "leave", vec![json!(ROOM)], EVENT_TIMEOUT)
            .await?;
    }
    let want = 10;
    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    loop {
        let seen: Vec<String> = agent
            .all_events("watch")
            .await?
            .into_iter()
            .filter(|e| e.event.starts_with("presence:"))
            .filter(|e| e.args[0]["id"] == id.as_str() || e.args[0]["member"]["id"] == id.as_str())
            .map(|e| e.event)
            .collect();
        if seen.len() >= want {
            let expected: Vec<&str> = (0..5)
                .flat_map(|_| ["presence:join", "presence:leave"])
                .collect();
            ensure!(seen == expected, "out of order: {seen:?}");
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("{} of {want} events: {seen:?}", seen.len());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn presence_refusals_say_why_and_undo_the_join() -> Result<()> {
    let cluster = Cluster::builder()
        .nodes(1)
        .node_args(["--presence-max-members", "2"])
        .start()
        .await?;
    let agent = Agent::spawn().await?;
    let url = cluster.node(0).url();
    for i in 0..3 {
        agent.connect(&format!("m{i}"), &url, &pubsub()).await?;
    }
    let big = join(&agent, "m0", ROOM, json!("x".repeat(600))).await?;
    ensure!(big["ok"] == false && big["code"] == "too_large", "{big}");
    let bad = agent
        .emit_with_ack("m0", "join", vec![json!({"presence": true})], EVENT_TIMEOUT)
        .await?;
    ensure!(
        bad[0]["ok"] == false && bad[0]["code"] == "bad_request",
        "{bad:?}"
    );
    for i in 0..2 {
        let ack = join(&agent, &format!("m{i}"), ROOM, Value::Null).await?;
        ensure!(
            ack["ok"] == true && ack["presence"]["count"] == i + 1,
            "{ack}"
        );
    }
    let full = join(&agent, "m2", ROOM, Value::Null).await?;
    ensure!(full["ok"] == false && full["code"] == "conflict", "{full}");
    // The refused member is not in the room either.
    let in_room = cluster.api(0).sockets("/pubsub", &[ROOM]).await?;
    ensure!(
        in_room.len() == 2,
        "the room holds {} sockets",
        in_room.len()
    );
    Ok(())
}
