//! Load through the client pub/sub namespace (`/pubsub`): a 20,000-publish
//! burst sent at once from one node must reach a room member on another node
//! completely, exactly once and in order, with nothing refused or dropped
//! anywhere; with a small publish buffer a burst is partly refused, visibly
//! (`ok: false`), and everything not refused still arrives once, in order; and
//! the cross-node publish-to-receive latency, printed for information.

use std::time::Duration;

use anyhow::{Result, ensure};
use ioscale_cluster_tests::extra::{
    AgentBulk, Checks, PublishWindowReport, SeqReport, metric_all, with_timeout_of,
};
use ioscale_cluster_tests::{Agent, Cluster, ConnectOpts, Transport};
use serde_json::{Value, json};

const DROPPED: &str = "ioscale_adapter_dropped_total";
const REFUSED: &str = "ioscale_pubsub_publishes_refused_total";
const STAGES: &str = "ioscale_pubsub_stage_duration_seconds_count";
const BURST: u64 = 20_000;

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

fn print_report(report: &PublishWindowReport) {
    let publish_s = (report.finished_ms - report.started_ms) as f64 / 1000.0;
    eprintln!(
        "published {} (acked {}, refused {}, errors {}) in {publish_s:.2} s = {:.0} publishes/s",
        report.sent,
        report.acked,
        report.refused,
        report.error_count,
        report.sent as f64 / publish_s.max(0.001)
    );
}

/// An ack of one refusal.
fn is_refusal(ack: &[Value]) -> bool {
    ack.len() == 1 && ioscale_cluster_tests::is_refusal(&ack[0])
}

/// Every expected seq exactly once, in order, nothing else.
fn seq_clean(seq: &SeqReport, expected: u64) -> bool {
    seq.count == expected
        && seq.in_order
        && seq.duplicates == 0
        && seq.missing_count == 0
        && seq.invalid == 0
        && seq.unexpected == 0
}

async fn check_nothing_dropped(cluster: &Cluster, checks: &mut Checks) -> Result<()> {
    let dropped = metric_all(cluster, DROPPED, &[]).await?;
    checks.check(dropped.iter().all(|d| *d == 0.0), || {
        let text: Vec<String> = dropped.iter().map(|d| d.to_string()).collect();
        format!(
            "{DROPPED} (all reasons) per node must be 0, got [{}]",
            text.join(", ")
        )
    });
    Ok(())
}

#[tokio::test]
async fn burst_of_20000_publishes_arrives_complete_once_and_in_order() -> Result<()> {
    with_timeout_of(Duration::from_secs(300), async {
        let mut cluster = Cluster::start(3).await?;
        let agent = Agent::spawn().await?;
        // The publisher on node 2 is a member too (local delivery: its own buffer carries
        // 20,000 acks and 20,000 copies); the subscriber on node 1 gets them through Redis.
        member(&agent, &cluster, "pub", 1, "burst").await?;
        member(&agent, &cluster, "sub", 0, "burst").await?;

        // No window: all 20,000 are emitted at once, before the first ack comes back.
        let report = agent
            .publish_window("pub", "burst", BURST, BURST, Duration::from_secs(120))
            .await?;
        print_report(&report);
        let mut checks = Checks::new();
        checks.check(
            report.sent == BURST
                && report.acked == BURST
                && report.refused == 0
                && report.error_count == 0,
            || format!("publisher: every publish must be acked ok, none refused: {report:?}"),
        );

        // Both receivers checked at the same time so both receive times are real.
        let limit = Duration::from_secs(120);
        let settle = Duration::from_millis(500);
        let (seq_sub, seq_pub) = tokio::join!(
            agent.seq_check("sub", "msg", BURST, limit, settle),
            agent.seq_check("pub", "msg", BURST, limit, settle),
        );
        for (name, seq) in [("sub", seq_sub?), ("pub", seq_pub?)] {
            if let Some(done) = seq.done_ms {
                let total_s = (done.saturating_sub(report.started_ms)) as f64 / 1000.0;
                eprintln!(
                    "{name}: all {BURST} received {total_s:.2} s after the first publish = {:.0} msgs/s end to end",
                    BURST as f64 / total_s.max(0.001)
                );
            }
            checks.check(seq_clean(&seq, BURST), || {
                format!("{name}: expected seq 0..{BURST} exactly once each, in order: {seq:?}")
            });
        }

        let refused = metric_all(&cluster, REFUSED, &[]).await?;
        checks.check(refused.iter().all(|r| *r == 0.0), || {
            format!("{REFUSED} per node must be 0, got {refused:?}")
        });
        // Every publish went through each /pubsub stage once, on the publisher's node only.
        for stage in ["queue", "emit", "ack"] {
            let n = metric_all(&cluster, STAGES, &[("stage", stage)]).await?;
            let want = [0.0, BURST as f64, 0.0];
            checks.check(n == want, || {
                format!("{STAGES}{{stage={stage}}} per node must be {want:?}, got {n:?}")
            });
        }
        check_nothing_dropped(&cluster, &mut checks).await?;
        check_recorded_in_batches(&mut cluster, &mut checks).await?;
        checks.finish()
    })
    .await
}

/// Calls of `command` in Redis' `INFO commandstats` text.
fn calls(stats: &str, command: &str) -> u64 {
    let prefix = format!("cmdstat_{command}:calls=");
    stats
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

/// Each publish was recorded once (one history entry each) and the burst went to Redis in
/// batches: far fewer script calls than publishes (one per publish before batching).
async fn check_recorded_in_batches(cluster: &mut Cluster, checks: &mut Checks) -> Result<()> {
    let port = cluster.redis_mut().standalone().port();
    let reply = ioscale_cluster_tests::redis::command(port, &["INFO", "commandstats"]).await?;
    let stats = reply.as_text().unwrap_or_default();
    let (evals, xadds) = (calls(&stats, "eval"), calls(&stats, "xadd"));
    eprintln!("redis: {xadds} history entries in {evals} script calls");
    checks.check(xadds == BURST, || {
        format!("every publish recorded once: {xadds} XADD calls for {BURST} publishes")
    });
    checks.check(evals > 0 && evals <= BURST / 4, || {
        format!("the burst must be recorded in batches: {evals} script calls for {BURST} publishes")
    });
    Ok(())
}

/// Malformed publishes and joins are refused with `ok: false` and an error, and counted under
/// their own reason. (A publish beyond `--publish-buffer-bytes` is refused too: a client that
/// reads has nothing pending, so that refusal is proved with one that stops reading, in
/// tests/tests/slow_publisher.rs.)
#[tokio::test]
async fn malformed_publishes_and_joins_are_refused_and_counted() -> Result<()> {
    with_timeout_of(Duration::from_secs(60), async {
        let cluster = Cluster::builder().nodes(2).start().await?;
        let agent = Agent::spawn().await?;
        member(&agent, &cluster, "pub", 1, "small").await?;
        let mut checks = Checks::new();
        let bad_join = agent
            .emit_with_ack("pub", "join", vec![json!("")], Duration::from_secs(5))
            .await?;
        checks.check(is_refusal(&bad_join), || format!("join \"\": {bad_join:?}"));
        for bad in [
            json!("not an object"),
            json!({"room": "", "data": 1}),
            json!({"room": "small"}),
        ] {
            let ack = agent
                .emit_with_ack("pub", "publish", vec![bad.clone()], Duration::from_secs(5))
                .await?;
            checks.check(is_refusal(&ack), || format!("publish {bad}: {ack:?}"));
        }
        let invalid = metric_all(&cluster, REFUSED, &[("reason", "invalid")]).await?;
        checks.check(invalid == [0.0, 3.0], || {
            format!("{REFUSED}{{reason=invalid}} must be [0, 3], got {invalid:?}")
        });
        check_nothing_dropped(&cluster, &mut checks).await?;
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
