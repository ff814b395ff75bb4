//! Harness pieces for the fault tests (`tests/redis_failover.rs`, `tests/stalls.rs`): polling
//! every node's `/readyz` until it turns, and probing until broadcasts cross nodes again,
//! measuring when each happened.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use serde_json::json;

use crate::agent::Agent;
use crate::cluster::Cluster;
use crate::fixture::Client;
use crate::http::Emit;

/// How often [`wait_delivery`] sends a probe (and how long each waits for its arrival).
pub const PROBE_EVERY: Duration = Duration::from_millis(250);

/// Polls `/readyz` of the nodes `which` until each answers `want`; returns, per node, how
/// long after `since` it first did. Fails after `limit` (counted from `since`).
///
/// # Errors
/// If a node does not answer `want` in time.
pub async fn wait_ready_state(
    cluster: &Cluster,
    which: &[usize],
    want: u16,
    since: Instant,
    limit: Duration,
) -> Result<Vec<Duration>> {
    let mut reached: Vec<Option<Duration>> = vec![None; which.len()];
    loop {
        for (slot, &i) in reached.iter_mut().zip(which) {
            if slot.is_none()
                && let Ok(s) = cluster.api(i).readyz().await
                && s == want
            {
                *slot = Some(since.elapsed());
            }
        }
        if reached.iter().all(Option::is_some) {
            return Ok(reached.into_iter().flatten().collect());
        }
        ensure!(
            since.elapsed() < limit,
            "/readyz of nodes {which:?} did not all become {want} within {limit:?} of the fault: {reached:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What [`wait_delivery`] found.
#[derive(Debug, Clone, Copy)]
pub struct Resumed {
    /// When the first probe that reached every client was sent, after `since` (it may have
    /// waited in a reconnecting client's queue).
    pub sent: Duration,
    /// When the test saw that probe at every client, after `since` (at most one
    /// [`PROBE_EVERY`] after it arrived): the time delivery resumed, as the bound counts it.
    pub seen: Duration,
    /// Probes sent, the successful one included.
    pub probes: u32,
}

/// Which broadcast [`wait_delivery`] sends, and who must get it.
#[derive(Debug, Clone, Copy)]
pub struct Probe<'a> {
    /// The node the broadcast goes through.
    pub via: usize,
    /// The clients that must get it.
    pub to: &'a [&'a Client],
    /// Rooms of `/` it goes to (every client when empty).
    pub rooms: &'a [&'a str],
    /// Its event name (unique per call, so earlier probes do not count).
    pub event: &'a str,
}

/// Broadcasts `probe` every [`PROBE_EVERY`] until one reaches every client it is for; returns
/// when the first such probe was sent, counted from `since`. Fails after `limit` from `since`.
///
/// # Errors
/// If no probe reaches every client in time, or the agent fails.
pub async fn wait_delivery(
    cluster: &Cluster,
    agent: &Agent,
    probe: Probe<'_>,
    since: Instant,
    limit: Duration,
) -> Result<Resumed> {
    let Probe {
        via,
        to,
        rooms,
        event,
    } = probe;
    let mut sent: Vec<(u32, Duration)> = Vec::new();
    let mut probes = 0u32;
    loop {
        probes += 1;
        let mut emit = Emit::new(event, vec![json!(probes)]);
        if !rooms.is_empty() {
            emit = emit.to(rooms.iter().copied());
        }
        let at = since.elapsed();
        // A node whose Redis is failing over may refuse or time out: not a test failure.
        if cluster.api(via).emit(&emit).await.is_ok() {
            sent.push((probes, at));
        }
        tokio::time::sleep(PROBE_EVERY).await;
        // The earliest probe every client got, among all sent so far (a late arrival counts
        // for the probe that was sent early).
        let mut common: Option<BTreeSet<u64>> = None;
        for c in to {
            let got: BTreeSet<u64> = agent
                .events(&c.name, event)
                .await?
                .iter()
                .filter_map(|args| args.first().and_then(serde_json::Value::as_u64))
                .collect();
            common = Some(match common {
                None => got,
                Some(before) => before.intersection(&got).copied().collect(),
            });
        }
        let got_all = common.and_then(|c| c.first().copied());
        if let Some(n) = got_all {
            let seen = since.elapsed();
            let sent = sent
                .iter()
                .find(|(m, _)| u64::from(*m) == n)
                .map_or(seen, |(_, at)| *at);
            return Ok(Resumed { sent, seen, probes });
        }
        ensure!(
            since.elapsed() < limit,
            "no {event} probe through node {via} reached all of {:?} within {limit:?} ({probes} sent)",
            to.iter().map(|c| c.name.as_str()).collect::<Vec<_>>()
        );
    }
}

/// Polls `/readyz` of some nodes in the background and records every change of status.
#[derive(Debug)]
pub struct ReadyzWatch {
    task: tokio::task::JoinHandle<Vec<(usize, u16, Duration)>>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl ReadyzWatch {
    /// Starts polling `apis` (node `i` is `apis[i]`) every 50 ms; times count from `since`.
    pub fn start(apis: Vec<crate::http::Api>, since: Instant) -> Self {
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let mut last: Vec<Option<u16>> = vec![None; apis.len()];
            let mut changes = Vec::new();
            while !*stopped.borrow() {
                for (i, api) in apis.iter().enumerate() {
                    // An unanswered poll (the node is busy) is no status.
                    let Ok(Ok(s)) =
                        tokio::time::timeout(Duration::from_secs(1), api.readyz()).await
                    else {
                        continue;
                    };
                    if last[i] != Some(s) {
                        last[i] = Some(s);
                        changes.push((i, s, since.elapsed()));
                    }
                }
                let _ = tokio::time::timeout(Duration::from_millis(50), stopped.changed()).await;
            }
            changes
        });
        Self { task, stop }
    }

    /// Stops polling; returns every change as (node, status, time since `since`).
    ///
    /// # Errors
    /// If the polling task panicked.
    pub async fn stop(self) -> Result<Vec<(usize, u16, Duration)>> {
        let _ = self.stop.send(true);
        Ok(self.task.await?)
    }
}
