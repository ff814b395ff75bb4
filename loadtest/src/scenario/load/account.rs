//! Exact accounting once the run is over: per (subscriber, publisher) sequence tracking gives
//! lost, duplicated and reordered deliveries without storing every message; the report's
//! publish, delivery, held and generator sections are filled from it.

use std::collections::{HashMap, HashSet};

use super::ctx::Ctx;
use super::fault::{self, Tally};
use super::monitor::Finished;
use super::sender::SenderResult;
use super::task::Outcome;
use super::{Flavor, Plan};
use crate::report::{
    DeliveryReport, FaultEvent, GeneratorReport, HeldReport, PublishReport, Report, StepReport,
};
use crate::stats::{Percentiles, SelfCpu};

/// What the senders did, by sender number.
pub(super) type Senders = HashMap<usize, SenderResult>;

/// Lost, duplicated, reordered and misrouted deliveries.
#[derive(Debug, Default)]
struct Losses {
    lost: u64,
    duplicated: u64,
    reordered: u64,
    misrouted: u64,
    /// Per client, in the order of the outcomes: its tally when it is a subscriber.
    per_client: Vec<Option<Tally>>,
}

/// Fills the report's publish, delivery, held, generator and step sections; returns what each
/// sender did.
pub(super) fn tally(
    report: &mut Report,
    plan: &Plan,
    ctx: &Ctx,
    outcomes: &mut [Outcome],
    fin: Finished,
    events: Vec<FaultEvent>,
) -> Senders {
    let senders: Senders = outcomes
        .iter_mut()
        .filter_map(|o| o.sender.take())
        .map(|s| (s.j, s))
        .collect();
    let mut losses = count_losses(outcomes, &senders, report);
    if let Some(f) = ctx.faults.as_ref() {
        let clients: Vec<_> = losses
            .per_client
            .iter()
            .zip(outcomes.iter())
            .filter_map(|(t, o)| o.seen.as_ref().map(|s| (*t, s)))
            .collect();
        let recovery = serde_json::to_value(plan.common.recovery)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        report.faults = Some(fault::report(f, events, &clients, &recovery));
    }
    let (ack, lag, _) = ctx.recorder.acks_lag_dups();
    let unacked: u64 = senders.values().map(|s| s.unacked).sum();
    report.publishes = Some(PublishReport {
        sent: senders
            .values()
            .map(|s| s.sent_per_room.iter().sum::<u64>())
            .sum(),
        acked_ok: senders.values().map(|s| s.acked_ok).sum(),
        rejected: senders.values().map(|s| s.rejected.len() as u64).sum(),
        unacked,
        orphaned: senders.values().map(|s| s.orphaned.len() as u64).sum(),
        ack_ms: Percentiles::of(&ack),
        send_lag_ms: Percentiles::of(&lag),
    });
    if matches!(plan.flavor, Flavor::Rpc { .. }) {
        losses.lost = unacked;
    }
    let total = ctx.recorder.total();
    let window_s = fin.send_end_us.saturating_sub(ctx.t0_us) as f64 / 1e6;
    report.deliveries = Some(DeliveryReport {
        expected: total.expected,
        received: total.received,
        lost: losses.lost,
        duplicated: losses.duplicated,
        reordered: losses.reordered,
        misrouted: losses.misrouted,
        per_s: total.received as f64 / window_s.max(1e-9),
        latency_ms: Percentiles::of(&total.latency),
    });
    report.held = fin
        .steps
        .iter()
        .filter(|s| !s.warmup)
        .take_while(|s| s.passed)
        .last()
        .map(|s| HeldReport {
            step: s.index,
            rate_per_s: s.rate_per_s,
            deliveries_per_s: s.deliveries_per_s,
            latency_ms: s.latency_ms,
        });
    report.generator = Some(generator_report(
        &fin.cpu,
        &fin.steps,
        (ctx.t0_us, fin.send_end_us),
        total.received,
    ));
    report.steps = fin.steps;
    report.stop_reason = fin.stop_reason;
    report.duration_s = ctx.secs(fin.finished_us);
    senders
}

/// Exact losses over every subscriber; counts the clients that dropped out on the way. Sends
/// the server refused are not expected, nor those whose connection was lost before their ack
/// (the server may never have had them); a send it never answered on a live connection is.
fn count_losses(outcomes: &[Outcome], senders: &Senders, report: &mut Report) -> Losses {
    let mut rejected: HashMap<(usize, usize), HashSet<u64>> = HashMap::new();
    for s in senders.values() {
        for &(room, seq) in s.rejected.iter().chain(&s.orphaned) {
            rejected.entry((s.j, room)).or_default().insert(seq);
        }
    }
    let mut l = Losses::default();
    for o in outcomes {
        l.misrouted += o.misrouted;
        if let Some(e) = &o.dropped {
            report.clients.dropped += 1;
            report
                .clients
                .first_error
                .get_or_insert_with(|| format!("during the run: {e}"));
        }
        let Some(room) = o.spec.room else {
            l.per_client.push(None);
            continue;
        };
        let mut tally = (0, 0, 0);
        for (j, track) in o.tracks.iter().enumerate() {
            let sent = senders
                .get(&j)
                .and_then(|s| s.sent_per_room.get(room).copied())
                .unwrap_or(0);
            let rej = rejected.get(&(j, room));
            tally.0 += track.lost(sent, |x| rej.is_some_and(|r| r.contains(&x)));
            tally.1 += track.duplicates;
            tally.2 += track.reordered;
        }
        l.lost += tally.0;
        l.duplicated += tally.1;
        l.reordered += tally.2;
        l.per_client.push(Some(tally));
    }
    l
}

/// The generator's cost over the sending window, and whether the run's figure is its own.
fn generator_report(
    cpu: &SelfCpu,
    steps: &[StepReport],
    (from_us, to_us): (u64, u64),
    received: u64,
) -> GeneratorReport {
    let (cpu_s, wall_s) = cpu.between(from_us, to_us).unwrap_or((0.0, 0.0));
    let judged: Vec<&StepReport> = steps.iter().filter(|s| !s.warmup).collect();
    // A ramp is summed up by its first failing step (what stopped it); a run that never
    // failed by every step.
    let bound = match judged.iter().find(|s| !s.passed) {
        Some(s) => s.generator_bound,
        None => judged.iter().any(|s| s.generator_bound),
    };
    GeneratorReport {
        threads: cpu.threads,
        cpu_s,
        wall_s,
        cpu_util: if wall_s > 0.0 {
            cpu_s / (wall_s * cpu.threads as f64)
        } else {
            0.0
        },
        cpu_us_per_delivery: if received > 0 {
            cpu_s * 1e6 / received as f64
        } else {
            0.0
        },
        bound,
    }
}
