//! A node dies (SIGKILL) or leaves (SIGTERM) under a running 3-node cluster:
//! the others notice in bounded time, and cluster requests neither hang on nor
//! wait the full timeout for the missing node.
//!
//! Every request is made twice: untargeted (the whole namespace) and targeted
//! at a room every client joined. Both must hold; the room variant keeps the
//! failure-mode behaviour visible even if the untargeted path is broken.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use ioscale_cluster_tests::extra::{Checks, timed, wait_until};
use ioscale_cluster_tests::http::{AckResponse, Method, REQUEST_TIMEOUT, RawResponse, SocketInfo};
use ioscale_cluster_tests::{
    AckReply, Agent, Client, Cluster, ConnectOpts, Emit, Selector, Transport, connect_spread,
    with_timeout,
};
use serde_json::{Value, json};

/// The node's `--request-timeout-ms` default: what a request would wait for
/// a node that never answers.
const NODE_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// "Well under" the request and ack timeouts: the dead node may be waited for
/// until it is pruned (2 heartbeats of 500 ms), not longer.
const PROMPT: Duration = Duration::from_millis(2500);
/// The room every client joins.
const EVERYONE: &str = "everyone";

/// Polls `GET /api/v1/nodes` on node `from` until `gone` is no longer listed;
/// returns the time since `since`.
async fn wait_node_gone(
    cluster: &Cluster,
    from: usize,
    gone: &str,
    since: Instant,
    limit: Duration,
) -> Result<Duration> {
    loop {
        let ids: Vec<String> = cluster
            .api(from)
            .nodes()
            .await?
            .into_iter()
            .map(|n| n.id)
            .collect();
        if !ids.iter().any(|id| id == gone) {
            return Ok(since.elapsed());
        }
        ensure!(
            since.elapsed() < limit,
            "node {from} still lists {gone} {:?} after it went away: {ids:?}",
            since.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn sid_set<'a>(clients: impl IntoIterator<Item = &'a Client>) -> BTreeSet<String> {
    clients.into_iter().map(|c| c.id.clone()).collect()
}

fn sid_set_from(sockets: &[SocketInfo]) -> BTreeSet<String> {
    sockets.iter().map(|s| s.id.clone()).collect()
}

/// Makes every client join [`EVERYONE`] through node 0 and waits until every
/// node sees all of them in it.
async fn join_everyone(cluster: &Cluster, clients: &[Client]) -> Result<()> {
    let ids: Vec<&str> = clients.iter().map(|c| c.id.as_str()).collect();
    cluster
        .api(0)
        .join(&Selector::sockets(ids), &[EVERYONE])
        .await?;
    let want = sid_set(clients);
    wait_until(
        Duration::from_secs(5),
        Duration::from_millis(100),
        "every node to see all clients in the room",
        || {
            let want = want.clone();
            async move {
                for i in 0..cluster.nodes().len() {
                    let got = sid_set_from(&cluster.api(i).sockets("/", &[EVERYONE]).await?);
                    if got != want {
                        return Ok(None);
                    }
                }
                Ok(Some(()))
            }
        },
    )
    .await
}

/// Checks a raw `GET /api/v1/sockets` answer: 200, exactly `want`, no missing
/// node, within [`PROMPT`].
fn check_fetch(
    checks: &mut Checks,
    label: &str,
    (took, r): (Duration, Result<RawResponse>),
    want: &BTreeSet<String>,
) {
    eprintln!("{label} took {took:?}");
    let Some(r) = checks.ok(r, label) else { return };
    if !checks.check(r.status == 200, || {
        format!("{label}: answered {}: {}", r.status, r.body)
    }) {
        return;
    }
    let Some(body) = checks.ok(r.json(), label) else {
        return;
    };
    let got: BTreeSet<String> = body["sockets"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    checks.check(&got == want, || {
        format!("{label}: expected the live sockets {want:?}, got {body}")
    });
    checks.check(body["missing_nodes"] == json!([]), || {
        format!("{label}: a dead node is not a missing live node: {body}")
    });
    checks.check(took < PROMPT, || {
        format!("{label}: took {took:?} (request timeout {NODE_REQUEST_TIMEOUT:?}): it waited for the dead node")
    });
}

/// Checks an emit-with-acks answer: one ack per socket of `want`, each
/// `response`, complete, within [`PROMPT`].
fn check_acks(
    checks: &mut Checks,
    label: &str,
    (took, r): (Duration, Result<AckResponse>),
    want: &BTreeSet<String>,
    response: &Value,
) {
    eprintln!("{label} took {took:?}");
    let Some(ack) = checks.ok(r, label) else {
        return;
    };
    let acked: BTreeSet<String> = ack.acks.iter().map(|a| a.socket.clone()).collect();
    checks.check(&acked == want && ack.acks.len() == want.len(), || {
        format!("{label}: expected one ack from each of {want:?}, got {ack:?}")
    });
    checks.check(ack.acks.iter().all(|a| &a.response == response), || {
        format!("{label}: ack payloads should all be {response}: {ack:?}")
    });
    checks.check(ack.complete && ack.missing_nodes.is_empty(), || {
        format!("{label}: must complete (the dead node is not waited for): {ack:?}")
    });
    checks.check(took < PROMPT, || {
        format!("{label}: took {took:?} (ack timeout 4 s): it waited for the dead node")
    });
}

#[tokio::test]
async fn sigkilled_node_is_pruned_and_requests_do_not_wait_for_it() -> Result<()> {
    with_timeout(async {
        let heartbeat = Duration::from_millis(500);
        let mut cluster = Cluster::builder().heartbeat_ms(500).start().await?;
        let agent = Agent::spawn().await?;
        let clients = connect_spread(&cluster, &agent, Transport::Websocket, "/", "c", 6).await?;
        for c in &clients {
            agent.set_ack_reply(&c.name, "ask", AckReply::Echo).await?;
        }
        join_everyone(&cluster, &clients).await?;
        let all_sids = sid_set(&clients);
        let live: Vec<&Client> = clients.iter().filter(|c| c.node != 2).collect();
        let live_sids = sid_set(live.iter().copied());
        let dead_id = cluster.node(2).node_id().to_owned();
        let mut checks = Checks::new();

        // Positive controls before the kill.
        let api_a = cluster.api(0);
        let api_b = cluster.api(1);
        let all_path = "/api/v1/sockets?namespace=%2F";
        let room_path = "/api/v1/sockets?namespace=%2F&rooms=everyone";
        check_fetch(
            &mut checks,
            "before the kill: GET /sockets",
            timed(api_a.raw(Method::GET, all_path, None, REQUEST_TIMEOUT)).await,
            &all_sids,
        );
        check_acks(
            &mut checks,
            "before the kill: emit with acks to all",
            timed(api_a.emit_with_ack(&Emit::new("ask", vec![json!("pre")]), 3000)).await,
            &all_sids,
            &json!("pre"),
        );

        cluster.node_mut(2).sigkill();
        let killed_at = Instant::now();

        // Right after the kill, all at once.
        let limit = heartbeat * 2 + Duration::from_secs(1);
        let ask_all = Emit::new("ask", vec![json!("post-all")]);
        let ask_room = Emit::new("ask", vec![json!("post-room")]).to([EVERYONE]);
        let (gone_a, gone_b, fetch_all, fetch_room, ack_all, ack_room, server) = tokio::join!(
            wait_node_gone(&cluster, 0, &dead_id, killed_at, limit),
            wait_node_gone(&cluster, 1, &dead_id, killed_at, limit),
            timed(api_a.raw(Method::GET, all_path, None, REQUEST_TIMEOUT)),
            timed(api_a.raw(Method::GET, room_path, None, REQUEST_TIMEOUT)),
            timed(api_b.emit_with_ack(&ask_all, 4000)),
            timed(api_b.emit_with_ack(&ask_room, 4000)),
            timed(api_a.server_emit_with_ack(None, "ping", vec![json!(1)], 4000)),
        );
        // Membership: gone from A and B within 2 heartbeat intervals + 1 s.
        if let Some(t) = checks.ok(gone_a, "node-c leaving A's /nodes") {
            eprintln!("{dead_id} left A's /nodes after {t:?}");
        }
        if let Some(t) = checks.ok(gone_b, "node-c leaving B's /nodes") {
            eprintln!("{dead_id} left B's /nodes after {t:?}");
        }
        check_fetch(
            &mut checks,
            "right after the kill: GET /sockets",
            fetch_all,
            &live_sids,
        );
        check_fetch(
            &mut checks,
            "right after the kill: GET /sockets?rooms=everyone",
            fetch_room,
            &live_sids,
        );
        check_acks(
            &mut checks,
            "right after the kill: emit with acks to all",
            ack_all,
            &live_sids,
            &json!("post-all"),
        );
        check_acks(
            &mut checks,
            "right after the kill: emit with acks to room everyone",
            ack_room,
            &live_sids,
            &json!("post-room"),
        );

        // Server-emit with acks: B answers, the dead node is not waited for.
        let (server_took, server) = server;
        eprintln!("server-emit with acks right after the kill took {server_took:?}");
        if let Some(server) = checks.ok(server, "server-emit with acks") {
            checks.check(
                server.responses.len() == 1
                    && server.responses[0].node == "node-b"
                    && server.responses[0].response
                        == json!({"node": "node-b", "event": "ping", "args": [1]}),
                || format!("server-emit: expected exactly node-b's echo, got {server:?}"),
            );
            checks.check(server.complete && server.missing_nodes.is_empty(), || {
                format!("server-emit must complete once the dead node is pruned: {server:?}")
            });
        }
        checks.check(server_took < PROMPT, || {
            format!("server-emit with acks took {server_took:?}: it waited for the dead node")
        });

        // Once pruned, requests are immediate and only the live nodes remain.
        let (took, sockets) = timed(api_b.sockets("/", &[EVERYONE])).await;
        if let Some(s) = checks.ok(sockets, "fetch after pruning") {
            checks.check(sid_set_from(&s) == live_sids, || {
                format!("after pruning: {s:?}")
            });
        }
        checks.check(took < Duration::from_secs(1), || {
            format!("fetch after pruning took {took:?}")
        });
        for i in [0, 1] {
            let ids: BTreeSet<String> = cluster
                .api(i)
                .nodes()
                .await?
                .into_iter()
                .map(|n| n.id)
                .collect();
            let want: BTreeSet<String> = ["node-a".to_owned(), "node-b".to_owned()].into();
            checks.check(ids == want, || format!("node {i} lists {ids:?}"));
        }
        // The survivors' clients were not disturbed.
        for c in &live {
            let st = agent.state(&c.name).await?;
            checks.check(st.connected && st.disconnect_reasons.is_empty(), || {
                format!("{}: {st:?}", c.name)
            });
        }
        checks.finish()
    })
    .await
}

#[tokio::test]
async fn sigterm_leaves_the_cluster_gracefully() -> Result<()> {
    with_timeout(async {
        // Heartbeat timeout of 4 s: the node can only disappear from the
        // others' lists within the bound below through its own Leave message.
        let mut cluster = Cluster::builder().heartbeat_ms(2000).start().await?;
        let agent = Agent::spawn().await?;
        let mut survivors = Vec::new();
        for (name, node) in [("a0", 0), ("a1", 0), ("b0", 1), ("b1", 1)] {
            let opts = ConnectOpts::new(Transport::Websocket);
            let sid = agent
                .connect(name, &cluster.node(node).url(), &opts)
                .await?;
            agent
                .set_ack_reply(name, "ask", AckReply::Value(json!("ok")))
                .await?;
            survivors.push(Client {
                name: name.into(),
                id: sid,
                node,
                namespace: "/".into(),
            });
        }
        // The leaving node's clients reconnect by themselves (to the same URL,
        // which is gone): all the test can see is their disconnect.
        let leaving = [
            ("c-ws", Transport::Websocket),
            ("c-poll", Transport::Polling),
        ];
        let mut everyone = survivors.clone();
        for (name, t) in leaving {
            let opts = ConnectOpts::new(t).reconnect();
            let sid = agent.connect(name, &cluster.node(2).url(), &opts).await?;
            everyone.push(Client {
                name: name.into(),
                id: sid,
                node: 2,
                namespace: "/".into(),
            });
        }
        join_everyone(&cluster, &everyone).await?;
        let survivor_sids = sid_set(&survivors);
        let mut checks = Checks::new();

        cluster.node(2).sigterm()?;
        let termed_at = Instant::now();
        let limit = Duration::from_millis(1500);
        let (gone_a, gone_b) = tokio::join!(
            wait_node_gone(&cluster, 0, "node-c", termed_at, limit),
            wait_node_gone(&cluster, 1, "node-c", termed_at, limit),
        );
        if let Some(t) = checks.ok(gone_a, "node-c leaving A's /nodes quickly") {
            eprintln!("node-c left A's /nodes after {t:?}");
        }
        if let Some(t) = checks.ok(gone_b, "node-c leaving B's /nodes quickly") {
            eprintln!("node-c left B's /nodes after {t:?}");
        }

        let status = cluster
            .node_mut(2)
            .wait_exit(Duration::from_secs(8))
            .await?;
        eprintln!(
            "node-c exited with {status} after {:?}",
            termed_at.elapsed()
        );
        checks.check(status.success(), || {
            format!("graceful shutdown must exit with success, got {status}")
        });

        for (name, _) in leaving {
            let reasons = checks.ok(
                agent.wait_disconnect(name, 1, Duration::from_secs(5)).await,
                &format!("{name} (client of node-c) must be disconnected"),
            );
            eprintln!("{name} disconnect reasons: {reasons:?}");
        }

        // The rest of the cluster carries on, without waiting for node-c.
        let api_a = cluster.api(0);
        check_fetch(
            &mut checks,
            "after SIGTERM: GET /sockets",
            timed(api_a.raw(
                Method::GET,
                "/api/v1/sockets?namespace=%2F",
                None,
                REQUEST_TIMEOUT,
            ))
            .await,
            &survivor_sids,
        );
        check_fetch(
            &mut checks,
            "after SIGTERM: GET /sockets?rooms=everyone",
            timed(api_a.raw(
                Method::GET,
                "/api/v1/sockets?namespace=%2F&rooms=everyone",
                None,
                REQUEST_TIMEOUT,
            ))
            .await,
            &survivor_sids,
        );
        check_acks(
            &mut checks,
            "after SIGTERM: emit with acks to all",
            timed(
                cluster
                    .api(1)
                    .emit_with_ack(&Emit::new("ask", vec![]), 2000),
            )
            .await,
            &survivor_sids,
            &json!("ok"),
        );
        check_acks(
            &mut checks,
            "after SIGTERM: emit with acks to room everyone",
            timed(
                cluster
                    .api(1)
                    .emit_with_ack(&Emit::new("ask", vec![]).to([EVERYONE]), 2000),
            )
            .await,
            &survivor_sids,
            &json!("ok"),
        );
        for c in &survivors {
            let st = agent.state(&c.name).await?;
            checks.check(st.connected && st.disconnect_reasons.is_empty(), || {
                format!("{}: {st:?}", c.name)
            });
        }
        let log = cluster.node(2).log();
        checks.check(
            log.contains("shutting down") && log.contains("stopped"),
            || "node-c log lacks the `shutting down` / `stopped` lines".to_owned(),
        );
        checks.finish()
    })
    .await
}
