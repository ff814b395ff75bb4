//! Long-lived maps keyed by rooms and channels give their room back as they empty: a hash
//! map keeps the capacity of its peak otherwise, and rooms named after records or sessions
//! come and go by the thousand (a soak's CRUD clients left about 200 bytes per record created
//! in one such table).

use std::{
    collections::HashMap,
    hash::{BuildHasher, Hash},
};

/// Slots kept however empty a map gets (a few KB at most).
const MIN_CAPACITY: usize = 64;

/// Gives back most of `map`'s table once it holds a quarter of what it could; keeps twice
/// what is left, so that refilling does not regrow it at once. Call it after removals.
pub(crate) fn shrink_if_sparse<K: Eq + Hash, V, S: BuildHasher>(map: &mut HashMap<K, V, S>) {
    let wanted = (map.len() * 2).max(MIN_CAPACITY);
    if map.capacity() > wanted * 2 {
        map.shrink_to(wanted);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_map_gives_its_room_back_only_once_mostly_empty() {
        let mut map: HashMap<u32, u32> = (0..1000).map(|i| (i, i)).collect();
        let before = map.capacity();
        map.retain(|k, _| *k < 600);
        shrink_if_sparse(&mut map);
        // Room to refill kept: twice what is left.
        assert!(map.capacity() >= 1200, "{}", map.capacity());
        map.retain(|k, _| *k < 100);
        shrink_if_sparse(&mut map);
        assert!(map.capacity() < before / 2, "{}", map.capacity());
        assert_eq!(map.len(), 100);
        map.clear();
        shrink_if_sparse(&mut map);
        assert!(map.capacity() <= 2 * MIN_CAPACITY, "{}", map.capacity());
    }
}
