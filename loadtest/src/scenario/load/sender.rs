//! A sender: its open-loop schedule, which room each send goes to, its per-room sequence
//! numbers and the acks it still waits for.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use super::ctx::Ctx;
use super::placement::Rng;
use super::{Flavor, Layout};
use crate::stats::{self, Shard};

/// Most sends written at once. A burst scheduled at one instant (`--rate-per-s` far above what
/// the duration needs, e.g. 20,000 sends in 1 ms) goes out in one write up to this many, as a
/// client that emits in a loop would write it.
const MAX_BATCH: usize = 32_768;

struct Pending {
    room: usize,
    seq: u64,
    step: usize,
    sched_us: u64,
}

/// Which room a sender's next send goes to.
enum Rooms {
    /// Sender `j`'s `k`-th send: room `(j + k) mod rooms` (fanout), or its own room (rpc).
    Striped,
    /// A uniformly random room, from the sender's own seeded stream (rooms).
    Random(Rng),
}

/// A sender's state.
pub(super) struct Sender {
    pub j: usize,
    k: u64,
    pub next_due_us: u64,
    /// The fraction of a microsecond the schedule is ahead of `next_due_us`: intervals under
    /// 1 µs (a burst: thousands of sends scheduled within microseconds) add up exactly.
    carry_us: f64,
    rooms: Rooms,
    seqs: Vec<u64>,
    next_ack: u64,
    pending: HashMap<u64, Pending>,
    /// (room, seq) the server refused.
    rejected: Vec<(usize, u64)>,
    /// (room, seq) sent on a connection that was lost before their ack: the server may never
    /// have had them.
    orphaned: Vec<(usize, u64)>,
    acked_ok: u64,
    pub sending: bool,
}

/// What a sender did, for the accounting.
pub(super) struct SenderResult {
    pub j: usize,
    /// Sends made to each room.
    pub sent_per_room: Vec<u64>,
    pub rejected: Vec<(usize, u64)>,
    pub acked_ok: u64,
    /// Sends never answered on a connection that stayed up.
    pub unacked: u64,
    /// (room, seq) of the sends whose connection was lost before their ack.
    pub orphaned: Vec<(usize, u64)>,
}

impl Sender {
    pub fn new(ctx: &Ctx, j: usize) -> Self {
        // Interleave the senders evenly over the first interval.
        let offset = (j as f64 * 1e6 / ctx.rate(0)) as u64;
        let rooms = match ctx.layout {
            Layout::Scattered { seed } => Rooms::Random(Rng::stream(seed, 1 + j as u64)),
            Layout::Striped => Rooms::Striped,
        };
        Self {
            j,
            k: 0,
            next_due_us: ctx.t0_us + offset,
            carry_us: 0.0,
            rooms,
            seqs: vec![0; ctx.rooms],
            next_ack: 1,
            pending: HashMap::new(),
            rejected: Vec::new(),
            orphaned: Vec::new(),
            acked_ok: 0,
            sending: true,
        }
    }

    fn next_room(&mut self, ctx: &Ctx) -> usize {
        match (&mut self.rooms, ctx.flavor) {
            (_, Flavor::Rpc { .. }) => self.j,
            (Rooms::Random(rng), _) => rng.below(ctx.rooms),
            (Rooms::Striped, _) => (self.j + usize::try_from(self.k).unwrap_or(0)) % ctx.rooms,
        }
    }

    /// The messages due by now (a burst when late), as wire text: up to [`MAX_BATCH`], which
    /// the task writes with one flush.
    pub fn due(&mut self, ctx: &Ctx, shard_id: usize) -> Vec<String> {
        let now = ctx.now_us();
        let mut out = Vec::new();
        let mut shard = ctx.recorder.shard(shard_id);
        while self.sending && self.next_due_us <= now && out.len() < MAX_BATCH {
            let t = self.next_due_us;
            let step = ctx.step_of(t);
            let interval = ctx.publishers as f64 * 1e6 / ctx.rate(step);
            // The exact time, not the whole microsecond: a burst's last send at 9.9995 µs of a
            // 10 µs schedule is its last, not one past it. Twenty thousand additions of half a
            // nanosecond end a hair below 10 µs, not on it: a millionth of an interval is the
            // rounding's share, far below any real gap between two sends.
            let exact_us = t as f64 + self.carry_us;
            if !ctx.publishing.load(Ordering::Relaxed)
                || exact_us + interval * 1e-6 >= ctx.end_us as f64
            {
                self.sending = false;
                ctx.senders_done.fetch_add(1, Ordering::Relaxed);
                break;
            }
            let room = self.next_room(ctx);
            let seq = self.seqs[room];
            self.seqs[room] += 1;
            let ack = self.next_ack;
            self.next_ack += 1;
            out.push(ctx.encode_send(self.j, room, seq, t, ack));
            self.pending.insert(
                ack,
                Pending {
                    room,
                    seq,
                    step,
                    sched_us: t,
                },
            );
            ctx.pending_acks.fetch_add(1, Ordering::Relaxed);
            shard.sent(step, ctx.expected_for(room), now - t);
            let ahead = interval + self.carry_us;
            let whole = ahead.floor();
            self.carry_us = ahead - whole;
            self.next_due_us = t + whole as u64;
            self.k += 1;
        }
        out
    }

    /// The connection was lost: what still waits for an ack will never have one.
    pub fn connection_lost(&mut self, ctx: &Ctx) {
        let n = self.pending.len();
        self.orphaned
            .extend(self.pending.drain().map(|(_, p)| (p.room, p.seq)));
        ctx.pending_acks.fetch_sub(n as i64, Ordering::Relaxed);
    }

    pub fn on_ack(&mut self, ctx: &Ctx, now: u64, shard: &mut Shard, id: u64, error: bool) {
        let Some(p) = self.pending.remove(&id) else {
            return;
        };
        ctx.pending_acks.fetch_sub(1, Ordering::Relaxed);
        let latency = now.saturating_sub(p.sched_us);
        stats::record(&mut shard.ack, latency);
        if error {
            shard.rejected(p.step, ctx.expected_for(p.room));
            self.rejected.push((p.room, p.seq));
        } else {
            self.acked_ok += 1;
            if matches!(ctx.flavor, Flavor::Rpc { .. }) {
                shard.delivered(p.step, latency);
            }
        }
    }

    /// What it did, once it stopped.
    pub fn result(self) -> SenderResult {
        SenderResult {
            j: self.j,
            unacked: self.pending.len() as u64,
            orphaned: self.orphaned,
            sent_per_room: self.seqs,
            rejected: self.rejected,
            acked_ok: self.acked_ok,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::scenario::load::Schedule;

    #[test]
    fn a_burst_scheduled_within_microseconds_is_due_at_once_and_counted_exactly() {
        let mut ctx = Ctx::for_tests(Layout::Striped);
        // 20,000 sends in 10 µs: intervals of half a microsecond, all due long ago.
        ctx.schedule = Schedule {
            starts_us: vec![0],
            rates: vec![2e9],
            end_us: 10,
            warmup: false,
        };
        ctx.end_us = 10;
        ctx.epoch = Instant::now() - Duration::from_secs(1);
        let mut sender = Sender::new(&ctx, 0);
        let batch = sender.due(&ctx, 0);
        assert_eq!(batch.len(), 20_000, "one write of the whole burst");
        assert!(!sender.sending, "nothing left to send");
        assert!(sender.due(&ctx, 0).is_empty());
    }
}
