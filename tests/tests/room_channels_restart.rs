//! Room channels survive restarts: a node killed and started again on the same address gets
//! its clients back (they reconnect by themselves and join again) and subscribes their rooms
//! again; a Redis killed and started again on the same port (empty) gets every routed room
//! channel of every node back, in a few batched commands, and broadcasts to the rooms arrive.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Result;
use ioscale_cluster_tests::extra::{Checks, with_timeout_of};
use ioscale_cluster_tests::fixture::wait_ready;
use ioscale_cluster_tests::rooms::{
    RoomCounters, ack_ok, channel, connect_at, delay_args, numsub_many, numsub1, redis_port,
    wait_numsub, wait_numsub_all,
};
use ioscale_cluster_tests::{Agent, Cluster, ConnectOpts, EVENT_TIMEOUT, SETTLE, Transport};
use serde_json::{Value, json};

const NS: &str = "/pubsub";
const LIMIT: Duration = Duration::from_secs(100);
/// How long subscriber counts may take to settle after the joins' acks (whether an ack already
/// means subscribed is `room_channels.rs`'s `a_publish_right_after_a_join_ack_...`).
const SETTLED: Duration = Duration::from_secs(2);

/// Three nodes with a fast heartbeat and the test unsubscribe delay, their Redis port, and
/// the client driver.
async fn start() -> Result<(Cluster, u16, Agent)> {
    let cluster = Cluster::builder()
        .heartbeat_ms(500)
        .node_args(delay_args())
        .start()
        .await?;
    let port = redis_port(&cluster)?;
    Ok((cluster, port, Agent::spawn().await?))
}

fn pubsub() -> ConnectOpts {
    ConnectOpts::new(Transport::Websocket).namespace(NS)
}

/// Waits until every node in `from` answers `/readyz` 200.
async fn wait_all_ready(cluster: &Cluster, from: &[usize], limit: Duration) -> Result<()> {
    for &i in from {
        wait_ready(cluster.node(i), limit).await?;
    }
    Ok(())
}

/// Node B is killed and a new B starts on its address: B's clients reconnect, join again,
/// and B's room channels are back (NUMSUB as before), with delivery both ways.
#[tokio::test]
async fn a_restarted_node_resubscribes_the_rooms_its_clients_join_again() -> Result<()> {
    with_timeout_of(LIMIT, async {
        let (mut cluster, port, agent) = start().await?;
        let ps = pubsub();
        connect_at(&agent, &cluster, &ps, &[("a", 0), ("c", 2)]).await?;
        for b in ["b1", "b2"] {
            agent
                .connect(b, &cluster.node(1).url(), &ps.clone().reconnect())
                .await?;
        }
        // b1 in shared (with a and c) and mine (alone); b2 in shared.
        for (c, room) in [
            ("a", "shared"),
            ("c", "shared"),
            ("b1", "shared"),
            ("b2", "shared"),
            ("b1", "mine"),
        ] {
            ack_ok(&agent, c, "join", json!(room)).await?;
        }
        let (shared, mine) = (channel(NS, "shared"), channel(NS, "mine"));
        let mut checks = Checks::new();
        let both = |a: i64, b: i64| BTreeMap::from([(shared.clone(), a), (mine.clone(), b)]);
        checks.ok(
            wait_numsub_all(port, &both(3, 1), Instant::now(), SETTLED).await,
            "NUMSUB shared, mine before the restart",
        );

        let addr = cluster.node(1).addr();
        cluster.node_mut(1).sigkill();
        let killed = Instant::now();
        // Redis drops a dead subscriber's channels with its connection.
        checks.ok(
            wait_numsub(port, &shared, 2, killed, Duration::from_secs(5)).await,
            "shared loses B with B's connection",
        );
        // Same id, same address: B's clients find it again.
        let mut opts = cluster.node_opts(1);
        opts.listen = addr.to_string();
        let b = cluster.add_node_with(opts).await?;
        cluster.wait_nodes_visible_from(&[0, 2, b], 3).await?;
        for name in ["b1", "b2"] {
            agent
                .wait_connected(name, 2, Duration::from_secs(15))
                .await?;
        }
        eprintln!(
            "B's clients reconnected {:?} after the kill",
            killed.elapsed()
        );
        // The new B has nothing of the old one's rooms until its clients join again.
        let n = numsub_many(port, &[shared.clone(), mine.clone()], false).await?;
        checks.check(n == [2, 0], || {
            format!("NUMSUB shared, mine before the re-joins: {n:?}")
        });
        for (c, room) in [("b1", "shared"), ("b2", "shared"), ("b1", "mine")] {
            ack_ok(&agent, c, "join", json!(room)).await?;
        }
        let rejoined = Instant::now();
        if let Some(t) = checks.ok(
            wait_numsub_all(port, &both(3, 1), rejoined, SETTLED).await,
            "NUMSUB shared, mine after the re-joins",
        ) {
            eprintln!("B's rooms back {t:?} after the re-joins' acks");
        }
        let c = RoomCounters::of(&cluster, b).await?;
        checks.check(c.channels == 4.0, || {
            format!(
                "the new B's room channels: {} (expected 4: two own-id rooms, shared, mine)",
                c.channels
            )
        });

        // Delivery: from A into B, and from B out.
        for (from, room, data) in [
            ("a", "shared", "from a"),
            ("c", "mine", "from c"),
            ("b2", "shared", "from b2"),
        ] {
            let publish = json!({"room": room, "data": data});
            ack_ok(&agent, from, "publish", publish).await?;
        }
        for (client, n) in [("a", 2), ("c", 2), ("b1", 3), ("b2", 2)] {
            agent.wait_count(client, "msg", n, EVENT_TIMEOUT).await?;
        }
        tokio::time::sleep(SETTLE).await;
        for (client, want) in [
            ("a", vec!["from a", "from b2"]),
            ("c", vec!["from a", "from b2"]),
            ("b1", vec!["from a", "from c", "from b2"]),
            ("b2", vec!["from a", "from b2"]),
        ] {
            // Three publishers on three nodes: no order between them.
            let mut got: Vec<String> = agent
                .events(client, "msg")
                .await?
                .into_iter()
                .map(|a| a[0]["data"].as_str().unwrap_or("?").to_owned())
                .collect();
            got.sort();
            let mut want: Vec<String> = want.into_iter().map(String::from).collect();
            want.sort();
            checks.check(got == want, || {
                format!("{client} after the restart: {got:?}, expected {want:?}")
            });
        }
        checks.finish()
    })
    .await
}

/// 50 rooms over 3 nodes (room i on 1 + i % 3 nodes), then Redis dies and comes back empty on
/// the same port: once the nodes are ready again every room channel has its member nodes as
/// subscribers, resubscribed in a few commands per node, and a broadcast to each room reaches
/// exactly its members.
#[tokio::test]
async fn a_restarted_redis_gets_every_room_channel_back() -> Result<()> {
    with_timeout_of(LIMIT, async {
        let (mut cluster, port, agent) = start().await?;
        let ps = pubsub();
        let names = ["a", "b", "c"];
        connect_at(&agent, &cluster, &ps, &[("a", 0), ("b", 1), ("c", 2)]).await?;
        let rooms: Vec<String> = (0..50).map(|i| format!("room-{i}")).collect();
        let mut want = BTreeMap::new();
        for (i, room) in rooms.iter().enumerate() {
            let members = 1 + i % 3;
            for name in &names[..members] {
                ack_ok(&agent, name, "join", json!(room)).await?;
            }
            want.insert(channel(NS, room), i64::try_from(members)?);
        }
        let mut checks = Checks::new();
        checks.ok(wait_numsub_all(port, &want, Instant::now(), SETTLED).await, "NUMSUB of the 50 room channels before the restart");
        let before = RoomCounters::of_nodes(&cluster, &[0, 1, 2]).await?;

        cluster.redis_mut().standalone().kill();
        tokio::time::sleep(Duration::from_millis(500)).await;
        cluster.redis_mut().standalone().restart().await?;
        let restarted = Instant::now();
        wait_all_ready(&cluster, &[0, 1, 2], Duration::from_secs(20)).await?;
        let ready = restarted.elapsed();
        if let Some(t) = checks.ok(wait_numsub_all(port, &want, restarted, Duration::from_secs(10)).await, "NUMSUB of the 50 room channels after the Redis restart") {
            eprintln!("nodes ready {ready:?} and every room channel back {t:?} after the Redis restart");
        }
        let after = RoomCounters::of_nodes(&cluster, &[0, 1, 2]).await?;
        for (i, (a, b)) in after.iter().zip(&before).enumerate() {
            let d = a.since(b);
            eprintln!("node {i}: {d:?}");
            // The node's room channels (its own-id room and 50 / 33 / 16 rooms) and its two
            // namespace channels per namespace go back in batches, not one command each.
            checks.check(d.subscribe_commands >= 1.0 && d.subscribe_commands <= 5.0, || {
                format!("node {i} sent {} SUBSCRIBE commands to restore its channels (expected 1 to 5: batched)", d.subscribe_commands)
            });
            checks.check(d.channels == 0.0 && d.unsubscribes == 0.0, || format!("node {i}'s room channels changed over the restart: {d:?}"));
        }

        // A broadcast to each room, from C: exactly its members get it.
        for room in &rooms {
            ack_ok(&agent, "c", "publish", json!({"room": room, "data": room})).await?;
        }
        for (name, n) in [("a", 50), ("b", 33), ("c", 16)] {
            checks.ok(agent.wait_count(name, "msg", n, EVENT_TIMEOUT).await.map(|_| ()), &format!("{name} gets the broadcasts to its rooms"));
        }
        tokio::time::sleep(SETTLE).await;
        for (k, name) in names.iter().enumerate() {
            let got: Vec<Value> = agent.events(name, "msg").await?.into_iter().map(|a| a[0]["room"].clone()).collect();
            let want: Vec<Value> = rooms.iter().enumerate().filter(|(i, _)| k < 1 + i % 3).map(|(_, r)| json!(r)).collect();
            checks.check(got == want, || format!("{name} after the Redis restart got {got:?}, expected {want:?}"));
        }
        let n = numsub1(port, &channel(NS, "room-0")).await?;
        checks.check(n == 1, || format!("NUMSUB room-0 at the end: {n}"));
        checks.finish()
    })
    .await
}
