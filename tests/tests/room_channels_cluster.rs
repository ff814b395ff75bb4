//! Room channels on a 3-master Redis Cluster: sharded (`SSUBSCRIBE` / `SPUBLISH`) and without
//! hash tags, so 300 rooms spread over the masters (each holds 20-50 % of them); broadcasts to
//! a room cross nodes and skip nodes without a member; a leave unsubscribes (`SUNSUBSCRIBE`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use ioscale_cluster_tests::extra::{Checks, add_nodes_retrying_once, with_timeout_of};
use ioscale_cluster_tests::rooms::{
    RoomCounters, UNSUBSCRIBED_WITHIN, ack_ok, channel, delay_args, numsub_many, shard_channels,
};
use ioscale_cluster_tests::{
    Agent, Cluster, ConnectOpts, EVENT_TIMEOUT, Emit, RedisKind, SETTLE, Selector, Transport,
};
use serde_json::json;

const NS: &str = "/pubsub";
const ROOMS: usize = 300;

/// Where each room channel lives: channel -> master port, from `PUBSUB SHARDCHANNELS` on each.
async fn placement(ports: &[u16]) -> Result<BTreeMap<String, u16>> {
    let mut out = BTreeMap::new();
    for &p in ports {
        for c in shard_channels(p, &format!("ioscale#{NS}##room-*")).await? {
            if let Some(other) = out.insert(c.clone(), p) {
                bail!("{c} is subscribed on two masters, {other} and {p}");
            }
        }
    }
    Ok(out)
}

/// `SHARDNUMSUB` of each channel on its master.
async fn shard_counts(at: &BTreeMap<String, u16>, channels: &[String]) -> Result<Vec<i64>> {
    let mut out = Vec::new();
    for c in channels {
        let port = at
            .get(c)
            .copied()
            .ok_or_else(|| anyhow::anyhow!("{c} has no master"))?;
        out.push(numsub_many(port, std::slice::from_ref(c), true).await?[0]);
    }
    Ok(out)
}

#[tokio::test]
async fn room_channels_spread_over_the_masters_of_a_redis_cluster() -> Result<()> {
    with_timeout_of(Duration::from_secs(110), async {
        let mut checks = Checks::new();
        let mut cluster = Cluster::builder()
            .redis(RedisKind::Cluster)
            .node_args(delay_args())
            .nodes(0)
            .start()
            .await?;
        add_nodes_retrying_once(&mut cluster, &mut checks, 3).await?;
        let ports = cluster.redis_mut().cluster().ports();
        let agent = Agent::spawn().await?;
        let ps = ConnectOpts::new(Transport::Websocket).namespace(NS);
        let mut sids = Vec::new();
        for (name, node) in [("a", 0), ("b", 1), ("c", 2)] {
            sids.push(agent.connect(name, &cluster.node(node).url(), &ps).await?);
        }

        // 300 rooms for a (A) and b (B), joined through C in one socketsJoin.
        let rooms: Vec<String> = (0..ROOMS).map(|i| format!("room-{i}")).collect();
        let room_refs: Vec<&str> = rooms.iter().map(String::as_str).collect();
        let started = Instant::now();
        cluster
            .api(2)
            .join(
                &Selector::sockets([&sids[0], &sids[1]]).namespace(NS),
                &room_refs,
            )
            .await?;
        eprintln!(
            "socketsJoin of {ROOMS} rooms on 2 nodes took {:?}",
            started.elapsed()
        );
        let at = placement(&ports).await?;
        let channels: Vec<String> = rooms.iter().map(|r| channel(NS, r)).collect();
        let mut per_master: BTreeMap<u16, usize> = ports.iter().map(|&p| (p, 0)).collect();
        for p in at.values() {
            *per_master.entry(*p).or_default() += 1;
        }
        eprintln!("room channels per master: {per_master:?}");
        checks.check(at.len() == ROOMS, || {
            format!(
                "{} of the {ROOMS} room channels are subscribed on a master",
                at.len()
            )
        });
        for (p, n) in &per_master {
            let share = *n as f64 / ROOMS as f64;
            checks.check((0.2..=0.5).contains(&share), || {
                format!(
                    "master {p} holds {n} of {ROOMS} room channels ({:.0} %), expected 20-50 %",
                    share * 100.0
                )
            });
        }
        if at.len() == ROOMS {
            let counts = shard_counts(&at, &channels).await?;
            let off: Vec<(&String, &i64)> = channels
                .iter()
                .zip(&counts)
                .filter(|(_, n)| **n != 2)
                .collect();
            checks.check(off.is_empty(), || {
                format!("room channels without exactly A and B as shard subscribers: {off:?}")
            });
        }
        // Nothing classic: room channels are sharded.
        let classic = numsub_many(ports[0], &channels[..10], false).await?;
        checks.check(classic.iter().all(|n| *n == 0), || {
            format!("classic NUMSUB of sharded room channels: {classic:?}")
        });

        // Broadcasts cross nodes: 30 publishes from A to 30 rooms reach b on B, not C.
        let before = RoomCounters::of_nodes(&cluster, &[0, 1, 2]).await?;
        for room in &rooms[..30] {
            ack_ok(&agent, "a", "publish", json!({"room": room, "data": room})).await?;
        }
        cluster
            .api(2)
            .emit(
                &Emit::new("api", vec![json!("via C")])
                    .namespace(NS)
                    .to(["room-299"]),
            )
            .await?;
        // Each room exactly once. Not in publish order: the rooms live on three shards, which
        // B reads on three connections (order holds per room, not across rooms).
        let got = agent.wait_count("b", "msg", 30, EVENT_TIMEOUT).await?;
        let mut got: Vec<String> = got
            .iter()
            .map(|a| a[0]["room"].as_str().unwrap_or("?").to_owned())
            .collect();
        if got.iter().zip(&rooms).any(|(g, r)| g != r) {
            eprintln!("b got the publishes to 30 rooms in another order than A made them: {got:?}");
        }
        got.sort();
        let mut want: Vec<String> = rooms[..30].to_vec();
        want.sort();
        checks.check(got == want, || format!("b's messages from A: {got:?}"));
        for c in ["a", "b"] {
            let got = agent.wait_count(c, "api", 1, EVENT_TIMEOUT).await?;
            checks.check(got == [vec![json!("via C")]], || {
                format!("{c}: API emit through C: {got:?}")
            });
        }
        tokio::time::sleep(SETTLE).await;
        checks.check(agent.all_events("c").await?.is_empty(), || {
            "c is in no room but got events".into()
        });
        let after = RoomCounters::of_nodes(&cluster, &[0, 1, 2]).await?;
        let d: Vec<RoomCounters> = after.iter().zip(&before).map(|(a, b)| a.since(b)).collect();
        eprintln!("counter deltas (A, B, C): {d:?}");
        checks.check(d[2].broadcasts_in == 0.0 && d[2].untargeted == 0.0, || {
            format!("node C has no member but its counters moved: {:?}", d[2])
        });
        checks.check(
            d[1].broadcasts_in == 31.0 && d[1].untargeted == 0.0 && d[0].untargeted == 0.0,
            || {
                format!(
                    "B received {} broadcasts (expected 31), untargeted A {} / B {}",
                    d[1].broadcasts_in, d[0].untargeted, d[1].untargeted
                )
            },
        );

        // A client join on C over the cluster, then 100 rooms left by b: sharded unsubscribes.
        ack_ok(&agent, "c", "join", json!("room-5")).await?;
        ack_ok(
            &agent,
            "a",
            "publish",
            json!({"room": "room-5", "data": "c too"}),
        )
        .await?;
        let got = agent.wait_count("c", "msg", 1, EVENT_TIMEOUT).await?;
        checks.check(
            got[0][0] == json!({"room": "room-5", "data": "c too"}),
            || format!("c in room-5: {got:?}"),
        );
        cluster
            .api(0)
            .leave(
                &Selector::sockets([&sids[1]]).namespace(NS),
                &room_refs[100..200],
            )
            .await?;
        let left = Instant::now();
        let gone = &channels[100..200];
        loop {
            let counts = shard_counts(&at, gone).await?;
            if counts.iter().all(|n| *n == 1) {
                eprintln!(
                    "100 rooms left by B unsubscribed {:?} after the leave",
                    left.elapsed()
                );
                break;
            }
            if left.elapsed() > UNSUBSCRIBED_WITHIN + Duration::from_millis(500) {
                checks.check(false, || {
                    format!(
                        "100 rooms left by B: shard subscribers {counts:?} {:?} after the leave",
                        left.elapsed()
                    )
                });
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let kept = shard_counts(&at, &channels[200..210]).await?;
        checks.check(kept.iter().all(|n| *n == 2), || {
            format!("rooms B kept: {kept:?}")
        });
        checks.finish()
    })
    .await
}
