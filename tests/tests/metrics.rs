//! `/metrics` moves by exactly what a known workload does: N connections and M
//! API emits to everyone (the fan-out counted per socket), then one disconnect.

use std::time::Duration;

use anyhow::Result;
use ioscale_cluster_tests::extra::{Checks, metric_all, wait_until};
use ioscale_cluster_tests::{
    Agent, Cluster, ConnectOpts, EVENT_TIMEOUT, Emit, Transport, with_timeout,
};
use serde_json::json;

const NS: &str = "/custom";
/// Emits through node A.
const M: usize = 4;

/// `(metric, labels)` pairs the test follows.
fn series() -> Vec<(&'static str, Vec<(&'static str, &'static str)>)> {
    vec![
        ("ioscale_connections_active", vec![("namespace", NS)]),
        (
            "ioscale_connections_active",
            vec![("namespace", NS), ("transport", "polling")],
        ),
        (
            "ioscale_connections_active",
            vec![("namespace", NS), ("transport", "websocket")],
        ),
        ("ioscale_connections_active", vec![("namespace", "/")]),
        ("ioscale_connections_total", vec![("namespace", NS)]),
        ("ioscale_disconnections_total", vec![("namespace", NS)]),
        (
            "ioscale_disconnections_total",
            vec![("namespace", NS), ("reason", "client_disconnect")],
        ),
        ("ioscale_adapter_broadcasts_published_total", vec![]),
        ("ioscale_adapter_broadcasts_received_total", vec![]),
        ("ioscale_adapter_remote_deliveries_total", vec![]),
        (
            "ioscale_adapter_messages_out_total",
            vec![("kind", "broadcast")],
        ),
        (
            "ioscale_adapter_messages_in_total",
            vec![("kind", "broadcast")],
        ),
        ("ioscale_adapter_broadcast_latency_seconds_count", vec![]),
        ("ioscale_adapter_dropped_total", vec![]),
        (
            "ioscale_api_requests_total",
            vec![("route", "emit"), ("status", "200")],
        ),
        ("ioscale_events_received_total", vec![]),
        (
            "ioscale_adapter_packets_delivered_total",
            vec![("origin", "local")],
        ),
        (
            "ioscale_adapter_packets_delivered_total",
            vec![("origin", "remote")],
        ),
        (
            "ioscale_adapter_stage_duration_seconds_count",
            vec![("stage", "local_delivery")],
        ),
    ]
}

type Snapshot = Vec<Vec<f64>>;

async fn snapshot(cluster: &Cluster) -> Result<Snapshot> {
    let mut out = Vec::new();
    for (name, labels) in series() {
        out.push(metric_all(cluster, name, &labels).await?);
    }
    Ok(out)
}

/// Asserts that each followed series moved by `want(series index)` per node.
fn check_deltas(
    checks: &mut Checks,
    stage: &str,
    before: &Snapshot,
    after: &Snapshot,
    want: &[(usize, [f64; 3])],
) {
    let all = series();
    for (i, (name, labels)) in all.iter().enumerate() {
        let delta: Vec<f64> = after[i]
            .iter()
            .zip(&before[i])
            .map(|(a, b)| a - b)
            .collect();
        let expected = want
            .iter()
            .find(|(j, _)| *j == i)
            .map(|(_, d)| d.to_vec())
            .unwrap_or(vec![0.0; 3]);
        checks.check(delta == expected, || {
            format!("{stage}: {name}{labels:?} should move by {expected:?} on nodes A/B/C, moved by {delta:?} ({:?} -> {:?})", before[i], after[i])
        });
    }
}

#[tokio::test]
async fn metrics_move_by_exactly_the_workload() -> Result<()> {
    with_timeout(async {
        let cluster = Cluster::start(3).await?;
        let agent = Agent::spawn().await?;
        let mut checks = Checks::new();
        let before = snapshot(&cluster).await?;

        // N = 6 connections: per node one WebSocket and one polling client.
        let mut clients = Vec::new();
        for node in 0..3 {
            for (t, tn) in [(Transport::Websocket, "ws"), (Transport::Polling, "poll")] {
                let name = format!("{tn}{node}");
                agent
                    .connect(
                        &name,
                        &cluster.node(node).url(),
                        &ConnectOpts::new(t).namespace(NS),
                    )
                    .await?;
                clients.push(name);
            }
        }
        // The gauge moves in the connect handler: wait for it, bounded.
        let _ = wait_until(
            Duration::from_secs(3),
            Duration::from_millis(50),
            "connections_active +2 on every node",
            || {
                let (cluster, before) = (&cluster, &before);
                async move {
                    let now =
                        metric_all(cluster, "ioscale_connections_active", &[("namespace", NS)])
                            .await?;
                    Ok(now
                        .iter()
                        .zip(&before[0])
                        .all(|(n, b)| n - b >= 2.0)
                        .then_some(()))
                }
            },
        )
        .await;

        // M API emits to every /custom socket, through node A.
        for i in 0..M {
            cluster
                .api(0)
                .emit(&Emit::new("tick", vec![json!(i)]).namespace(NS))
                .await?;
        }
        for c in &clients {
            agent.wait_count(c, "tick", M, EVENT_TIMEOUT).await?;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        for c in &clients {
            let n = agent.events(c, "tick").await?.len();
            checks.check(n == M, || format!("{c} got {n} ticks, expected {M}"));
        }
        let after = snapshot(&cluster).await?;
        let m = M as f64;
        check_deltas(
            &mut checks,
            "after 6 connections and 4 emits",
            &before,
            &after,
            &[
                (0, [2.0, 2.0, 2.0]),
                (1, [1.0, 1.0, 1.0]),
                (2, [1.0, 1.0, 1.0]),
                (4, [2.0, 2.0, 2.0]),
                (7, [m, 0.0, 0.0]),
                (8, [0.0, m, m]),
                (9, [0.0, m, m]),
                (10, [m, 0.0, 0.0]),
                (11, [0.0, m, m]),
                (12, [0.0, m, m]),
                (14, [m, 0.0, 0.0]),
                // The fan-out: each emit reaches the 2 sockets of every node, A's as local
                // deliveries, B's and C's as deliveries of a broadcast from A.
                (16, [2.0 * m, 0.0, 0.0]),
                (17, [0.0, 2.0 * m, 2.0 * m]),
                // One local delivery stage per broadcast on every node: A's own, and B's and
                // C's of the broadcast they received.
                (18, [m, m, m]),
            ],
        );

        // One client of node B leaves.
        agent.disconnect("poll1").await?;
        let b_before = before[0][1];
        let _ = wait_until(
            Duration::from_secs(3),
            Duration::from_millis(50),
            "B's gauge to drop",
            || {
                let cluster = &cluster;
                async move {
                    let now = cluster.api(1).metrics().await?;
                    let v = ioscale_cluster_tests::http::metric_value(
                        &now,
                        "ioscale_connections_active",
                        &[("namespace", NS)],
                    )
                    .unwrap_or(0.0);
                    Ok((v - b_before <= 1.0).then_some(()))
                }
            },
        )
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let last = snapshot(&cluster).await?;
        check_deltas(
            &mut checks,
            "after one disconnect on B",
            &after,
            &last,
            &[
                (0, [0.0, -1.0, 0.0]),
                (1, [0.0, -1.0, 0.0]),
                (5, [0.0, 1.0, 0.0]),
                (6, [0.0, 1.0, 0.0]),
            ],
        );
        checks.finish()
    })
    .await
}
