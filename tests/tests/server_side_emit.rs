//! Node-to-node messages through `POST /api/v1/server-emit` (serverSideEmit):
//! they reach every other node and never the sender; with acks, every other
//! node's built-in handler answers; a frozen node makes the request time out
//! with `complete: false` and that node named in `missing_nodes`.
//!
//! Cases 22–24 of the "Default test suite for all adapters" (anchors.md §1.7 A).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use ioscale_cluster_tests::http::ServerEmitResponse;
use ioscale_cluster_tests::{Cluster, binary, with_timeout};
use serde_json::{Value, json};

/// Generous ack timeout for requests that must complete long before it.
const LONG_ACK_MS: u64 = 5_000;

/// Responses as `node id -> response`, failing on duplicates.
fn by_node(resp: &ServerEmitResponse) -> Result<BTreeMap<String, Value>> {
    let mut map = BTreeMap::new();
    for r in &resp.responses {
        ensure!(
            map.insert(r.node.clone(), r.response.clone()).is_none(),
            "node {} answered twice: {resp:?}",
            r.node
        );
    }
    Ok(map)
}

/// What the built-in server-side handler of node `id` answers.
fn handler_answer(id: &str, event: &str, args: &[Value]) -> Value {
    json!({"node": id, "event": event, "args": args})
}

/// 22: from each node in turn, the event reaches exactly the two others (the
/// sender is not among the responders), and the plain form answers ok.
#[tokio::test]
async fn sends_an_event_to_other_server_instances() -> Result<()> {
    with_timeout(async {
        let cluster = Cluster::start(3).await?;
        let ids = cluster.node_ids();
        for via in 0..3 {
            cluster
                .api(via)
                .server_emit(None, "hello", vec![json!(via)])
                .await?;
            let resp = cluster
                .api(via)
                .server_emit_with_ack(None, "hello", vec![json!(via)], LONG_ACK_MS)
                .await?;
            let responders: Vec<String> = by_node(&resp)?.into_keys().collect();
            let others: Vec<String> = ids
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != via)
                .map(|(_, id)| id.clone())
                .collect();
            ensure!(
                responders == others,
                "via {}: responders {responders:?}, want {others:?}",
                ids[via]
            );
        }
        Ok(())
    })
    .await
}

/// 23: each other node answers with its id and the event and arguments it
/// got (binary included), the answer is complete, and it does not wait for
/// the timeout.
#[tokio::test]
async fn sends_an_event_and_receives_a_response_from_the_other_server_instances() -> Result<()> {
    with_timeout(async {
        let cluster = Cluster::start(3).await?;
        let ids = cluster.node_ids();
        let args = vec![
            json!(1),
            json!("2"),
            json!({"nested": [true, null]}),
            binary(&[9, 8, 7]),
        ];

        let started = Instant::now();
        let resp = cluster
            .api(0)
            .server_emit_with_ack(None, "ping", args.clone(), LONG_ACK_MS)
            .await?;
        let took = started.elapsed();

        ensure!(resp.complete && resp.missing_nodes.is_empty(), "{resp:?}");
        let want: BTreeMap<String, Value> = ids[1..]
            .iter()
            .map(|id| (id.clone(), handler_answer(id, "ping", &args)))
            .collect();
        ensure!(by_node(&resp)? == want, "got {resp:#?}\nwant {want:#?}");
        ensure!(took < Duration::from_secs(3), "took {took:?}");

        // A second namespace works too and is answered the same way.
        let resp = cluster
            .api(2)
            .server_emit_with_ack(Some("/custom"), "ping", vec![json!("x")], LONG_ACK_MS)
            .await?;
        ensure!(resp.complete, "{resp:?}");
        let want: BTreeMap<String, Value> = ids[..2]
            .iter()
            .map(|id| (id.clone(), handler_answer(id, "ping", &[json!("x")])))
            .collect();
        ensure!(by_node(&resp)? == want, "/custom: {resp:#?}");
        Ok(())
    })
    .await
}

/// 24: with node C frozen (SIGSTOP: its sockets stay open, so Redis still
/// counts its subscriptions), a request with a 500 ms ack timeout returns
/// after about 500 ms with node B's answer, `complete: false` and node C in
/// `missing_nodes`. After SIGCONT the cluster answers completely again.
#[tokio::test]
async fn sends_an_event_but_timeout_if_one_server_does_not_respond() -> Result<()> {
    with_timeout(async {
        let cluster = Cluster::start(3).await?;
        let ids = cluster.node_ids();

        cluster.node(2).sigstop()?;
        // Assertions run in a block so the node is continued even when they fail.
        let frozen = async {
            let started = Instant::now();
            // Sent at once: well within the 2 heartbeat intervals after which
            // node C would be declared dead and no longer awaited.
            let resp = cluster
                .api(0)
                .server_emit_with_ack(None, "ping", vec![json!(1)], 500)
                .await?;
            let took = started.elapsed();
            ensure!(!resp.complete, "node C is frozen: {resp:?}");
            ensure!(
                resp.missing_nodes == [ids[2].clone()],
                "missing_nodes: {resp:?}"
            );
            let want: BTreeMap<String, Value> =
                [(ids[1].clone(), handler_answer(&ids[1], "ping", &[json!(1)]))].into();
            ensure!(by_node(&resp)? == want, "partial responses: {resp:?}");
            // The upper bound only catches a request that ignores its timeout
            // (for instance waiting for the default 5 s); it is loose because
            // the machine is shared with builds.
            ensure!(
                took >= Duration::from_millis(450) && took < Duration::from_millis(4_500),
                "answered after {took:?} for a 500 ms timeout"
            );
            Ok(())
        }
        .await;
        cluster.node(2).sigcont()?;
        frozen?;

        // Recovery: node C answers again (its backlog of Redis messages,
        // including the stale request, is processed first).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let resp = cluster
                .api(0)
                .server_emit_with_ack(None, "ping", vec![json!(2)], 1_000)
                .await?;
            if resp.complete && by_node(&resp)?.len() == 2 {
                break;
            }
            ensure!(
                tokio::time::Instant::now() < deadline,
                "node C did not answer again after SIGCONT: {resp:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    })
    .await
}
