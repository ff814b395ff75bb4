//! Harness pieces for the room-channel tests (`tests/room_channels*.rs`): room channel names,
//! subscriber counts read straight from Redis (many channels per connection, no redis-cli per
//! channel), the adapter's room and traffic counters of every node, and a windowed publish
//! loop for any `{room, data}` event (`/pubsub` `publish`, `/readme` `in` and `to`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use serde_json::{Value, json};

use crate::EVENT_TIMEOUT;
use crate::agent::{Agent, ConnectOpts};
use crate::cluster::Cluster;
use crate::extra::{Checks, PublishWindowReport, metric};
use crate::redis::{Resp, command};

/// The default channel prefix (`--redis-prefix`).
pub const PREFIX: &str = "ioscale";

/// `{prefix}#{ns}##{room}`: the channel broadcasts to `room` of namespace `ns` travel on
/// (what `ioscale_adapter::room_channel(PREFIX, ns, room)` names).
pub fn channel(ns: &str, room: &str) -> String {
    format!("{PREFIX}#{ns}##{room}")
}

/// `PUBSUB NUMSUB` (or `SHARDNUMSUB` when `sharded`) of `channels` on one server, in order.
/// Sent over one connection per hundred channels.
///
/// # Errors
/// On a connection failure or an answer of another shape.
pub async fn numsub_many(port: u16, channels: &[String], sharded: bool) -> Result<Vec<i64>> {
    let sub = if sharded { "SHARDNUMSUB" } else { "NUMSUB" };
    let mut out = Vec::with_capacity(channels.len());
    for chunk in channels.chunks(100) {
        let mut args = vec!["PUBSUB", sub];
        args.extend(chunk.iter().map(String::as_str));
        let r = command(port, &args).await?;
        let Resp::Array(Some(items)) = r else {
            bail!("PUBSUB {sub} answered {r:?}");
        };
        ensure!(
            items.len() == 2 * chunk.len(),
            "PUBSUB {sub} of {} channels answered {} items",
            chunk.len(),
            items.len()
        );
        for pair in items.chunks(2) {
            match &pair[1] {
                Resp::Int(n) => out.push(*n),
                other => bail!("PUBSUB {sub}: count {other:?}"),
            }
        }
    }
    Ok(out)
}

/// `PUBSUB NUMSUB` of one channel on a standalone server.
///
/// # Errors
/// As for [`numsub_many`].
pub async fn numsub1(port: u16, channel: &str) -> Result<i64> {
    Ok(numsub_many(port, &[channel.to_owned()], false).await?[0])
}

/// `PUBSUB SHARDCHANNELS pattern` on one server (a Redis Cluster master).
///
/// # Errors
/// On a connection failure or an answer of another shape.
pub async fn shard_channels(port: u16, pattern: &str) -> Result<Vec<String>> {
    let r = command(port, &["PUBSUB", "SHARDCHANNELS", pattern]).await?;
    let Resp::Array(Some(items)) = r else {
        bail!("PUBSUB SHARDCHANNELS answered {r:?}");
    };
    items
        .iter()
        .map(|i| {
            i.as_text()
                .ok_or_else(|| anyhow::anyhow!("PUBSUB SHARDCHANNELS item {i:?}"))
        })
        .collect()
}

/// Polls the `NUMSUB` of `channel` every 20 ms until it is `want`; returns how long after
/// `since` it first was. Fails after `limit` with the last count.
///
/// # Errors
/// On timeout or a Redis failure.
pub async fn wait_numsub(
    port: u16,
    channel: &str,
    want: i64,
    since: Instant,
    limit: Duration,
) -> Result<Duration> {
    loop {
        let n = numsub1(port, channel).await?;
        if n == want {
            return Ok(since.elapsed());
        }
        if since.elapsed() > limit {
            bail!(
                "NUMSUB {channel} is {n}, expected {want}, {:?} after the change (limit {limit:?})",
                since.elapsed()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls until every channel of `want` has its subscriber count; returns how long after
/// `since` that was. Fails after `limit`, naming the channels still off.
///
/// # Errors
/// On timeout or a Redis failure.
pub async fn wait_numsub_all(
    port: u16,
    want: &BTreeMap<String, i64>,
    since: Instant,
    limit: Duration,
) -> Result<Duration> {
    let channels: Vec<String> = want.keys().cloned().collect();
    loop {
        let got = numsub_many(port, &channels, false).await?;
        let off: Vec<(&String, i64, i64)> = channels
            .iter()
            .zip(&got)
            .filter(|(c, n)| want[*c] != **n)
            .map(|(c, n)| (c, *n, want[c]))
            .collect();
        if off.is_empty() {
            return Ok(since.elapsed());
        }
        if since.elapsed() > limit {
            bail!(
                "after {limit:?}, {} of {} channels have another subscriber count (channel, got, want): {off:?}",
                off.len(),
                channels.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The room and traffic counters of one node at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RoomCounters {
    /// `ioscale_adapter_messages_in_total{kind="broadcast"}`
    pub broadcasts_in: f64,
    /// `ioscale_adapter_broadcasts_received_total`
    pub received: f64,
    /// `ioscale_adapter_broadcasts_untargeted_total`
    pub untargeted: f64,
    /// `ioscale_adapter_room_channels`
    pub channels: f64,
    /// `ioscale_adapter_room_channel_ops_total{op="subscribe"}`
    pub subscribes: f64,
    /// `ioscale_adapter_room_channel_ops_total{op="unsubscribe"}`
    pub unsubscribes: f64,
    /// `ioscale_adapter_subscription_commands_total{op="subscribe"}`
    pub subscribe_commands: f64,
}

impl RoomCounters {
    /// Reads them from node `i` of `cluster`.
    ///
    /// # Errors
    /// If `/metrics` cannot be read.
    pub async fn of(cluster: &Cluster, i: usize) -> Result<Self> {
        let api = cluster.api(i);
        let ops = "ioscale_adapter_room_channel_ops_total";
        let cmds = "ioscale_adapter_subscription_commands_total";
        Ok(Self {
            broadcasts_in: metric(
                &api,
                "ioscale_adapter_messages_in_total",
                &[("kind", "broadcast")],
            )
            .await?,
            received: metric(&api, "ioscale_adapter_broadcasts_received_total", &[]).await?,
            untargeted: metric(&api, "ioscale_adapter_broadcasts_untargeted_total", &[]).await?,
            channels: metric(&api, "ioscale_adapter_room_channels", &[]).await?,
            subscribes: metric(&api, ops, &[("op", "subscribe")]).await?,
            unsubscribes: metric(&api, ops, &[("op", "unsubscribe")]).await?,
            subscribe_commands: metric(&api, cmds, &[("op", "subscribe")]).await?,
        })
    }

    /// [`RoomCounters::of`] for each of `nodes`.
    ///
    /// # Errors
    /// If a node's `/metrics` cannot be read.
    pub async fn of_nodes(cluster: &Cluster, nodes: &[usize]) -> Result<Vec<Self>> {
        let mut out = Vec::with_capacity(nodes.len());
        for &i in nodes {
            out.push(Self::of(cluster, i).await?);
        }
        Ok(out)
    }

    /// What moved since `before` (`channels` is the gauge's change).
    pub fn since(&self, before: &Self) -> Self {
        Self {
            broadcasts_in: self.broadcasts_in - before.broadcasts_in,
            received: self.received - before.received,
            untargeted: self.untargeted - before.untargeted,
            channels: self.channels - before.channels,
            subscribes: self.subscribes - before.subscribes,
            unsubscribes: self.unsubscribes - before.unsubscribes,
            subscribe_commands: self.subscribe_commands - before.subscribe_commands,
        }
    }
}

/// `client` emits `event` `{room, data: {seq: i}}` for i in 0..count with acks, at most
/// `window` unacked (the agent's `publish_window` loop with another event name).
///
/// # Errors
/// If the agent fails or the loop exceeds `limit`.
pub async fn publish_window_event(
    agent: &Agent,
    client: &str,
    event: &str,
    room: &str,
    count: u64,
    window: u64,
    limit: Duration,
) -> Result<PublishWindowReport> {
    let ms = u64::try_from(limit.as_millis())?;
    let v = agent
        .request(
            "publish_window",
            json!({"client": client, "event": event, "room": room, "count": count,
                   "window": window, "ack_timeout_ms": ms}),
            limit + Duration::from_secs(5),
        )
        .await?;
    Ok(serde_json::from_value(v)?)
}

/// Fails unless every publish of `r` was acked `{ok: true}`.
///
/// # Errors
/// If some were refused or failed.
pub fn all_acked(r: &PublishWindowReport, what: &str) -> Result<()> {
    ensure!(
        r.acked == r.sent && r.refused == 0 && r.error_count == 0,
        "{what}: {} sent, {} acked, {} refused ({:?}), {} errors ({:?})",
        r.sent,
        r.acked,
        r.refused,
        r.refusal_errors,
        r.error_count,
        r.errors
    );
    Ok(())
}

/// The `--room-unsubscribe-delay-ms` the room-channel tests start their nodes with.
pub const TEST_DELAY: Duration = Duration::from_millis(500);

/// How soon after the last leave a room channel must be gone with [`TEST_DELAY`]: the delay,
/// a quarter of it for the sweep, and round trips.
pub const UNSUBSCRIBED_WITHIN: Duration = Duration::from_millis(1000);

/// The node arguments for [`TEST_DELAY`].
pub fn delay_args() -> Vec<String> {
    vec![
        "--room-unsubscribe-delay-ms".to_owned(),
        TEST_DELAY.as_millis().to_string(),
    ]
}

/// After the last local socket of a room left a node at `since`: waits until the `NUMSUB` of
/// `channel` is `want` and checks that took at least 80 % of [`TEST_DELAY`] (the channel is
/// kept for the delay; the leave's ack came a little after the leave) and at most
/// [`UNSUBSCRIBED_WITHIN`]. Returns the time it took.
///
/// # Errors
/// If the count changed too early, too late, or to something else.
pub async fn expect_unsubscribed_in_time(
    port: u16,
    channel: &str,
    want: i64,
    since: Instant,
) -> Result<Duration> {
    let limit = UNSUBSCRIBED_WITHIN + Duration::from_secs(2);
    let took = wait_numsub(port, channel, want, since, limit).await?;
    ensure!(
        took >= TEST_DELAY.mul_f64(0.8) && took <= UNSUBSCRIBED_WITHIN,
        "NUMSUB {channel} became {want} {took:?} after the last leave: expected between {:?} and {UNSUBSCRIBED_WITHIN:?} (unsubscribe delay {TEST_DELAY:?})",
        TEST_DELAY.mul_f64(0.8)
    );
    Ok(took)
}

/// The port of the cluster's standalone Redis.
///
/// # Errors
/// If the cluster runs on no Redis or on a Redis Cluster.
pub fn redis_port(cluster: &Cluster) -> Result<u16> {
    match cluster.redis() {
        crate::cluster::RedisBackend::Standalone(s) => Ok(s.port()),
        other => bail!("not a standalone Redis: {other:?}"),
    }
}

/// A `redis-cli MONITOR` writing every command Redis runs, with its time and client, to
/// `redis-monitor.log` in the test's log directory: what shows in which order Redis applied a
/// node's `SUBSCRIBE` and another node's `PUBLISH`. Killed on drop.
#[derive(Debug)]
pub struct Monitor {
    child: tokio::process::Child,
    log: std::path::PathBuf,
}

impl Monitor {
    /// Starts it against `127.0.0.1:port`.
    ///
    /// # Errors
    /// If redis-cli cannot be started.
    pub fn start(logs: &crate::logs::TestLogs, port: u16) -> Result<Self> {
        let log = logs.file("redis-monitor.log");
        let out = std::fs::File::create(&log)?;
        let child = tokio::process::Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "MONITOR"])
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true)
            .spawn()?;
        Ok(Self { child, log })
    }

    /// The lines logged so far that contain `needle`.
    pub fn lines_with(&self, needle: &str) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Sends `event` with `arg` from `client` and requires the ack `{ok: true}`.
///
/// # Errors
/// On another ack, or none within [`EVENT_TIMEOUT`].
pub async fn ack_ok(agent: &Agent, client: &str, event: &str, arg: Value) -> Result<()> {
    let a = agent
        .emit_with_ack(client, event, vec![arg.clone()], EVENT_TIMEOUT)
        .await?;
    ensure!(a == [json!({"ok": true})], "{client} {event} {arg}: {a:?}");
    Ok(())
}

/// The counters of nodes A, B and C since `before`.
///
/// # Errors
/// If a node's metrics cannot be read.
pub async fn deltas(cluster: &Cluster, before: &[RoomCounters]) -> Result<Vec<RoomCounters>> {
    let after = RoomCounters::of_nodes(cluster, &[0, 1, 2]).await?;
    Ok(after.iter().zip(before).map(|(a, b)| a.since(b)).collect())
}

/// C (no member) received none of the broadcasts, and the member nodes none they could not
/// deliver; B received `b_in` broadcast messages.
pub fn check_isolated(checks: &mut Checks, what: &str, d: &[RoomCounters], b_in: f64) {
    eprintln!("{what}: counter deltas (A, B, C) {d:?}");
    checks.check(
        d[2].broadcasts_in == 0.0 && d[2].received == 0.0 && d[2].untargeted == 0.0,
        || {
            format!(
                "{what}: node C has no member but its counters moved: {:?}",
                d[2]
            )
        },
    );
    checks.check(d[0].untargeted == 0.0 && d[1].untargeted == 0.0, || {
        format!(
            "{what}: untargeted broadcasts at member nodes: A {:?}, B {:?}",
            d[0], d[1]
        )
    });
    checks.check(d[1].broadcasts_in == b_in, || {
        format!(
            "{what}: B received {} broadcasts, expected {b_in}",
            d[1].broadcasts_in
        )
    });
}

/// Connects each `(client, node)` with `opts`, in order; returns their socket ids.
///
/// # Errors
/// The first connection that fails.
pub async fn connect_at(
    agent: &Agent,
    cluster: &Cluster,
    opts: &ConnectOpts,
    clients: &[(&str, usize)],
) -> Result<Vec<String>> {
    let mut sids = Vec::with_capacity(clients.len());
    for &(name, node) in clients {
        sids.push(agent.connect(name, &cluster.node(node).url(), opts).await?);
    }
    Ok(sids)
}
