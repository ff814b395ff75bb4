//! The load balancer configs of `deploy/lb/` with the real proxies: `nginx` and
//! `haproxy` run from the committed files, on loopback, in front of three nodes
//! sharing one Redis, with the official socket.io client going through them.
//!
//! For each proxy: 30 polling-only, 30 WebSocket-only and 30 upgrading clients
//! spread over all three nodes (all from 127.0.0.1, so stickiness by client
//! address would put them on one node) and keep working: every request of a
//! long-polling session reaches the node that holds it (a raw probe counts
//! `Session ID unknown` answers, the clients stay connected through several
//! ping cycles, receive broadcasts and get acks). Draining a node (SIGTERM)
//! moves its clients to the others through the proxy, and leaves the others'
//! clients where they were. The round-robin counter-example shows the failure
//! the other tests would catch. Every config, the counter-example included,
//! refuses the server API and `/metrics` (spellings that reach the same route
//! too) while Socket.IO and the chat page go through.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{Result, ensure};
use ioscale_cluster_tests::cluster::DEFAULT_API_KEY;
use ioscale_cluster_tests::extra::{Checks, wait_until};
use ioscale_cluster_tests::http::{Method, RawBody};
use ioscale_cluster_tests::lb::{LbKind, LoadBalancer, polling_probe};
use ioscale_cluster_tests::{
    Agent, Api, Cluster, ConnectOpts, EVENT_TIMEOUT, Emit, TestLogs, Transport, with_timeout,
};
use serde_json::json;

/// Clients per scenario.
const CLIENTS: usize = 30;
/// Short Engine.IO heartbeats: a polling client then sends a request pair every
/// second, so a few seconds exercise many requests per session.
const NODE_ARGS: [&str; 4] = ["--ping-interval-ms", "1000", "--ping-timeout-ms", "3000"];

struct Setup {
    cluster: Cluster,
    lb: LoadBalancer,
    agent: Agent,
    _logs: TestLogs,
}

async fn setup(kind: LbKind) -> Result<Setup> {
    let logs = TestLogs::for_current_test()?;
    let cluster = Cluster::builder().node_args(NODE_ARGS).start().await?;
    let addrs: Vec<_> = cluster.nodes().iter().map(|n| n.addr()).collect();
    let lb = LoadBalancer::start(&logs, kind, &addrs).await?;
    let agent = Agent::spawn_in(&logs).await?;
    eprintln!(
        "{} on {} (files in {})",
        kind.name(),
        lb.url(),
        lb.dir().display()
    );
    Ok(Setup {
        cluster,
        lb,
        agent,
        _logs: logs,
    })
}

/// Socket id → node id, as the cluster reports it (through node 0's API).
async fn placement(cluster: &Cluster) -> Result<BTreeMap<String, String>> {
    Ok(cluster
        .api(0)
        .sockets("/", &[])
        .await?
        .into_iter()
        .map(|s| (s.id, s.node))
        .collect())
}

fn per_node(placement: &BTreeMap<String, String>) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for node in placement.values() {
        *counts.entry(node.clone()).or_default() += 1;
    }
    counts
}

/// Connects `names` through the proxy; returns their socket ids in order.
async fn connect_all(
    agent: &Agent,
    url: &str,
    names: &[String],
    transport: impl Fn(usize) -> Transport,
    reconnect: bool,
) -> Result<Vec<String>> {
    let mut sids = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        let mut opts = ConnectOpts::new(transport(i));
        if reconnect {
            opts = opts.reconnect();
        }
        sids.push(agent.connect(name, url, &opts).await?);
    }
    Ok(sids)
}

/// Waits until every upgrading client has moved to WebSocket. The upgrade is a
/// request of the polling session (`?sid=…&transport=websocket`), so it too
/// must reach the session's node.
async fn wait_upgraded(agent: &Agent, names: &[String]) -> Result<()> {
    for name in names {
        wait_until(
            Duration::from_secs(10),
            Duration::from_millis(100),
            &format!("{name} to upgrade to websocket"),
            || async move {
                let s = agent.state(name).await?;
                Ok((s.transport.as_deref() == Some("websocket")).then_some(()))
            },
        )
        .await?;
    }
    Ok(())
}

/// Every client gets one broadcast and one ack (a client→server request on
/// its own session), and the ack's side effect lands on that very socket.
async fn check_working(
    checks: &mut Checks,
    s: &Setup,
    names: &[String],
    event: &str,
) -> Result<()> {
    s.cluster
        .api(1)
        .emit(&Emit::new(event, vec![json!("hi")]))
        .await?;
    for name in names {
        checks.ok(
            s.agent.wait_count(name, event, 1, EVENT_TIMEOUT).await,
            &format!("{name} receiving broadcast {event}"),
        );
    }
    for name in names {
        let ack = s
            .agent
            .emit_with_ack(
                name,
                "set-data",
                vec![json!({ "lb": name, "event": event })],
                EVENT_TIMEOUT,
            )
            .await;
        if let Some(ack) = checks.ok(ack, &format!("{name} set-data ack")) {
            checks.check(ack == vec![json!({"ok": true})], || {
                format!("{name}: set-data acked {ack:?}")
            });
        }
    }
    let sockets = s.cluster.api(2).sockets("/", &[]).await?;
    let tagged: BTreeSet<String> = sockets
        .iter()
        .filter(|x| x.data["event"] == json!(event))
        .filter_map(|x| x.data["lb"].as_str().map(str::to_owned))
        .collect();
    let want: BTreeSet<String> = names.iter().cloned().collect();
    checks.check(tagged == want, || {
        format!("socket data set through the proxy: want {want:?}, got {tagged:?}")
    });
    Ok(())
}

/// 30 clients of one transport through the proxy: spread over all nodes,
/// sticky, working.
async fn spread_and_sticky(kind: LbKind, transport: Transport) -> Result<()> {
    with_timeout(async {
        let s = setup(kind).await?;
        let mut checks = Checks::new();
        let names: Vec<String> = (0..CLIENTS).map(|i| format!("c{i}")).collect();
        let sids = connect_all(&s.agent, &s.lb.url(), &names, |_| transport, false).await?;
        if transport == Transport::Both {
            wait_upgraded(&s.agent, &names).await?;
        }

        let placed = placement(&s.cluster).await?;
        let want: BTreeSet<String> = sids.iter().cloned().collect();
        let got: BTreeSet<String> = placed.keys().cloned().collect();
        ensure!(got == want, "cluster sockets {got:?} != connected {want:?}");
        let counts = per_node(&placed);
        eprintln!("{} {transport:?}: clients per node {counts:?}", kind.name());
        checks.check(counts.len() == 3, || {
            format!("clients must spread over all 3 nodes, got {counts:?}")
        });

        // Several ping cycles (1 s): each is a poll and a post per polling
        // client, any of which would fail on the wrong node.
        tokio::time::sleep(Duration::from_secs(3)).await;
        for name in &names {
            let st = s.agent.state(name).await?;
            checks.check(
                st.connected && st.connects == 1 && st.connect_errors.is_empty(),
                || format!("{name} must stay connected without errors: {st:?}"),
            );
        }
        check_working(&mut checks, &s, &names, "hello").await?;

        // Raw long-polling sessions: every request must reach the session's node.
        for i in 0..5 {
            let r = polling_probe(&s.lb.url(), 6).await?;
            checks.check(r.unknown_sid == 0 && r.other.is_empty(), || {
                format!("raw polling session {i} through {}: {r:?}", kind.name())
            });
        }
        checks.finish()
    })
    .await
}

/// SIGTERM on the node with the most clients: its clients reconnect through
/// the proxy to the other nodes, the others' clients stay put, and all work.
async fn drain(kind: LbKind) -> Result<()> {
    with_timeout(async {
        let mut s = setup(kind).await?;
        let mut checks = Checks::new();
        let names: Vec<String> = (0..CLIENTS).map(|i| format!("c{i}")).collect();
        let transports = [Transport::Polling, Transport::Websocket, Transport::Both];
        let sids = connect_all(&s.agent, &s.lb.url(), &names, |i| transports[i % 3], true).await?;
        let before = placement(&s.cluster).await?;
        let counts = per_node(&before);
        eprintln!("{} before drain: {counts:?}", kind.name());
        ensure!(counts.len() == 3, "clients must spread first: {counts:?}");
        let (victim_id, _) = counts.iter().max_by_key(|(_, n)| **n).expect("three nodes");
        let victim = s
            .cluster
            .node_ids()
            .iter()
            .position(|id| id == victim_id)
            .expect("a node of the cluster");
        let survivor = (victim + 1) % 3;
        let node_of = |sid: &String| before.get(sid).cloned().unwrap_or_default();
        let moved: Vec<&String> = names
            .iter()
            .zip(&sids)
            .filter(|(_, sid)| node_of(sid) == *victim_id)
            .map(|(n, _)| n)
            .collect();
        let stayed: Vec<&String> = names
            .iter()
            .zip(&sids)
            .filter(|(_, sid)| node_of(sid) != *victim_id)
            .map(|(n, _)| n)
            .collect();
        eprintln!("draining {victim_id}: {} clients must move", moved.len());

        s.cluster.node(victim).sigterm()?;
        let status = s
            .cluster
            .node_mut(victim)
            .wait_exit(Duration::from_secs(10))
            .await?;
        checks.check(status.success(), || {
            format!("drained node exited with {status}")
        });

        for name in &moved {
            let r = s
                .agent
                .wait_connected(name, 2, Duration::from_secs(20))
                .await;
            checks.ok(r, &format!("{name} reconnecting through {}", kind.name()));
        }
        for name in &stayed {
            let st = s.agent.state(name).await?;
            checks.check(st.connected && st.connects == 1, || {
                format!("{name} was not on the drained node and must not move: {st:?}")
            });
        }

        let after: BTreeMap<String, String> = s
            .cluster
            .api(survivor)
            .sockets("/", &[])
            .await?
            .into_iter()
            .map(|x| (x.id, x.node))
            .collect();
        let after_counts = per_node(&after);
        eprintln!("{} after drain: {after_counts:?}", kind.name());
        checks.check(
            after.len() == CLIENTS && !after_counts.contains_key(victim_id.as_str()),
            || format!("all {CLIENTS} clients must be on the remaining nodes: {after_counts:?}"),
        );
        // The moved upgrading clients upgrade again on their new node.
        let moved_both: Vec<String> = moved
            .iter()
            .filter(|n| {
                let i: usize = n[1..].parse().unwrap_or(0);
                transports[i % 3] == Transport::Both
            })
            .map(|n| (*n).clone())
            .collect();
        checks.ok(
            wait_upgraded(&s.agent, &moved_both).await,
            "moved clients upgrading",
        );
        // Two more ping cycles on the new nodes, then everything still works.
        tokio::time::sleep(Duration::from_secs(2)).await;
        check_working_after_drain(&mut checks, &s, survivor, &names).await?;
        checks.finish()
    })
    .await
}

/// Like [`check_working`], through a node that is still running.
async fn check_working_after_drain(
    checks: &mut Checks,
    s: &Setup,
    via: usize,
    names: &[String],
) -> Result<()> {
    s.cluster
        .api(via)
        .emit(&Emit::new("after-drain", vec![json!(1)]))
        .await?;
    for name in names {
        checks.ok(
            s.agent
                .wait_count(name, "after-drain", 1, EVENT_TIMEOUT)
                .await,
            &format!("{name} receiving a broadcast after the drain"),
        );
        let ack = s
            .agent
            .emit_with_ack(
                name,
                "set-data",
                vec![json!({"after": true})],
                EVENT_TIMEOUT,
            )
            .await;
        checks.ok(ack, &format!("{name} set-data ack after the drain"));
    }
    Ok(())
}

/// Requests the proxies must refuse: the API and the metrics, and spellings of
/// them that a node's router or a proxy might still take for those routes.
const ADMIN_PATHS: [&str; 8] = [
    "/metrics",
    "/api/v1/nodes",
    "/api/v1/sockets?namespace=%2F",
    "/api/v1",
    "//metrics",
    "/%6Detrics",
    "//api/v1/nodes",
    "/api/v1/%6Eodes",
];
/// Every kind of Socket.IO client.
const ALL_TRANSPORTS: [Transport; 3] = [Transport::Polling, Transport::Websocket, Transport::Both];
/// What every config answers instead (the nodes never say it).
const LB_REFUSAL: &str = "not served by the load balancer";

/// The proxy refuses the server API and `/metrics` (defence in depth beside
/// the nodes' `--admin-listen`), while Socket.IO and the chat page go through.
/// The nodes run with their defaults, so they do serve both on the very port
/// the proxy forwards to: a refusal seen through the proxy is the proxy's own.
/// Socket.IO is tried with `transports` (round-robin breaks polling anyway).
async fn admin_paths_refused(kind: LbKind, transports: &[Transport]) -> Result<()> {
    with_timeout(async {
        let s = setup(kind).await?;
        let mut checks = Checks::new();
        let t = Duration::from_secs(10);

        // Served by the node itself, with the key the proxy's client sends too.
        let direct = s.cluster.api(0);
        checks.ok(direct.metrics().await, "GET /metrics from the node itself");
        let r = direct.raw(Method::GET, "/api/v1/nodes", None, t).await?;
        checks.check(r.status == 200, || {
            format!(
                "GET /api/v1/nodes from the node itself answered {}: {}",
                r.status, r.body
            )
        });

        let via_lb = Api::new(s.lb.url(), Some(DEFAULT_API_KEY.to_owned()));
        for path in ADMIN_PATHS {
            let r = via_lb.raw(Method::GET, path, None, t).await?;
            checks.check(r.status == 404 && r.body.contains(LB_REFUSAL), || {
                format!(
                    "GET {path} through {} must be refused by it: {} {}",
                    kind.name(),
                    r.status,
                    r.body
                )
            });
        }
        let emit = json!({"event": "through-lb", "args": []});
        let r = via_lb
            .raw(Method::POST, "/api/v1/emit", Some(RawBody::Json(emit)), t)
            .await?;
        checks.check(r.status == 404 && r.body.contains(LB_REFUSAL), || {
            format!(
                "POST /api/v1/emit through {} must be refused by it: {} {}",
                kind.name(),
                r.status,
                r.body
            )
        });

        // Everything else still goes through: the chat page and Socket.IO
        // sessions, acked through their own session.
        let page = via_lb.raw(Method::GET, "/", None, t).await?;
        checks.check(page.status == 200, || {
            format!("GET / through {} answered {}", kind.name(), page.status)
        });
        let names: Vec<String> = (0..transports.len()).map(|i| format!("s{i}")).collect();
        connect_all(&s.agent, &s.lb.url(), &names, |i| transports[i], false).await?;
        for name in &names {
            let ack = s
                .agent
                .emit_with_ack(name, "set-data", vec![json!({"lb": name})], EVENT_TIMEOUT)
                .await;
            if let Some(ack) =
                checks.ok(ack, &format!("{name} set-data ack through {}", kind.name()))
            {
                checks.check(ack == vec![json!({"ok": true})], || {
                    format!("{name}: set-data acked {ack:?}")
                });
            }
        }
        checks.finish()
    })
    .await
}

mod nginx {
    use super::*;

    #[tokio::test]
    async fn admin_paths_are_refused() -> Result<()> {
        admin_paths_refused(LbKind::Nginx, &ALL_TRANSPORTS).await
    }

    #[tokio::test]
    async fn polling_clients_spread_and_stick() -> Result<()> {
        spread_and_sticky(LbKind::Nginx, Transport::Polling).await
    }

    #[tokio::test]
    async fn websocket_clients_spread() -> Result<()> {
        spread_and_sticky(LbKind::Nginx, Transport::Websocket).await
    }

    #[tokio::test]
    async fn upgrading_clients_spread_and_stick() -> Result<()> {
        spread_and_sticky(LbKind::Nginx, Transport::Both).await
    }

    #[tokio::test]
    async fn draining_a_node_moves_its_clients() -> Result<()> {
        drain(LbKind::Nginx).await
    }
}

mod haproxy {
    use super::*;

    #[tokio::test]
    async fn admin_paths_are_refused() -> Result<()> {
        admin_paths_refused(LbKind::Haproxy, &ALL_TRANSPORTS).await
    }

    #[tokio::test]
    async fn polling_clients_spread_and_stick() -> Result<()> {
        spread_and_sticky(LbKind::Haproxy, Transport::Polling).await
    }

    #[tokio::test]
    async fn websocket_clients_spread() -> Result<()> {
        spread_and_sticky(LbKind::Haproxy, Transport::Websocket).await
    }

    #[tokio::test]
    async fn upgrading_clients_spread_and_stick() -> Result<()> {
        spread_and_sticky(LbKind::Haproxy, Transport::Both).await
    }

    #[tokio::test]
    async fn draining_a_node_moves_its_clients() -> Result<()> {
        drain(LbKind::Haproxy).await
    }
}

/// Even the counter-example keeps the API and the metrics to itself: a copy of
/// it must not expose them.
#[tokio::test]
async fn roundrobin_refuses_admin_paths_too() -> Result<()> {
    admin_paths_refused(LbKind::NginxRoundRobinBroken, &[Transport::Websocket]).await
}

/// The counter-example: round-robin without stickiness breaks long-polling
/// sessions with `Session ID unknown` (and the checks above would see it),
/// while WebSocket-only clients, one connection each, still work.
#[tokio::test]
async fn roundrobin_without_stickiness_breaks_polling() -> Result<()> {
    with_timeout(async {
        let s = setup(LbKind::NginxRoundRobinBroken).await?;
        let mut unknown = 0;
        for _ in 0..5 {
            let r = polling_probe(&s.lb.url(), 6).await?;
            eprintln!("raw polling session through round-robin: {r:?}");
            unknown += r.unknown_sid;
        }
        ensure!(
            unknown > 0,
            "round-robin must send some polling requests to a node without the session"
        );

        let mut failed = 0;
        for i in 0..10 {
            let opts = ConnectOpts::new(Transport::Polling);
            let r = s.agent.connect(&format!("p{i}"), &s.lb.url(), &opts).await;
            if r.is_err() {
                failed += 1;
            } else {
                // A session that did connect breaks on a later request.
                tokio::time::sleep(Duration::from_millis(1500)).await;
                let st = s.agent.state(&format!("p{i}")).await?;
                if !st.connected || !st.disconnect_reasons.is_empty() {
                    failed += 1;
                }
            }
        }
        eprintln!("polling clients through round-robin: {failed}/10 failed");
        ensure!(failed > 0, "polling clients must fail through round-robin");
        let log = s.lb.request_log();
        ensure!(
            log.lines()
                .any(|l| l.contains("/socket.io/") && l.contains("\" 400 ")),
            "the proxy's access log must show the 400s ({})",
            s.lb.request_log_path().display()
        );

        let names: Vec<String> = (0..6).map(|i| format!("w{i}")).collect();
        connect_all(
            &s.agent,
            &s.lb.url(),
            &names,
            |_| Transport::Websocket,
            false,
        )
        .await?;
        let mut checks = Checks::new();
        for name in &names {
            let r = s
                .agent
                .emit_with_ack(name, "set-data", vec![json!({"ws": true})], EVENT_TIMEOUT)
                .await;
            checks.ok(
                r,
                &format!("{name}: websocket-only client through round-robin"),
            );
        }
        checks.finish()
    })
    .await
}
