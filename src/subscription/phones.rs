//! The reverse index from watched numbers to the subscriptions watching them, packed: a
//! million subscriptions of a hundred numbers are a hundred million entries, so each is
//! 6 bytes (a 16-bit fingerprint of the number, a 4-byte subscription id) in a sorted
//! array with a few percent of room, not a hash table's slot at a load of 0.7-0.9 nor a
//! `HashMap` entry (40-60 bytes).
//!
//! Why a fingerprint and not the number: this index only says whom to wake. A number
//! hashes (keyed, `RandomState`) to 64 bits: 16 choose one of 65,536 buckets, 16 more are
//! kept in the entry, so a number is known by 32 bits. Two numbers of one bucket share a
//! fingerprint about once in 65,536 pairs, and then the watchers of one are also woken
//! for the other; each subscription checks the change against its own list
//! (`WatchedList`, exact numbers) and sends nothing for a number it does not list. An
//! unbinding makes the woken subscriptions send full state, which is correct even when
//! they were woken by such a collision. A subscription unwatches all its numbers at once
//! when it ends, so two of its own numbers sharing an entry lose nothing. The key is
//! secret, so clients cannot choose numbers that collide.
//!
//! A bucket is sorted by (fingerprint, id) up to `sorted`; new entries go after it,
//! unsorted, into the room left by the last reallocation. When the room is used up the
//! bucket is sorted into a new allocation with room for a sixteenth more: an insert moves
//! no entry (a million subscriptions read back at start insert a hundred million), and
//! the room costs ~3% on average. Buckets are fixed in number: nothing is ever rehashed
//! under the subscription table's lock. At a million subscriptions a bucket holds ~1,500
//! entries (9 KB); removing one moves half of them.

use crate::numbers::E164;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

use super::record::SubId;

/// Buckets: the top 16 bits of a number's hash.
const BUCKET_BITS: u32 = 16;

/// One watch: a number's fingerprint and a subscription id, 6 bytes (align 2). Ordered by
/// fingerprint, then id (kept as high and low halves so that the order is the id's).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
struct Entry {
    print: Print,
    id: [u16; 2],
}

impl Entry {
    fn new(print: Print, id: SubId) -> Entry {
        Entry { print, id: [(id >> 16) as u16, id as u16] }
    }

    fn id(self) -> SubId {
        (SubId::from(self.id[0]) << 16) | SubId::from(self.id[1])
    }
}

/// The 16 bits of a number's hash kept beside its bucket.
type Print = u16;

pub struct PhoneIndex {
    buckets: Box<[Bucket]>,
    hasher: RandomState,
    len: usize,
}

impl Default for PhoneIndex {
    fn default() -> Self {
        let buckets = (0..1usize << BUCKET_BITS).map(|_| Bucket::default()).collect();
        PhoneIndex { buckets, hasher: RandomState::new(), len: 0 }
    }
}

impl PhoneIndex {
    /// The bucket and fingerprint of `n`.
    fn locate(&self, n: E164) -> (usize, Print) {
        let h = self.hasher.hash_one(n.digits());
        ((h >> (64 - BUCKET_BITS)) as usize, (h >> 32) as Print)
    }

    /// Watches held: (number, subscription) pairs, but for collisions.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes held by the entries, beside the fixed bucket table (tests and stats).
    pub fn heap_bytes(&self) -> usize {
        self.buckets.iter().map(|b| b.entries.capacity() * std::mem::size_of::<Entry>()).sum()
    }

    /// Subscription `id` watches `n` (again: no change).
    pub fn watch(&mut self, n: E164, id: SubId) {
        let (b, print) = self.locate(n);
        self.len += usize::from(self.buckets[b].insert(Entry::new(print, id)));
    }

    /// Subscription `id` watches each of `numbers`. With millions of entries every number
    /// lands far from the last in memory: each bucket is read before any is written, so
    /// the processor waits for those cache misses together, not one by one (loading a
    /// million stored subscriptions spent most of its time waiting for them).
    ///
    /// `id` is new: it watches nothing yet, so no entry is looked for before it is added
    /// (a binary search of a cold bucket is several cache misses; it made loading 300,000
    /// stored subscriptions twice as slow). Numbers repeated in `numbers`, or sharing a
    /// fingerprint, make one entry.
    pub fn watch_all(&mut self, numbers: &[E164], id: SubId) {
        let mut located = self.warm(numbers);
        located.sort_unstable();
        located.dedup();
        for (b, print) in located {
            self.buckets[b].push_new(Entry::new(print, id));
            self.len += 1;
        }
    }

    /// Subscription `id` no longer watches any of `numbers` (see `unwatch`), warmed alike.
    pub fn unwatch_all(&mut self, numbers: &[E164], id: SubId) {
        for (b, print) in self.warm(numbers) {
            self.len -= usize::from(self.buckets[b].remove(Entry::new(print, id)));
        }
    }

    /// Where each number goes, after a read of its bucket's first and last entries.
    fn warm(&self, numbers: &[E164]) -> Vec<(usize, Print)> {
        let located: Vec<(usize, Print)> = numbers.iter().map(|n| self.locate(*n)).collect();
        let touched = located.iter().fold(0, |acc, &(b, _)| acc ^ self.buckets[b].peek());
        std::hint::black_box(touched);
        located
    }

    /// Subscription `id` no longer watches `n`, nor any number of the same fingerprint:
    /// call it for every number of a subscription that ends.
    pub fn unwatch(&mut self, n: E164, id: SubId) {
        let (b, print) = self.locate(n);
        self.len -= usize::from(self.buckets[b].remove(Entry::new(print, id)));
    }

    /// The subscriptions watching `n`, in id order, and on a fingerprint collision those
    /// watching the other number too.
    pub fn watchers(&self, n: E164) -> Vec<SubId> {
        let (b, print) = self.locate(n);
        self.buckets[b].watchers(print)
    }
}

/// One bucket: entries sorted up to `sorted`, unsorted after it.
#[derive(Default)]
struct Bucket {
    entries: Vec<Entry>,
    sorted: u32,
}

impl Bucket {
    fn sorted(&self) -> &[Entry] {
        &self.entries[..self.sorted as usize]
    }

    fn unsorted(&self) -> &[Entry] {
        &self.entries[self.sorted as usize..]
    }

    /// A read of the bucket's first and last entries, which brings them into the cache.
    fn peek(&self) -> u16 {
        match (self.entries.first(), self.entries.last()) {
            (Some(a), Some(z)) => a.print ^ z.id[1],
            _ => 0,
        }
    }

    fn contains(&self, e: Entry) -> bool {
        self.sorted().binary_search(&e).is_ok() || self.unsorted().contains(&e)
    }

    /// Adds `e` unless it is there; true when added.
    fn insert(&mut self, e: Entry) -> bool {
        if self.contains(e) {
            return false;
        }
        self.push_new(e);
        true
    }

    /// Adds `e`, known not to be there.
    fn push_new(&mut self, e: Entry) {
        debug_assert!(!self.contains(e), "a new subscription's entry is already in the index");
        if self.entries.len() == self.entries.capacity() {
            self.sort_into_new(self.entries.len() + 1);
        }
        self.entries.push(e);
    }

    /// Removes `e`; true when it was there.
    fn remove(&mut self, e: Entry) -> bool {
        if let Ok(at) = self.sorted().binary_search(&e) {
            self.entries.remove(at);
            self.sorted -= 1;
        } else if let Some(at) = self.unsorted().iter().position(|x| *x == e) {
            self.entries.swap_remove(self.sorted as usize + at);
        } else {
            return false;
        }
        let len = self.entries.len();
        if len == 0 {
            *self = Bucket::default();
        } else if len * 2 < self.entries.capacity() {
            self.sort_into_new(len);
        }
        true
    }

    fn watchers(&self, print: Print) -> Vec<SubId> {
        let sorted = self.sorted();
        let from = sorted.partition_point(|e| e.print < print);
        let mut ids: Vec<SubId> = sorted[from..].iter().take_while(|e| e.print == print).map(|e| e.id()).collect();
        let before = ids.len();
        ids.extend(self.unsorted().iter().filter(|e| e.print == print).map(|e| e.id()));
        if ids.len() > before {
            ids.sort_unstable();
        }
        ids
    }

    /// Moves every entry, sorted, into a new allocation with room for `want` entries and
    /// a sixteenth more (rounded up to the allocator's size class, which would hold the
    /// difference anyway).
    fn sort_into_new(&mut self, want: usize) {
        let unsorted_from = self.sorted as usize;
        self.entries[unsorted_from..].sort_unstable();
        let cap = room_for(want + want / 16);
        let mut merged = Vec::with_capacity(cap);
        let (sorted, unsorted) = self.entries.split_at(unsorted_from);
        let (mut i, mut j) = (0, 0);
        while i < sorted.len() && j < unsorted.len() {
            if sorted[i] <= unsorted[j] {
                merged.push(sorted[i]);
                i += 1;
            } else {
                merged.push(unsorted[j]);
                j += 1;
            }
        }
        merged.extend_from_slice(&sorted[i..]);
        merged.extend_from_slice(&unsorted[j..]);
        self.sorted = merged.len() as u32;
        self.entries = merged;
    }
}

/// Entries for at least `n`, filling the allocator's size class: mimalloc rounds a request
/// up to one of four sizes per power of two, and the rest would be held unused.
fn room_for(n: usize) -> usize {
    let size = std::mem::size_of::<Entry>();
    // SAFETY: `mi_good_size` only computes a size; it touches no memory.
    let good = unsafe { libmimalloc_sys::mi_good_size(n * size) };
    (good / size).max(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeSet, HashMap};

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
        at_once.watch_all(&[number(1), number(1)], 301);
        one_by_one.watch(number(1), 301);
        assert!(same(&at_once, &one_by_one), "a number twice in a list is one entry");
        for id in (1..=300u32).step_by(2) {
            list(id).iter().for_each(|n| one_by_one.unwatch(*n, id));
            at_once.unwatch_all(&list(id), id);
        }
        assert!(same(&at_once, &one_by_one));
    }

    #[test]
    fn fills_and_empties() {
        let mut idx = PhoneIndex::default();
        let n = 100_000u64;
        // Keyed by fingerprint: two of these numbers may share one (about once in 50 runs).
        let mut model: HashMap<(usize, Print), BTreeSet<SubId>> = HashMap::new();
        for i in 0..n {
            let (num, id) = (number(i * 7919), (i / 100) as SubId + 1);
            idx.watch(num, id);
            model.entry(idx.locate(num)).or_default().insert(id);
        }
        assert_eq!(idx.len(), model.values().map(BTreeSet::len).sum::<usize>());
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

    #[test]
    fn a_full_bucket_is_dense_and_a_drained_one_shrinks() {
        // ~1,500 entries a bucket: a million subscriptions of a hundred numbers.
        let mut bucket = Bucket::default();
        let entry = |i: u32| Entry::new((i.wrapping_mul(2_654_435_761) >> 16) as Print, i / 7 + 1);
        for i in 0..1500 {
            assert!(bucket.insert(entry(i)));
        }
        let per_entry = (bucket.entries.capacity() * 6) as f64 / bucket.entries.len() as f64;
        // The room: a sixteenth, and the rest of the allocator's size class (4 a power of two).
        assert!(per_entry < 6.0 * 1.25, "{per_entry} bytes per entry");
        for i in 0..1400 {
            assert!(bucket.remove(entry(i)));
        }
        assert!(bucket.entries.capacity() <= 2 * 100, "shrunk to {}", bucket.entries.capacity());
        assert!(bucket.sorted().windows(2).all(|w| w[0] < w[1]));
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

    #[derive(Debug, Clone)]
    enum BucketOp {
        Insert(Print, SubId),
        Remove(Print, SubId),
    }

    fn bucket_op() -> impl Strategy<Value = BucketOp> {
        // One bucket, few fingerprints and ids: the sorted part, the room after it and
        // their resorting all come into play; inserts outnumber removals, so it grows.
        prop_oneof![
            3 => (0u16..40, 1u32..30).prop_map(|(p, id)| BucketOp::Insert(p, id)),
            2 => (0u16..40, 1u32..30).prop_map(|(p, id)| BucketOp::Remove(p, id)),
        ]
    }

    proptest! {
        #[test]
        fn a_bucket_behaves_like_a_set_of_pairs(ops in proptest::collection::vec(bucket_op(), 0..3000)) {
            let mut bucket = Bucket::default();
            let mut model: BTreeSet<(Print, SubId)> = BTreeSet::new();
            for op in &ops {
                match *op {
                    BucketOp::Insert(p, id) => prop_assert_eq!(bucket.insert(Entry::new(p, id)), model.insert((p, id))),
                    BucketOp::Remove(p, id) => prop_assert_eq!(bucket.remove(Entry::new(p, id)), model.remove(&(p, id))),
                }
                prop_assert_eq!(bucket.entries.len(), model.len());
                prop_assert!(bucket.sorted().windows(2).all(|w| w[0] < w[1]), "sorted part in order");
                prop_assert!(bucket.entries.capacity() <= 2 * bucket.entries.len().max(8), "room bounded");
            }
            for p in 0u16..40 {
                let want: Vec<SubId> = model.range((p, 0)..=(p, SubId::MAX)).map(|&(_, id)| id).collect();
                prop_assert_eq!(bucket.watchers(p), want);
            }
        }

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
                prop_assert_eq!(idx.len(), model.values().map(BTreeSet::len).sum::<usize>());
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
