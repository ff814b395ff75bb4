//! What a publishing node numbers its recorded broadcasts by: one counter per channel, so
//! that a node subscribed to some channels only can still tell, from the numbers it gets on
//! each, exactly how many it missed. A counter idle for long is forgotten (rooms come and go);
//! its next one starts a new epoch, which receivers take as a fresh start, not as a gap.
//!
//! Rooms named after records (`model:todos:417`) are published to once or twice and never
//! again: their counters are swept every [`SWEEP_EVERY`] (by the broker, and by a publish
//! that finds the map past [`SWEEP_ABOVE`]), and the map gives its room back as it empties
//! (`maps`).

use std::{
    collections::HashMap,
    hash::{BuildHasher as _, Hasher as _},
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::{history::Seq, maps::shrink_if_sparse};

/// Counters kept before idle ones are looked for.
const SWEEP_ABOVE: usize = 4096;
/// How long an unused counter is kept: a broadcast lost just before its channel went quiet
/// for this long is not counted as missed (the channel's next one starts a new epoch). Longer
/// than a Redis restart's outbox replay (`--outbox-max-age-ms`, 30 s by default) and as long
/// as the default recovery window; the counters of the channels used within it are what the
/// map holds (a cluster creating 2,000 records a minute, each with its own room channels,
/// holds about 8,000).
const IDLE: Duration = Duration::from_secs(120);
/// How often the broker sweeps idle counters when nothing else does.
pub(crate) const SWEEP_EVERY: Duration = Duration::from_secs(30);

struct Counter {
    epoch: u64,
    next: u64,
    used: Instant,
}

/// The per-channel counters of one publishing node.
#[derive(Default)]
pub(crate) struct ChannelSeqs {
    counters: Mutex<Counters>,
    epochs: std::collections::hash_map::RandomState,
    made: std::sync::atomic::AtomicU64,
}

#[derive(Default)]
struct Counters {
    by_channel: HashMap<String, Counter>,
    /// The last sweep; `None` before the first.
    swept: Option<Instant>,
}

impl Counters {
    /// Forgets the counters idle for [`IDLE`] at `now`, and gives back the room of a map
    /// that emptied.
    fn sweep(&mut self, now: Instant) {
        self.by_channel
            .retain(|_, c| now.duration_since(c.used) < IDLE);
        shrink_if_sparse(&mut self.by_channel);
        self.swept = Some(now);
    }
}

impl ChannelSeqs {
    fn lock(&self) -> std::sync::MutexGuard<'_, Counters> {
        self.counters.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The number of the next broadcast on `channel`; call it once per broadcast, in the order
    /// they leave for the broker.
    pub(crate) fn next(&self, channel: &str) -> Seq {
        let now = Instant::now();
        let mut counters = self.lock();
        // A busy map is swept as it grows too, at most once per SWEEP_EVERY (a sweep walks
        // every counter).
        let due = counters
            .swept
            .is_none_or(|t| now.duration_since(t) >= SWEEP_EVERY);
        if due && counters.by_channel.len() >= SWEEP_ABOVE {
            counters.sweep(now);
        }
        let counters = &mut counters.by_channel;
        // Looked up by `&str` first: only a channel's first broadcast allocates its name.
        let counter = match counters.get_mut(channel) {
            Some(counter) => counter,
            None => counters.entry(channel.to_owned()).or_insert(Counter {
                epoch: self.new_epoch(),
                next: 0,
                used: now,
            }),
        };
        let seq = Seq {
            epoch: counter.epoch,
            n: counter.next,
        };
        counter.next += 1;
        counter.used = now;
        seq
    }

    /// Forgets the counters idle for [`IDLE`] at `now`, and gives back the room of a map
    /// that emptied.
    pub(crate) fn sweep(&self, now: Instant) {
        self.lock().sweep(now);
    }

    /// A random epoch: the process's random hasher keys over a count of epochs made.
    fn new_epoch(&self) -> u64 {
        let made = self.made.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut h = self.epochs.build_hasher();
        h.write_u64(made);
        h.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_channel_counts_on_its_own_from_its_own_epoch() {
        let seqs = ChannelSeqs::default();
        let a0 = seqs.next("a");
        let b0 = seqs.next("b");
        let a1 = seqs.next("a");
        assert_eq!((a0.n, a1.n, b0.n), (0, 1, 0));
        assert_eq!(a0.epoch, a1.epoch);
        assert_ne!(a0.epoch, b0.epoch);
        // Another node's counters start from other epochs.
        assert_ne!(ChannelSeqs::default().next("a").epoch, a0.epoch);
    }

    #[test]
    fn a_sweep_forgets_idle_counters_and_gives_their_room_back() {
        let seqs = ChannelSeqs::default();
        for id in 0..10_000 {
            seqs.next(&format!("ioscale#/#model:todos:{id}"));
        }
        let capacity = |s: &ChannelSeqs| s.lock().by_channel.capacity();
        let peak = capacity(&seqs);
        assert!(peak >= 10_000, "{peak}");
        // Still in use: kept, numbers going on.
        seqs.sweep(Instant::now());
        assert_eq!(seqs.lock().by_channel.len(), 10_000);
        assert_eq!(seqs.next("ioscale#/#model:todos:3").n, 1);
        // Idle past IDLE: forgotten, and the table shrinks with them.
        seqs.next("ioscale#/#busy");
        seqs.sweep(Instant::now() + IDLE + Duration::from_secs(1));
        let left = seqs.lock().by_channel.len();
        assert_eq!(left, 0);
        assert!(capacity(&seqs) <= 128, "{}", capacity(&seqs));
        // A forgotten channel starts afresh, from a new epoch.
        assert_eq!(seqs.next("ioscale#/#model:todos:3").n, 0);
    }
}
