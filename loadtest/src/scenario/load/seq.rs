//! Sequence accounting of one (subscriber, publisher) pair: first deliveries, duplicates, late
//! (reordered) ones and what never arrived.

use std::collections::BTreeSet;

/// Sequence accounting of one (subscriber, publisher) pair.
#[derive(Debug, Default, Clone)]
pub struct SeqTrack {
    next: u64,
    /// Sequences skipped so far (lost unless they still arrive).
    missing: BTreeSet<u64>,
    pub duplicates: u64,
    pub reordered: u64,
}

impl SeqTrack {
    /// Records sequence `s`; true for a first delivery.
    pub fn on(&mut self, s: u64) -> bool {
        if s == self.next {
            self.next += 1;
            true
        } else if s > self.next {
            self.missing.extend(self.next..s);
            self.next = s + 1;
            true
        } else if self.missing.remove(&s) {
            self.reordered += 1;
            true
        } else {
            self.duplicates += 1;
            false
        }
    }

    /// Sequences below `sent` that never arrived, except the ones the server rejected.
    pub fn lost(&self, sent: u64, rejected: impl Fn(u64) -> bool) -> u64 {
        let tail = (self.next..sent).filter(|&x| !rejected(x)).count();
        let gaps = self
            .missing
            .iter()
            .filter(|&&x| x < sent && !rejected(x))
            .count();
        (tail + gaps) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_tracking_is_exact() {
        let mut t = SeqTrack::default();
        assert!(t.on(0));
        assert!(t.on(1));
        assert!(!t.on(1)); // duplicate
        assert!(t.on(4)); // 2, 3 missing
        assert!(t.on(2)); // late: reordered
        assert_eq!((t.duplicates, t.reordered), (1, 1));
        // Sent 7 (0..7): 3 missing, 5 and 6 never came.
        assert_eq!(t.lost(7, |_| false), 3);
        // 5 was rejected by the server: not lost.
        assert_eq!(t.lost(7, |x| x == 5), 2);
        assert_eq!(SeqTrack::default().lost(0, |_| false), 0);
    }
}
