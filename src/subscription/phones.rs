//! The reverse index from watched numbers to the subscriptions watching them, packed: a
//! hundred thousand subscriptions of a hundred distinct numbers are ten million entries,
//! so each costs 12 bytes (an 8-byte number, a 4-byte subscription id) over a load factor
//! of 0.7-0.9, instead of a `HashMap` entry with its enum and slack (40-60 bytes).
//!
//! Open addressing with linear probing over two parallel arrays, any capacity (not only
//! powers of two: right after a growth it is 1.4 times its entries), deletion by backward shift
//! (no tombstones), shrinking as subscriptions go. Numbers watched by several
//! subscriptions hold a marker and keep their ids in a side map. Hashed with a per-table
//! random key (`RandomState`): the numbers come from clients, who must not be able to
//! pile them on one probe run.

use crate::numbers::E164;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;

use super::table::SubId;

/// The value of a number watched by more than one subscription (see `many`).
const MANY: SubId = SubId::MAX;
/// Grow past this load (in 1/100), shrink under `SHRINK_AT`, both to `AFTER_RESIZE`.
const GROW_AT: usize = 90;
const SHRINK_AT: usize = 35;
const AFTER_RESIZE: usize = 70;
/// Smallest non-empty capacity.
const MIN_CAPACITY: usize = 16;

/// The index: 64 tables chosen by a hash of the number, so that growing one rehashes a
/// 64th of the entries (with 8 million entries, ~2 ms instead of ~100 ms under the
/// subscription table's lock: every SUBSCRIBE waited for it).
pub struct PhoneIndex {
    shards: Box<[Shard]>,
    hasher: RandomState,
}

const SHARDS: usize = 64;

impl Default for PhoneIndex {
    fn default() -> Self {
        PhoneIndex { shards: (0..SHARDS).map(|_| Shard::default()).collect(), hasher: RandomState::new() }
    }
}

impl PhoneIndex {
    fn shard(&self, n: E164) -> usize {
        (self.hasher.hash_one(n.digits()) >> 58) as usize
    }

    /// Distinct numbers watched.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.shards.iter().all(|s| s.len == 0)
    }

    /// Bytes held by the index (tests and stats).
    pub fn heap_bytes(&self) -> usize {
        self.shards.iter().map(Shard::heap_bytes).sum()
    }

    /// Subscription `id` watches `n` (again: no change).
    pub fn watch(&mut self, n: E164, id: SubId) {
        let i = self.shard(n);
        self.shards[i].watch(n, id)
    }

    /// Subscription `id` no longer watches `n`.
    pub fn unwatch(&mut self, n: E164, id: SubId) {
        let i = self.shard(n);
        self.shards[i].unwatch(n, id)
    }

    /// The subscriptions watching `n`.
    pub fn watchers(&self, n: E164) -> &[SubId] {
        self.shards[self.shard(n)].watchers(n)
    }
}

/// One table of the index.
struct Shard {
    /// The number of each slot; 0 for an empty slot (no E.164 number is 0).
    keys: Vec<u64>,
    /// The watcher of each slot, or `MANY`.
    vals: Vec<SubId>,
    len: usize,
    /// The watchers of the numbers marked `MANY`, two or more each.
    many: HashMap<u64, Vec<SubId>>,
    hasher: RandomState,
}

impl Default for Shard {
    fn default() -> Self {
        Shard { keys: Vec::new(), vals: Vec::new(), len: 0, many: HashMap::new(), hasher: RandomState::new() }
    }
}

impl Shard {
    fn heap_bytes(&self) -> usize {
        let many: usize = self.many.values().map(|v| v.capacity() * 4 + 32).sum();
        self.keys.capacity() * 8 + self.vals.capacity() * 4 + many
    }

    fn watch(&mut self, n: E164, id: SubId) {
        debug_assert!(id != MANY, "subscription ids stop short of the marker");
        let key = n.digits();
        if (self.len + 1) * 100 > self.keys.len() * GROW_AT {
            self.resize(((self.len + 1) * 100 / AFTER_RESIZE).max(MIN_CAPACITY));
        }
        let mut i = self.home(key);
        loop {
            match self.keys[i] {
                0 => {
                    self.keys[i] = key;
                    self.vals[i] = id;
                    self.len += 1;
                    return;
                }
                k if k == key => return self.add_watcher(i, key, id),
                _ => i = self.next(i),
            }
        }
    }

    fn unwatch(&mut self, n: E164, id: SubId) {
        let key = n.digits();
        let Some(i) = self.find(key) else { return };
        if self.vals[i] == MANY {
            self.remove_watcher(i, key, id);
        } else if self.vals[i] == id {
            self.remove_slot(i);
            if self.len * 100 < self.keys.len() * SHRINK_AT {
                self.resize(if self.len == 0 { 0 } else { (self.len * 100 / AFTER_RESIZE).max(MIN_CAPACITY) });
            }
        }
    }

    fn watchers(&self, n: E164) -> &[SubId] {
        let key = n.digits();
        match self.find(key) {
            None => &[],
            Some(i) if self.vals[i] == MANY => self.many.get(&key).map_or(&[], Vec::as_slice),
            Some(i) => std::slice::from_ref(&self.vals[i]),
        }
    }

    fn add_watcher(&mut self, i: usize, key: u64, id: SubId) {
        match self.vals[i] {
            MANY => {
                let ids = self.many.entry(key).or_default();
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
            first if first == id => {}
            first => {
                self.many.insert(key, vec![first, id]);
                self.vals[i] = MANY;
            }
        }
    }

    fn remove_watcher(&mut self, i: usize, key: u64, id: SubId) {
        let Some(ids) = self.many.get_mut(&key) else { return };
        ids.retain(|s| *s != id);
        if ids.len() == 1 {
            self.vals[i] = ids[0];
            self.many.remove(&key);
        } else if ids.len() * 4 < ids.capacity() {
            ids.shrink_to_fit();
        }
    }

    fn find(&self, key: u64) -> Option<usize> {
        if self.keys.is_empty() {
            return None;
        }
        let mut i = self.home(key);
        loop {
            match self.keys[i] {
                0 => return None,
                k if k == key => return Some(i),
                _ => i = self.next(i),
            }
        }
    }

    /// Empties slot `i`, then moves back the entries after it that probed past it, so
    /// every entry stays reachable from its home slot without tombstones.
    fn remove_slot(&mut self, mut hole: usize) {
        self.keys[hole] = 0;
        self.len -= 1;
        let mut i = self.next(hole);
        while self.keys[i] != 0 {
            let home = self.home(self.keys[i]);
            if self.distance(home, i) >= self.distance(hole, i) {
                self.keys[hole] = self.keys[i];
                self.vals[hole] = self.vals[i];
                self.keys[i] = 0;
                hole = i;
            }
            i = self.next(i);
        }
    }

    fn resize(&mut self, capacity: usize) {
        let keys = std::mem::replace(&mut self.keys, vec![0; capacity]);
        let vals = std::mem::replace(&mut self.vals, vec![0; capacity]);
        for (key, val) in keys.into_iter().zip(vals).filter(|(k, _)| *k != 0) {
            let mut i = self.home(key);
            while self.keys[i] != 0 {
                i = self.next(i);
            }
            self.keys[i] = key;
            self.vals[i] = val;
        }
    }

    /// The first slot `key` may be in: the hash scaled to the capacity (no modulo).
    fn home(&self, key: u64) -> usize {
        let h = self.hasher.hash_one(key);
        ((h as u128 * self.keys.len() as u128) >> 64) as usize
    }

    fn next(&self, i: usize) -> usize {
        if i + 1 == self.keys.len() {
            0
        } else {
            i + 1
        }
    }

    /// Slots from `from` forward to `to`, wrapping.
    fn distance(&self, from: usize, to: usize) -> usize {
        if to >= from {
            to - from
        } else {
            to + self.keys.len() - from
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn number(n: u64) -> E164 {
        E164::from_key(&(n + 1).to_be_bytes()).expect("a plausible number")
    }

    #[test]
    fn one_watcher_many_watchers_and_back() {
        let mut idx = PhoneIndex::default();
        idx.watch(number(7), 1);
        assert_eq!(idx.watchers(number(7)), &[1]);
        idx.watch(number(7), 2);
        idx.watch(number(7), 3);
        idx.watch(number(7), 2);
        assert_eq!(idx.watchers(number(7)), &[1, 2, 3]);
        idx.unwatch(number(7), 1);
        idx.unwatch(number(7), 3);
        assert_eq!(idx.watchers(number(7)), &[2]);
        assert!(idx.shards.iter().all(|s| s.many.is_empty()));
        idx.unwatch(number(7), 9);
        idx.unwatch(number(7), 2);
        assert!(idx.watchers(number(7)).is_empty());
        assert!(idx.is_empty());
    }

    #[test]
    fn grows_dense_and_shrinks_to_nothing() {
        let mut idx = PhoneIndex::default();
        let n = 100_000u64;
        for i in 0..n {
            idx.watch(number(i * 7919), (i / 100) as SubId + 1);
        }
        assert_eq!(idx.len(), n as usize);
        let per_entry = idx.heap_bytes() as f64 / n as f64;
        assert!(per_entry < 12.0 / 0.5, "{per_entry} bytes per entry");
        for i in 0..n {
            assert_eq!(idx.watchers(number(i * 7919)), &[(i / 100) as SubId + 1]);
        }
        for i in 0..n {
            idx.unwatch(number(i * 7919), (i / 100) as SubId + 1);
        }
        assert!(idx.is_empty());
        assert_eq!(idx.heap_bytes(), 0, "memory released");
    }

    #[derive(Debug, Clone)]
    enum Op {
        Watch(u64, SubId),
        Unwatch(u64, SubId),
    }

    fn op() -> impl Strategy<Value = Op> {
        // Few numbers and ids, so that collisions, shared numbers and removals abound.
        prop_oneof![
            (0u64..300, 1u32..6).prop_map(|(n, id)| Op::Watch(n, id)),
            (0u64..300, 1u32..6).prop_map(|(n, id)| Op::Unwatch(n, id)),
        ]
    }

    proptest! {
        #[test]
        fn behaves_like_a_map_of_sets(ops in proptest::collection::vec(op(), 0..2000)) {
            let mut idx = PhoneIndex::default();
            let mut model: HashMap<u64, BTreeSet<SubId>> = HashMap::new();
            for op in &ops {
                match *op {
                    Op::Watch(n, id) => {
                        idx.watch(number(n), id);
                        model.entry(n).or_default().insert(id);
                    }
                    Op::Unwatch(n, id) => {
                        idx.unwatch(number(n), id);
                        if let Some(set) = model.get_mut(&n) {
                            set.remove(&id);
                            if set.is_empty() {
                                model.remove(&n);
                            }
                        }
                    }
                }
                prop_assert_eq!(idx.len(), model.len());
            }
            for n in 0..300u64 {
                let got: BTreeSet<SubId> = idx.watchers(number(n)).iter().copied().collect();
                prop_assert_eq!(got.len(), idx.watchers(number(n)).len(), "no duplicate watcher");
                prop_assert_eq!(got, model.get(&n).cloned().unwrap_or_default());
            }
        }
    }
}
