//! The rate steps of a run, and how a step is judged: passed when every delivery its sends
//! should cause arrived within the grace period and its p99 is within the bound; cut out as
//! the generator's own figure when the generator, not the server, was the limit.

use anyhow::{Result, ensure};

use super::ctx::Ctx;
use crate::config::RateArgs;
use crate::report::StepReport;
use crate::stats::{GENERATOR_BOUND_UTIL, Percentiles, SelfCpu};

/// The rate steps of a run, as offsets from the first send.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    /// Start of each step.
    pub starts_us: Vec<u64>,
    /// Offered total send rate of each step.
    pub rates: Vec<f64>,
    /// End of the last step: sending stops there.
    pub end_us: u64,
    /// Step 0 is a warm-up: judged and reported, but it never stops the ramp nor counts as held.
    pub warmup: bool,
}

impl Schedule {
    /// The schedule `r` asks for.
    ///
    /// # Errors
    /// Non-positive rates or durations, a ramp factor not above 1.
    pub fn of(r: &RateArgs) -> Result<Self> {
        ensure!(r.rate_per_s > 0.0, "--rate-per-s must be positive");
        ensure!(r.warmup_s >= 0.0, "--warmup-s must not be negative");
        let duration = r.duration_s.unwrap_or(if r.ramp { 600.0 } else { 10.0 });
        ensure!(duration > 0.0, "--duration-s must be positive");
        let us = |s: f64| (s * 1e6) as u64;
        let warmup = r.warmup_s > 0.0;
        let mut starts_us = Vec::new();
        let mut rates = Vec::new();
        if warmup {
            starts_us.push(0);
            rates.push(r.rate_per_s);
        }
        let first = us(r.warmup_s);
        if !r.ramp {
            starts_us.push(first);
            rates.push(r.rate_per_s);
            return Ok(Self {
                starts_us,
                rates,
                end_us: first + us(duration),
                warmup,
            });
        }
        ensure!(r.ramp_factor > 1.0, "--ramp-factor must be above 1");
        ensure!(r.ramp_step_s > 0.0, "--ramp-step-s must be positive");
        let step = us(r.ramp_step_s);
        let mut rate = r.rate_per_s;
        let mut k = 0u64;
        // Whole steps only, within the duration and the rate cap.
        while (k + 1) * step <= us(duration) + 1 && (k == 0 || rate <= r.ramp_max_rate_per_s) {
            starts_us.push(first + k * step);
            rates.push(rate);
            rate *= r.ramp_factor;
            k += 1;
        }
        if k == 0 {
            starts_us.push(first);
            rates.push(r.rate_per_s);
            k = 1;
        }
        Ok(Self {
            starts_us,
            rates,
            end_us: first + k * step,
            warmup,
        })
    }

    /// The step `rel_us` after the first send falls in.
    pub fn step_of(&self, rel_us: u64) -> usize {
        self.starts_us
            .partition_point(|&s| s <= rel_us)
            .saturating_sub(1)
    }

    /// Start and end of step `i`.
    pub fn bounds(&self, i: usize) -> (u64, u64) {
        let end = self.starts_us.get(i + 1).copied().unwrap_or(self.end_us);
        (self.starts_us[i], end)
    }

    /// Number of steps.
    pub fn len(&self) -> usize {
        self.rates.len()
    }

    /// Whether there is no step (never: a schedule has at least one).
    pub fn is_empty(&self) -> bool {
        self.rates.is_empty()
    }

    /// Whether step `i` is the warm-up.
    pub fn is_warmup(&self, i: usize) -> bool {
        self.warmup && i == 0
    }
}

fn judge(
    ctx: &Ctx,
    cpu: &SelfCpu,
    idx: usize,
    (start_us, end_us): (u64, u64),
    bound_ms: f64,
    truncated: bool,
) -> StepReport {
    let len_s = (end_us - start_us) as f64 / 1e6;
    let warmup = ctx.schedule.is_warmup(idx);
    let snap = ctx.recorder.step(idx);
    let latency = Percentiles::of(&snap.latency);
    let missing = snap.expected.saturating_sub(snap.received);
    let mut notes = Vec::new();
    // Sends still owed by a generator that fell behind could not be judged: the step cannot
    // be certified (one send per sender of slack for the schedule's phase).
    let planned = ctx.rate(idx) * len_s;
    let mut generator_bound = false;
    if snap.sent == 0 {
        notes.push("nothing sent".to_owned());
    } else if !truncated && (snap.sent as f64) < planned * 0.98 - ctx.publishers as f64 {
        generator_bound = true;
        notes.push(format!(
            "generator behind: {} of {planned:.0} sends made",
            snap.sent
        ));
    }
    let util = cpu.util(start_us, end_us).unwrap_or(0.0);
    if util > GENERATOR_BOUND_UTIL {
        generator_bound = true;
        notes.push(format!(
            "generator-bound: it used {:.0} % of its {} threads",
            util * 100.0,
            cpu.threads
        ));
    }
    if missing > 0 {
        notes.push(format!("{missing} deliveries missing when judged"));
    }
    if latency.p99_ms > bound_ms {
        notes.push(format!("p99 {:.1} ms > {bound_ms} ms", latency.p99_ms));
    }
    if truncated {
        notes.push("cut short".to_owned());
    }
    StepReport {
        index: idx,
        rate_per_s: ctx.rate(idx),
        sent: snap.sent,
        expected: snap.expected,
        received: snap.received,
        deliveries_per_s: snap.received as f64 / len_s.max(1e-9),
        latency_ms: latency,
        // A generator-bound step is not failed by the server, but it cannot be certified
        // either: it is reported apart and stops the ramp.
        passed: notes.is_empty(),
        generator_cpu_util: util,
        generator_bound,
        warmup,
        note: if warmup {
            format!(
                "warm-up{}",
                if notes.is_empty() {
                    String::new()
                } else {
                    format!(": {}", notes.join("; "))
                }
            )
        } else {
            notes.join("; ")
        },
    }
}

/// Judges step `i` once it is due: `grace_us` after its end at `now`, or at once when `now` is
/// `None` (the final pass). `None` when it is not due yet or never started.
pub(super) fn judge_due(
    ctx: &Ctx,
    cpu: &SelfCpu,
    i: usize,
    send_end: Option<u64>,
    now: Option<u64>,
    grace_us: u64,
    bound_ms: f64,
) -> Option<StepReport> {
    let (s, e) = ctx.schedule.bounds(i);
    let (start, full_end) = (ctx.t0_us + s, ctx.t0_us + e);
    if send_end.is_some_and(|x| x <= start) {
        return None;
    }
    let end = full_end.min(send_end.unwrap_or(u64::MAX));
    if now.is_some_and(|now| now < end + grace_us) {
        return None;
    }
    Some(judge(ctx, cpu, i, (start, end), bound_ms, end < full_end))
}

pub(super) fn step_line(s: &StepReport) -> String {
    format!(
        "step {:>2}: {:>8.0} sends/s -> {:>9.0} deliveries/s, p50 {:.2} p99 {:.2} p999 {:.2} ms: {}{}",
        s.index,
        s.rate_per_s,
        s.deliveries_per_s,
        s.latency_ms.p50_ms,
        s.latency_ms.p99_ms,
        s.latency_ms.p999_ms,
        if s.warmup {
            "-"
        } else if s.passed {
            "ok"
        } else {
            "FAILED"
        },
        if s.note.is_empty() {
            String::new()
        } else {
            format!(" ({})", s.note)
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ramp_schedules() {
        let mut r = RateArgs {
            rate_per_s: 100.0,
            duration_s: Some(20.0),
            drain_ms: 0,
            warmup_s: 0.0,
            payload_bytes: 100,
            ramp: true,
            ramp_factor: 1.5,
            ramp_step_s: 5.0,
            ramp_p99_ms: 50.0,
            ramp_grace_ms: 1000,
            ramp_max_rate_per_s: 1e9,
        };
        let s = Schedule::of(&r).unwrap();
        assert_eq!(s.rates, vec![100.0, 150.0, 225.0, 337.5]);
        assert_eq!(s.starts_us, vec![0, 5_000_000, 10_000_000, 15_000_000]);
        assert_eq!(s.end_us, 20_000_000);
        assert_eq!(
            (s.step_of(0), s.step_of(4_999_999), s.step_of(5_000_000)),
            (0, 0, 1)
        );
        assert_eq!(s.step_of(99_000_000), 3);
        assert_eq!(s.bounds(3), (15_000_000, 20_000_000));
        r.ramp_max_rate_per_s = 200.0;
        assert_eq!(Schedule::of(&r).unwrap().rates, vec![100.0, 150.0]);
        r.warmup_s = 2.0;
        let s = Schedule::of(&r).unwrap();
        assert_eq!(s.rates, vec![100.0, 100.0, 150.0]);
        assert_eq!(s.starts_us, vec![0, 2_000_000, 7_000_000]);
        assert!(s.is_warmup(0) && !s.is_warmup(1));
        r.ramp = false;
        let s = Schedule::of(&r).unwrap();
        assert_eq!(s.rates, vec![100.0, 100.0]);
        assert_eq!(
            (s.starts_us.clone(), s.end_us),
            (vec![0, 2_000_000], 22_000_000)
        );
    }
}
