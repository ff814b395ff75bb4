//! The publisher's outbox: recorded broadcasts published while Redis is unreachable wait here,
//! in publish order, bounded by messages, bytes and age, and go out as soon as it is back. What
//! the bounds turn away is counted (`outbox_full`, `outbox_expired`), never lost silently.
//! Plain messages (requests, heartbeats, volatile broadcasts) do not wait: they are stale by
//! the time Redis is back.

use std::{
    collections::VecDeque,
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

use super::batch::{Batches, Record};

/// How much may wait in the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxLimits {
    /// Most messages waiting.
    pub messages: usize,
    /// Most payload bytes waiting.
    pub bytes: usize,
    /// Longest a message waits; older ones are dropped when Redis is back.
    pub age: Duration,
}

impl Default for OutboxLimits {
    fn default() -> Self {
        Self {
            messages: 10_000,
            bytes: 16 * 1024 * 1024,
            age: Duration::from_secs(30),
        }
    }
}

/// One publish waiting (numbered only when it leaves, so nothing the outbox drops is counted
/// as missed by receivers).
pub(crate) struct Waiting {
    pub(crate) record: Record,
    pub(crate) bytes: usize,
    since: Instant,
}

impl Waiting {
    pub(crate) fn new(record: Record) -> Self {
        Self {
            bytes: record.message.payload.len(),
            record,
            since: Instant::now(),
        }
    }
}

#[derive(Default)]
pub(crate) struct Queue {
    waiting: VecDeque<Waiting>,
    bytes: usize,
    /// The batch forming behind the unanswered ones (under the same lock, so publishes leave
    /// in one order).
    pub(crate) batches: Batches,
}

impl Queue {
    pub(crate) fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.waiting.len()
    }

    /// Queues `w`, or hands it back when the outbox is full.
    pub(crate) fn push(&mut self, w: Waiting, limits: &OutboxLimits) -> Result<(), Waiting> {
        if self.waiting.len() >= limits.messages || self.bytes + w.bytes > limits.bytes {
            return Err(w);
        }
        self.bytes += w.bytes;
        self.waiting.push_back(w);
        Ok(())
    }

    /// The oldest message still young enough, and how many older ones were dropped before it.
    pub(crate) fn pop(&mut self, limits: &OutboxLimits) -> (Option<Waiting>, u64) {
        let mut expired = 0;
        while let Some(w) = self.waiting.pop_front() {
            self.bytes -= w.bytes;
            if w.since.elapsed() <= limits.age {
                return (Some(w), expired);
            }
            expired += 1;
        }
        (None, expired)
    }
}

/// The outbox of one Redis connection.
#[derive(Default)]
pub(crate) struct Outbox {
    queue: Mutex<Queue>,
    pub(crate) limits: OutboxLimits,
}

impl Outbox {
    pub(crate) fn new(limits: OutboxLimits) -> Self {
        Self {
            queue: Mutex::default(),
            limits,
        }
    }

    /// The queue, locked. Publishing and flushing hold it so that nothing overtakes what waits.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::Recorded;

    fn waiting(bytes: usize) -> Waiting {
        Waiting::new(Record {
            stream: "s".to_owned(),
            max_len: 10,
            message: Recorded {
                channel: "c".to_owned(),
                payload: vec![0; bytes],
                kind: "broadcast",
            },
        })
    }

    #[test]
    fn bounds_by_messages_and_bytes_and_keeps_order() {
        let limits = OutboxLimits {
            messages: 3,
            bytes: 100,
            age: Duration::from_secs(60),
        };
        let mut q = Queue::default();
        assert!(q.push(waiting(10), &limits).is_ok());
        assert!(q.push(waiting(80), &limits).is_ok());
        assert!(q.push(waiting(20), &limits).is_err(), "110 bytes");
        assert!(q.push(waiting(10), &limits).is_ok());
        assert!(q.push(waiting(1), &limits).is_err(), "4 messages");
        let sizes: Vec<usize> = std::iter::from_fn(|| q.pop(&limits).0.map(|w| w.bytes)).collect();
        assert_eq!(sizes, [10, 80, 10]);
        assert!(q.is_empty());
    }

    #[test]
    fn old_messages_expire() {
        let limits = OutboxLimits {
            messages: 10,
            bytes: 100,
            age: Duration::ZERO,
        };
        let mut q = Queue::default();
        q.push(waiting(1), &limits).ok();
        q.push(waiting(1), &limits).ok();
        std::thread::sleep(Duration::from_millis(2));
        let (next, expired) = q.pop(&limits);
        assert!(next.is_none());
        assert_eq!(expired, 2);
    }
}
