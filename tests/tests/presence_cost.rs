//! What presence costs, counted where it is spent: Redis' own command counts (`INFO
//! commandstats`) and the broadcasts the nodes publish, per join, leave and read, at 3 and at
//! 6 nodes. The counts are the same at either size: a presence operation never asks every
//! node. The figures are printed for README's Presence section.
//!
//! An event to the room is a recorded broadcast: the adapter writes it to the namespace's
//! history and publishes it in one script (`EVAL`; one per batch of broadcasts under load, one
//! per event here, where the joins come one at a time).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use ioscale_cluster_tests::extra::metric_all;
use ioscale_cluster_tests::http::Method;
use ioscale_cluster_tests::{Agent, Cluster, ConnectOpts, EVENT_TIMEOUT, RedisBackend, Transport};
use serde_json::json;

const MEMBERS: usize = 20;
/// The commands presence uses for joins, leaves and reads (the sweep's are apart).
const COMMANDS: [&str; 5] = ["eval", "sadd", "hgetall", "hdel", "srem"];

/// Calls per command so far, from Redis.
async fn calls(cluster: &Cluster) -> Result<BTreeMap<String, u64>> {
    let RedisBackend::Standalone(redis) = cluster.redis() else {
        anyhow::bail!("a standalone Redis is expected");
    };
    let text = redis.cli(&["INFO", "commandstats"]).await?;
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some((name, rest)) = line
            .trim()
            .strip_prefix("cmdstat_")
            .and_then(|l| l.split_once(':'))
        else {
            continue;
        };
        let n = rest
            .split(',')
            .find_map(|kv| kv.strip_prefix("calls="))
            .and_then(|v| v.parse().ok())
            .context("calls")?;
        out.insert(name.to_owned(), n);
    }
    Ok(out)
}

async fn broadcasts(cluster: &Cluster) -> Result<f64> {
    let per_node = metric_all(
        cluster,
        "ioscale_adapter_messages_out_total",
        &[("kind", "broadcast")],
    )
    .await?;
    Ok(per_node.iter().sum())
}

/// Per operation: each presence command's calls, and the broadcasts published.
async fn per_op(
    cluster: &Cluster,
    ops: usize,
    before: &(BTreeMap<String, u64>, f64),
) -> Result<(BTreeMap<&'static str, f64>, f64)> {
    let after = calls(cluster).await?;
    let sent = broadcasts(cluster).await?;
    let mut out = BTreeMap::new();
    for c in COMMANDS {
        let d = after.get(c).copied().unwrap_or(0) - before.0.get(c).copied().unwrap_or(0);
        out.insert(c, d as f64 / ops as f64);
    }
    Ok((out, (sent - before.1) / ops as f64))
}

async fn snapshot(cluster: &Cluster) -> Result<(BTreeMap<String, u64>, f64)> {
    Ok((calls(cluster).await?, broadcasts(cluster).await?))
}

async fn measure(nodes: usize) -> Result<Vec<(BTreeMap<&'static str, f64>, f64)>> {
    let cluster = Cluster::builder().nodes(nodes).start().await?;
    let agent = Agent::spawn().await?;
    let opts = ConnectOpts::new(Transport::Websocket).namespace("/pubsub");
    for i in 0..MEMBERS {
        agent
            .connect(&format!("m{i}"), &cluster.node(i % nodes).url(), &opts)
            .await?;
    }
    let mut out = Vec::new();
    let before = snapshot(&cluster).await?;
    for i in 0..MEMBERS {
        let ack = agent
            .emit_with_ack(
                &format!("m{i}"),
                "join",
                vec![json!({"room": "hall", "presence": true, "data": {"i": i}})],
                EVENT_TIMEOUT,
            )
            .await?;
        ensure!(ack[0]["ok"] == true, "{ack:?}");
    }
    out.push(per_op(&cluster, MEMBERS, &before).await?);
    let before = snapshot(&cluster).await?;
    for i in 0..MEMBERS {
        let r = cluster
            .api(i % nodes)
            .raw(
                Method::GET,
                "/api/v1/rooms/hall/presence",
                None,
                Duration::from_secs(5),
            )
            .await?
            .json()?;
        ensure!(r["count"] == MEMBERS, "{r}");
    }
    out.push(per_op(&cluster, MEMBERS, &before).await?);
    let before = snapshot(&cluster).await?;
    for i in 0..MEMBERS {
        let ack = agent
            .emit_with_ack(
                &format!("m{i}"),
                "leave",
                vec![json!("hall")],
                EVENT_TIMEOUT,
            )
            .await?;
        ensure!(ack[0]["ok"] == true, "{ack:?}");
    }
    out.push(per_op(&cluster, MEMBERS, &before).await?);
    Ok(out)
}

#[tokio::test]
async fn a_join_leave_or_read_costs_the_same_at_3_and_6_nodes() -> Result<()> {
    let three = measure(3).await?;
    let six = measure(6).await?;
    for (name, (a, b)) in ["join", "read", "leave"].iter().zip(three.iter().zip(&six)) {
        eprintln!("presence cost per {name}: 3 nodes {a:?}, 6 nodes {b:?}");
        ensure!(a == b, "{name}: 3 nodes {a:?}, 6 nodes {b:?}");
    }
    let (join, read, leave) = (&three[0], &three[1], &three[2]);
    ensure!(
        join.0["eval"] == 2.0 && join.0["sadd"] == 2.0 && join.0["hgetall"] == 1.0 && join.1 == 1.0,
        "a join: {join:?}"
    );
    ensure!(
        read.0["hgetall"] == 1.0 && read.1 == 0.0,
        "a read: {read:?}"
    );
    ensure!(
        leave.0["eval"] == 1.0
            && leave.0["hdel"] == 1.0
            && leave.0["srem"] == 1.0
            && leave.1 == 1.0,
        "a leave: {leave:?}"
    );
    Ok(())
}
