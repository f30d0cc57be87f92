//! The reverse index from watched numbers to the subscriptions watching them, packed: a
//! million subscriptions of a hundred numbers are a hundred million entries, so each is
//! 6 bytes (a 16-bit fingerprint of the number, a 4-byte subscription id) in a sorted
//! array with less than a chunk of room, not a hash table's slot at a load of 0.7-0.9 nor a
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
//! unsorted, and once they outnumber an eighth of the sorted ones the bucket is sorted
//! again: an insert moves no entry (a million subscriptions read back at start insert a
//! hundred million). A bucket's entries sit in chunks of one size (192 bytes), so a bucket
//! that grows takes one more chunk and frees none, and the allocator's pages of chunks stay
//! full. Buckets are fixed in number: nothing is ever rehashed under the subscription
//! table's lock. At a million subscriptions a bucket holds ~1,500 entries (47 chunks);
//! removing one moves half of them.

use crate::numbers::E164;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

use super::record::SubId;

/// Buckets: the top 16 bits of a number's hash.
const BUCKET_BITS: u32 = 16;
const BUCKETS: usize = 1 << BUCKET_BITS;

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

/// An entry and its bucket as one integer, ordered by bucket, fingerprint, then id.
fn key(bucket: usize, print: Print, id: SubId) -> u64 {
    (bucket as u64) << 48 | u64::from(print) << 32 | u64::from(id)
}

fn unkey(k: u64) -> (usize, Entry) {
    ((k >> 48) as usize, Entry::new((k >> 32) as Print, k as SubId))
}

pub struct PhoneIndex {
    buckets: Box<[Bucket]>,
    locator: Locator,
    len: usize,
}

/// Where a number goes: its bucket and fingerprint, by a keyed hash. A copy of the
/// index's puts many lists in bucket order away from the subscription table's lock
/// (`order`, then `PhoneIndex::watch_ordered`).
#[derive(Clone, Default)]
pub struct Locator {
    hasher: RandomState,
}

/// New subscriptions' entries in bucket order, from the index's own `Locator`.
pub struct Ordered(Vec<u64>);

impl Locator {
    fn locate(&self, n: E164) -> (usize, Print) {
        let h = self.hasher.hash_one(n.digits());
        ((h >> (64 - BUCKET_BITS)) as usize, (h >> 32) as Print)
    }

    /// The entries of new subscriptions' lists, put in bucket order, so that
    /// `PhoneIndex::watch_ordered` visits each bucket once for the lot, not once per
    /// number: ten thousand lists put ~15 entries in a bucket for one cache miss (a
    /// restart's load). A number repeated in a list, or sharing a fingerprint, makes one
    /// entry; each id comes once.
    pub fn order<'a>(&self, lists: impl IntoIterator<Item = (SubId, &'a [E164])>) -> Ordered {
        let mut keys = Vec::new();
        for (id, numbers) in lists {
            let from = keys.len();
            keys.extend(numbers.iter().map(|n| {
                let (b, print) = self.locate(*n);
                key(b, print, id)
            }));
            keys[from..].sort_unstable();
        }
        // A list's repeats are next to each other now; two lists' keys differ by their ids.
        keys.dedup();
        if keys.len() < BUCKETS {
            keys.sort_unstable();
            return Ordered(keys);
        }
        Ordered(by_bucket(keys))
    }
}

/// `keys` in bucket order, by a counting sort (each bucket's in the order given).
fn by_bucket(keys: Vec<u64>) -> Vec<u64> {
    let mut next = vec![0u32; BUCKETS];
    keys.iter().for_each(|k| next[unkey(*k).0] += 1);
    let mut sum = 0;
    for n in next.iter_mut() {
        (sum, *n) = (sum + *n, sum);
    }
    let mut in_order = vec![0u64; keys.len()];
    for k in keys {
        let b = unkey(k).0;
        in_order[next[b] as usize] = k;
        next[b] += 1;
    }
    in_order
}

impl Default for PhoneIndex {
    fn default() -> Self {
        let buckets = (0..BUCKETS).map(|_| Bucket::default()).collect();
        PhoneIndex { buckets, locator: Locator::default(), len: 0 }
    }
}

impl PhoneIndex {
    /// The bucket and fingerprint of `n`.
    fn locate(&self, n: E164) -> (usize, Print) {
        self.locator.locate(n)
    }

    /// The index's locator, to `order` lists away from its owner's lock.
    pub fn locator(&self) -> Locator {
        self.locator.clone()
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
        self.buckets.iter().map(Bucket::heap_bytes).sum()
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
        let keys = self.warm(numbers, id);
        self.push_in_order(keys);
    }

    /// New subscriptions watch their numbers, put in bucket order by this index's
    /// `Locator::order`.
    pub fn watch_ordered(&mut self, ordered: Ordered) {
        self.push_in_order(ordered.0);
    }

    /// Adds the entries `keys` name (see `key`), none of them in the index yet, in the
    /// order given.
    fn push_in_order(&mut self, keys: Vec<u64>) {
        self.len += keys.len();
        crate::memory::long_lived(|| {
            for k in keys {
                let (b, e) = unkey(k);
                self.buckets[b].push_new(e);
            }
        });
    }

    /// Subscription `id` no longer watches any of `numbers` (see `unwatch`). Each entry is
    /// looked for in every bucket at once (`find_all`), so that the cache misses of a
    /// hundred searches overlap instead of queueing: removing a list from an index of
    /// 100,000 was ~80 µs of waiting, a quarter of a list cycle's CPU.
    pub fn unwatch_all(&mut self, numbers: &[E164], id: SubId) {
        let Ordered(keys) = self.locator.order([(id, numbers)]);
        let places = self.find_all(&keys);
        let bucket_of = |i: usize| keys.get(i).map(|k| unkey(*k).0);
        for (i, place) in places.into_iter().enumerate() {
            let (b, e) = unkey(keys[i]);
            // Places in a bucket change as entries leave it: a bucket met twice is searched again.
            let shared = (i > 0 && bucket_of(i - 1) == Some(b)) || bucket_of(i + 1) == Some(b);
            let bucket = &mut self.buckets[b];
            if let Some(place) = if shared { bucket.place(e) } else { place } {
                bucket.remove_at(place);
                self.len -= 1;
            }
        }
    }

    /// Where each entry `keys` name is, searched in step: each round asks for the cache
    /// lines of every search's next probe before reading any of them.
    fn find_all(&self, keys: &[u64]) -> Vec<Option<Place>> {
        let buckets = self.prefetched(keys, Bucket::prefetch_unsorted);
        let mut places: Vec<Option<Place>> = buckets.iter().map(|(b, e)| b.place_unsorted(*e)).collect();
        let mut ranges: Vec<(usize, usize)> = buckets.iter().zip(&places).map(|((b, _), p)| (0, if p.is_some() { 0 } else { b.sorted as usize })).collect();
        loop {
            let mut searching = false;
            for ((b, _), &(lo, hi)) in buckets.iter().zip(&ranges).filter(|(_, (lo, hi))| lo < hi) {
                prefetch(b.entry_ptr(lo + (hi - lo) / 2));
                searching = true;
            }
            if !searching {
                break;
            }
            for ((b, e), (lo, hi)) in buckets.iter().zip(ranges.iter_mut()).filter(|(_, (lo, hi))| lo < hi) {
                let mid = *lo + (*hi - *lo) / 2;
                if b.get(mid) < *e {
                    *lo = mid + 1;
                } else {
                    *hi = mid;
                }
            }
        }
        for (((b, e), (at, _)), place) in buckets.iter().zip(ranges).zip(places.iter_mut()) {
            if place.is_none() {
                *place = b.sorted_at(at, *e).map(Place::Sorted);
            }
        }
        places
    }

    /// The buckets and entries `keys` name, with the cache lines that are read next asked
    /// for: every bucket's, then every chunk list's, then what `then` asks of each bucket,
    /// each pass before the next reads what the last asked for.
    fn prefetched(&self, keys: &[u64], then: fn(&Bucket)) -> Vec<(&Bucket, Entry)> {
        let buckets: Vec<(&Bucket, Entry)> = keys.iter().map(|k| unkey(*k)).map(|(b, e)| (&self.buckets[b], e)).collect();
        buckets.iter().for_each(|(b, _)| prefetch(*b));
        buckets.iter().for_each(|(b, _)| prefetch(b.chunks.as_ptr()));
        buckets.iter().for_each(|(b, _)| then(b));
        buckets
    }

    /// The entries of `id` watching `numbers` (see `Locator::order`), with the cache lines
    /// their pushes write asked for (`prefetched`).
    fn warm(&self, numbers: &[E164], id: SubId) -> Vec<u64> {
        let Ordered(keys) = self.locator.order([(id, numbers)]);
        self.prefetched(&keys, Bucket::prefetch_end);
        keys
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

/// Asks the processor for `p`'s cache line without waiting for it (a hint: nothing is read).
#[inline(always)]
fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults and changes nothing, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch(p.cast::<i8>(), std::arch::x86_64::_MM_HINT_T0)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Where an entry is in its bucket.
#[derive(Clone, Copy, Debug)]
enum Place {
    Sorted(usize),
    Unsorted(usize),
}

/// `a` and `b`, both sorted, into `out`, sorted.
fn merge(a: &[Entry], b: &[Entry], out: &mut Vec<Entry>) {
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if a[i] <= b[j] {
            out.push(a[i]);
            i += 1;
        } else {
            out.push(b[j]);
            j += 1;
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
}

/// Entries in a chunk: 192 bytes, one of the allocator's size classes.
const CHUNK: usize = 32;

/// One bucket: entries sorted up to `sorted`, unsorted after it, in chunks of the same
/// size. A bucket grows a chunk at a time and never moves to a bigger allocation: buckets
/// that grew through every size class left a few blocks behind in each class's pages,
/// which then could not go back to the kernel (~260 bytes a subscription at 100,000).
#[derive(Default)]
struct Bucket {
    // Boxed on purpose: each chunk is its own allocation of the one size class.
    #[allow(clippy::vec_box)]
    chunks: Vec<Box<[Entry; CHUNK]>>,
    len: u32,
    sorted: u32,
}

impl Bucket {
    fn len(&self) -> usize {
        self.len as usize
    }

    fn get(&self, at: usize) -> Entry {
        self.chunks[at / CHUNK][at % CHUNK]
    }

    fn set(&mut self, at: usize, e: Entry) {
        self.chunks[at / CHUNK][at % CHUNK] = e;
    }

    /// The entries from `from` to `to`, chunk by chunk.
    fn slices(&self, from: usize, to: usize) -> impl Iterator<Item = &[Entry]> + '_ {
        let mut at = from;
        std::iter::from_fn(move || {
            let (chunk, first) = (at / CHUNK, at % CHUNK);
            let n = (CHUNK - first).min(to.saturating_sub(at));
            at += n;
            (n > 0).then(|| &self.chunks[chunk][first..first + n])
        })
    }

    fn entries(&self, from: usize, to: usize) -> impl Iterator<Item = Entry> + '_ {
        self.slices(from, to).flatten().copied()
    }

    fn unsorted(&self) -> impl Iterator<Item = Entry> + '_ {
        self.entries(self.sorted as usize, self.len())
    }

    /// The first sorted entry for which `before` is false (the sorted part is ordered).
    fn partition_point(&self, before: impl Fn(Entry) -> bool) -> usize {
        let (mut lo, mut hi) = (0, self.sorted as usize);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if before(self.get(mid)) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// Where `e` is in the sorted part.
    fn find_sorted(&self, e: Entry) -> Option<usize> {
        self.sorted_at(self.partition_point(|x| x < e), e)
    }

    /// `at` when the sorted part holds `e` there (`at`: where a search for `e` ended).
    fn sorted_at(&self, at: usize, e: Entry) -> Option<usize> {
        (at < self.sorted as usize && self.get(at) == e).then_some(at)
    }

    fn contains(&self, e: Entry) -> bool {
        self.place(e).is_some()
    }

    /// Adds `e` unless it is there; true when added.
    fn insert(&mut self, e: Entry) -> bool {
        if self.contains(e) {
            return false;
        }
        self.push_new(e);
        true
    }

    /// Adds `e`, known not to be there. Once the unsorted part outgrows an eighth of the
    /// sorted one, or a chunk (lookups read it all), the bucket is sorted again.
    fn push_new(&mut self, e: Entry) {
        let at = self.len();
        if at == self.chunks.len() * CHUNK {
            self.chunks.push(Box::new([e; CHUNK]));
        }
        self.set(at, e);
        self.len += 1;
        if self.len - self.sorted > (self.sorted / 8).max(CHUNK as u32) {
            self.sort();
        }
    }

    /// Where `e` is: first in the unsorted tail (at most an eighth of the bucket, or a
    /// chunk, and where a subscription's entries are until the next sort), then in the
    /// sorted part.
    fn place(&self, e: Entry) -> Option<Place> {
        self.place_unsorted(e).or_else(|| self.find_sorted(e).map(Place::Sorted))
    }

    fn place_unsorted(&self, e: Entry) -> Option<Place> {
        self.unsorted().position(|x| x == e).map(|at| Place::Unsorted(self.sorted as usize + at))
    }

    /// Removes `e`; true when it was there.
    fn remove(&mut self, e: Entry) -> bool {
        self.place(e).map(|at| self.remove_at(at)).is_some()
    }

    /// Removes the entry at `place` (from `place`, with nothing changed since).
    fn remove_at(&mut self, place: Place) {
        match place {
            Place::Sorted(at) => {
                self.shift_out(at);
                self.sorted -= 1;
            }
            Place::Unsorted(at) => self.set(at, self.get(self.len() - 1)),
        }
        self.len -= 1;
        self.release_spare();
    }

    /// The address of entry `at` (a place of an allocated chunk), for `prefetch`.
    fn entry_ptr(&self, at: usize) -> *const Entry {
        &self.chunks[at / CHUNK][at % CHUNK]
    }

    /// The lines of the last entry and of the next free place, where a push writes.
    fn prefetch_end(&self) {
        let room = self.chunks.len() * CHUNK;
        self.len().checked_sub(1).into_iter().chain(Some(self.len()).filter(|at| *at < room)).for_each(|at| prefetch(self.entry_ptr(at)));
    }

    /// Every cache line of the unsorted tail (ten entries a line and more).
    fn prefetch_unsorted(&self) {
        (self.sorted as usize..self.len()).step_by(8).chain(self.len().checked_sub(1)).for_each(|at| prefetch(self.entry_ptr(at)));
    }

    /// Moves every entry after `at` one place down (the last place is then spare).
    fn shift_out(&mut self, at: usize) {
        let last = self.len() - 1;
        let (mut chunk, mut from) = (at / CHUNK, at % CHUNK);
        while chunk < last / CHUNK {
            self.chunks[chunk].copy_within(from + 1.., from);
            self.chunks[chunk][CHUNK - 1] = self.chunks[chunk + 1][0];
            (chunk, from) = (chunk + 1, 0);
        }
        self.chunks[chunk].copy_within(from + 1..=last % CHUNK, from);
    }

    /// Frees a chunk no entry uses, and the chunk list's room once mostly unused.
    fn release_spare(&mut self) {
        if self.len == 0 {
            *self = Bucket::default();
            return;
        }
        if self.chunks.len() * CHUNK >= self.len() + CHUNK {
            self.chunks.pop();
        }
        if self.chunks.capacity() > 2 * self.chunks.len() + 2 {
            self.chunks.shrink_to_fit();
        }
    }

    fn watchers(&self, print: Print) -> Vec<SubId> {
        let from = self.partition_point(|e| e.print < print);
        let sorted = self.entries(from, self.sorted as usize).take_while(|e| e.print == print);
        let mut ids: Vec<SubId> = sorted.map(Entry::id).collect();
        let before = ids.len();
        ids.extend(self.unsorted().filter(|e| e.print == print).map(Entry::id));
        if ids.len() > before {
            ids.sort_unstable();
        }
        ids
    }

    /// Sorts the unsorted part into the sorted one, through copies of the bucket (the
    /// thread's scratch space: a bucket at a million subscriptions is ~9 KB).
    fn sort(&mut self) {
        thread_local! {
            static SCRATCH: std::cell::RefCell<(Vec<Entry>, Vec<Entry>)> = const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
        }
        SCRATCH.with_borrow_mut(|(all, merged)| {
            all.clear();
            self.slices(0, self.len()).for_each(|s| all.extend_from_slice(s));
            let (sorted, unsorted) = all.split_at_mut(self.sorted as usize);
            unsorted.sort_unstable();
            merged.clear();
            merge(sorted, unsorted, merged);
            for (chunk, part) in self.chunks.iter_mut().zip(merged.chunks(CHUNK)) {
                chunk[..part.len()].copy_from_slice(part);
            }
        });
        self.sorted = self.len;
    }

    /// Bytes held: the chunks and the list of them.
    fn heap_bytes(&self) -> usize {
        self.chunks.len() * std::mem::size_of::<[Entry; CHUNK]>() + self.chunks.capacity() * std::mem::size_of::<usize>()
    }
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
        let (mut one_by_one, mut at_once, mut many) = (PhoneIndex::default(), PhoneIndex::default(), PhoneIndex::default());
        at_once.locator = one_by_one.locator();
        many.locator = one_by_one.locator();
        let list = |id: u32| -> Vec<E164> { (0..100).map(|e| number(u64::from(id * 37 + e * 11) % 5000)).collect() };
        let same = |a: &PhoneIndex, b: &PhoneIndex| (0..5000).all(|k| a.watchers(number(k)) == b.watchers(number(k))) && a.len() == b.len();
        for id in 1..=300u32 {
            list(id).iter().for_each(|n| one_by_one.watch(*n, id));
            at_once.watch_all(&list(id), id);
        }
        assert!(same(&at_once, &one_by_one));
        let lists: Vec<(SubId, Vec<E164>)> = (1..=300u32).map(|id| (id, list(id))).collect();
        for part in [&lists[..150], &lists[150..]] {
            many.watch_ordered(many.locator().order(part.iter().map(|(id, l)| (*id, l.as_slice()))));
        }
        assert!(same(&many, &one_by_one), "many lists at once");
        // Enough entries for the counting sort (more than one per bucket on average).
        let (mut big_each, mut big_many) = (PhoneIndex::default(), PhoneIndex::default());
        big_many.locator = big_each.locator();
        let lists: Vec<(SubId, Vec<E164>)> = (1..=1000u32).map(|id| (id, list(id))).collect();
        lists.iter().for_each(|(id, l)| big_each.watch_all(l, *id));
        big_many.watch_ordered(big_many.locator().order(lists.iter().map(|(id, l)| (*id, l.as_slice()))));
        assert!(same(&big_many, &big_each), "a thousand lists at once");
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

    fn in_order(bucket: &Bucket) -> bool {
        let sorted: Vec<Entry> = bucket.entries(0, bucket.sorted as usize).collect();
        sorted.windows(2).all(|w| w[0] < w[1])
    }

    #[test]
    fn a_full_bucket_is_dense_and_a_drained_one_shrinks() {
        // ~1,500 entries a bucket: a million subscriptions of a hundred numbers.
        let mut bucket = Bucket::default();
        let entry = |i: u32| Entry::new((i.wrapping_mul(2_654_435_761) >> 16) as Print, i / 7 + 1);
        for i in 0..1500 {
            assert!(bucket.insert(entry(i)));
        }
        let per_entry = bucket.heap_bytes() as f64 / bucket.len() as f64;
        // The room: the last chunk's, and the list of chunks.
        assert!(per_entry < 6.5, "{per_entry} bytes per entry");
        for i in 0..1400 {
            assert!(bucket.remove(entry(i)));
        }
        assert!(bucket.heap_bytes() <= 5 * 192 + 10 * 8, "shrunk to {} bytes", bucket.heap_bytes());
        assert!(in_order(&bucket));
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
                prop_assert_eq!(bucket.len(), model.len());
                prop_assert!(in_order(&bucket), "sorted part in order");
                prop_assert!(bucket.chunks.len() * CHUNK < bucket.len() + CHUNK, "one chunk at most partly used");
                prop_assert!(bucket.chunks.capacity() <= 2 * bucket.chunks.len() + 2, "chunk list bounded");
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
