//! A sorted map of byte keys to byte values, kept in a sled tree as *buckets* of up to
//! [`MAX_ENTRIES`] entries, each bucket one sled value under `prefix + its smallest key`.
//!
//! Why: sled costs several microseconds per key written or read, so one key per binding
//! caps bulk imports near 60,000 bindings/s on our machines. Packing ~64 sorted entries in
//! one value makes a fresh import write a few hundred values per 20,000 bindings.
//!
//! Invariants: buckets are never empty, their entries are sorted and unique, the sled key of
//! a bucket is the prefix plus its first entry's key, and buckets do not overlap, so the
//! bucket that holds key `k` (if any does) is the one with the greatest sled key `<= k`.
//!
//! This module owns the bucket format and how a change set ([`Edit`]) becomes bucket writes.
//! It knows nothing of numbers or URIs; `encoding.rs` gives the keys their meaning.

use super::IndexError;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

/// Most entries in one bucket.
pub(super) const MAX_ENTRIES: usize = 64;
/// Most encoded bytes in one bucket (a larger single entry stands alone).
pub(super) const MAX_BYTES: usize = 4096;
const VERSION: u8 = 2;
/// Version byte + entry count.
const HEADER: usize = 3;

/// A read-only view of one encoded bucket:
/// `[version][count u16][end offset u32 × count][entries]`, each entry
/// `[key length u16][key][value]`; offsets are relative to the start of the entries.
#[derive(Clone, Copy)]
pub(super) struct Bucket<'a> {
    ends: &'a [u8],
    body: &'a [u8],
}

impl<'a> Bucket<'a> {
    /// Reads and checks a bucket from the store: every entry's bounds are verified.
    pub(super) fn parse(buf: &'a [u8]) -> Result<Bucket<'a>, IndexError> {
        let bad = |what: &str| IndexError::Corrupt(format!("bucket of {} bytes: {what}", buf.len()));
        let b = Bucket::header(buf).ok_or_else(|| bad("bad header or entry count"))?;
        let count = b.len();
        let mut start = 0;
        for i in 0..count {
            let end = b.end(i);
            if end < start + 2 || end > b.body.len() || 2 + b.key_len(start) > end - start {
                return Err(bad("bad entry bounds"));
            }
            start = end;
        }
        if start != b.body.len() {
            return Err(bad("trailing bytes"));
        }
        Ok(b)
    }

    /// A bucket already checked by [`Bucket::parse`] or made by [`encode`] (the in-memory
    /// mirror): only the header is read, so a lookup does not walk every entry.
    pub(super) fn trusted(buf: &'a [u8]) -> Result<Bucket<'a>, IndexError> {
        Bucket::header(buf).ok_or_else(|| IndexError::Corrupt(format!("bucket of {} bytes: bad header", buf.len())))
    }

    fn header(buf: &'a [u8]) -> Option<Bucket<'a>> {
        if buf.len() < HEADER || buf[0] != VERSION {
            return None;
        }
        let ends_len = u16::from_be_bytes([buf[1], buf[2]]) as usize * 4;
        if ends_len == 0 || buf.len() < HEADER + ends_len {
            return None;
        }
        Some(Bucket { ends: &buf[HEADER..HEADER + ends_len], body: &buf[HEADER + ends_len..] })
    }

    pub(super) fn len(&self) -> usize {
        self.ends.len() / 4
    }

    fn end(&self, i: usize) -> usize {
        u32::from_be_bytes(self.ends[i * 4..i * 4 + 4].try_into().expect("4 bytes")) as usize
    }

    fn key_len(&self, start: usize) -> usize {
        u16::from_be_bytes([self.body[start], self.body[start + 1]]) as usize
    }

    /// Entry `i` as (key, value).
    pub(super) fn entry(&self, i: usize) -> (&'a [u8], &'a [u8]) {
        let start = if i == 0 { 0 } else { self.end(i - 1) };
        let e = &self.body[start..self.end(i)];
        let kl = u16::from_be_bytes([e[0], e[1]]) as usize;
        (&e[2..2 + kl], &e[2 + kl..])
    }

    /// The value of `key` (binary search).
    pub(super) fn get(&self, key: &[u8]) -> Option<&'a [u8]> {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            let (k, v) = self.entry(mid);
            match k.cmp(key) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(v),
            }
        }
        None
    }

    pub(super) fn iter(self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> {
        (0..self.len()).map(move |i| self.entry(i))
    }

    /// Checks the order of the entries and that the first key is `first`.
    pub(super) fn check(&self, first: &[u8]) -> Result<(), String> {
        if self.entry(0).0 != first {
            return Err("bucket key is not its first entry".into());
        }
        for i in 1..self.len() {
            if self.entry(i - 1).0 >= self.entry(i).0 {
                return Err("bucket entries out of order".into());
            }
        }
        Ok(())
    }
}

/// Bytes entry (`key`, `value`) takes in a bucket.
fn entry_size(key: &[u8], value: &[u8]) -> usize {
    4 + 2 + key.len() + value.len()
}

/// Encodes sorted, unique entries as one bucket.
pub(super) fn encode<'a>(entries: impl ExactSizeIterator<Item = (&'a [u8], &'a [u8])> + Clone) -> Vec<u8> {
    let count = entries.len();
    let size: usize = entries.clone().map(|(k, v)| entry_size(k, v)).sum();
    let mut out = Vec::with_capacity(HEADER + size);
    out.push(VERSION);
    out.extend_from_slice(&(count as u16).to_be_bytes());
    let mut end = 0u32;
    for (k, v) in entries.clone() {
        end += (2 + k.len() + v.len()) as u32;
        out.extend_from_slice(&end.to_be_bytes());
    }
    for (k, v) in entries {
        debug_assert!(k.len() <= usize::from(u16::MAX), "bucket keys are checked shorter (MAX_URI_BYTES)");
        out.extend_from_slice(&(k.len() as u16).to_be_bytes());
        out.extend_from_slice(k);
        out.extend_from_slice(v);
    }
    out
}

/// Where the bucket for a key is: the greatest bucket `<= key`, and the next bucket's key
/// (which bounds the range the first one covers).
pub(super) struct Located {
    /// (key without the prefix, encoded bucket).
    pub(super) bucket: Option<(Vec<u8>, Arc<[u8]>)>,
    pub(super) next: Option<Vec<u8>>,
}

/// Finds buckets: sled range queries, or the in-memory mirror of the forward buckets.
pub(super) trait Locate {
    fn locate(&self, key: &[u8]) -> Result<Located, IndexError>;
}

/// Buckets under `prefix` in a sled tree.
pub(super) struct InTree<'a> {
    pub(super) tree: &'a sled::Tree,
    pub(super) prefix: u8,
}

/// The sled key of bucket key `key` under `prefix`.
fn sled_key(prefix: u8, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + key.len());
    k.push(prefix);
    k.extend_from_slice(key);
    k
}

impl InTree<'_> {
    /// The bucket holding `key`, if `key` is in the map.
    pub(super) fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, IndexError> {
        let Some((_, bytes)) = self.below(&sled_key(self.prefix, key))? else { return Ok(None) };
        Ok(Bucket::parse(&bytes)?.get(key).map(<[u8]>::to_vec))
    }

    /// The bucket with the greatest sled key `<= k` (a key already prefixed).
    fn below(&self, k: &[u8]) -> Result<Option<(sled::IVec, sled::IVec)>, IndexError> {
        Ok(self.tree.range(&[self.prefix][..]..=k).next_back().transpose()?)
    }

    /// Every bucket in key order (not a snapshot).
    pub(super) fn buckets(&self) -> impl Iterator<Item = Result<(sled::IVec, sled::IVec), IndexError>> {
        self.tree.scan_prefix([self.prefix]).map(|r| r.map_err(IndexError::from))
    }
}

impl Locate for InTree<'_> {
    fn locate(&self, key: &[u8]) -> Result<Located, IndexError> {
        let k = sled_key(self.prefix, key);
        let below = self.below(&k)?;
        let end = [self.prefix + 1];
        let next = self
            .tree
            .range::<&[u8], _>((Bound::Excluded(&k[..]), Bound::Excluded(&end[..])))
            .next()
            .transpose()?;
        Ok(Located {
            bucket: below.map(|(k, v)| (k[1..].to_vec(), Arc::from(&v[..]))),
            next: next.map(|(k, _)| k[1..].to_vec()),
        })
    }
}

/// One write to the tree, keys without the prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Write {
    Put(Vec<u8>, Arc<[u8]>),
    Remove(Vec<u8>),
}

/// The range of keys one loaded bucket covers, with its entries as they will be.
struct Area {
    /// Exclusive end: the next bucket's key (None: no bucket after it).
    hi: Option<Vec<u8>>,
    /// The key it is stored under (None: the area before the first bucket, not stored).
    stored: Option<Vec<u8>>,
    entries: BTreeMap<Vec<u8>, Vec<u8>>,
    dirty: bool,
}

/// A change set over one bucketed map: reads see the changes made so far; [`Edit::finish`]
/// turns them into bucket writes (to apply in one sled batch).
#[derive(Default)]
pub(super) struct Edit {
    /// By the start of the area (the stored key, or empty for the area before the first).
    areas: BTreeMap<Vec<u8>, Area>,
}

impl Edit {
    fn area(&mut self, at: &dyn Locate, key: &[u8]) -> Result<&mut Area, IndexError> {
        let found = self
            .areas
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(key)))
            .next_back()
            .filter(|(_, a)| a.hi.as_deref().is_none_or(|hi| key < hi))
            .map(|(start, _)| start.clone());
        let start = match found {
            Some(s) => s,
            None => {
                let located = at.locate(key)?;
                let (start, area) = match located.bucket {
                    Some((stored, bytes)) => {
                        let b = Bucket::parse(&bytes)?;
                        let entries = b.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
                        (stored.clone(), Area { hi: located.next, stored: Some(stored), entries, dirty: false })
                    }
                    None => (Vec::new(), Area { hi: located.next, stored: None, entries: BTreeMap::new(), dirty: false }),
                };
                self.areas.insert(start.clone(), area);
                start
            }
        };
        Ok(self.areas.get_mut(&start).expect("just found or inserted"))
    }

    /// The value of `key`, with this edit's changes.
    pub(super) fn get(&mut self, at: &dyn Locate, key: &[u8]) -> Result<Option<&Vec<u8>>, IndexError> {
        Ok(self.area(at, key)?.entries.get(key))
    }

    /// Sets (`Some`) or removes (`None`) `key`.
    pub(super) fn set(&mut self, at: &dyn Locate, key: &[u8], value: Option<Vec<u8>>) -> Result<(), IndexError> {
        let area = self.area(at, key)?;
        let changed = match value {
            Some(v) => area.entries.insert(key.to_vec(), v.clone()).as_ref() != Some(&v),
            None => area.entries.remove(key).is_some(),
        };
        area.dirty |= changed;
        Ok(())
    }

    /// The writes that make the tree hold this edit's state.
    pub(super) fn finish(self) -> Vec<Write> {
        let mut writes = Vec::new();
        for area in self.areas.into_values().filter(|a| a.dirty) {
            let pieces = split(&area.entries);
            let first = pieces.first().map(|p| p[0].0.clone());
            if let Some(stored) = area.stored {
                if first.as_ref() != Some(&stored) {
                    writes.push(Write::Remove(stored));
                }
            }
            for p in pieces {
                let bytes = encode(p.iter().map(|(k, v)| (k.as_slice(), v.as_slice())));
                writes.push(Write::Put(p[0].0.clone(), bytes.into()));
            }
        }
        writes
    }
}

/// Cuts sorted entries into buckets of even size within the limits.
fn split(entries: &BTreeMap<Vec<u8>, Vec<u8>>) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
    let n = entries.len();
    if n == 0 {
        return Vec::new();
    }
    let bytes: usize = entries.iter().map(|(k, v)| entry_size(k, v)).sum();
    let pieces = n.div_ceil(MAX_ENTRIES).max(bytes.div_ceil(MAX_BYTES));
    let target = n.div_ceil(pieces);
    let mut out: Vec<Vec<(Vec<u8>, Vec<u8>)>> = Vec::with_capacity(pieces + 1);
    let mut cur = Vec::with_capacity(target);
    let mut cur_bytes = 0;
    for (k, v) in entries {
        let size = entry_size(k, v);
        if !cur.is_empty() && (cur.len() >= target || cur_bytes + size > MAX_BYTES) {
            out.push(std::mem::take(&mut cur));
            cur_bytes = 0;
        }
        cur_bytes += size;
        cur.push((k.clone(), v.clone()));
    }
    out.push(cur);
    out
}

/// Adds `writes` (made under `prefix`) to a sled batch.
pub(super) fn add_to_batch(batch: &mut sled::Batch, prefix: u8, writes: &[Write]) {
    for w in writes {
        match w {
            Write::Put(k, v) => batch.insert(sled_key(prefix, k), &v[..]),
            Write::Remove(k) => batch.remove(sled_key(prefix, k)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A tree-less locator over a BTreeMap of buckets, for testing edits.
    struct Model(BTreeMap<Vec<u8>, Arc<[u8]>>);

    impl Locate for Model {
        fn locate(&self, key: &[u8]) -> Result<Located, IndexError> {
            let bucket = self.0.range::<[u8], _>((Bound::Unbounded, Bound::Included(key))).next_back().map(|(k, v)| (k.clone(), v.clone()));
            let next = self
                .0
                .range::<[u8], _>((Bound::Excluded(key), Bound::Unbounded))
                .next()
                .map(|(k, _)| k.clone());
            Ok(Located { bucket, next })
        }
    }

    impl Model {
        fn apply(&mut self, writes: Vec<Write>) {
            for w in writes {
                match w {
                    Write::Put(k, v) => {
                        self.0.insert(k, v);
                    }
                    Write::Remove(k) => {
                        self.0.remove(&k);
                    }
                }
            }
        }

        fn contents(&self) -> BTreeMap<Vec<u8>, Vec<u8>> {
            let mut all = BTreeMap::new();
            for (k, bytes) in &self.0 {
                let b = Bucket::parse(bytes).unwrap();
                b.check(k).unwrap();
                assert!(b.len() <= MAX_ENTRIES);
                for (ek, ev) in b.iter() {
                    assert!(all.insert(ek.to_vec(), ev.to_vec()).is_none(), "buckets overlap");
                }
            }
            all
        }
    }

    #[test]
    fn a_bucket_round_trips_and_finds_by_binary_search() {
        let entries: Vec<(Vec<u8>, Vec<u8>)> = (0u8..10).map(|i| (vec![i * 2], vec![i; i as usize])).collect();
        let bytes = encode(entries.iter().map(|(k, v)| (k.as_slice(), v.as_slice())));
        let b = Bucket::parse(&bytes).unwrap();
        assert_eq!(b.len(), 10);
        assert_eq!(b.get(&[6]), Some(&[3u8, 3, 3][..]));
        assert_eq!(b.get(&[7]), None);
        assert_eq!(b.get(&[0]), Some(&[][..]));
        assert!(Bucket::parse(&bytes[..bytes.len() - 1]).is_err());
        assert!(Bucket::parse(&[VERSION, 0, 0]).is_err());
    }

    #[test]
    fn many_sorted_inserts_fill_buckets() {
        let mut m = Model(BTreeMap::new());
        let mut e = Edit::default();
        for i in 0u32..6400 {
            e.set(&m, &i.to_be_bytes(), Some(vec![1])).unwrap();
        }
        m.apply(e.finish());
        assert_eq!(m.0.len(), 100);
        assert_eq!(m.contents().len(), 6400);
    }

    proptest! {
        #[test]
        fn edits_agree_with_a_plain_map(
            ops in proptest::collection::vec(
                proptest::collection::vec((0u16..600, proptest::option::of(proptest::collection::vec(any::<u8>(), 0..120))), 1..80),
                1..12)
        ) {
            let mut m = Model(BTreeMap::new());
            let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
            for batch in ops {
                let mut e = Edit::default();
                for (k, v) in batch {
                    let key = k.to_be_bytes().to_vec();
                    prop_assert_eq!(e.get(&m, &key).unwrap().cloned(), model.get(&key).cloned());
                    e.set(&m, &key, v.clone()).unwrap();
                    match v {
                        Some(v) => { model.insert(key, v); }
                        None => { model.remove(&key); }
                    }
                }
                m.apply(e.finish());
                prop_assert_eq!(m.contents(), model.clone());
            }
        }
    }
}
