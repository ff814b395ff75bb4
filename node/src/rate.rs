//! Token buckets, and each socket's event budget (`--event-rate-per-s`, `--event-burst`): a
//! token bucket taken from by every event a client sends. An event over budget is refused visibly
//! (`{ok: false, code: "busy"}`); a client that goes on sending into an empty bucket
//! (`--event-refusals-before-disconnect` refusals in a row) is disconnected.

use std::{sync::Mutex, time::Instant};

/// What an event gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within budget.
    Accepted,
    /// Over budget: refused.
    Refused,
    /// Over budget once too often in a row: refused, and the socket is to be disconnected.
    Abusive,
}

/// The budget's parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Events per second, sustained.
    pub rate_per_s: f64,
    /// Events at once.
    pub burst: f64,
    /// Refusals in a row before a disconnect.
    pub refusals_before_disconnect: u32,
}

/// A token bucket: `burst` tokens at most, refilled at a rate. The caller passes the rate and
/// burst, so a table of many buckets stores them once.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket at `now`.
    pub fn full(burst: f64, now: Instant) -> Self {
        Self {
            tokens: burst,
            last: now,
        }
    }

    /// The tokens the bucket holds at `now`.
    fn tokens_at(&self, now: Instant, rate_per_s: f64, burst: f64) -> f64 {
        let refill = now.saturating_duration_since(self.last).as_secs_f64() * rate_per_s;
        (self.tokens + refill).min(burst)
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, now: Instant, rate_per_s: f64, burst: f64) -> bool {
        self.tokens = self.tokens_at(now, rate_per_s, burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether the bucket has refilled by `now` (it can be forgotten and made again full).
    pub fn is_full_at(&self, now: Instant, rate_per_s: f64, burst: f64) -> bool {
        self.tokens_at(now, rate_per_s, burst) >= burst
    }
}

#[derive(Debug)]
struct Bucket {
    tokens: TokenBucket,
    refused_in_row: u32,
}

/// One socket's budget.
#[derive(Debug)]
pub struct EventBudget {
    limits: Limits,
    bucket: Mutex<Bucket>,
}

impl EventBudget {
    /// A full budget.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            bucket: Mutex::new(Bucket {
                tokens: TokenBucket::full(limits.burst, Instant::now()),
                refused_in_row: 0,
            }),
        }
    }

    /// Takes one event from the budget.
    pub fn take(&self) -> Verdict {
        self.take_at(Instant::now())
    }

    fn take_at(&self, now: Instant) -> Verdict {
        let mut b = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        if b.tokens
            .take(now, self.limits.rate_per_s, self.limits.burst)
        {
            b.refused_in_row = 0;
            return Verdict::Accepted;
        }
        b.refused_in_row = b.refused_in_row.saturating_add(1);
        if b.refused_in_row >= self.limits.refusals_before_disconnect {
            Verdict::Abusive
        } else {
            Verdict::Refused
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_burst_then_the_rate_then_a_disconnect() {
        let b = EventBudget::new(Limits {
            rate_per_s: 10.0,
            burst: 3.0,
            refusals_before_disconnect: 2,
        });
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(b.take_at(t0), Verdict::Accepted);
        }
        assert_eq!(b.take_at(t0), Verdict::Refused);
        // 100 ms at 10/s: one more event.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(b.take_at(t1), Verdict::Accepted);
        assert_eq!(b.take_at(t1), Verdict::Refused);
        assert_eq!(b.take_at(t1), Verdict::Abusive);
        // Refilled, never beyond the burst.
        let t2 = t1 + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(b.take_at(t2), Verdict::Accepted);
        }
        assert_eq!(b.take_at(t2), Verdict::Refused);
    }
}
