//! The reverse index from watched numbers to the subscriptions watching them, packed: a
//! hundred thousand subscriptions of a hundred distinct numbers are ten million entries,
//! so each costs 8 bytes (a 4-byte fingerprint of the number, a 4-byte subscription id)
//! over a load factor of 0.7-0.9, instead of a `HashMap` entry with its enum and slack
//! (40-60 bytes).
//!
//! Why a fingerprint and not the number: this index only says whom to wake. A number
//! hashes (keyed, `RandomState`) to 64 bits: 6 choose one of 64 tables, 32 are kept. Two
//! numbers of one table share a fingerprint about once in 2^32 pairs, and then the watchers
//! of one are also woken for the other; each subscription then checks the change against
//! its own list (`WatchedList`, exact numbers) and sends nothing for a number it does not
//! list. An unbinding makes the woken subscriptions send full state, which is correct
//! even when they were woken by such a collision. A subscription unwatches all its
//! numbers at once when it ends, so two of its own numbers sharing an entry lose nothing.
//! The key is secret, so clients cannot choose numbers that collide.
//!
//! Open addressing with linear probing over two parallel arrays, any capacity (not only
//! powers of two: right after a growth it is 1.4 times its entries), deletion by backward
//! shift (no tombstones), shrinking as subscriptions go. Fingerprints watched by several
//! subscriptions hold a marker and keep their ids in a side map.

use crate::numbers::E164;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};

use super::record::SubId;

/// The value of a fingerprint watched by more than one subscription (see `many`).
const MANY: SubId = SubId::MAX;
/// Grow past this load (in 1/100), shrink under `SHRINK_AT`, both to `AFTER_RESIZE`.
const GROW_AT: usize = 90;
const SHRINK_AT: usize = 35;
const AFTER_RESIZE: usize = 70;
/// Smallest non-empty capacity.
const MIN_CAPACITY: usize = 16;

/// The index: 64 tables chosen by the number's hash, so that growing one rehashes a
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

/// A slot's fingerprint: never 0, which marks an empty slot.
type Print = u32;

impl PhoneIndex {
    /// The table and fingerprint of `n`.
    fn locate(&self, n: E164) -> (usize, Print) {
        let h = self.hasher.hash_one(n.digits());
        ((h >> 58) as usize, (h as Print).max(1))
    }

    /// Distinct fingerprints watched (distinct numbers, but for collisions).
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
        let (i, print) = self.locate(n);
        self.shards[i].watch(print, id)
    }

    /// Subscription `id` watches each of `numbers`. With millions of entries every number
    /// lands far from the last in memory: the first slot of each is read before any is
    /// written, so the processor waits for those cache misses together, not one by one
    /// (loading a million stored subscriptions spent most of its time waiting for them).
    pub fn watch_all(&mut self, numbers: &[E164], id: SubId) {
        let located = self.warm(numbers);
        for (i, print) in located {
            self.shards[i].watch(print, id);
        }
    }

    /// Subscription `id` no longer watches any of `numbers` (see `unwatch`), warmed alike.
    pub fn unwatch_all(&mut self, numbers: &[E164], id: SubId) {
        let located = self.warm(numbers);
        for (i, print) in located {
            self.shards[i].unwatch(print, id);
        }
    }

    /// Where each number goes, after a read of its first slot.
    fn warm(&self, numbers: &[E164]) -> Vec<(usize, Print)> {
        let located: Vec<(usize, Print)> = numbers.iter().map(|n| self.locate(*n)).collect();
        let touched = located.iter().fold(0, |acc, &(i, print)| acc ^ self.shards[i].peek(print));
        std::hint::black_box(touched);
        located
    }

    /// Subscription `id` no longer watches `n`, nor any number of the same fingerprint:
    /// call it for every number of a subscription that ends.
    pub fn unwatch(&mut self, n: E164, id: SubId) {
        let (i, print) = self.locate(n);
        self.shards[i].unwatch(print, id)
    }

    /// The subscriptions watching `n`, and on a fingerprint collision those watching the
    /// other number too.
    pub fn watchers(&self, n: E164) -> &[SubId] {
        let (i, print) = self.locate(n);
        self.shards[i].watchers(print)
    }
}

/// One table of the index.
#[derive(Default)]
struct Shard {
    /// The fingerprint in each slot; 0 for an empty slot.
    prints: Vec<Print>,
    /// The watcher of each slot, or `MANY`.
    vals: Vec<SubId>,
    len: usize,
    /// The watchers of the fingerprints marked `MANY`, two or more each, in id order.
    many: HashMap<Print, Vec<SubId>, BuildHasherDefault<Spread>>,
}

/// Hashes a fingerprint for the `many` map. A fingerprint is already a keyed hash, so
/// spreading its bits over 64 (for the map's bucket and tag bits) is enough: no second
/// keyed hash (SipHash) per watcher added or removed.
#[derive(Default)]
struct Spread(u64);

impl Hasher for Spread {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

impl Shard {
    fn heap_bytes(&self) -> usize {
        let many: usize = self.many.values().map(|v| v.capacity() * 4 + 32).sum();
        self.prints.capacity() * 4 + self.vals.capacity() * 4 + many
    }

    /// The fingerprint and value in the first slot `print` may be in (0 when empty): a read
    /// that brings both into the cache.
    fn peek(&self, print: Print) -> u32 {
        if self.prints.is_empty() {
            return 0;
        }
        let i = self.home(print);
        self.prints[i] ^ self.vals[i]
    }

    fn watch(&mut self, print: Print, id: SubId) {
        debug_assert!(id != MANY, "subscription ids stop short of the marker");
        if (self.len + 1) * 100 > self.prints.len() * GROW_AT {
            self.resize(((self.len + 1) * 100 / AFTER_RESIZE).max(MIN_CAPACITY));
        }
        let mut i = self.home(print);
        loop {
            match self.prints[i] {
                0 => {
                    self.prints[i] = print;
                    self.vals[i] = id;
                    self.len += 1;
                    return;
                }
                p if p == print => return self.add_watcher(i, print, id),
                _ => i = self.next(i),
            }
        }
    }

    fn unwatch(&mut self, print: Print, id: SubId) {
        let Some(i) = self.find(print) else { return };
        if self.vals[i] == MANY {
            self.remove_watcher(i, print, id);
        } else if self.vals[i] == id {
            self.remove_slot(i);
            if self.len * 100 < self.prints.len() * SHRINK_AT {
                self.resize(if self.len == 0 { 0 } else { (self.len * 100 / AFTER_RESIZE).max(MIN_CAPACITY) });
            }
        }
    }

    fn watchers(&self, print: Print) -> &[SubId] {
        match self.find(print) {
            None => &[],
            Some(i) if self.vals[i] == MANY => self.many.get(&print).map_or(&[], Vec::as_slice),
            Some(i) => std::slice::from_ref(&self.vals[i]),
        }
    }

    fn add_watcher(&mut self, i: usize, print: Print, id: SubId) {
        match self.vals[i] {
            MANY => {
                // Kept sorted: ids grow, so a new subscription's id goes at the end at once
                // (a scan for repeats made loading a popular number's watchers quadratic).
                let ids = self.many.entry(print).or_default();
                let at = match ids.last() {
                    Some(last) if *last < id => ids.len(),
                    _ => match ids.binary_search(&id) {
                        Ok(_) => return,
                        Err(at) => at,
                    },
                };
                // Grown by an eighth, not doubled: a popular number's hundred watchers
                // would otherwise leave a quarter of their room unused on average.
                if ids.len() == ids.capacity() {
                    ids.reserve_exact((ids.len() / 8).max(2));
                }
                ids.insert(at, id);
            }
            first if first == id => {}
            first => {
                self.many.insert(print, if first < id { vec![first, id] } else { vec![id, first] });
                self.vals[i] = MANY;
            }
        }
    }

    fn remove_watcher(&mut self, i: usize, print: Print, id: SubId) {
        let Some(ids) = self.many.get_mut(&print) else { return };
        if let Ok(at) = ids.binary_search(&id) {
            ids.remove(at);
        }
        if ids.len() == 1 {
            self.vals[i] = ids[0];
            self.many.remove(&print);
        } else if ids.len() * 4 < ids.capacity() {
            ids.shrink_to_fit();
        }
    }

    fn find(&self, print: Print) -> Option<usize> {
        if self.prints.is_empty() {
            return None;
        }
        let mut i = self.home(print);
        loop {
            match self.prints[i] {
                0 => return None,
                p if p == print => return Some(i),
                _ => i = self.next(i),
            }
        }
    }

    /// Empties slot `i`, then moves back the entries after it that probed past it, so
    /// every entry stays reachable from its home slot without tombstones.
    fn remove_slot(&mut self, mut hole: usize) {
        self.prints[hole] = 0;
        self.len -= 1;
        let mut i = self.next(hole);
        while self.prints[i] != 0 {
            let home = self.home(self.prints[i]);
            if self.distance(home, i) >= self.distance(hole, i) {
                self.prints[hole] = self.prints[i];
                self.vals[hole] = self.vals[i];
                self.prints[i] = 0;
                hole = i;
            }
            i = self.next(i);
        }
    }

    fn resize(&mut self, capacity: usize) {
        let prints = std::mem::replace(&mut self.prints, vec![0; capacity]);
        let vals = std::mem::replace(&mut self.vals, vec![0; capacity]);
        for (print, val) in prints.into_iter().zip(vals).filter(|(p, _)| *p != 0) {
            let mut i = self.home(print);
            while self.prints[i] != 0 {
                i = self.next(i);
            }
            self.prints[i] = print;
            self.vals[i] = val;
        }
    }

    /// The first slot `print` may be in: the fingerprint (already a keyed hash) scaled to
    /// the capacity, no modulo.
    fn home(&self, print: Print) -> usize {
        ((u64::from(print) * self.prints.len() as u64) >> 32) as usize
    }

    fn next(&self, i: usize) -> usize {
        if i + 1 == self.prints.len() {
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
            to + self.prints.len() - from
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
    fn watching_a_list_at_once_is_watching_each_number() {
        let (mut one_by_one, mut at_once) = (PhoneIndex::default(), PhoneIndex::default());
        at_once.hasher = one_by_one.hasher.clone();
        let list = |id: u32| -> Vec<E164> { (0..100).map(|e| number(u64::from(id * 37 + e * 11) % 5000)).collect() };
        let same = |a: &PhoneIndex, b: &PhoneIndex| (0..5000).all(|k| a.watchers(number(k)) == b.watchers(number(k))) && a.len() == b.len();
        for id in 1..=300u32 {
            list(id).iter().for_each(|n| one_by_one.watch(*n, id));
            at_once.watch_all(&list(id), id);
        }
        assert!(same(&at_once, &one_by_one));
        for id in (1..=300u32).step_by(2) {
            list(id).iter().for_each(|n| one_by_one.unwatch(*n, id));
            at_once.unwatch_all(&list(id), id);
        }
        assert!(same(&at_once, &one_by_one));
    }

    #[test]
    fn grows_dense_and_shrinks_to_nothing() {
        let mut idx = PhoneIndex::default();
        let n = 100_000u64;
        // Keyed by fingerprint: two of these numbers may share one (about once in 50 runs).
        let mut model: HashMap<(usize, Print), BTreeSet<SubId>> = HashMap::new();
        for i in 0..n {
            let (num, id) = (number(i * 7919), (i / 100) as SubId + 1);
            idx.watch(num, id);
            model.entry(idx.locate(num)).or_default().insert(id);
        }
        assert_eq!(idx.len(), model.len());
        let per_entry = idx.heap_bytes() as f64 / n as f64;
        assert!(per_entry < 8.0 / 0.65, "{per_entry} bytes per entry");
        for i in 0..n {
            let num = number(i * 7919);
            let got: BTreeSet<SubId> = idx.watchers(num).iter().copied().collect();
            assert_eq!(got, model[&idx.locate(num)]);
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
            // By fingerprint, as the index is (two of these 300 numbers rarely share one).
            let mut model: HashMap<(usize, Print), BTreeSet<SubId>> = HashMap::new();
            for op in &ops {
                match *op {
                    Op::Watch(n, id) => {
                        idx.watch(number(n), id);
                        model.entry(idx.locate(number(n))).or_default().insert(id);
                    }
                    Op::Unwatch(n, id) => {
                        idx.unwatch(number(n), id);
                        let at = idx.locate(number(n));
                        if let Some(set) = model.get_mut(&at) {
                            set.remove(&id);
                            if set.is_empty() {
                                model.remove(&at);
                            }
                        }
                    }
                }
                prop_assert_eq!(idx.len(), model.len());
            }
            for n in 0..300u64 {
                let got: BTreeSet<SubId> = idx.watchers(number(n)).iter().copied().collect();
                prop_assert_eq!(got.len(), idx.watchers(number(n)).len(), "no duplicate watcher");
                let want = model.get(&idx.locate(number(n))).cloned().unwrap_or_default();
                prop_assert_eq!(got, want);
            }
        }
    }
}
