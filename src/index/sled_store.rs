//! The sled implementation of [`BindingStore`]: one sled tree, `bindings`, holding the
//! forward and reverse maps as packed buckets (`packed.rs`, laid out as in `encoding.rs`;
//! the design is in `docs/bindings.md`), with the forward buckets mirrored in memory
//! (`mirror.rs`) and a filter of bound numbers (`filter.rs`) in front of the mirror.
//!
//! Both directions live in one tree so that every change (one bind, one import chunk) is
//! one `apply_batch`: atomic on disk, including after a crash. Every write is serialised by
//! a process-wide writer lock, flushed before it is acknowledged, and only then published on
//! the change feed, in commit order (one change is built by `writer.rs`). Stores written
//! in layout 1 (one key per binding) are migrated at open (`migrate.rs`). With those two
//! and `packed.rs` (bucket range queries and batches), the only files of the index that
//! talk to sled; it must not make URIs canonical (the `Index` handle does) nor parse input.

use super::encoding::{decode_number, decode_numbers, decode_value, key_u64, value_uri, FWD, META_COUNT, OLD_NUM, REV};
use super::filter::{Filter, FilterState};
use super::mirror::Forward;
use super::writer::Writer;
use super::packed::{Bucket, InTree};
use super::{BindOutcome, Binding, Change, ChangeFeed, ChangeReceiver, IndexError, OpenOptions, Source, Stats};
use crate::clock::unix_now;
use crate::numbers::E164;
use crate::storage::bindings::{BindingStore, Bindings, ChunkCounts};
use crate::storage::StorageError;
use parking_lot::{Mutex, RwLock};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// sled's page cache: lookups are answered from the in-memory mirror of the forward buckets,
/// so sled's cache only serves writes and reverse lookups.
const SLED_CACHE_BYTES: u64 = 256 << 20;

impl From<sled::Error> for IndexError {
    fn from(e: sled::Error) -> IndexError {
        IndexError::Storage(StorageError::new(e))
    }
}

/// The bindings in sled. Send + Sync; shared by the `Index` handles through an `Arc`.
pub(super) struct SledBindings {
    pub(super) db: sled::Db,
    pub(super) tree: sled::Tree,
    /// Serialises writers, so that reads done before a write are still true when it
    /// commits, counts stay exact and events go out in commit order.
    write: Mutex<()>,
    pub(super) count: AtomicU64,
    /// The forward buckets, as in sled. Changed only by writers, under `write`.
    pub(super) forward: RwLock<Forward>,
    /// Bound numbers (and some formerly bound): lets `resolve`/`lookup` answer most numbers
    /// that are not users with one cache miss. Built in the background (at open, and larger
    /// when outgrown); until the first build completes, every lookup reads the mirror.
    filter: Arc<RwLock<FilterState>>,
    /// Tells the filter builder to stop (the index is being closed).
    stop: Arc<AtomicBool>,
    builder: Mutex<Option<std::thread::JoinHandle<()>>>,
    feed: ChangeFeed,
    path: PathBuf,
}

impl Drop for SledBindings {
    fn drop(&mut self) {
        // Stop and join the filter builder so that sled is really closed when the last
        // handle goes (the builder holds a tree handle).
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.builder.lock().take() {
            let _ = h.join();
        }
        let _ = self.db.flush();
    }
}

impl SledBindings {
    /// Starts building a filter for `capacity` numbers in the background. Called with the
    /// writer lock held (or before any writer exists): writes from now on add their numbers
    /// to the new filter themselves, the builder adds what the store already holds.
    pub(super) fn start_filter_build(&self, capacity: u64) {
        let f = Arc::new(Filter::with_capacity(capacity));
        self.filter.write().building = Some(f.clone());
        let tree = self.tree.clone();
        let state = self.filter.clone();
        let stop = self.stop.clone();
        let spawned = std::thread::Builder::new().name("index-filter".into()).spawn(move || {
            for r in (InTree { tree: &tree, prefix: FWD }).buckets() {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let added = r.and_then(|(_, v)| {
                    for (k, _) in Bucket::parse(&v)?.iter() {
                        f.insert(decode_number(k)?);
                    }
                    Ok(())
                });
                if let Err(e) = added {
                    tracing::warn!("index filter build failed, lookups go to the mirror: {e}");
                    state.write().building = None;
                    return;
                }
            }
            let mut st = state.write();
            st.active = Some(f);
            st.building = None;
        });
        match spawned {
            Ok(h) => {
                if let Some(old) = self.builder.lock().replace(h) {
                    let _ = old.join(); // finished: a build starts only when none runs
                }
            }
            Err(e) => {
                tracing::warn!("cannot start the index filter builder: {e}");
                self.filter.write().building = None;
            }
        }
    }

    /// Adds numbers about to be bound to the filters (writer lock held); starts a larger
    /// build first if they would overfill the active one.
    fn filters_for(&self, adding: u64) -> (Option<Arc<Filter>>, Option<Arc<Filter>>) {
        let wanted = self.count.load(Ordering::Relaxed) + adding;
        let grow = {
            let st = self.filter.read();
            st.building.is_none() && st.active.as_ref().is_some_and(|f| wanted > f.capacity())
        };
        if grow {
            self.start_filter_build(wanted * 4);
        }
        let st = self.filter.read();
        (st.active.clone(), st.building.clone())
    }

    pub(super) fn add_to_filters(&self, numbers: impl Iterator<Item = E164>, adding: u64) {
        let (active, building) = self.filters_for(adding);
        for n in numbers {
            for f in active.iter().chain(building.iter()) {
                f.insert(n);
            }
        }
    }

    #[inline]
    fn may_contain(&self, n: E164) -> bool {
        match &self.filter.read().active {
            Some(f) => f.may_contain(n),
            None => true,
        }
    }

    /// Reads the forward buckets into the mirror.
    fn load_mirror(&self) -> Result<(), IndexError> {
        let mut map = BTreeMap::new();
        for r in (InTree { tree: &self.tree, prefix: FWD }).buckets() {
            let (k, v) = r?;
            let start = key_u64(&k[1..]).ok_or_else(|| IndexError::Corrupt("forward bucket key".into()))?;
            Bucket::parse(&v)?;
            map.insert(start, Arc::from(&v[..]));
        }
        self.forward.write().0 = map;
        Ok(())
    }
}

impl SledBindings {
    /// Opens (creating if needed) the store in `dir`. Fails with [`IndexError::Locked`] when
    /// another process has it open.
    pub(super) fn open(dir: &Path, options: &OpenOptions) -> Result<SledBindings, IndexError> {
        std::fs::create_dir_all(dir)?;
        // (waits a moment for a handle just dropped: `storage::sled::open`)
        let config = sled::Config::new().path(dir).mode(sled::Mode::HighThroughput).cache_capacity(SLED_CACHE_BYTES);
        let db = match crate::storage::sled::open(&config) {
            Ok(db) => db,
            Err(sled::Error::Io(ref io)) if crate::storage::sled::is_lock_error(io) => return Err(IndexError::Locked { path: dir.to_path_buf() }),
            Err(other) => return Err(other.into()),
        };
        let tree = db.open_tree("bindings")?;
        let store = SledBindings {
            db,
            tree,
            write: Mutex::new(()),
            count: AtomicU64::new(0),
            forward: RwLock::new(Forward::default()),
            filter: Arc::new(RwLock::new(FilterState::default())),
            stop: Arc::new(AtomicBool::new(false)),
            builder: Mutex::new(None),
            feed: ChangeFeed::default(),
            path: dir.to_path_buf(),
        };
        let inner = &store;
        inner.load_mirror()?;
        let count = match inner.tree.get(META_COUNT)? {
            Some(v) if v.len() == 8 => u64::from_be_bytes(v.as_ref().try_into().expect("8 bytes")),
            _ => {
                // First open (or a store from before the counter): count once.
                let c = inner.tree.scan_prefix([OLD_NUM]).keys().count() as u64 + store.count_forward()?;
                inner.tree.insert(META_COUNT, &c.to_be_bytes())?;
                inner.db.flush()?;
                c
            }
        };
        inner.count.store(count, Ordering::Relaxed);
        inner.migrate_layout_1()?;
        inner.start_filter_build((count * 2).max(options.filter_capacity));
        Ok(store)
    }

    fn count_forward(&self) -> Result<u64, IndexError> {
        let fwd = self.forward.read();
        fwd.0.values().try_fold(0u64, |acc, b| Ok(acc + Bucket::parse(b)?.len() as u64))
    }
}

impl BindingStore for SledBindings {
    /// Returns once the change is durable, after publishing it.
    fn bind(&self, n: E164, uri: &str, source: Source) -> Result<BindOutcome, IndexError> {
        let _w = self.write.lock();
        let count = self.count.load(Ordering::Relaxed);
        self.add_to_filters(std::iter::once(n), 1);
        let mut w = Writer::new(self);
        let outcome = w.bind(n, uri, unix_now(), source)?;
        if outcome == BindOutcome::Unchanged {
            return Ok(outcome);
        }
        let count = if outcome == BindOutcome::New { count + 1 } else { count };
        w.commit(count, |_| {})?;
        self.count.store(count, Ordering::Relaxed);
        let old = match &outcome {
            BindOutcome::Rebound { old_uri } => Some(old_uri.clone()),
            _ => None,
        };
        self.feed.publish(Change { number: n, old, new: Some(uri.to_string()) });
        Ok(outcome)
    }

    /// Removes the binding of `n`, if any; durable before it returns.
    fn unbind(&self, n: E164) -> Result<Option<Binding>, IndexError> {
        let _w = self.write.lock();
        let count = self.count.load(Ordering::Relaxed);
        let mut w = Writer::new(self);
        let Some(b) = w.unbind(n)? else { return Ok(None) };
        let count = count.saturating_sub(1);
        w.commit(count, |_| {})?;
        self.count.store(count, Ordering::Relaxed);
        self.feed.publish(Change { number: n, old: Some(b.sip_uri.clone()), new: None });
        Ok(Some(b))
    }

    /// The binding of `n`. The hot path: a filter probe, a mirror lookup, one allocation.
    fn lookup(&self, n: E164) -> Result<Option<Binding>, IndexError> {
        if !self.may_contain(n) {
            return Ok(None);
        }
        match self.forward.read().get(n)? {
            Some(v) => Ok(Some(decode_value(n, v)?)),
            None => Ok(None),
        }
    }

    /// The binding of each of `numbers`: one filter pass over all of them, one lock.
    fn lookup_each(&self, numbers: &[E164]) -> Result<Vec<Option<Binding>>, IndexError> {
        let maybe = match &self.filter.read().active {
            Some(f) => f.may_contain_each(numbers),
            None => vec![true; numbers.len()],
        };
        let fwd = self.forward.read();
        numbers
            .iter()
            .zip(maybe)
            .map(|(n, maybe)| match maybe {
                false => Ok(None),
                true => fwd.get(*n)?.map(|v| decode_value(*n, v)).transpose(),
            })
            .collect()
    }

    /// Whether `n` is bound (no allocation).
    fn is_bound(&self, n: E164) -> Result<bool, IndexError> {
        if !self.may_contain(n) {
            return Ok(false);
        }
        Ok(self.forward.read().get(n)?.is_some())
    }

    /// Resolves an address book: the bound ones among `numbers`, with their URI, in the
    /// order given (duplicates kept once). Lookups are made in key order for locality.
    fn resolve(&self, numbers: &[E164]) -> Result<Vec<(E164, String)>, IndexError> {
        let mut sorted: Vec<(E164, u32)> = numbers.iter().enumerate().map(|(i, n)| (*n, i as u32)).collect();
        sorted.sort_unstable();
        sorted.dedup_by_key(|(n, _)| *n);
        let mut found: Vec<(u32, E164, String)> = Vec::new();
        let filter = self.filter.read().active.clone();
        let fwd = self.forward.read();
        for (n, i) in sorted {
            if filter.as_ref().is_some_and(|f| !f.may_contain(n)) {
                continue;
            }
            if let Some(v) = fwd.get(n)? {
                found.push((i, n, value_uri(v)?.to_string()));
            }
        }
        drop(fwd);
        found.sort_unstable_by_key(|(i, _, _)| *i);
        Ok(found.into_iter().map(|(_, n, u)| (n, u)).collect())
    }

    fn numbers_of(&self, uri: &str) -> Result<Vec<E164>, IndexError> {
        match (InTree { tree: &self.tree, prefix: REV }).get(uri.as_bytes())? {
            Some(v) => decode_numbers(&v),
            None => Ok(Vec::new()),
        }
    }

    fn stats(&self) -> Result<Stats, IndexError> {
        let mut uris = 0u64;
        for r in (InTree { tree: &self.tree, prefix: REV }).buckets() {
            uris += Bucket::parse(&r?.1)?.len() as u64;
        }
        Ok(Stats {
            numbers: self.len(),
            sip_uris: uris,
            size_on_disk: self.db.size_on_disk()?,
            path: self.path.clone(),
        })
    }

    /// Not a snapshot: changes made during the iteration may or may not be seen.
    fn bindings(&self) -> Bindings {
        let tree = self.tree.clone();
        Box::new(tree.scan_prefix([FWD]).flat_map(|r| {
            let bindings: Vec<Result<Binding, IndexError>> = match r {
                Ok((_, v)) => match Bucket::parse(&v) {
                    Ok(b) => b.iter().map(|(k, v)| decode_value(decode_number(k)?, v)).collect(),
                    Err(e) => vec![Err(e)],
                },
                Err(e) => vec![Err(e.into())],
            };
            bindings
        }))
    }

    /// Checks that both directions agree (every number has its reverse entry, every reverse
    /// entry its number), that the buckets keep their invariants, that the mirror is the
    /// store, and that the count is right. Returns the problems found (empty: fine).
    fn check_consistency(&self) -> Result<Vec<String>, IndexError> {
        let _w = self.write.lock();
        let mut problems = Vec::new();
        for prefix in [FWD, REV] {
            for r in (InTree { tree: &self.tree, prefix }).buckets() {
                let (k, v) = r?;
                if let Err(e) = Bucket::parse(&v)?.check(&k[1..]) {
                    problems.push(format!("{} bucket {:?}: {e}", prefix as char, String::from_utf8_lossy(&k[1..])));
                }
            }
        }
        let stored: Vec<(sled::IVec, sled::IVec)> = (InTree { tree: &self.tree, prefix: FWD }).buckets().collect::<Result<_, _>>()?;
        let mirror = self.forward.read();
        if stored.len() != mirror.0.len()
            || stored.iter().zip(mirror.0.iter()).any(|((k, v), (mk, mv))| key_u64(&k[1..]) != Some(*mk) || v[..] != mv[..])
        {
            problems.push("the in-memory mirror differs from the forward buckets".into());
        }
        drop(mirror);
        let rev = InTree { tree: &self.tree, prefix: REV };
        let mut count = 0u64;
        for b in self.bindings() {
            let b = b?;
            count += 1;
            let listed = rev.get(b.sip_uri.as_bytes())?.map(|v| decode_numbers(&v)).transpose()?.unwrap_or_default();
            if !listed.contains(&b.number) {
                problems.push(format!("{} -> {} has no reverse entry", b.number, b.sip_uri));
            }
        }
        for r in rev.buckets() {
            let (_, v) = r?;
            for (uri, numbers) in Bucket::parse(&v)?.iter() {
                let uri = String::from_utf8_lossy(uri);
                for n in decode_numbers(numbers)? {
                    match self.lookup(n)? {
                        Some(b) if b.sip_uri == uri => {}
                        Some(b) => problems.push(format!("reverse {uri} -> {n} but {n} is bound to {}", b.sip_uri)),
                        None => problems.push(format!("reverse {uri} -> {n} but {n} is not bound")),
                    }
                }
            }
        }
        if count != self.len() {
            problems.push(format!("count is {} but {} numbers are bound", self.len(), count));
        }
        Ok(problems)
    }

    /// One batch, one flush, then the events. Rows are applied in number order.
    fn apply_chunk(&self, rows: &[(E164, String)], source: Source) -> Result<ChunkCounts, IndexError> {
        // Stable: of two rows for one number, the later one stays last and wins.
        let mut order: Vec<&(E164, String)> = rows.iter().collect();
        order.sort_by_key(|(n, _)| *n);
        let _w = self.write.lock();
        self.add_to_filters(rows.iter().map(|(n, _)| *n), rows.len() as u64);
        let now = unix_now();
        let publish = self.feed.has_subscribers();
        let mut events = Vec::new();
        let (mut new, mut replaced, mut unchanged) = (0u64, 0u64, 0u64);
        let mut w = Writer::new(self);
        for (n, uri) in order {
            let old = match w.bind(*n, uri, now, source)? {
                BindOutcome::Unchanged => {
                    unchanged += 1;
                    continue;
                }
                BindOutcome::New => {
                    new += 1;
                    None
                }
                BindOutcome::Rebound { old_uri } => {
                    replaced += 1;
                    Some(old_uri)
                }
            };
            if publish {
                events.push(Change { number: *n, old, new: Some(uri.clone()) });
            }
        }
        if new + replaced == 0 {
            return Ok(ChunkCounts { new, replaced, unchanged });
        }
        let count = self.count.load(Ordering::Relaxed) + new;
        w.commit(count, |_| {})?;
        self.count.store(count, Ordering::Relaxed);
        for e in events {
            self.feed.publish(e);
        }
        Ok(ChunkCounts { new, replaced, unchanged })
    }

    fn changes(&self) -> ChangeReceiver {
        self.feed.subscribe()
    }

    /// O(1).
    fn len(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The filter of bound numbers is built (lookups of unbound numbers are then answered
    /// with one cache miss). Correctness never depends on it.
    fn warmed_up(&self) -> bool {
        let st = self.filter.read();
        st.active.is_some() && st.building.is_none()
    }
}
