//! The report's `cluster` section: the servers' counters read just before the sending window
//! and again after the drain ([`Probes`]), set against what the generator knows of its own
//! placement (the ideal adapter traffic) and the watched processes' CPU.

use anyhow::{Context as _, Result};

use super::account::Senders;
use super::placement::Spread;
use super::setup::Spec;
use crate::probe::{self, NodeCounters, PROBE_TIMEOUT};
use crate::report::{ClusterReport, Report};

/// The servers' own counters to read around the sending window.
#[derive(Debug, Clone, Default)]
pub struct Probes {
    /// ioscale nodes' Prometheus `/metrics` URLs.
    pub node_metrics_urls: Vec<String>,
    /// Redis servers (every master of a Redis Cluster).
    pub redis_urls: Vec<String>,
}

/// One reading of every probe, in the order of the URLs.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    nodes: Vec<NodeCounters>,
    redis_output_bytes: Vec<u64>,
}

impl Probes {
    /// Reads every probe.
    ///
    /// # Errors
    /// The first probe that cannot be read.
    pub async fn read(&self) -> Result<Snapshot> {
        let http = reqwest::Client::builder()
            .timeout(PROBE_TIMEOUT)
            .build()
            .context("building the metrics client")?;
        let nodes = futures_util::future::try_join_all(
            self.node_metrics_urls
                .iter()
                .map(|u| probe::scrape_node(&http, u)),
        )
        .await
        .context("--node-metrics-urls")?;
        let redis_output_bytes = futures_util::future::try_join_all(
            self.redis_urls.iter().map(|u| probe::redis_output_bytes(u)),
        )
        .await
        .context("--redis-urls")?;
        Ok(Snapshot {
            nodes,
            redis_output_bytes,
        })
    }
}

/// `a / b`, `None` when `b` is 0.
fn per(a: f64, b: u64) -> Option<f64> {
    (b > 0).then(|| a / b as f64)
}

/// Summed increase of `f` over the nodes; `None` when a node lacks it.
fn node_delta(
    before: &Snapshot,
    after: &Snapshot,
    f: impl Fn(&NodeCounters) -> Option<f64>,
) -> Option<u64> {
    if before.nodes.is_empty() || before.nodes.len() != after.nodes.len() {
        return None;
    }
    let mut sum = 0.0;
    for (b, a) in before.nodes.iter().zip(&after.nodes) {
        // A node that restarted in between starts again from 0: its whole count is the delta.
        let (b, a) = (f(b)?, f(a)?);
        sum += if a >= b { a - b } else { a };
    }
    Some(sum.round() as u64)
}

/// The ideal adapter messages of the publishes the server accepted: for each, the nodes other
/// than the publisher's holding a member of the room targeted.
pub(super) fn ideal_messages(specs: &[Spec], senders: &Senders, rooms: usize) -> u64 {
    let spread = Spread::of(
        rooms,
        specs.iter().filter_map(|s| s.room.map(|r| (r, s.target))),
    );
    let mut total = 0;
    for s in specs {
        let Some(result) = s.publisher.and_then(|j| senders.get(&j)) else {
            continue;
        };
        total += spread.ideal_of_sends(s.target, &result.sent_per_room);
        let refused: u64 = result
            .rejected
            .iter()
            .map(|&(room, _)| spread.ideal(room, s.target))
            .sum();
        total -= refused.min(total);
    }
    total
}

/// The `cluster` section of a run whose deliveries, publishes and processes are filled in.
pub(super) fn report(
    r: &Report,
    specs: &[Spec],
    senders: &Senders,
    rooms: usize,
    before: &Snapshot,
    after: Option<&Snapshot>,
) -> ClusterReport {
    let deliveries = r.deliveries.as_ref().map_or(0, |d| d.received);
    let publishes = r
        .publishes
        .as_ref()
        .map_or(0, |p| p.sent.saturating_sub(p.rejected));
    let ideal = ideal_messages(specs, senders, rooms);
    let watched = !r.processes.is_empty();
    let cpu_s = watched.then(|| r.processes.iter().map(|p| p.cpu_seconds).sum::<f64>());
    let redis: Vec<f64> = r
        .processes
        .iter()
        .filter(|p| p.name.starts_with("redis"))
        .map(|p| p.cpu_seconds)
        .collect();
    let redis_cpu_s = (!redis.is_empty()).then(|| redis.iter().sum::<f64>());
    let million = |cpu: Option<f64>| cpu.and_then(|c| per(c * 1e6, deliveries));
    let empty = Snapshot::default();
    let after = after.unwrap_or(&empty);
    let messages = node_delta(before, after, |n| Some(n.broadcasts_in));
    let redis_bytes = (!before.redis_output_bytes.is_empty()
        && before.redis_output_bytes.len() == after.redis_output_bytes.len())
    .then(|| {
        before
            .redis_output_bytes
            .iter()
            .zip(&after.redis_output_bytes)
            .map(|(b, a)| a.saturating_sub(*b))
            .sum::<u64>()
    });
    ClusterReport {
        publishes,
        deliveries,
        cpu_s,
        redis_cpu_s,
        cpu_s_per_million_deliveries: million(cpu_s),
        redis_cpu_s_per_million_deliveries: million(redis_cpu_s),
        nodes_scraped: after.nodes.len(),
        adapter_messages_in: messages,
        adapter_messages_in_per_publish: messages.and_then(|m| per(m as f64, publishes)),
        ideal_adapter_messages_in: ideal,
        ideal_adapter_messages_in_per_publish: per(ideal as f64, publishes),
        adapter_messages_in_vs_ideal: messages.and_then(|m| per(m as f64, ideal)),
        broadcasts_untargeted: node_delta(before, after, |n| n.untargeted),
        room_channels: (!after.nodes.is_empty())
            .then(|| {
                after
                    .nodes
                    .iter()
                    .map(|n| n.room_channels)
                    .sum::<Option<f64>>()
            })
            .flatten()
            .map(|v| v.round() as u64),
        redis_scraped: after.redis_output_bytes.len(),
        redis_net_output_bytes: redis_bytes,
        redis_net_output_bytes_per_delivery: redis_bytes.and_then(|b| per(b as f64, deliveries)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Transport;
    use crate::report::{DeliveryReport, PublishReport};
    use crate::scenario::load::sender::SenderResult;
    use crate::stats::ProcReport;

    fn member(idx: usize, room: usize, target: usize) -> Spec {
        Spec {
            idx,
            target,
            transport: Transport::Websocket,
            room: Some(room),
            publisher: None,
        }
    }

    /// Room 0 on nodes 0 and 1, room 1 on node 2 only; sender 0 on node 0, sender 1 on node 2.
    fn run() -> (Vec<Spec>, Senders) {
        let mut specs = vec![member(0, 0, 0), member(1, 0, 1), member(2, 1, 2)];
        for (j, target) in [(0, 0), (1, 2)] {
            specs.push(Spec {
                idx: 3 + j,
                target,
                transport: Transport::Websocket,
                room: None,
                publisher: Some(j),
            });
        }
        let result = |j, sent: Vec<u64>, rejected| SenderResult {
            j,
            sent_per_room: sent,
            rejected,
            acked_ok: 0,
            unacked: 0,
            orphaned: Vec::new(),
        };
        let senders = Senders::from([
            // 4 to room 0 (1 other node each), 2 to room 1 (1), one of them refused.
            (0, result(0, vec![4, 2], vec![(1, 0)])),
            // 3 to room 0 (2 other nodes each), 5 to room 1 (none: its only member is local).
            (1, result(1, vec![3, 5], vec![])),
        ]);
        (specs, senders)
    }

    #[test]
    fn ideal_is_the_other_nodes_with_members_over_accepted_publishes() {
        let (specs, senders) = run();
        assert_eq!(ideal_messages(&specs, &senders, 2), 4 + 2 - 1 + 3 * 2);
    }

    fn counters(b: f64, u: Option<f64>, c: Option<f64>) -> NodeCounters {
        NodeCounters {
            broadcasts_in: b,
            untargeted: u,
            room_channels: c,
        }
    }

    #[test]
    fn figures_come_from_deltas_and_are_null_without_a_source() {
        let (specs, senders) = run();
        let mut r = Report {
            publishes: Some(PublishReport {
                sent: 14,
                rejected: 1,
                ..PublishReport::default()
            }),
            deliveries: Some(DeliveryReport {
                received: 2_000_000,
                ..DeliveryReport::default()
            }),
            ..Report::default()
        };
        // Nothing watched, nothing scraped: only the ideal, which is the generator's own.
        let c = report(&r, &specs, &senders, 2, &Snapshot::default(), None);
        assert_eq!((c.publishes, c.ideal_adapter_messages_in), (13, 11));
        assert_eq!(c.ideal_adapter_messages_in_per_publish, Some(11.0 / 13.0));
        assert_eq!(c.cpu_s_per_million_deliveries, None);
        assert_eq!(
            (c.adapter_messages_in, c.adapter_messages_in_vs_ideal),
            (None, None)
        );
        assert_eq!((c.room_channels, c.redis_net_output_bytes), (None, None));

        r.processes = ["node1", "node2", "redis"]
            .iter()
            .map(|n| ProcReport {
                name: (*n).to_owned(),
                cpu_seconds: 1.0,
                ..ProcReport::default()
            })
            .collect();
        let before = Snapshot {
            nodes: vec![
                counters(10.0, None, Some(0.0)),
                counters(5.0, None, Some(0.0)),
            ],
            redis_output_bytes: vec![1000],
        };
        let after = Snapshot {
            nodes: vec![
                counters(20.0, None, Some(3.0)),
                counters(17.0, None, Some(4.0)),
            ],
            redis_output_bytes: vec![5000],
        };
        let c = report(&r, &specs, &senders, 2, &before, Some(&after));
        assert_eq!(c.cpu_s_per_million_deliveries, Some(1.5));
        assert_eq!(c.redis_cpu_s_per_million_deliveries, Some(0.5));
        assert_eq!(c.adapter_messages_in, Some(22));
        assert_eq!(c.adapter_messages_in_per_publish, Some(22.0 / 13.0));
        assert_eq!(c.adapter_messages_in_vs_ideal, Some(2.0));
        assert_eq!(c.broadcasts_untargeted, None, "an older build: null");
        assert_eq!(c.room_channels, Some(7));
        assert_eq!(c.redis_net_output_bytes, Some(4000));
        assert_eq!(c.redis_net_output_bytes_per_delivery, Some(0.002));
        // The reading after the run failed: the measured figures are null, not zero.
        let c = report(&r, &specs, &senders, 2, &before, None);
        assert_eq!(
            (c.adapter_messages_in, c.redis_net_output_bytes),
            (None, None)
        );
    }
}
