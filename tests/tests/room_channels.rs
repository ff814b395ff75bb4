//! Per-room channels (`{prefix}#{ns}##{room}`) for rooms joined through `/pubsub` and at the
//! handshake (socket-id and `user:` rooms): a broadcast to a room reaches its members on other
//! nodes, in the publisher's order, and never a node without a member (its broadcast counters
//! stay still, `PUBSUB NUMSUB` counts the member nodes only); the last leave or disconnect
//! unsubscribes after `--room-unsubscribe-delay-ms` and a quick re-join keeps the channel; a
//! join's ack means Redis has the channel (a publish right after it arrives); and with
//! `--room-channels false` rooms still work, on the namespace channel.
//!
//! The README recipes, the server API and the CRUD dialects: `room_channels_paths.rs`;
//! restarts: `room_channels_restart.rs`; a Redis Cluster: `room_channels_cluster.rs`.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use ioscale_cluster_tests::extra::{AgentBulk as _, Checks, with_timeout_of};
use ioscale_cluster_tests::rooms::{
    Monitor, RoomCounters, TEST_DELAY, UNSUBSCRIBED_WITHIN, ack_ok, all_acked, channel,
    check_isolated, connect_at, delay_args, deltas, expect_unsubscribed_in_time, numsub_many,
    numsub1, redis_port, wait_numsub,
};
use ioscale_cluster_tests::{
    Agent, Cluster, ConnectOpts, EVENT_TIMEOUT, Emit, SETTLE, TestLogs, Transport,
};
use serde_json::{Value, json};

const NS: &str = "/pubsub";
const LIMIT: Duration = Duration::from_secs(90);
/// How long a precondition on subscriber counts may take to hold.
const SETTLED: Duration = Duration::from_secs(2);

fn pubsub() -> ConnectOpts {
    ConnectOpts::new(Transport::Websocket).namespace(NS)
}

/// Members on A and B, none on C: 50 publishes from A reach B in order and leave C's
/// broadcast counters where they were; NUMSUB counts A and B. Then 500 numbered publishes
/// from A (not a member) reach members on B and C, all in order.
#[tokio::test]
async fn pubsub_room_broadcasts_reach_member_nodes_only_and_in_order() -> Result<()> {
    with_timeout_of(LIMIT, async {
        let cluster = Cluster::builder().node_args(delay_args()).start().await?;
        let port = redis_port(&cluster)?;
        let agent = Agent::spawn().await?;
        for (name, node) in [("a", 0), ("b", 1), ("c", 2), ("b2", 1), ("c2", 2)] {
            agent
                .connect(name, &cluster.node(node).url(), &pubsub())
                .await?;
        }
        let mut checks = Checks::new();
        let lobby = channel(NS, "lobby");
        for c in ["a", "b"] {
            ack_ok(&agent, c, "join", json!("lobby")).await?;
        }
        // A join is acked once its channel is subscribed: no wait here.
        let n = numsub1(port, &lobby).await?;
        checks.check(n == 2, || {
            format!("NUMSUB {lobby} right after the joins: {n}, expected 2")
        });
        // Room channels per node: the sockets' own-id rooms, and lobby on A and B.
        let before = RoomCounters::of_nodes(&cluster, &[0, 1, 2]).await?;
        let gauges: Vec<f64> = before.iter().map(|c| c.channels).collect();
        checks.check(gauges == [2.0, 3.0, 2.0], || {
            format!("ioscale_adapter_room_channels per node: {gauges:?}, expected [2, 3, 2]")
        });

        let r = agent
            .publish_window("a", "lobby", 50, 10, EVENT_TIMEOUT)
            .await?;
        all_acked(&r, "50 publishes to lobby")?;
        for c in ["a", "b"] {
            let s = agent.seq_check(c, "msg", 50, EVENT_TIMEOUT, SETTLE).await?;
            checks.check(s.in_order && s.count == 50, || {
                format!("{c} in lobby: {s:?}")
            });
        }
        for c in ["c", "b2", "c2"] {
            let got = agent.events(c, "msg").await?;
            checks.check(got.is_empty(), || {
                format!("{c} is in no room but got {got:?}")
            });
        }
        let d = deltas(&cluster, &before).await?;
        check_isolated(&mut checks, "50 publishes to lobby from A", &d, 50.0);
        checks.check(d[0].broadcasts_in == 0.0, || {
            format!("A published and received {} broadcasts", d[0].broadcasts_in)
        });
        let n = numsub1(port, &lobby).await?;
        checks.check(n == 2, || {
            format!("NUMSUB {lobby} after the publishes: {n}")
        });

        // Order per publisher, to members on the two other nodes.
        for c in ["b2", "c2"] {
            ack_ok(&agent, c, "join", json!("ordered")).await?;
        }
        let r = agent
            .publish_window("a", "ordered", 500, 100, Duration::from_secs(30))
            .await?;
        all_acked(&r, "500 publishes to ordered")?;
        for c in ["b2", "c2"] {
            let s = agent
                .seq_check(c, "msg", 500, Duration::from_secs(20), SETTLE)
                .await?;
            checks.check(s.in_order && s.count == 500 && s.duplicates == 0, || {
                format!("{c}: 500 publishes from A in order: {s:?}")
            });
        }
        let n = numsub1(port, &channel(NS, "ordered")).await?;
        checks.check(n == 2, || {
            format!("NUMSUB of ordered (members on B and C): {n}")
        });
        checks.finish()
    })
    .await
}

/// The last leave, and the last disconnect, unsubscribe the room's channel after the delay
/// and not before; a leave followed by a re-join within the delay costs no unsubscribe and no
/// new subscribe.
#[tokio::test]
async fn pubsub_last_leave_unsubscribes_after_the_delay_and_a_quick_rejoin_does_not() -> Result<()>
{
    with_timeout_of(LIMIT, async {
        let cluster = Cluster::builder().nodes(2).node_args(delay_args()).start().await?;
        let port = redis_port(&cluster)?;
        let agent = Agent::spawn().await?;
        let clients = [("a", 0), ("a2", 0), ("b", 1), ("b2", 1)];
        let a_sid = connect_at(&agent, &cluster, &pubsub(), &clients).await?[0].clone();
        let mut checks = Checks::new();
        let lobby = channel(NS, "lobby");
        for c in ["a", "b", "b2"] {
            ack_ok(&agent, c, "join", json!("lobby")).await?;
        }
        // Preconditions wait (whether a join's ack already means subscribed is the subject of
        // `a_publish_right_after_a_join_ack_reaches_the_new_member`).
        checks.ok(wait_numsub(port, &lobby, 2, Instant::now(), SETTLED).await, "lobby on A and B");

        // Not the last socket of B: nothing changes.
        let b_before = RoomCounters::of(&cluster, 1).await?;
        ack_ok(&agent, "b2", "leave", json!("lobby")).await?;
        tokio::time::sleep(TEST_DELAY * 2).await;
        let n = numsub1(port, &lobby).await?;
        let d = RoomCounters::of(&cluster, 1).await?.since(&b_before);
        checks.check(n == 2 && d.unsubscribes == 0.0, || {
            format!("after a leave that left b in lobby: NUMSUB {n}, B's counters moved {d:?}")
        });

        // The last one of B leaves.
        ack_ok(&agent, "b", "leave", json!("lobby")).await?;
        let left = Instant::now();
        if let Some(t) = checks.ok(expect_unsubscribed_in_time(port, &lobby, 1, left).await, "B unsubscribes lobby after b's leave") {
            eprintln!("lobby unsubscribed by B {t:?} after the leave");
        }
        let d = RoomCounters::of(&cluster, 1).await?.since(&b_before);
        checks.check(d.unsubscribes == 1.0 && d.channels == -1.0, || {
            format!("B after its last leave of lobby: {d:?} (expected 1 unsubscribe, gauge -1)")
        });
        ack_ok(&agent, "a", "publish", json!({"room": "lobby", "data": "after"})).await?;
        agent.wait_count("a", "msg", 1, EVENT_TIMEOUT).await?;
        tokio::time::sleep(SETTLE).await;
        for c in ["b", "b2"] {
            let got = agent.events(c, "msg").await?;
            checks.check(got.is_empty(), || format!("{c} left lobby but got {got:?}"));
        }

        // The last one of A disconnects: lobby and its own-id room go.
        let a_own = channel(NS, &a_sid);
        checks.ok(wait_numsub(port, &a_own, 1, Instant::now(), SETTLED).await, "a's own room on A");
        agent.disconnect("a").await?;
        let gone = Instant::now();
        if let Some(t) = checks.ok(expect_unsubscribed_in_time(port, &lobby, 0, gone).await, "A unsubscribes lobby after a's disconnect") {
            eprintln!("lobby unsubscribed by A {t:?} after the disconnect");
        }
        checks.ok(expect_unsubscribed_in_time(port, &a_own, 0, gone).await, "A unsubscribes a's own-id room after its disconnect");

        // Leave and join again within the delay: the channel stays, no (un)subscribe at all.
        ack_ok(&agent, "b", "join", json!("again")).await?;
        let again = channel(NS, "again");
        checks.ok(wait_numsub(port, &again, 1, Instant::now(), SETTLED).await, "again on B");
        let b_before = RoomCounters::of(&cluster, 1).await?;
        ack_ok(&agent, "b", "leave", json!("again")).await?;
        tokio::time::sleep(TEST_DELAY / 2).await;
        ack_ok(&agent, "b", "join", json!("again")).await?;
        tokio::time::sleep(TEST_DELAY * 3).await;
        let d = RoomCounters::of(&cluster, 1).await?.since(&b_before);
        let n = numsub1(port, &again).await?;
        checks.check(n == 1 && d.unsubscribes == 0.0 && d.subscribes == 0.0, || {
            format!("leave + re-join within the delay: NUMSUB {n}, B's counters moved {d:?} (expected no unsubscribe or subscribe)")
        });
        ack_ok(&agent, "a2", "publish", json!({"room": "again", "data": 1})).await?;
        let got = agent.wait_count("b", "msg", 1, EVENT_TIMEOUT).await?;
        checks.check(got[0][0] == json!({"room": "again", "data": 1}), || format!("b in again: {got:?}"));
        checks.finish()
    })
    .await
}

const SECRET: &str = "a test secret of at least thirty-two bytes";
const AUDIENCE: &str = "ioscale-test";

fn token(sub: &str) -> String {
    let claims =
        json!({"sub": sub, "aud": AUDIENCE, "exp": jsonwebtoken::get_current_timestamp() + 600});
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()).expect("an HMAC key");
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).expect("signing")
}

/// Socket-id rooms and `user:<sub>` rooms, joined at the handshake, are room channels: NUMSUB
/// counts the nodes holding the socket or the user's sockets, a server emit to either crosses
/// nodes and skips the others, and a disconnect unsubscribes them.
#[tokio::test]
async fn socket_id_and_user_rooms_are_room_channels() -> Result<()> {
    with_timeout_of(LIMIT, async {
        let logs = TestLogs::for_current_test()?;
        let secret = logs.file("jwt-secret");
        std::fs::write(&secret, format!("{SECRET}\n"))?;
        let mut args = delay_args();
        args.extend(["--auth", "jwt", "--jwt-audience", AUDIENCE].map(String::from));
        args.extend(["--jwt-secret-file".to_owned(), secret.display().to_string()]);
        let cluster = Cluster::builder().node_args(args).start().await?;
        let port = redis_port(&cluster)?;
        let agent = Agent::spawn_in(&logs).await?;
        let with = |sub: &str| pubsub().auth(json!({"token": token(sub)}));
        let a1 = agent
            .connect("a1", &cluster.node(0).url(), &with("alice"))
            .await?;
        let a2 = agent
            .connect("a2", &cluster.node(1).url(), &with("alice"))
            .await?;
        let b = agent
            .connect("b", &cluster.node(2).url(), &with("bob"))
            .await?;
        let mut checks = Checks::new();
        let alice = channel(NS, "user:alice");
        for (ch, want) in [
            (alice.clone(), 2),
            (channel(NS, "user:bob"), 1),
            (channel(NS, &a1), 1),
            (channel(NS, &a2), 1),
            (channel(NS, &b), 1),
        ] {
            let n = numsub1(port, &ch).await?;
            checks.check(n == want, || {
                format!("NUMSUB {ch} after the handshakes: {n}, expected {want}")
            });
        }

        // 20 emits to alice through A: a1 and a2 get each; bob's node hears nothing.
        let before = RoomCounters::of_nodes(&cluster, &[0, 1, 2]).await?;
        for i in 0..20 {
            cluster
                .api(0)
                .emit(
                    &Emit::new("private", vec![json!(i)])
                        .namespace(NS)
                        .to(["user:alice"]),
                )
                .await?;
        }
        for c in ["a1", "a2"] {
            let got = agent.wait_count(c, "private", 20, EVENT_TIMEOUT).await?;
            let want: Vec<Vec<Value>> = (0..20).map(|i| vec![json!(i)]).collect();
            checks.check(got == want, || format!("{c}: {got:?}"));
        }
        tokio::time::sleep(SETTLE).await;
        checks.check(agent.events("b", "private").await?.is_empty(), || {
            "bob got alice's emits".into()
        });
        let d = deltas(&cluster, &before).await?;
        checks.check(d[2].broadcasts_in == 0.0 && d[2].untargeted == 0.0, || {
            format!("bob's node C received alice's emits: {:?}", d[2])
        });
        checks.check(d[1].broadcasts_in == 20.0 && d[1].untargeted == 0.0, || {
            format!(
                "node B (a2): {:?}, expected 20 broadcasts in, none untargeted",
                d[1]
            )
        });

        // A socket's own room, from another node.
        cluster
            .api(0)
            .emit(
                &Emit::new("direct", vec![json!("to b")])
                    .namespace(NS)
                    .to([b.as_str()]),
            )
            .await?;
        let got = agent.wait_count("b", "direct", 1, EVENT_TIMEOUT).await?;
        checks.check(got == [vec![json!("to b")]], || {
            format!("b's own room: {got:?}")
        });

        // a2 goes: alice's room keeps A only, a2's own room is gone.
        agent.disconnect("a2").await?;
        let gone = Instant::now();
        checks.ok(
            expect_unsubscribed_in_time(port, &alice, 1, gone).await,
            "B unsubscribes user:alice after a2's disconnect",
        );
        checks.ok(
            expect_unsubscribed_in_time(port, &channel(NS, &a2), 0, gone).await,
            "a2's own-id room after its disconnect",
        );
        cluster
            .api(2)
            .emit(
                &Emit::new("private", vec![json!("last")])
                    .namespace(NS)
                    .to(["user:alice"]),
            )
            .await?;
        let got = agent.wait_count("a1", "private", 21, EVENT_TIMEOUT).await?;
        checks.check(got[20] == [json!("last")], || {
            format!("a1 after a2 left: {got:?}")
        });
        checks.finish()
    })
    .await
}

/// `--room-channels false` on every node: rooms work as before, on the namespace channel; no
/// room channel is subscribed.
#[tokio::test]
async fn with_room_channels_off_rooms_still_work() -> Result<()> {
    with_timeout_of(LIMIT, async {
        let cluster = Cluster::builder()
            .nodes(2)
            .node_args(["--room-channels", "false"])
            .start()
            .await?;
        let port = redis_port(&cluster)?;
        let agent = Agent::spawn().await?;
        connect_at(
            &agent,
            &cluster,
            &pubsub(),
            &[("a", 0), ("b", 1), ("b2", 1)],
        )
        .await?;
        let mut checks = Checks::new();
        for c in ["a", "b"] {
            ack_ok(&agent, c, "join", json!("lobby")).await?;
        }
        ack_ok(&agent, "b", "join", json!("other")).await?;
        let r = agent
            .publish_window("a", "lobby", 20, 5, EVENT_TIMEOUT)
            .await?;
        all_acked(&r, "20 publishes to lobby")?;
        let s = agent
            .seq_check("b", "msg", 20, EVENT_TIMEOUT, SETTLE)
            .await?;
        checks.check(s.in_order && s.count == 20, || format!("b in lobby: {s:?}"));
        checks.check(agent.events("b2", "msg").await?.is_empty(), || {
            "b2 is in no room".into()
        });
        // Several rooms: once per socket.
        cluster
            .api(0)
            .emit(
                &Emit::new("multi", vec![json!(1)])
                    .namespace(NS)
                    .to(["lobby", "other"]),
            )
            .await?;
        for c in ["a", "b"] {
            agent.wait_count(c, "multi", 1, EVENT_TIMEOUT).await?;
        }
        tokio::time::sleep(SETTLE).await;
        for (c, want) in [("a", 1), ("b", 1), ("b2", 0)] {
            let n = agent.events(c, "multi").await?.len();
            checks.check(n == want, || {
                format!("{c} got {n} x multi, expected {want}")
            });
        }
        let n = numsub1(port, &channel(NS, "lobby")).await?;
        let ns = numsub1(port, &format!("ioscale#{NS}#")).await?;
        checks.check(n == 0 && ns == 2, || {
            format!("NUMSUB lobby channel {n} (expected 0), namespace channel {ns} (expected 2)")
        });
        for i in 0..2 {
            let c = RoomCounters::of(&cluster, i).await?;
            checks.check(c.channels == 0.0 && c.subscribes == 0.0, || {
                format!("node {i} with room channels off: {c:?}")
            });
        }
        checks.finish()
    })
    .await
}

/// A join is acked once its room channel is subscribed: for 100 fresh rooms, b (on B) joins
/// and, as soon as the ack is in, a (on A) publishes to the room and the test reads the
/// channel's NUMSUB. Every NUMSUB must already count B, and b must get every publish. A
/// `MONITOR` shows, on failure, in which order Redis ran B's SUBSCRIBE and A's PUBLISH.
#[tokio::test]
async fn a_publish_right_after_a_join_ack_reaches_the_new_member() -> Result<()> {
    with_timeout_of(LIMIT, async {
        let cluster = Cluster::builder().nodes(2).start().await?;
        let port = redis_port(&cluster)?;
        let agent = Agent::spawn().await?;
        connect_at(&agent, &cluster, &pubsub(), &[("a", 0), ("b", 1)]).await?;
        let monitor = Monitor::start(cluster.logs(), port)?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (mut early, mut early_rooms) = (Vec::new(), Vec::new());
        for i in 0..100 {
            let room = format!("fresh-{i}");
            let ch = channel(NS, &room);
            ack_ok(&agent, "b", "join", json!(room)).await?;
            let acked = Instant::now();
            agent
                .emit("a", "publish", vec![json!({"room": room, "data": i})])
                .await?;
            let n = numsub1(port, &ch).await?;
            if n != 1 {
                let lag = wait_numsub(port, &ch, 1, acked, Duration::from_secs(2)).await;
                early.push(format!(
                    "{room}: NUMSUB {n} after the join's ack (1 after {lag:?})"
                ));
                early_rooms.push(room.clone());
            }
        }
        let _ = agent.wait_count("b", "msg", 100, EVENT_TIMEOUT).await;
        tokio::time::sleep(SETTLE).await;
        let got: Vec<Value> = agent
            .events("b", "msg")
            .await?
            .into_iter()
            .map(|a| a[0]["data"].clone())
            .collect();
        let missing: Vec<i64> = (0..100).filter(|i| !got.contains(&json!(i))).collect();
        let mut checks = Checks::new();
        checks.check(early.is_empty(), || {
            format!(
                "{} of 100 joins were acked before Redis had the room channel: {early:?}",
                early.len()
            )
        });
        checks.check(missing.is_empty(), || {
            format!("b missed the publishes made right after its join's ack to rooms {missing:?}")
        });
        let missing_rooms = missing.iter().map(|i| format!("fresh-{i}"));
        for room in early_rooms.into_iter().chain(missing_rooms).take(3) {
            let ch = format!("\"{}\"", channel(NS, &room));
            eprintln!(
                "MONITOR lines with {ch}:\n  {}",
                monitor.lines_with(&ch).join("\n  ")
            );
        }
        checks.finish()
    })
    .await
}

/// 20 sockets of B, each alone in its room, disconnect (client-side) at once: every room
/// channel, and every own-id room channel, goes within the delay plus the sweep, as after a
/// leave.
#[tokio::test]
async fn disconnects_unsubscribe_their_rooms_within_the_delay() -> Result<()> {
    with_timeout_of(LIMIT, async {
        let cluster = Cluster::builder().nodes(2).node_args(delay_args()).start().await?;
        let port = redis_port(&cluster)?;
        let agent = Agent::spawn().await?;
        let mut channels = Vec::new();
        for i in 0..20 {
            let name = format!("s{i}");
            let sid = agent.connect(&name, &cluster.node(1).url(), &pubsub()).await?;
            ack_ok(&agent, &name, "join", json!(format!("solo-{i}"))).await?;
            channels.push(channel(NS, &format!("solo-{i}")));
            channels.push(channel(NS, &sid));
        }
        let n = numsub_many(port, &channels, false).await?;
        ensure!(n.iter().all(|n| *n == 1), "NUMSUB before the disconnects: {n:?}");
        for i in 0..20 {
            agent.disconnect(&format!("s{i}")).await?;
        }
        let gone = Instant::now();
        let mut took: Vec<Option<Duration>> = vec![None; channels.len()];
        while took.iter().any(Option::is_none) && gone.elapsed() < Duration::from_secs(5) {
            let n = numsub_many(port, &channels, false).await?;
            for (t, n) in took.iter_mut().zip(n) {
                if t.is_none() && n == 0 {
                    *t = Some(gone.elapsed());
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let late: Vec<(&String, Option<Duration>)> = channels
            .iter()
            .zip(&took)
            .filter(|(_, t)| t.is_none_or(|t| t > UNSUBSCRIBED_WITHIN))
            .map(|(c, t)| (c, *t))
            .collect();
        eprintln!("unsubscribed after the disconnects: {took:?}");
        ensure!(
            late.is_empty(),
            "{} of {} room channels of disconnected sockets were still subscribed {UNSUBSCRIBED_WITHIN:?} after the disconnects (delay {TEST_DELAY:?}); (channel, gone after): {late:?}",
            late.len(),
            channels.len()
        );
        Ok(())
    })
    .await
}
