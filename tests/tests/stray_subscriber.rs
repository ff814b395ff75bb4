//! Something that is not a node listens on (and writes to) the cluster's
//! channels: requests must not wait for it (nodes are counted by heartbeats,
//! never by subscriber counts), and garbage on the wire is counted and
//! ignored, never fatal.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Result, ensure};
use ioscale_cluster_tests::extra::{
    Checks, StraySubscriber, metric_all, numsub, publish_bytes, timed, wait_until,
};
use ioscale_cluster_tests::http::{Method, REQUEST_TIMEOUT};
use ioscale_cluster_tests::{
    AckReply, Agent, Client, Cluster, Emit, Selector, Transport, connect_spread, expect_delivery,
    with_timeout,
};
use serde_json::{Value, json};

/// Well under the node's 5 s request timeout (and the 4 s ack timeout used
/// below), with room for a noisy machine: a request that waits for the stray
/// subscriber takes the full timeout.
const PROMPT: Duration = Duration::from_millis(1500);
const DROPPED: &str = "ioscale_adapter_dropped_total";
const EVERYONE: &str = "everyone";

#[tokio::test]
async fn stray_subscriber_neither_delays_requests_nor_breaks_nodes() -> Result<()> {
    with_timeout(async {
        let mut cluster = Cluster::start(3).await?;
        let port = cluster.redis_mut().standalone().port();
        let all_chan = "ioscale#/#";

        let mut stray = StraySubscriber::start(cluster.logs(), port, &[all_chan])?;
        // 3 nodes + the stray subscriber.
        wait_until(
            Duration::from_secs(5),
            Duration::from_millis(50),
            "the stray subscriber to be subscribed",
            || async { Ok((numsub(port, all_chan, false).await? == 4).then_some(())) },
        )
        .await?;

        let agent = Agent::spawn().await?;
        let clients = connect_spread(&cluster, &agent, Transport::Websocket, "/", "c", 6).await?;
        for c in &clients {
            agent.set_ack_reply(&c.name, "ask", AckReply::Echo).await?;
        }
        let ids: Vec<&str> = clients.iter().map(|c| c.id.as_str()).collect();
        cluster.api(0).join(&Selector::sockets(ids), &[EVERYONE]).await?;
        let all_sids: BTreeSet<String> = clients.iter().map(|c| c.id.clone()).collect();
        let mut checks = Checks::new();

        // --- Requests complete promptly, from every node.
        for i in 0..3 {
            let api = cluster.api(i);
            for (label, path) in [
                ("GET /sockets", "/api/v1/sockets?namespace=%2F"),
                ("GET /sockets?rooms=everyone", "/api/v1/sockets?namespace=%2F&rooms=everyone"),
            ] {
                let label = format!("node {i}: {label}");
                let (took, r) = timed(api.raw(Method::GET, path, None, REQUEST_TIMEOUT)).await;
                eprintln!("{label} took {took:?}");
                checks.check(took < PROMPT, || format!("{label} took {took:?}"));
                let Some(r) = checks.ok(r, &label) else { continue };
                let body = r.json().unwrap_or(Value::Null);
                let got: BTreeSet<String> = body["sockets"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|s| s["id"].as_str().map(str::to_owned)).collect())
                    .unwrap_or_default();
                checks.check(
                    r.status == 200 && got == all_sids && body["missing_nodes"] == json!([]),
                    || format!("{label}: expected 200 with all 6 sockets and no missing node, got {} {}", r.status, r.body),
                );
            }

            let label = format!("node {i}: GET /rooms");
            let (took, r) = timed(api.raw(Method::GET, "/api/v1/rooms?namespace=%2F", None, REQUEST_TIMEOUT)).await;
            eprintln!("{label} took {took:?}");
            checks.check(took < PROMPT, || format!("{label} took {took:?}"));
            if let Some(r) = checks.ok(r, &label) {
                let body = r.json().unwrap_or(Value::Null);
                let rooms: BTreeSet<String> = body["rooms"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect())
                    .unwrap_or_default();
                let mut want = all_sids.clone();
                want.insert(EVERYONE.to_owned());
                checks.check(
                    r.status == 200 && rooms == want && body["missing_nodes"] == json!([]),
                    || format!("{label}: expected 200 with rooms {want:?} and no missing node, got {} {}", r.status, r.body),
                );
            }

            let label = format!("node {i}: server-emit with acks");
            let (took, r) = timed(api.server_emit_with_ack(None, "hello", vec![json!(i)], 4000)).await;
            eprintln!("{label} took {took:?}");
            checks.check(took < PROMPT, || format!("{label} took {took:?}"));
            if let Some(r) = checks.ok(r, &label) {
                let mut nodes: Vec<String> = r.responses.iter().map(|x| x.node.clone()).collect();
                nodes.sort();
                let want: Vec<String> = (0..3)
                    .filter(|&j| j != i)
                    .map(|j| cluster.node(j).node_id().to_owned())
                    .collect();
                checks.check(nodes == want && r.complete && r.missing_nodes.is_empty(), || {
                    format!("{label}: expected complete answers from {want:?}, got {r:?}")
                });
            }

            for (label, emit) in [
                ("emit with acks to all", Emit::new("ask", vec![json!(i)])),
                ("emit with acks to room everyone", Emit::new("ask", vec![json!(i)]).to([EVERYONE])),
            ] {
                let label = format!("node {i}: {label}");
                let (took, r) = timed(api.emit_with_ack(&emit, 4000)).await;
                eprintln!("{label} took {took:?}");
                checks.check(took < PROMPT, || format!("{label} took {took:?}"));
                if let Some(r) = checks.ok(r, &label) {
                    let acked: BTreeSet<String> = r.acks.iter().map(|a| a.socket.clone()).collect();
                    checks.check(
                        acked == all_sids
                            && r.acks.len() == 6
                            && r.acks.iter().all(|a| a.response == json!(i))
                            && r.complete
                            && r.missing_nodes.is_empty(),
                        || format!("{label}: expected 6 complete acks of {i}, got {r:?}"),
                    );
                }
            }
        }

        // --- Garbage on the channels: counted as decode drops, nothing else.
        let before = metric_all(&cluster, DROPPED, &[("reason", "decode")]).await?;
        let receivers = publish_bytes(port, all_chan, b"\xc1\xff\x00\x01garbage\xfe").await?;
        ensure!(receivers == 4, "PUBLISH on {all_chan} reached {receivers} subscribers, expected 4");
        let receivers = publish_bytes(port, all_chan, b"not msgpack at all").await?;
        ensure!(receivers == 4, "PUBLISH on {all_chan} reached {receivers} subscribers, expected 4");
        // And one on node A's own channel.
        let receivers = publish_bytes(port, "ioscale#/#node-a#", b"\x93\x01\x02").await?;
        ensure!(receivers == 1, "PUBLISH on node A's channel reached {receivers} subscribers, expected 1");
        let want: Vec<f64> = before.iter().zip([3.0, 2.0, 2.0]).map(|(b, d)| b + d).collect();
        let waited = wait_until(
            Duration::from_secs(5),
            Duration::from_millis(100),
            "the decode drops to be counted",
            || {
                let cluster = &cluster;
                let want = want.clone();
                async move {
                    let now = metric_all(cluster, DROPPED, &[("reason", "decode")]).await?;
                    Ok(now.iter().zip(&want).all(|(n, w)| n >= w).then_some(()))
                }
            },
        )
        .await;
        checks.ok(waited, "decode drops");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let after = metric_all(&cluster, DROPPED, &[("reason", "decode")]).await?;
        checks.check(after == want, || {
            format!("{DROPPED}{{reason=\"decode\"}} per node: before {before:?}, expected {want:?}, got {after:?}")
        });

        // --- The nodes keep working.
        for i in 0..3 {
            checks.check(cluster.api(i).readyz().await? == 200, || format!("node {i} not ready after garbage"));
            let n = cluster.api(i).nodes().await?.len();
            checks.check(n == 3, || format!("node {i} lists {n} nodes after garbage"));
        }
        cluster.api(1).emit(&Emit::new("after", vec![json!("ok")])).await?;
        let all: Vec<&Client> = clients.iter().collect();
        checks.ok(
            expect_delivery(&agent, &clients, &all, "after", Some(&[json!("ok")])).await,
            "broadcast after garbage",
        );
        let r = cluster.api(2).sockets("/", &[EVERYONE]).await?;
        checks.check(r.len() == 6, || format!("fetch after garbage: {r:?}"));
        checks.check(stray.is_running(), || {
            format!("the stray subscriber was dropped by Redis: {}", stray.output())
        });
        checks.finish()
    })
    .await
}
