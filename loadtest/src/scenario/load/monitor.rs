//! The run's control loop while the clients send: every 100 ms it samples the generator's CPU,
//! every second it adds a timeline point (with the watched processes), it judges each step
//! once its grace period is over (a failed ramp step stops every sender), and it ends the run
//! when the schedule is done and everything sent has arrived, or the drain ran out.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Plan;
use super::ctx::Ctx;
use super::schedule::{judge_due, step_line};
use crate::progress::Progress;
use crate::report::{Report, StepReport, TimePoint};
use crate::stats::{Percentiles, ProcWatch, SelfCpu};

/// What the loop leaves for the accounting.
pub(super) struct Finished {
    pub steps: Vec<StepReport>,
    pub stop_reason: String,
    /// When sending stopped (the schedule's end, or the failed step's judgement).
    pub send_end_us: u64,
    /// When the drain ended.
    pub finished_us: u64,
    pub cpu: SelfCpu,
}

struct Monitor<'a> {
    plan: &'a Plan,
    ctx: &'a Ctx,
    progress: &'a Progress,
    grace_us: u64,
    drain_us: u64,
    bound_ms: f64,
    next_point_us: u64,
    steps: Vec<StepReport>,
    stop_reason: String,
    send_end_us: Option<u64>,
    last: TimePoint,
    cpu: SelfCpu,
}

/// Watches the run to its end; fills the report's timeline.
pub(super) async fn monitor(
    plan: &Plan,
    ctx: &Ctx,
    watch: &mut ProcWatch,
    progress: &Progress,
    report: &mut Report,
) -> Finished {
    let mut m = Monitor {
        plan,
        ctx,
        progress,
        grace_us: plan.rate.ramp_grace_ms * 1000,
        drain_us: plan.rate.drain_ms * 1000,
        bound_ms: plan.rate.ramp_p99_ms,
        next_point_us: ctx.t0_us + 1_000_000,
        steps: Vec::new(),
        stop_reason: String::new(),
        send_end_us: None,
        last: TimePoint::default(),
        cpu: SelfCpu::new(tokio::runtime::Handle::current().metrics().num_workers()),
    };
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut watching = false;
    loop {
        tick.tick().await;
        let now = ctx.now_us();
        if now < ctx.t0_us {
            continue;
        }
        if !watching {
            watch.begin(0.0);
            watching = true;
        }
        m.cpu.sample(now);
        if now >= m.next_point_us {
            report.timeline.push(m.point(now, watch));
            m.next_point_us += 1_000_000;
        }
        m.judge(Some(now));
        if m.send_end_us.is_none() && (!ctx.publishing.load(Ordering::Relaxed) || now >= ctx.end_us)
        {
            m.sending_ended(now);
            watch.end(ctx.secs(now));
        }
        if m.drained(now) {
            break;
        }
        m.status(now);
    }
    m.finish()
}

impl Monitor<'_> {
    /// The timeline point of the second that ended at `now`.
    fn point(&mut self, now: u64, watch: &mut ProcWatch) -> TimePoint {
        let ctx = self.ctx;
        let (h, received, sent) = ctx.recorder.take_interval();
        let p = Percentiles::of(&h);
        let sampled = watch.sample(ctx.secs(now));
        let rate = if self.send_end_us.is_none() {
            ctx.rate(ctx.step_of(now))
        } else {
            0.0
        };
        self.last = TimePoint::of_second(ctx.secs(now), rate, (sent, received), &p, &sampled);
        self.last.clone()
    }

    /// Judges every step that is due at `now` (all that remain when `None`); a failed ramp
    /// step stops the senders.
    fn judge(&mut self, now: Option<u64>) {
        let ctx = self.ctx;
        let send_end = if now.is_some() {
            self.send_end_us
        } else {
            Some(self.send_end_us.unwrap_or_else(|| ctx.now_us()))
        };
        while self.steps.len() < ctx.schedule.len() {
            let i = self.steps.len();
            let Some(s) = judge_due(
                ctx,
                &self.cpu,
                i,
                send_end,
                now,
                self.grace_us,
                self.bound_ms,
            ) else {
                break;
            };
            self.progress.line(&step_line(&s));
            if self.plan.rate.ramp && !s.passed && !s.warmup && self.stop_reason.is_empty() {
                self.stop_reason = format!("step {} failed: {}", s.index, s.note);
                ctx.publishing.store(false, Ordering::Relaxed);
            }
            self.steps.push(s);
        }
    }

    fn sending_ended(&mut self, now: u64) {
        self.send_end_us = Some(now.min(self.ctx.end_us));
        if self.stop_reason.is_empty() {
            self.stop_reason = if self.plan.rate.ramp {
                "the ramp ran out of steps (--duration-s / --ramp-max-rate-per-s)".to_owned()
            } else {
                "schedule done".to_owned()
            };
        }
    }

    /// Whether the run is over: the drain ran out, or everything is settled.
    fn drained(&self, now: u64) -> bool {
        let Some(end) = self.send_end_us else {
            return false;
        };
        let ctx = self.ctx;
        let (received, expected) = ctx.recorder.counts();
        // Settled: every sender is done (a late one may still owe sends scheduled before the
        // end), everything sent was delivered and acked.
        let settled = ctx.senders_done.load(Ordering::Relaxed) >= ctx.publishers
            && received >= expected
            && ctx.pending_acks.load(Ordering::Relaxed) <= 0;
        now >= end + self.drain_us || (settled && now >= end + 100_000)
    }

    fn status(&self, now: u64) {
        let ctx = self.ctx;
        let held_rate = self
            .steps
            .iter()
            .filter(|s| !s.warmup)
            .take_while(|s| s.passed)
            .last()
            .map_or(0.0, |s| s.rate_per_s);
        self.progress.status(format!(
            "{:>5.1}s  offered {:>7.0}/s  received {:>8.0}/s  p99 {:>7.2} ms  held {:.0}/s",
            ctx.secs(now),
            if self.send_end_us.is_none() {
                ctx.rate(ctx.step_of(now))
            } else {
                0.0
            },
            self.last.received_per_s,
            self.last.p99_ms,
            held_rate
        ));
    }

    /// Steps the loop did not get to judge (the drain ended early) are judged on final counts.
    fn finish(mut self) -> Finished {
        let finished_us = self.ctx.now_us();
        self.cpu.sample(finished_us);
        let send_end_us = self.send_end_us.unwrap_or(finished_us);
        self.send_end_us = Some(send_end_us);
        // Sending is over: a step failing now stops nothing, but is the reason if none was.
        self.judge(None);
        Finished {
            steps: self.steps,
            stop_reason: self.stop_reason,
            send_end_us,
            finished_us,
            cpu: self.cpu,
        }
    }
}
