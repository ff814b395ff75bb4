//! Load through the client pub/sub namespace (`/pubsub`): a 20,000-publish
//! burst from one node must reach a room member on another node completely,
//! exactly once and in order, with nothing dropped anywhere; and the
//! cross-node publish-to-receive latency, printed for information.

use std::time::Duration;

use anyhow::{Result, ensure};
use ioscale_cluster_tests::extra::{AgentBulk, Checks, metric_all, with_timeout_of};
use ioscale_cluster_tests::{Agent, Cluster, ConnectOpts, Transport};
use serde_json::json;

const DROPPED: &str = "ioscale_adapter_dropped_total";
const BURST: u64 = 20_000;
/// Most unacked publishes at any time.
const WINDOW: u64 = 500;

/// Connects `name` to `/pubsub` on node `node` and joins `room` (acked).
async fn member(
    agent: &Agent,
    cluster: &Cluster,
    name: &str,
    node: usize,
    room: &str,
) -> Result<()> {
    let opts = ConnectOpts::new(Transport::Websocket).namespace("/pubsub");
    agent
        .connect(name, &cluster.node(node).url(), &opts)
        .await?;
    let ack = agent
        .emit_with_ack(name, "join", vec![json!(room)], Duration::from_secs(5))
        .await?;
    ensure!(ack == [json!({"ok": true})], "{name} join {room}: {ack:?}");
    Ok(())
}

#[tokio::test]
async fn burst_of_20000_publishes_arrives_complete_once_and_in_order() -> Result<()> {
    with_timeout_of(Duration::from_secs(300), async {
        let cluster = Cluster::start(3).await?;
        let agent = Agent::spawn().await?;
        member(&agent, &cluster, "pa", 0, "burst").await?;
        member(&agent, &cluster, "pb", 1, "burst").await?;

        let report = agent
            .publish_window("pa", "burst", BURST, WINDOW, Duration::from_secs(120))
            .await?;
        let publish_s = (report.finished_ms - report.started_ms) as f64 / 1000.0;
        eprintln!(
            "published {} (acked {}, errors {}) in {publish_s:.2} s = {:.0} publishes/s",
            report.sent,
            report.acked,
            report.error_count,
            report.sent as f64 / publish_s.max(0.001)
        );
        let mut checks = Checks::new();
        checks.check(
            report.sent == BURST && report.acked == BURST && report.error_count == 0,
            || format!("publisher: every publish must be acked ok: {report:?}"),
        );

        // The remote member (node B) and the publisher itself (local
        // delivery), checked at the same time so both receive times are real.
        let limit = Duration::from_secs(120);
        let settle = Duration::from_millis(500);
        let (seq_b, seq_a) = tokio::join!(
            agent.seq_check("pb", "msg", BURST, limit, settle),
            agent.seq_check("pa", "msg", BURST, limit, settle),
        );
        for (name, seq) in [("pb", seq_b?), ("pa", seq_a?)] {
            if let Some(done) = seq.done_ms {
                let total_s = (done.saturating_sub(report.started_ms)) as f64 / 1000.0;
                eprintln!(
                    "{name}: all {BURST} received {total_s:.2} s after the first publish = {:.0} msgs/s end to end",
                    BURST as f64 / total_s.max(0.001)
                );
            }
            checks.check(
                seq.count == BURST
                    && seq.in_order
                    && seq.duplicates == 0
                    && seq.missing_count == 0
                    && seq.invalid == 0,
                || format!("{name}: expected seq 0..{BURST} exactly once each, in order: {seq:?}"),
            );
        }

        let dropped = metric_all(&cluster, DROPPED, &[]).await?;
        checks.check(dropped.iter().all(|d| *d == 0.0), || {
            let text: Vec<String> = dropped.iter().map(|d| d.to_string()).collect();
            format!("{DROPPED} (all reasons) per node must be 0, got [{}]", text.join(", "))
        });
        checks.finish()
    })
    .await
}

#[tokio::test]
async fn cross_node_publish_latency() -> Result<()> {
    with_timeout_of(Duration::from_secs(180), async {
        let cluster = Cluster::start(3).await?;
        let agent = Agent::spawn().await?;
        let opts = ConnectOpts::new(Transport::Websocket).namespace("/pubsub");
        agent.connect("pa", &cluster.node(0).url(), &opts).await?;
        member(&agent, &cluster, "pb", 1, "lat").await?;

        let r = agent
            .latency_run("pa", "pb", "lat", 1000, Duration::from_secs(5))
            .await?;
        eprintln!(
            "cross-node publish->receive latency over {} messages: min {:.2} ms, p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms, mean {:.2} ms",
            r.n, r.min_ms, r.p50_ms, r.p90_ms, r.p99_ms, r.max_ms, r.mean_ms
        );
        // No latency bound (the machine is shared); every message must arrive.
        ensure!(r.n == 1000, "only {} of 1000 messages measured", r.n);
        Ok(())
    })
    .await
}
