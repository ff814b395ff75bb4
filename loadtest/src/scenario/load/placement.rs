//! Where the `rooms` scenario puts its clients and which rooms it publishes to (seeded, so a
//! run can be repeated against another implementation with the very same placement), and the
//! adapter traffic that placement needs at the least: the *ideal* the measured traffic is
//! compared with.
//!
//! The generator is its own small PRNG (SplitMix64) rather than `rand`'s `StdRng`, whose
//! stream may change between `rand` versions: a seed must mean the same placement next year.

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, and statistically fine for choosing
/// nodes and rooms.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// The stream of `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// Stream `k` of `seed`: independent streams for the members and for each sender.
    pub fn stream(seed: u64, k: u64) -> Self {
        let mut r = Self(seed ^ k.wrapping_add(1).wrapping_mul(0xD1B5_4A32_D192_ED03));
        r.next_u64();
        r
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0; 0 when `n` is 0). Multiply-shift: the bias is below
    /// `n / 2^64`, nothing at these sizes.
    pub fn below(&mut self, n: usize) -> usize {
        let wide = u128::from(self.next_u64()) * n as u128;
        usize::try_from(wide >> 64).unwrap_or(0)
    }
}

/// The target of each of `members` clients, drawn uniformly among `targets` from `seed`.
pub fn scatter(seed: u64, members: usize, targets: usize) -> Vec<usize> {
    let mut rng = Rng::stream(seed, 0);
    (0..members).map(|_| rng.below(targets)).collect()
}

/// Which targets (nodes) hold at least one member of each room.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Spread {
    /// Per room, the distinct targets of its members, sorted.
    nodes: Vec<Vec<usize>>,
}

impl Spread {
    /// The spread of `rooms` rooms given each member's `(room, target)`.
    pub fn of(rooms: usize, members: impl IntoIterator<Item = (usize, usize)>) -> Self {
        let mut nodes = vec![Vec::new(); rooms];
        for (room, target) in members {
            if let Some(n) = nodes.get_mut(room)
                && !n.contains(&target)
            {
                n.push(target);
            }
        }
        for n in &mut nodes {
            n.sort_unstable();
        }
        Self { nodes }
    }

    /// Adapter messages a publish to `room` from a client on `from` needs at the least: one per
    /// node other than `from` that holds a member (`from`'s own members need no message, and a
    /// node does not count its own publish looped back by the broker).
    pub fn ideal(&self, room: usize, from: usize) -> u64 {
        self.nodes
            .get(room)
            .map_or(0, |n| n.iter().filter(|&&t| t != from).count() as u64)
    }

    /// The ideal summed over a sender on `from` that sent `sent_per_room[r]` publishes to each
    /// room `r`.
    pub fn ideal_of_sends(&self, from: usize, sent_per_room: &[u64]) -> u64 {
        sent_per_room
            .iter()
            .enumerate()
            .map(|(room, &n)| n * self.ideal(room, from))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_is_seeded_and_uniform() {
        let a = scatter(1, 6000, 3);
        assert_eq!(a, scatter(1, 6000, 3), "same seed, same placement");
        assert_ne!(a, scatter(2, 6000, 3), "another seed, another placement");
        // Pinned: a seed means the same placement in every build (and every `rand` version).
        assert_eq!(scatter(1, 12, 3), [1, 0, 0, 2, 0, 2, 0, 0, 1, 0, 2, 1]);
        assert_eq!(&scatter(1, 12, 3), &a[..12], "a prefix of a longer run");
        for t in 0..3 {
            let n = a.iter().filter(|&&x| x == t).count();
            assert!((1800..2200).contains(&n), "target {t}: {n} of 6000");
        }
        let mut r = Rng::stream(1, 5);
        assert!((0..1000).all(|_| r.below(7) < 7));
        assert_eq!(r.below(0), 0);
    }

    #[test]
    fn ideal_counts_other_nodes_holding_a_member() {
        // Room 0: members on nodes 0, 0, 2; room 1: only node 1; room 2: empty.
        let s = Spread::of(3, [(0, 0), (0, 0), (0, 2), (1, 1), (9, 0)]);
        assert_eq!((s.ideal(0, 0), s.ideal(0, 1), s.ideal(0, 2)), (1, 2, 1));
        assert_eq!((s.ideal(1, 1), s.ideal(1, 0)), (0, 1));
        assert_eq!(s.ideal(2, 0), 0);
        assert_eq!(s.ideal(7, 0), 0, "unknown room");
        // A sender on node 1: 10 publishes to room 0, 5 to room 1, 3 to the empty room.
        assert_eq!(s.ideal_of_sends(1, &[10, 5, 3]), 20);
    }

    #[test]
    fn mean_ideal_of_a_seeded_run_matches_the_expectation() {
        // 2000 rooms of 3 over 3 nodes, a publisher on node 0: each of the 2 other nodes holds
        // a member with probability 1 - (2/3)^3, so 2 · 19/27 ≈ 1.407 messages per publish.
        let (rooms, size, nodes) = (2000, 3, 3);
        let targets = scatter(1, rooms * size, nodes);
        let s = Spread::of(
            rooms,
            targets.iter().enumerate().map(|(i, &t)| (i / size, t)),
        );
        let mut rng = Rng::stream(1, 1);
        let mut sent = vec![0u64; rooms];
        for _ in 0..20_000 {
            sent[rng.below(rooms)] += 1;
        }
        let mean = s.ideal_of_sends(0, &sent) as f64 / 20_000.0;
        assert!((mean - 2.0 * 19.0 / 27.0).abs() < 0.03, "{mean}");
        // Deterministic: the same seed gives the very same figure.
        let again = Spread::of(
            rooms,
            scatter(1, rooms * size, nodes)
                .iter()
                .enumerate()
                .map(|(i, &t)| (i / size, t)),
        );
        assert_eq!(again, s);
    }
}
