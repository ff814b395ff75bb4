//! Redis failover under a running 2-node cluster, with real `redis-server` processes:
//!
//! - Sentinel: the master is SIGKILLed, the Sentinel (down after 1 s, quorum 1) promotes the
//!   replica; the nodes turn not ready, follow the new master (fred asks the Sentinel again on
//!   every reconnection), and cross-node delivery resumes within 5 s of the promotion being
//!   visible (Sentinel names the replica and it answers `ROLE` as master).
//! - Redis Cluster of 3 masters with a replica each: the master serving both the namespace
//!   channel and a room channel is SIGKILLed, its replica takes over (node timeout 2 s); the
//!   sharded subscriptions move to it and delivery, to the room and to everyone, resumes
//!   within 5 s of the promotion being visible (`CLUSTER NODES` shows the replica as the
//!   slot's master and every running server says `cluster_state:ok`).
//!
//! Both times are measured from the promotion, not the kill: the promotion itself takes
//! Redis 2-4 s (Sentinel) or 3-5 s (Cluster), which is Redis's configuration, not ours. The
//! time from the kill is printed too.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use ioscale_cluster_tests::extra::with_timeout_of;
use ioscale_cluster_tests::failover::{
    Probe, ReadyzWatch, Resumed, wait_delivery, wait_ready_state,
};
use ioscale_cluster_tests::redis_cluster::{key_slot, slot_master};
use ioscale_cluster_tests::rooms::{channel, numsub_many};
use ioscale_cluster_tests::{
    Agent, Client, Cluster, Emit, RedisKind, Selector, Transport, connect_spread, expect_delivery,
};
use serde_json::json;

/// The bound: delivery resumes within this of the promotion.
const RESUME_WITHIN: Duration = Duration::from_secs(5);
/// How long the probes keep trying, so a slow resumption is measured rather than cut off.
const PROBE_LIMIT: Duration = Duration::from_secs(20);

/// Probes both directions between node 0 and node 1 at once, for each of `targets` (rooms of
/// `/`, or everyone when empty) at once, from `promoted`: probing in parallel keeps one
/// direction's wait out of the other's time. Checks each resumed within [`RESUME_WITHIN`]
/// and returns the latest.
async fn delivery_resumes(
    cluster: &Cluster,
    agent: &Agent,
    clients: &[Client],
    targets: &[&[&str]],
    tag: &str,
    promoted: Instant,
) -> Result<Duration> {
    let remote: [Vec<&Client>; 2] =
        [1, 0].map(|to| clients.iter().filter(|c| c.node == to).collect());
    let mut runs = Vec::new();
    for (t, rooms) in targets.iter().enumerate() {
        for via in [0, 1] {
            // Unique per call: probes of an earlier call must not count.
            let event = format!("{tag}-{t}-{via}");
            let to = &remote[via];
            runs.push(async move {
                let probe = Probe {
                    via,
                    to,
                    rooms,
                    event: &event,
                };
                let r = wait_delivery(cluster, agent, probe, promoted, PROBE_LIMIT).await;
                (rooms, via, r)
            });
        }
    }
    let mut worst = Duration::ZERO;
    for (rooms, via, r) in futures_util::future::join_all(runs).await {
        let Resumed { sent, seen, probes } = r?;
        eprintln!(
            "to {rooms:?}: delivery from node {via} to node {} seen {seen:?} after the promotion (the probe that made it was sent at {sent:?}; {probes} probes)",
            1 - via
        );
        ensure!(
            seen <= RESUME_WITHIN,
            "to {rooms:?}: delivery from node {via} resumed {seen:?} after the promotion, bound {RESUME_WITHIN:?}"
        );
        worst = worst.max(seen);
    }
    Ok(worst)
}

#[tokio::test]
async fn nodes_follow_a_sentinel_failover_within_5_s() -> Result<()> {
    with_timeout_of(Duration::from_secs(90), async {
        let mut cluster = Cluster::builder()
            .nodes(2)
            .redis(RedisKind::Sentinel)
            .heartbeat_ms(500)
            .start()
            .await?;
        let agent = Agent::spawn().await?;
        let clients = connect_spread(&cluster, &agent, Transport::Websocket, "/", "c", 4).await?;
        let all: Vec<&Client> = clients.iter().collect();
        cluster
            .api(0)
            .emit(&Emit::new("before", vec![json!(1)]))
            .await?;
        expect_delivery(&agent, &clients, &all, "before", Some(&[json!(1)])).await?;
        let old_master = cluster.redis_mut().sentinel().master_port().await?;

        cluster.redis_mut().sentinel().master_mut().kill();
        let killed = Instant::now();
        let down = wait_ready_state(&cluster, &[0, 1], 503, killed, Duration::from_secs(5)).await?;
        eprintln!("/readyz turned 503 after the kill: {down:?}");
        let sentinel = cluster.redis_mut().sentinel();
        let promoted = sentinel.wait_promoted(Duration::from_secs(20)).await?;
        let new_master = sentinel.master_port().await?;
        ensure!(new_master != old_master, "the master did not change");
        eprintln!(
            "the sentinel promoted the replica ({old_master} -> {new_master}) {:?} after the kill",
            promoted - killed
        );

        let worst = delivery_resumes(&cluster, &agent, &clients, &[&[]], "after", promoted).await?;
        eprintln!(
            "cross-node delivery resumed {worst:?} after the promotion, {:?} after the kill",
            worst + (promoted - killed)
        );
        let up =
            wait_ready_state(&cluster, &[0, 1], 200, promoted, Duration::from_secs(10)).await?;
        eprintln!("/readyz back to 200 after the promotion: {up:?}");
        cluster.wait_nodes_visible(2).await?;
        cluster
            .api(1)
            .emit(&Emit::new("after", vec![json!(2)]))
            .await?;
        expect_delivery(&agent, &clients, &all, "after", Some(&[json!(2)])).await?;
        Ok(())
    })
    .await
}

/// A room of `/` whose channel's slot is served by the same master as `/`'s namespace
/// channel, so killing that master takes both.
fn room_on_the_same_shard(
    topology: &[ioscale_cluster_tests::redis_cluster::ClusterNode],
) -> Result<(String, u16)> {
    let ns_slot = key_slot("ioscale#/#");
    let master = slot_master(topology, ns_slot)
        .context("nobody serves the namespace channel's slot")?
        .port;
    (0..1_000)
        .map(|i| format!("room-{i}"))
        .find(|r| slot_master(topology, key_slot(&channel("/", r))).map(|m| m.port) == Some(master))
        .map(|r| (r, master))
        .context("no room among 1,000 lands on the namespace channel's master")
}

#[tokio::test]
async fn sharded_subscriptions_follow_a_redis_cluster_master_failover_within_5_s() -> Result<()> {
    with_timeout_of(Duration::from_secs(110), async {
        let mut cluster = Cluster::builder()
            .nodes(2)
            .redis(RedisKind::ClusterWithReplicas)
            .heartbeat_ms(500)
            .start()
            .await?;
        let agent = Agent::spawn().await?;
        let clients = connect_spread(&cluster, &agent, Transport::Websocket, "/", "c", 4).await?;
        let redis = cluster.redis_mut().cluster();
        let topology = redis.topology(None).await?;
        let (room, master) = room_on_the_same_shard(&topology)?;
        let room_channel = channel("/", &room);
        let room_slot = key_slot(&room_channel);
        eprintln!("{room} (slot {room_slot}) and the namespace channel live on master {master}");
        let ids: Vec<&str> = clients.iter().map(|c| c.id.as_str()).collect();
        cluster
            .api(0)
            .join(&Selector::sockets(ids), &[&room])
            .await?;
        // Positive control: the room channel is subscribed on its master by both nodes, and
        // broadcasts to the room and to everyone cross nodes.
        let started = Instant::now();
        delivery_resumes(&cluster, &agent, &clients, &[&[&room], &[]], "before", started).await?;
        let subs = numsub_many(master, std::slice::from_ref(&room_channel), true).await?;
        ensure!(
            subs == [2],
            "SHARDNUMSUB {room_channel} on {master}: {subs:?}"
        );

        let apis = vec![cluster.api(0), cluster.api(1)];
        let redis = cluster.redis_mut().cluster();
        redis.by_port_mut(master).context("the master")?.kill();
        let killed = Instant::now();
        let watch = ReadyzWatch::start(apis, killed);
        let (promoted, new_master) = redis
            .wait_failover(room_slot, master, Duration::from_secs(30))
            .await?;
        eprintln!(
            "replica {new_master} took over from {master} {:?} after the kill",
            promoted - killed
        );

        let worst = delivery_resumes(
            &cluster,
            &agent,
            &clients,
            &[&[&room], &[]],
            "after",
            promoted,
        )
        .await?;
        eprintln!(
            "delivery to the room and to everyone resumed {worst:?} after the promotion ({:?} after the kill)",
            worst + (promoted - killed)
        );
        let subs = numsub_many(new_master, std::slice::from_ref(&room_channel), true).await?;
        ensure!(
            subs == [2],
            "SHARDNUMSUB {room_channel} on the new master {new_master}: {subs:?}"
        );
        let up =
            wait_ready_state(&cluster, &[0, 1], 200, promoted, Duration::from_secs(10)).await?;
        eprintln!("/readyz 200 after the promotion: {up:?}");
        // /readyz follows: 503 while the shard is unreachable, 200 again after the promotion.
        let changes = watch.stop().await?;
        eprintln!("/readyz changes since the kill (node, status, when): {changes:?}");
        for i in [0, 1] {
            let statuses: Vec<u16> = changes
                .iter()
                .filter(|(n, _, _)| *n == i)
                .map(|(_, s, _)| *s)
                .collect();
            ensure!(
                statuses.contains(&503) && statuses.last() == Some(&200),
                "node {i}: /readyz must turn 503 and back to 200 over the failover: {changes:?}"
            );
        }
        cluster.wait_nodes_visible(2).await?;
        Ok(())
    })
    .await
}
