//! Per-room channels for the rooms of the node's other join paths: the README recipes
//! (`/readme` `join`/`leave`, the fans room joined on connection), the server API's
//! `socketsJoin`/`socketsLeave` from any node, and the CRUD dialects' collection and record
//! rooms (Backbone `read`, ko.ninja `find`/`findOne`, Sails list/get/create, and Sails'
//! `publishCreate` joining class-room sockets on every node). For each: delivery across nodes,
//! nothing at a node without a member (its broadcast counters stay still), NUMSUB counting the
//! member nodes, and the last leave unsubscribing after the delay. Broadcasts to several rooms
//! reach a socket in several of them once.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use ioscale_cluster_tests::dialects::{DialectAgent as _, call, changes, wait_changes};
use ioscale_cluster_tests::extra::{AgentBulk as _, Checks, with_timeout_of};
use ioscale_cluster_tests::rooms::{
    RoomCounters, TEST_DELAY, ack_ok, all_acked, channel, check_isolated, connect_at, delay_args,
    deltas, expect_unsubscribed_in_time, numsub1, publish_window_event, redis_port,
};
use ioscale_cluster_tests::{
    Agent, Cluster, ConnectOpts, EVENT_TIMEOUT, Emit, SETTLE, Selector, Transport, connect_spread,
};
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(90);
const README: &str = "/readme";
const FANS: &str = "justin bieber fans";

/// Counter deltas of nodes A, B, C since `before`.
/// The README recipes: the fans room every socket joins on connection, `join`/`leave`, `in`
/// and `to` across nodes.
#[tokio::test]
async fn readme_rooms_are_room_channels() -> Result<()> {
    with_timeout_of(LIMIT, async {
        let cluster = Cluster::builder().node_args(delay_args()).start().await?;
        let port = redis_port(&cluster)?;
        let agent = Agent::spawn().await?;
        let mut sids = Vec::new();
        for (name, node) in [("c0", 0), ("c1", 1), ("c2", 2)] {
            let opts = ConnectOpts::new(Transport::Websocket).namespace(README);
            sids.push(
                agent
                    .connect(name, &cluster.node(node).url(), &opts)
                    .await?,
            );
            // The node sends `news` once the connection's broadcasts are handed over.
            agent.wait_count(name, "news", 1, EVENT_TIMEOUT).await?;
        }
        tokio::time::sleep(SETTLE).await;
        let mut checks = Checks::new();
        let fans = channel(README, FANS);
        let n = numsub1(port, &fans).await?;
        checks.check(n == 3, || {
            format!("NUMSUB {fans}: {n}, expected 3 (a fan on every node)")
        });

        let room1 = channel(README, "room1");
        for c in ["c0", "c1"] {
            ack_ok(&agent, c, "join", json!("room1")).await?;
        }
        let n = numsub1(port, &room1).await?;
        checks.check(n == 2, || {
            format!("NUMSUB {room1} right after the joins: {n}")
        });

        // `in` from A, 50 times, one at a time (unlike `/pubsub` publishes, the README's
        // handlers of one socket may run concurrently): both members, in order; C hears nothing.
        let before = RoomCounters::of_nodes(&cluster, &[0, 1, 2]).await?;
        let r = publish_window_event(&agent, "c0", "in", "room1", 50, 1, EVENT_TIMEOUT).await?;
        all_acked(&r, "50 x in room1")?;
        for c in ["c0", "c1"] {
            let s = agent
                .seq_check(c, "room message", 50, EVENT_TIMEOUT, SETTLE)
                .await?;
            checks.check(s.in_order && s.count == 50, || {
                format!("{c}: `in` room1: {s:?}")
            });
        }
        checks.check(agent.events("c2", "room message").await?.is_empty(), || {
            "c2 got room1's messages".into()
        });
        check_isolated(
            &mut checks,
            "50 x `in` room1 from A",
            &deltas(&cluster, &before).await?,
            50.0,
        );

        // `to` from B: the other member, on A.
        ack_ok(&agent, "c1", "to", json!({"room": "room1", "data": "x"})).await?;
        let got = agent
            .wait_count("c0", "room message", 51, EVENT_TIMEOUT)
            .await?;
        checks.check(
            got[50] == [json!({"from": sids[1], "room": "room1", "data": "x"})],
            || format!("c0: `to` room1 from B: {:?}", got[50]),
        );

        // B's last member leaves room1; C's fan leaves the fans room.
        ack_ok(&agent, "c1", "leave", json!("room1")).await?;
        let left = Instant::now();
        checks.ok(
            expect_unsubscribed_in_time(port, &room1, 1, left).await,
            "B unsubscribes room1 after `leave`",
        );
        ack_ok(&agent, "c2", "leave", json!(FANS)).await?;
        let left = Instant::now();
        checks.ok(
            expect_unsubscribed_in_time(port, &fans, 2, left).await,
            "C unsubscribes the fans room after `leave`",
        );

        // Tweets go to the fans (volatile: sent until one arrives); C is no longer one.
        let before = RoomCounters::of_nodes(&cluster, &[0, 1, 2]).await?;
        let mut tweets = 0;
        let from_c0 = |got: &[Vec<Value>]| got.iter().any(|a| a[0]["from"] == sids[0]);
        while !from_c0(&agent.events("c1", "bieber tweet").await?) {
            ensure!(tweets < 20, "c1 got none of {tweets} tweets from c0");
            ack_ok(&agent, "c0", "tweet", json!(format!("t{tweets}"))).await?;
            tweets += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(SETTLE).await;
        let d = deltas(&cluster, &before).await?;
        checks.check(d[2].broadcasts_in == 0.0 && d[2].received == 0.0, || {
            format!("C left the fans room but received tweets: {:?}", d[2])
        });
        checks.check(!from_c0(&agent.events("c2", "bieber tweet").await?), || {
            "c2 left the fans but got a tweet".into()
        });

        // B's only socket disconnects: its fans channel goes.
        agent.disconnect("c1").await?;
        let gone = Instant::now();
        checks.ok(
            expect_unsubscribed_in_time(port, &fans, 1, gone).await,
            "B unsubscribes the fans room after the disconnect",
        );
        checks.finish()
    })
    .await
}

/// `POST /api/v1/join` / `leave` (socketsJoin / socketsLeave) through any node, and broadcasts
/// to several rooms: one copy per room on the rooms' channels, each socket served once.
#[tokio::test]
async fn api_joins_are_room_channels_and_multi_room_broadcasts_deliver_once() -> Result<()> {
    with_timeout_of(LIMIT, async {
        let cluster = Cluster::builder().node_args(delay_args()).start().await?;
        let port = redis_port(&cluster)?;
        let agent = Agent::spawn().await?;
        // x0, x3 on A; x1, x4 on B; x2, x5 on C.
        let x = connect_spread(&cluster, &agent, Transport::Websocket, "/", "x", 6).await?;
        let mut checks = Checks::new();
        let room = channel("/", "api-room");

        // Joined through C, for sockets of A and B: confirmed once they are subscribed.
        cluster.api(2).join(&Selector::sockets([&x[0].id, &x[1].id]), &["api-room"]).await?;
        let n = numsub1(port, &room).await?;
        checks.check(n == 2, || format!("NUMSUB {room} right after the join: {n}"));

        let before = RoomCounters::of_nodes(&cluster, &[0, 1, 2]).await?;
        for i in 0..50 {
            cluster.api(0).emit(&Emit::new("n", vec![json!(i)]).to(["api-room"])).await?;
        }
        let want: Vec<Vec<Value>> = (0..50).map(|i| vec![json!(i)]).collect();
        for c in &x[..2] {
            let got = agent.wait_count(&c.name, "n", 50, EVENT_TIMEOUT).await?;
            checks.check(got == want, || format!("{}: 50 emits in order: {got:?}", c.name));
        }
        tokio::time::sleep(SETTLE).await;
        for c in &x[2..] {
            let got = agent.events(&c.name, "n").await?;
            checks.check(got.is_empty(), || format!("{} is not in api-room: {got:?}", c.name));
        }
        check_isolated(&mut checks, "50 API emits to api-room from A", &deltas(&cluster, &before).await?, 50.0);

        // Several rooms. A: x0 {r1}. B: x1 {r1, r2}, x4 {r2}. C: x2 {r2, r3}, x5 {}.
        let api_b = cluster.api(1);
        api_b.join(&Selector::sockets([&x[0].id, &x[1].id]), &["r1"]).await?;
        api_b.join(&Selector::sockets([&x[1].id, &x[4].id, &x[2].id]), &["r2"]).await?;
        api_b.join(&Selector::sockets([&x[2].id]), &["r3"]).await?;
        let before = RoomCounters::of_nodes(&cluster, &[0, 1, 2]).await?;
        cluster.api(0).emit(&Emit::new("multi", vec![json!("m")]).to(["r1", "r2", "r3"])).await?;
        for i in [0, 1, 2, 4] {
            agent.wait_count(&x[i].name, "multi", 1, EVENT_TIMEOUT).await?;
        }
        tokio::time::sleep(SETTLE).await;
        for (i, want) in [(0, 1), (1, 1), (2, 1), (3, 0), (4, 1), (5, 0)] {
            let n = agent.events(&x[i].name, "multi").await?.len();
            checks.check(n == want, || format!("{} got {n} x multi to [r1, r2, r3], expected {want}", x[i].name));
        }
        // One message per subscribed room: B has r1 and r2, C has r2 and r3.
        let d = deltas(&cluster, &before).await?;
        checks.check(d[1].broadcasts_in == 2.0 && d[2].broadcasts_in == 2.0, || {
            format!("a broadcast to [r1, r2, r3] from A: B received {} messages, C {} (expected 2 and 2: one per room it subscribes)", d[1].broadcasts_in, d[2].broadcasts_in)
        });
        // More rooms than go one by one (16): once on the namespace channel, still once each.
        let many: Vec<String> = (1..=20).map(|i| format!("r{i}")).collect();
        cluster.api(2).emit(&Emit::new("many", vec![json!(1)]).to(many)).await?;
        for i in [0, 1, 2, 4] {
            agent.wait_count(&x[i].name, "many", 1, EVENT_TIMEOUT).await?;
        }
        tokio::time::sleep(SETTLE).await;
        for (i, want) in [(0, 1), (1, 1), (2, 1), (3, 0), (4, 1), (5, 0)] {
            let n = agent.events(&x[i].name, "many").await?.len();
            checks.check(n == want, || format!("{} got {n} x many to r1..r20, expected {want}", x[i].name));
        }

        // socketsLeave through C of B's member: B unsubscribes after the delay.
        let before_b = RoomCounters::of(&cluster, 1).await?;
        cluster.api(2).leave(&Selector::sockets([&x[1].id]), &["api-room"]).await?;
        let left = Instant::now();
        checks.ok(expect_unsubscribed_in_time(port, &room, 1, left).await, "B unsubscribes api-room after socketsLeave");
        let d = RoomCounters::of(&cluster, 1).await?.since(&before_b);
        checks.check(d.unsubscribes == 1.0, || format!("B's counters after socketsLeave: {d:?}"));
        // Leave and join again within the delay, through two other nodes: A keeps the channel.
        let before_a = RoomCounters::of(&cluster, 0).await?;
        cluster.api(1).leave(&Selector::sockets([&x[0].id]), &["api-room"]).await?;
        tokio::time::sleep(TEST_DELAY / 2).await;
        cluster.api(2).join(&Selector::sockets([&x[0].id]), &["api-room"]).await?;
        tokio::time::sleep(TEST_DELAY * 3).await;
        let d = RoomCounters::of(&cluster, 0).await?.since(&before_a);
        let n = numsub1(port, &room).await?;
        checks.check(n == 1 && d.unsubscribes == 0.0 && d.subscribes == 0.0, || {
            format!("socketsLeave + socketsJoin within the delay: NUMSUB {n}, A's counters moved {d:?}")
        });
        // socketsLeave by room, through A: C's r3 goes.
        cluster.api(0).leave(&Selector::rooms(["r3"]), &["r3"]).await?;
        let left = Instant::now();
        checks.ok(expect_unsubscribed_in_time(port, &channel("/", "r3"), 0, left).await, "C unsubscribes r3 after socketsLeave by room");
        checks.finish()
    })
    .await
}

/// The CRUD dialects' rooms: readers on A (Backbone) and B (ko.ninja) of a collection, a
/// writer on A, nobody on C; record rooms joined by `findOne` / `fetch_one`; Sails' class and
/// instance rooms, the latter joined on every node by `publishCreate`.
#[tokio::test]
async fn crud_dialect_rooms_are_room_channels() -> Result<()> {
    with_timeout_of(LIMIT, async {
        let cluster = Cluster::builder().node_args(delay_args()).start().await?;
        let port = redis_port(&cluster)?;
        let agent = Agent::spawn().await?;
        let ws = ConnectOpts::new(Transport::Websocket);
        let clients = [("bb", 0), ("w", 0), ("sa", 0), ("ko", 1), ("sb", 1), ("cc", 2)];
        connect_at(&agent, &cluster, &ws, &clients).await?;
        let mut checks = Checks::new();
        let todos = channel("/", "model:todos");
        agent.backbone("bb", "fetch", "todos", None, json!({}), None).await?;
        let found = call(&agent, "ko", "todos-find", json!({"query": {}})).await?;
        ensure!(found == json!([]), "ko find: {found}");
        let n = numsub1(port, &todos).await?;
        checks.check(n == 2, || format!("NUMSUB {todos} right after the reads on A and B: {n}"));

        // 50 inserts from A: both readers get 50 creates, C nothing.
        let before = RoomCounters::of_nodes(&cluster, &[0, 1, 2]).await?;
        let mut ids = Vec::new();
        for i in 0..50 {
            let r = call(&agent, "w", "todos-insert", json!({"data": {"n": i}})).await?;
            ids.push(r["id"].as_u64().unwrap_or_default());
        }
        for c in ["bb", "ko"] {
            let got = wait_changes(&agent, c, "model-change", 50).await?;
            let got_ids: Vec<u64> = got.iter().filter_map(|g| g["id"].as_u64()).collect();
            checks.check(got_ids == ids && got.iter().all(|g| g["verb"] == "create"), || {
                format!("{c}: 50 creates in order, got {got:?}")
            });
        }
        tokio::time::sleep(SETTLE).await;
        checks.check(changes(&agent, "cc", "model-change").await?.is_empty(), || "cc read nothing but got changes".into());
        check_isolated(&mut checks, "50 ko.ninja inserts on A", &deltas(&cluster, &before).await?, 50.0);

        // Record rooms: both readers follow ids[0] too; an update from C reaches each once
        // (the change goes to the collection's and the record's rooms).
        let id = ids[0];
        agent.backbone("bb", "fetch_one", "todos", Some(id), json!({}), None).await?;
        call(&agent, "ko", "todos-findOne", json!({"id": id})).await?;
        let record = channel("/", &format!("model:todos:{id}"));
        let n = numsub1(port, &record).await?;
        checks.check(n == 2, || format!("NUMSUB {record} after findOne / fetch_one: {n}"));
        call(&agent, "cc", "todos-update", json!({"id": id, "data": {"done": true}})).await?;
        for c in ["bb", "ko"] {
            wait_changes(&agent, c, "model-change", 51).await?;
        }
        tokio::time::sleep(SETTLE).await;
        for c in ["bb", "ko"] {
            let got = changes(&agent, c, "model-change").await?;
            let updates = got.iter().filter(|g| g["verb"] == "update").count();
            checks.check(got.len() == 51 && updates == 1, || {
                format!("{c} (in the collection's and the record's rooms): {updates} updates, {} changes, expected 1 and 51", got.len())
            });
        }

        // Sails: B lists (class room), A creates (instance room on A; publishCreate joins B's
        // lister to it), C reads it (instance room on C), B hears C's update.
        let r = agent.sails09("sb", "get", "/user", json!({})).await?;
        checks.check(r.body == json!([]), || format!("sb lists users: {r:?}"));
        let class = channel("/", "sails:user");
        let n = numsub1(port, &class).await?;
        checks.check(n == 1, || format!("NUMSUB {class} after B's list: {n}, expected 1"));
        let r = agent.sails09("sa", "post", "/user", json!({"name": "x"})).await?;
        let uid = r.body["id"].as_u64().unwrap_or_default();
        ensure!(uid > 0, "sails create: {r:?}");
        let instance = channel("/", &format!("sails:user:{uid}"));
        let n = numsub1(port, &instance).await?;
        checks.check(n == 2, || format!("NUMSUB {instance} once the create answered: {n} (expected A and B)"));
        let got = wait_changes(&agent, "sb", "message", 1).await?;
        checks.check(got[0]["verb"] == "create" && got[0]["id"] == uid, || format!("sb: {got:?}"));
        let r = agent.sails09("cc", "get", &format!("/user/{uid}"), json!({})).await?;
        checks.check(r.body["id"] == uid, || format!("cc reads the user: {r:?}"));
        let n = numsub1(port, &instance).await?;
        checks.check(n == 3, || format!("NUMSUB {instance} after C's read: {n}, expected 3"));
        let r = agent.sails09("cc", "put", &format!("/user/{uid}"), json!({"name": "y"})).await?;
        checks.check(r.body["name"] == "y", || format!("cc updates: {r:?}"));
        for c in ["sa", "sb"] {
            let got = wait_changes(&agent, c, "message", if c == "sa" { 1 } else { 2 }).await?;
            checks.check(got.last().is_some_and(|m| m["verb"] == "update"), || format!("{c}: {got:?}"));
        }
        // A destroy empties the record's rooms on every node (socketsLeave): unsubscribed.
        let r = agent.sails09("cc", "delete", &format!("/user/{uid}"), json!({})).await?;
        checks.check(r.body["id"] == uid, || format!("cc destroys: {r:?}"));
        let gone = Instant::now();
        let limit = Duration::from_secs(2);
        checks.ok(ioscale_cluster_tests::rooms::wait_numsub(port, &instance, 0, gone, limit).await, "the destroyed user's instance room is unsubscribed everywhere");
        checks.finish()
    })
    .await
}
