//! The cluster on a 3-master Redis Cluster (sharded pub/sub, `SPUBLISH` /
//! `SSUBSCRIBE`): every cross-node operation works as on a standalone Redis.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{Result, ensure};
use ioscale_cluster_tests::extra::{
    Checks, add_nodes_retrying_once, log_lines_with, numsub, readyz_full, wait_until,
};
use ioscale_cluster_tests::http::SocketInfo;
use ioscale_cluster_tests::{
    AckReply, Agent, Client, Cluster, EVENT_TIMEOUT, Emit, RedisKind, Selector, Transport,
    connect_spread, expect_delivery, with_timeout,
};
use serde_json::json;

const EVERYONE: &str = "everyone";

fn by_id(sockets: &[SocketInfo]) -> BTreeMap<String, SocketInfo> {
    sockets.iter().map(|s| (s.id.clone(), s.clone())).collect()
}

#[tokio::test]
async fn cluster_works_over_a_sharded_redis_cluster() -> Result<()> {
    with_timeout(async {
        let mut checks = Checks::new();
        // Nodes are added one by one so that a node failing to start is
        // recorded (the test fails) but the remaining checks still run with a
        // second attempt, instead of the whole scenario stopping at startup.
        let mut cluster = Cluster::builder().redis(RedisKind::Cluster).nodes(0).start().await?;
        add_nodes_retrying_once(&mut cluster, &mut checks, 3).await?;

        // Ready, and really sharded.
        for (i, node) in cluster.nodes().iter().enumerate() {
            let (status, body) = readyz_full(&cluster.api(i)).await?;
            checks.check(status == 200 && body["redis"] == "up", || {
                format!("node {i} /readyz: {status} {body}")
            });
            let lines = log_lines_with(&node.log(), "listening");
            checks.check(
                !lines.is_empty() && lines.iter().all(|l| l.contains("sharded=true") && l.contains("redis=true")),
                || format!("node {i}: expected one `listening` line with sharded=true, got {lines:?}"),
            );
        }
        let ports = cluster.redis_mut().cluster().ports();
        let (mut shard_subs, mut classic_subs) = (0, 0);
        for &p in &ports {
            shard_subs += numsub(p, "ioscale#/#", true).await?;
            classic_subs += numsub(p, "ioscale#/#", false).await?;
        }
        checks.check(shard_subs == 3 && classic_subs == 0, || {
            format!(
                "ioscale#/# should have 3 shard subscribers and no classic ones, got {shard_subs} shard / {classic_subs} classic"
            )
        });

        let agent = Agent::spawn().await?;
        let clients = connect_spread(&cluster, &agent, Transport::Websocket, "/", "c", 6).await?;
        let all: Vec<&Client> = clients.iter().collect();
        for c in &clients {
            agent.set_ack_reply(&c.name, "ask", AckReply::Echo).await?;
            let ack = agent
                .emit_with_ack(&c.name, "set-data", vec![json!({"name": c.name})], EVENT_TIMEOUT)
                .await?;
            ensure!(ack == [json!({"ok": true})], "set-data of {}: {ack:?}", c.name);
        }

        // Broadcast to all, from B.
        cluster.api(1).emit(&Emit::new("all", vec![json!("x")])).await?;
        checks.ok(
            expect_delivery(&agent, &clients, &all, "all", Some(&[json!("x")])).await,
            "broadcast to all",
        );

        // Join through C's API, wait until A sees the room, broadcast from A.
        let members = [&clients[0], &clients[4], &clients[5]];
        let member_ids: Vec<&str> = members.iter().map(|c| c.id.as_str()).collect();
        cluster.api(2).join(&Selector::sockets(member_ids.clone()), &["room1"]).await?;
        let want: BTreeSet<String> = member_ids.iter().map(|s| (*s).to_owned()).collect();
        let api_a = cluster.api(0);
        checks.ok(
            wait_until(EVENT_TIMEOUT, Duration::from_millis(100), "room1 to be visible from A", || {
                let (api_a, want) = (&api_a, &want);
                async move {
                    let got: BTreeSet<String> =
                        api_a.sockets("/", &["room1"]).await?.into_iter().map(|s| s.id).collect();
                    Ok((&got == want).then_some(()))
                }
            })
            .await,
            "join through C's API",
        );
        cluster.api(0).emit(&Emit::new("room", vec![json!(1)]).to(["room1"])).await?;
        checks.ok(
            expect_delivery(&agent, &clients, &members, "room", Some(&[json!(1)])).await,
            "broadcast to room1",
        );

        // Everyone joins a room through A.
        let ids: Vec<&str> = clients.iter().map(|c| c.id.as_str()).collect();
        cluster.api(0).join(&Selector::sockets(ids), &[EVERYONE]).await?;

        // Fetch sockets with data, from B: node, rooms and data of each.
        let expected: BTreeMap<String, (String, Vec<String>, serde_json::Value)> = clients
            .iter()
            .map(|c| {
                let mut rooms = vec![c.id.clone(), EVERYONE.to_owned()];
                if members.iter().any(|m| m.id == c.id) {
                    rooms.push("room1".to_owned());
                }
                rooms.sort();
                let node = cluster.node(c.node).node_id().to_owned();
                (c.id.clone(), (node, rooms, json!({"name": c.name})))
            })
            .collect();
        for (label, rooms) in [("fetch sockets (all)", &[][..]), ("fetch sockets (room everyone)", &[EVERYONE][..])] {
            let Some(got) = checks.ok(cluster.api(1).sockets("/", rooms).await, label) else { continue };
            let got: BTreeMap<String, (String, Vec<String>, serde_json::Value)> = by_id(&got)
                .into_iter()
                .map(|(id, s)| {
                    let mut r = s.rooms.clone();
                    r.sort();
                    (id, (s.node, r, s.data))
                })
                .collect();
            checks.check(got == expected, || {
                format!("{label}: expected {expected:?}\n got {got:?}")
            });
        }

        // Emit with acks, from C.
        for (label, emit) in [
            ("emit with acks to all", Emit::new("ask", vec![json!("q")])),
            ("emit with acks to room everyone", Emit::new("ask", vec![json!("q")]).to([EVERYONE])),
        ] {
            let Some(r) = checks.ok(cluster.api(2).emit_with_ack(&emit, 4000).await, label) else { continue };
            let acked: BTreeSet<String> = r.acks.iter().map(|a| a.socket.clone()).collect();
            let want: BTreeSet<String> = clients.iter().map(|c| c.id.clone()).collect();
            checks.check(
                acked == want
                    && r.acks.len() == 6
                    && r.acks.iter().all(|a| a.response == json!("q"))
                    && r.complete
                    && r.missing_nodes.is_empty(),
                || format!("{label}: expected 6 complete acks of \"q\", got {r:?}"),
            );
        }

        // Server-emit with acks, from A.
        if let Some(r) = checks.ok(
            cluster.api(0).server_emit_with_ack(None, "sse", vec![json!({"k": 1})], 4000).await,
            "server-emit with acks",
        ) {
            let got: BTreeMap<String, serde_json::Value> =
                r.responses.iter().map(|x| (x.node.clone(), x.response.clone())).collect();
            let want: BTreeMap<String, serde_json::Value> = ["node-b", "node-c"]
                .iter()
                .map(|n| ((*n).to_owned(), json!({"node": n, "event": "sse", "args": [{"k": 1}]})))
                .collect();
            checks.check(
                got == want && r.responses.len() == 2 && r.complete && r.missing_nodes.is_empty(),
                || format!("server-emit: expected {want:?}, got {r:?}"),
            );
        }
        checks.finish()
    })
    .await
}
