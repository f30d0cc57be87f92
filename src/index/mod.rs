//! The verified-number index: which phone number belongs to which SIP user.
//!
//! One sled tree, `bindings`, holds two sorted maps packed in buckets of up to 64 entries
//! (`packed.rs`; the design is in `docs/bindings.md`):
//!
//! - forward, under `F`: number (8 bytes, big-endian) → `[bound_at u64 BE][source u8][uri]`;
//! - reverse, under `R`: canonical SIP URI → its numbers;
//! - and `mcount`, the number count.
//!
//! Both directions live in one tree so that every change (one bind, one import chunk) is
//! one `apply_batch`: atomic on disk, including after a crash. Every write is serialised by
//! a process-wide writer lock, flushed before it is acknowledged, and only then published on
//! the change feed, in commit order.
//!
//! Reads never go to sled for the forward direction: the forward buckets are mirrored in
//! memory, byte for byte, and the mirror is updated under the writer lock right after each
//! batch. sled costs about 2 µs per lookup, the mirror about 0.2 µs.
//!
//! A number is exactly in one binding or in none: binding a bound number to another URI
//! replaces the old binding and its reverse entry in the same atomic change.

pub mod admin;
pub mod cli;
mod filter;
mod io;
mod packed;

use crate::clock::unix_now;
use crate::numbers::{self, Region, UriKind, E164};
use filter::{Filter, FilterState};
use packed::{Bucket, Edit, InTree, Locate, Located, Write as BucketWrite};
use std::collections::BTreeMap;
use std::ops::Bound;
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::broadcast;

pub use io::{Format, ImportOptions, ImportSummary, Rejection};

/// Forward buckets: number (8 bytes BE) → `[bound_at u64 BE][source u8][canonical URI]`.
const FWD: u8 = b'F';
/// Reverse buckets: canonical URI → its numbers (8 bytes BE each, sorted).
const REV: u8 = b'R';
/// Layout 1 (one sled key per binding and per reverse entry), migrated at open.
const OLD_NUM: u8 = b'n';
const OLD_REV: u8 = b'u';
const META_COUNT: &[u8] = b"mcount";
/// Events kept for slow change-feed consumers before they are told they lagged.
pub const CHANGE_CAPACITY: usize = 1 << 16;
/// sled's page cache: lookups are answered from the in-memory mirror of the forward buckets,
/// so sled's cache only serves writes and reverse lookups.
const SLED_CACHE_BYTES: u64 = 256 << 20;

/// The directory of the index inside the data directory.
pub fn dir_in(data_dir: &Path) -> PathBuf {
    data_dir.join("index")
}

/// How a binding was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// A single change through the admin API (or the CLI talking to it).
    Admin,
    /// A bulk import.
    Import,
    /// The CLI working directly on the data directory.
    Cli,
    /// Verified in-band by the service (e.g. a subscriber proved ownership).
    Verification,
    /// A code this version does not know (written by a newer version).
    Other,
}

impl Source {
    fn code(self) -> u8 {
        match self {
            Source::Admin => 1,
            Source::Import => 2,
            Source::Cli => 3,
            Source::Verification => 4,
            Source::Other => 255,
        }
    }
    fn from_code(c: u8) -> Source {
        match c {
            1 => Source::Admin,
            2 => Source::Import,
            3 => Source::Cli,
            4 => Source::Verification,
            _ => Source::Other,
        }
    }
}

/// A number's binding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    pub number: E164,
    /// Canonical `sip:user@host`.
    pub sip_uri: String,
    /// Unix time (seconds) of the bind.
    pub bound_at: u64,
    pub source: Source,
}

/// What [`Index::bind`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "lowercase")]
pub enum BindOutcome {
    /// The number was not bound.
    New,
    /// It was already bound to that URI: nothing written, no event.
    Unchanged,
    /// It was bound to another URI, now replaced.
    Rebound { old_uri: String },
}

/// One change of the index, published after it is durable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub number: E164,
    /// The URI the number was bound to before (None: it was not bound).
    pub old: Option<String>,
    /// The URI it is bound to now (None: unbound).
    pub new: Option<String>,
}

/// Why a receive from the change feed gave no change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    /// The consumer was too slow and this many changes were dropped for it: it must resync
    /// (re-read what it needs from the index) and then go on receiving.
    #[error("change feed lagged: {0} changes missed, resync needed")]
    Lagged(u64),
    /// Every `Index` handle is gone.
    #[error("change feed closed")]
    Closed,
    /// `try_recv` only: nothing pending.
    #[error("no change pending")]
    Empty,
}

/// A subscription to the change feed. Bounded ([`CHANGE_CAPACITY`]); a consumer that falls
/// behind gets [`ChangeError::Lagged`] once, never a silent gap.
pub struct ChangeReceiver {
    rx: broadcast::Receiver<Change>,
}

impl ChangeReceiver {
    pub async fn recv(&mut self) -> Result<Change, ChangeError> {
        self.rx.recv().await.map_err(|e| match e {
            broadcast::error::RecvError::Lagged(n) => ChangeError::Lagged(n),
            broadcast::error::RecvError::Closed => ChangeError::Closed,
        })
    }

    pub fn try_recv(&mut self) -> Result<Change, ChangeError> {
        self.rx.try_recv().map_err(|e| match e {
            broadcast::error::TryRecvError::Lagged(n) => ChangeError::Lagged(n),
            broadcast::error::TryRecvError::Closed => ChangeError::Closed,
            broadcast::error::TryRecvError::Empty => ChangeError::Empty,
        })
    }

    /// For non-async consumers (not from inside an async task).
    pub fn blocking_recv(&mut self) -> Result<Change, ChangeError> {
        self.rx.blocking_recv().map_err(|e| match e {
            broadcast::error::RecvError::Lagged(n) => ChangeError::Lagged(n),
            broadcast::error::RecvError::Closed => ChangeError::Closed,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("the index at {path} is locked by another process (is a smart-presence server running on this data directory?)")]
    Locked { path: PathBuf },
    #[error("not a SIP user URI: {0}")]
    InvalidUri(String),
    #[error(transparent)]
    Number(#[from] numbers::NumberError),
    #[error("corrupt index entry: {0}")]
    Corrupt(String),
    #[error("strict import rejected: {} bad line(s), nothing imported; first: line {}: {}",
        .0.len(), .0.first().map(|r| r.line).unwrap_or(0), .0.first().map(|r| r.reason.as_str()).unwrap_or(""))]
    StrictRejected(Vec<Rejection>),
    #[error("storage error: {0}")]
    Sled(#[from] sled::Error),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// Counts shown by `bindings stats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Bound numbers.
    pub numbers: u64,
    /// Distinct SIP URIs with at least one number (computed by a scan: O(bindings)).
    pub sip_uris: u64,
    /// Bytes used by the database on disk.
    pub size_on_disk: u64,
    pub path: PathBuf,
}

/// Tuning of [`Index::open_with`].
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// Numbers the in-memory filter is first sized for (16 bits each); it is rebuilt 4 times
    /// larger in the background when outgrown. Default 1M (2 MiB), or twice the bound
    /// numbers when more.
    pub filter_capacity: u64,
}

impl Default for OpenOptions {
    fn default() -> OpenOptions {
        OpenOptions { filter_capacity: 1 << 20 }
    }
}

/// The index. Cheap to clone; Send + Sync.
#[derive(Clone)]
pub struct Index {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    tree: sled::Tree,
    /// Serialises writers, so that reads done before a write are still true when it
    /// commits, counts stay exact and events go out in commit order.
    write: Mutex<()>,
    count: AtomicU64,
    /// The forward buckets, as in sled. Changed only by writers, under `write`.
    forward: RwLock<Forward>,
    /// Bound numbers (and some formerly bound): lets `resolve`/`lookup` answer most numbers
    /// that are not users with one cache miss. Built in the background (at open, and larger
    /// when outgrown); until the first build completes, every lookup reads the mirror.
    filter: Arc<RwLock<FilterState>>,
    /// Tells the filter builder to stop (the index is being closed).
    stop: Arc<std::sync::atomic::AtomicBool>,
    builder: Mutex<Option<std::thread::JoinHandle<()>>>,
    tx: broadcast::Sender<Change>,
    path: PathBuf,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index").field("path", &self.inner.path).finish()
    }
}

/// The forward buckets mirrored in memory, by their first number.
#[derive(Default)]
struct Forward(BTreeMap<u64, Arc<[u8]>>);

impl Forward {
    /// The stored value of `n`'s binding.
    fn get(&self, n: E164) -> Result<Option<&[u8]>, IndexError> {
        let key = n.as_key();
        let Some((_, bytes)) = self.0.range(..=u64::from_be_bytes(key)).next_back() else { return Ok(None) };
        Ok(Bucket::trusted(bytes)?.get(&key))
    }

    fn apply(&mut self, writes: &[BucketWrite]) {
        for w in writes {
            match w {
                BucketWrite::Put(k, v) => {
                    if let Some(k) = key_u64(k) {
                        self.0.insert(k, v.clone());
                    }
                }
                BucketWrite::Remove(k) => {
                    if let Some(k) = key_u64(k) {
                        self.0.remove(&k);
                    }
                }
            }
        }
    }
}

fn key_u64(k: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(k.try_into().ok()?))
}

impl Locate for RwLock<Forward> {
    fn locate(&self, key: &[u8]) -> Result<Located, IndexError> {
        let k = key_u64(key).ok_or_else(|| IndexError::Corrupt(format!("number key of {} bytes", key.len())))?;
        let map = &self.read().0;
        let bucket = map.range(..=k).next_back().map(|(s, b)| (s.to_be_bytes().to_vec(), b.clone()));
        let next = map.range((Bound::Excluded(k), Bound::Unbounded)).next().map(|(s, _)| s.to_be_bytes().to_vec());
        Ok(Located { bucket, next })
    }
}

fn encode_value(uri: &str, bound_at: u64, source: Source) -> Vec<u8> {
    let mut v = Vec::with_capacity(9 + uri.len());
    v.extend_from_slice(&bound_at.to_be_bytes());
    v.push(source.code());
    v.extend_from_slice(uri.as_bytes());
    v
}

fn value_uri(v: &[u8]) -> Result<&str, IndexError> {
    if v.len() < 9 {
        return Err(IndexError::Corrupt(format!("binding value of {} bytes", v.len())));
    }
    std::str::from_utf8(&v[9..]).map_err(|_| IndexError::Corrupt("binding URI is not UTF-8".into()))
}

fn decode_value(n: E164, v: &[u8]) -> Result<Binding, IndexError> {
    let uri = value_uri(v)?;
    let bound_at = u64::from_be_bytes(v[..8].try_into().expect("length checked"));
    Ok(Binding { number: n, sip_uri: uri.to_string(), bound_at, source: Source::from_code(v[8]) })
}

fn decode_numbers(v: &[u8]) -> Result<Vec<E164>, IndexError> {
    if v.len() % 8 != 0 {
        return Err(IndexError::Corrupt(format!("reverse value of {} bytes", v.len())));
    }
    v.chunks_exact(8).map(|c| E164::from_key(c).ok_or_else(|| IndexError::Corrupt("number in reverse value".into()))).collect()
}

fn decode_number(k: &[u8]) -> Result<E164, IndexError> {
    E164::from_key(k).ok_or_else(|| IndexError::Corrupt(format!("number key of {} bytes", k.len())))
}

/// One atomic change of both directions, built under the writer lock and committed as one
/// sled batch.
struct Writer<'a> {
    inner: &'a Inner,
    fwd: Edit,
    rev: Edit,
    /// The reverse lists this change touched, decoded, and whether each changed: written
    /// once at commit (a 20,000-line import to one PBX URI re-encoded its list per line).
    lists: BTreeMap<String, (Vec<E164>, bool)>,
}

impl<'a> Writer<'a> {
    fn new(inner: &'a Inner) -> Writer<'a> {
        Writer { inner, fwd: Edit::default(), rev: Edit::default(), lists: BTreeMap::new() }
    }

    fn rev_tree(&self) -> InTree<'a> {
        InTree { tree: &self.inner.tree, prefix: REV }
    }

    /// The binding of `n` as this change leaves it so far.
    fn binding(&mut self, n: E164) -> Result<Option<Binding>, IndexError> {
        match self.fwd.get(&self.inner.forward, &n.as_key())? {
            Some(v) => Ok(Some(decode_value(n, v)?)),
            None => Ok(None),
        }
    }

    fn bind(&mut self, n: E164, uri: &str, bound_at: u64, source: Source) -> Result<BindOutcome, IndexError> {
        let key = n.as_key();
        let old = match self.fwd.get(&self.inner.forward, &key)? {
            Some(v) => Some(value_uri(v)?.to_string()),
            None => None,
        };
        if old.as_deref() == Some(uri) {
            return Ok(BindOutcome::Unchanged);
        }
        self.fwd.set(&self.inner.forward, &key, Some(encode_value(uri, bound_at, source)))?;
        if let Some(o) = &old {
            self.reverse(o, n, false)?;
        }
        self.reverse(uri, n, true)?;
        Ok(match old {
            Some(old_uri) => BindOutcome::Rebound { old_uri },
            None => BindOutcome::New,
        })
    }

    fn unbind(&mut self, n: E164) -> Result<Option<Binding>, IndexError> {
        let Some(b) = self.binding(n)? else { return Ok(None) };
        self.fwd.set(&self.inner.forward, &n.as_key(), None)?;
        self.reverse(&b.sip_uri, n, false)?;
        Ok(Some(b))
    }

    /// Adds `n` to (or removes it from) `uri`'s numbers.
    fn reverse(&mut self, uri: &str, n: E164, add: bool) -> Result<(), IndexError> {
        if !self.lists.contains_key(uri) {
            let current = match self.rev.get(&self.rev_tree(), uri.as_bytes())? {
                Some(v) => decode_numbers(v)?,
                None => Vec::new(),
            };
            self.lists.insert(uri.to_string(), (current, false));
        }
        let Some((numbers, changed)) = self.lists.get_mut(uri) else { return Ok(()) };
        match (numbers.binary_search(&n), add) {
            (Err(at), true) => numbers.insert(at, n),
            (Ok(at), false) => {
                numbers.remove(at);
            }
            _ => return Ok(()),
        }
        *changed = true;
        Ok(())
    }

    /// Writes the change and `count` in one batch, updates the mirror, flushes.
    fn commit(mut self, count: u64, extra: impl FnOnce(&mut sled::Batch)) -> Result<(), IndexError> {
        let tree = self.rev_tree();
        for (uri, (numbers, changed)) in std::mem::take(&mut self.lists) {
            if changed {
                let value = (!numbers.is_empty()).then(|| numbers.iter().flat_map(|x| x.as_key()).collect());
                self.rev.set(&tree, uri.as_bytes(), value)?;
            }
        }
        let fwd = self.fwd.finish();
        let rev = self.rev.finish();
        let mut batch = sled::Batch::default();
        packed::add_to_batch(&mut batch, FWD, &fwd);
        packed::add_to_batch(&mut batch, REV, &rev);
        batch.insert(META_COUNT, &count.to_be_bytes());
        extra(&mut batch);
        self.inner.tree.apply_batch(batch)?;
        self.inner.forward.write().apply(&fwd);
        self.inner.db.flush()?;
        Ok(())
    }
}

impl Drop for Inner {
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

impl Inner {
    /// Starts building a filter for `capacity` numbers in the background. Called with the
    /// writer lock held (or before any writer exists): writes from now on add their numbers
    /// to the new filter themselves, the builder adds what the store already holds.
    fn start_filter_build(&self, capacity: u64) {
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

    fn add_to_filters(&self, numbers: impl Iterator<Item = E164>, adding: u64) {
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

    /// Rewrites a store of layout 1 (one key per binding) into buckets, a chunk at a time:
    /// each chunk adds the buckets and removes the old keys in one batch, so a crash in the
    /// middle leaves every binding in exactly one of the two layouts.
    fn migrate_layout_1(&self) -> Result<(), IndexError> {
        const CHUNK: usize = 20_000;
        let mut moved = 0u64;
        loop {
            let mut old_keys = Vec::with_capacity(CHUNK * 2);
            let mut w = Writer::new(self);
            for r in self.tree.scan_prefix([OLD_NUM]).take(CHUNK) {
                let (k, v) = r?;
                let n = decode_number(&k[1..])?;
                // Layout 1 value: [version 1][bound_at u64][source u8][uri].
                let b = decode_value(n, v.get(1..).unwrap_or_default())?;
                w.bind(n, &b.sip_uri, b.bound_at, b.source)?;
                let mut rk = vec![OLD_REV];
                rk.extend_from_slice(b.sip_uri.as_bytes());
                rk.push(0);
                rk.extend_from_slice(&n.as_key());
                old_keys.push(k.to_vec());
                old_keys.push(rk);
            }
            if old_keys.is_empty() {
                break;
            }
            moved += old_keys.len() as u64 / 2;
            w.commit(self.count.load(Ordering::Relaxed), |batch| {
                for k in old_keys {
                    batch.remove(k);
                }
            })?;
        }
        // Reverse keys of layout 1 whose number key was already gone (none in a consistent store).
        let stray: Vec<sled::IVec> = self.tree.scan_prefix([OLD_REV]).keys().collect::<Result<_, _>>()?;
        for k in stray {
            self.tree.remove(k)?;
        }
        self.db.flush()?;
        if moved > 0 {
            tracing::info!(bindings = moved, "index migrated to the bucket layout");
        }
        Ok(())
    }
}

/// Longest SIP URI a binding may have.
pub const MAX_URI_BYTES: usize = 1024;

/// Canonical form of a SIP user URI ([`crate::identity`]), or an error if the string is not
/// one. A phone-number URI (`tel:`, `;user=phone`) names a number, which is bound, not bound
/// to; a SIP user whose user part is a number (`sip:+4915100000001@example.org`) is a user.
pub fn canonical_sip_uri(uri: &str) -> Result<String, IndexError> {
    // The reverse map keys buckets by URI with a 16-bit length; no real SIP user needs more
    // than this, and a longer one (the admin API takes 2 MB bodies) must not reach a bucket.
    if uri.len() > MAX_URI_BYTES {
        return Err(IndexError::InvalidUri(format!("a SIP URI of {} bytes (at most {MAX_URI_BYTES})", uri.len())));
    }
    let invalid = |e: crate::sip::uri::UriError| IndexError::InvalidUri(format!("{e} in {uri:?}"));
    let parsed = crate::sip::Uri::parse(crate::identity::addr_spec(uri)).map_err(invalid)?;
    if parsed.scheme == crate::sip::uri::Scheme::Tel || parsed.is_user_phone() {
        return Err(IndexError::InvalidUri(format!("{uri:?} is a phone number, not a SIP user")));
    }
    parsed.aor().map_err(invalid)
}

/// Reads a number as a client or operator would give it: E.164, human text (national with
/// `region`), or a tel:/sip: URI.
pub fn parse_number(s: &str, region: Option<Region>) -> Result<E164, numbers::NumberError> {
    let t = s.trim();
    let lower = t.get(..4).map(|p| p.to_ascii_lowercase());
    if matches!(lower.as_deref(), Some("tel:") | Some("sip:") | Some("sips")) {
        return match numbers::from_uri(t, region) {
            UriKind::Phone(n) => Ok(n),
            _ => Err(numbers::NumberError::Unparseable(t.to_string())),
        };
    }
    numbers::normalize(t, region)
}

impl Index {
    /// Opens (creating if needed) the index in `dir`. Fails with [`IndexError::Locked`] when
    /// another process has it open.
    pub fn open(dir: &Path) -> Result<Index, IndexError> {
        Index::open_with(dir, &OpenOptions::default())
    }

    /// [`Index::open`] with options.
    pub fn open_with(dir: &Path, options: &OpenOptions) -> Result<Index, IndexError> {
        std::fs::create_dir_all(dir)?;
        // sled releases its lock when its last background task ends, which can be a moment
        // after the previous handle was dropped: retry briefly before saying "locked".
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(1500);
        let config = sled::Config::new().path(dir).mode(sled::Mode::HighThroughput).cache_capacity(SLED_CACHE_BYTES);
        let db = loop {
            match config.open() {
                Ok(db) => break db,
                Err(sled::Error::Io(ref io)) if io.to_string().contains("could not acquire lock") => {
                    if std::time::Instant::now() >= deadline {
                        return Err(IndexError::Locked { path: dir.to_path_buf() });
                    }
                    std::thread::sleep(std::time::Duration::from_millis(25));
                }
                Err(other) => return Err(IndexError::Sled(other)),
            }
        };
        let tree = db.open_tree("bindings")?;
        let (tx, _) = broadcast::channel(CHANGE_CAPACITY);
        let index = Index {
            inner: Arc::new(Inner {
                db,
                tree,
                write: Mutex::new(()),
                count: AtomicU64::new(0),
                forward: RwLock::new(Forward::default()),
                filter: Arc::new(RwLock::new(FilterState::default())),
                stop: Arc::new(std::sync::atomic::AtomicBool::new(false)),
                builder: Mutex::new(None),
                tx,
                path: dir.to_path_buf(),
            }),
        };
        let inner = &index.inner;
        inner.load_mirror()?;
        let count = match inner.tree.get(META_COUNT)? {
            Some(v) if v.len() == 8 => u64::from_be_bytes(v.as_ref().try_into().expect("8 bytes")),
            _ => {
                // First open (or a store from before the counter): count once.
                let c = inner.tree.scan_prefix([OLD_NUM]).keys().count() as u64 + index.count_forward()?;
                inner.tree.insert(META_COUNT, &c.to_be_bytes())?;
                inner.db.flush()?;
                c
            }
        };
        inner.count.store(count, Ordering::Relaxed);
        inner.migrate_layout_1()?;
        inner.start_filter_build((count * 2).max(options.filter_capacity));
        Ok(index)
    }

    fn count_forward(&self) -> Result<u64, IndexError> {
        let fwd = self.inner.forward.read();
        fwd.0.values().try_fold(0u64, |acc, b| Ok(acc + Bucket::parse(b)?.len() as u64))
    }

    /// Whether the in-memory filter of bound numbers is built (lookups of unbound numbers
    /// are then answered with one cache miss). Correctness never depends on it.
    pub fn filter_ready(&self) -> bool {
        let st = self.inner.filter.read();
        st.active.is_some() && st.building.is_none()
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Binds `n` to `sip_uri` (made canonical), replacing any other binding of `n` in the
    /// same atomic change. Returns once the change is durable, after publishing it.
    pub fn bind(&self, n: E164, sip_uri: &str, source: Source) -> Result<BindOutcome, IndexError> {
        let uri = canonical_sip_uri(sip_uri)?;
        let _w = self.inner.write.lock();
        let count = self.inner.count.load(Ordering::Relaxed);
        self.inner.add_to_filters(std::iter::once(n), 1);
        let mut w = Writer::new(&self.inner);
        let outcome = w.bind(n, &uri, unix_now(), source)?;
        if outcome == BindOutcome::Unchanged {
            return Ok(outcome);
        }
        let count = if outcome == BindOutcome::New { count + 1 } else { count };
        w.commit(count, |_| {})?;
        self.inner.count.store(count, Ordering::Relaxed);
        let old = match &outcome {
            BindOutcome::Rebound { old_uri } => Some(old_uri.clone()),
            _ => None,
        };
        let _ = self.inner.tx.send(Change { number: n, old, new: Some(uri) });
        Ok(outcome)
    }

    /// Removes the binding of `n`, if any; durable before it returns.
    pub fn unbind(&self, n: E164) -> Result<Option<Binding>, IndexError> {
        let _w = self.inner.write.lock();
        let count = self.inner.count.load(Ordering::Relaxed);
        let mut w = Writer::new(&self.inner);
        let Some(b) = w.unbind(n)? else { return Ok(None) };
        let count = count.saturating_sub(1);
        w.commit(count, |_| {})?;
        self.inner.count.store(count, Ordering::Relaxed);
        let _ = self.inner.tx.send(Change { number: n, old: Some(b.sip_uri.clone()), new: None });
        Ok(Some(b))
    }

    /// The binding of `n`. The hot path: a filter probe, a mirror lookup, one allocation.
    pub fn lookup(&self, n: E164) -> Result<Option<Binding>, IndexError> {
        if !self.inner.may_contain(n) {
            return Ok(None);
        }
        match self.inner.forward.read().get(n)? {
            Some(v) => Ok(Some(decode_value(n, v)?)),
            None => Ok(None),
        }
    }

    /// Whether `n` is bound (no allocation).
    pub fn is_bound(&self, n: E164) -> Result<bool, IndexError> {
        if !self.inner.may_contain(n) {
            return Ok(false);
        }
        Ok(self.inner.forward.read().get(n)?.is_some())
    }

    /// Resolves an address book: the bound ones among `numbers`, with their URI, in the
    /// order given (duplicates kept once). Lookups are made in key order for locality.
    pub fn resolve(&self, numbers: &[E164]) -> Result<Vec<(E164, String)>, IndexError> {
        let mut sorted: Vec<(E164, u32)> = numbers.iter().enumerate().map(|(i, n)| (*n, i as u32)).collect();
        sorted.sort_unstable();
        sorted.dedup_by_key(|(n, _)| *n);
        let mut found: Vec<(u32, E164, String)> = Vec::new();
        let filter = self.inner.filter.read().active.clone();
        let fwd = self.inner.forward.read();
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

    /// The numbers bound to `sip_uri` (made canonical), in numeric order.
    pub fn numbers_of(&self, sip_uri: &str) -> Result<Vec<E164>, IndexError> {
        let uri = canonical_sip_uri(sip_uri)?;
        match (InTree { tree: &self.inner.tree, prefix: REV }).get(uri.as_bytes())? {
            Some(v) => decode_numbers(&v),
            None => Ok(Vec::new()),
        }
    }

    /// The region to read national numbers of `sip_uri`'s address book with: the region of
    /// his first bound number, else `default` (the configured default region).
    pub fn region_of(&self, sip_uri: &str, default: Option<Region>) -> Result<Option<Region>, IndexError> {
        let own = self.numbers_of(sip_uri)?.first().copied();
        Ok(numbers::effective_region(own, default))
    }

    /// Subscribes to the change feed (changes after this call).
    pub fn changes(&self) -> ChangeReceiver {
        ChangeReceiver { rx: self.inner.tx.subscribe() }
    }

    /// Number of bound numbers (O(1)).
    pub fn len(&self) -> u64 {
        self.inner.count.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn stats(&self) -> Result<Stats, IndexError> {
        let mut uris = 0u64;
        for r in (InTree { tree: &self.inner.tree, prefix: REV }).buckets() {
            uris += Bucket::parse(&r?.1)?.len() as u64;
        }
        Ok(Stats {
            numbers: self.len(),
            sip_uris: uris,
            size_on_disk: self.inner.db.size_on_disk()?,
            path: self.inner.path.clone(),
        })
    }

    /// Every binding, in numeric order of the numbers (not a snapshot: changes made during
    /// the iteration may or may not be seen).
    pub fn iter(&self) -> impl Iterator<Item = Result<Binding, IndexError>> {
        let tree = self.inner.tree.clone();
        tree.scan_prefix([FWD]).flat_map(|r| {
            let bindings: Vec<Result<Binding, IndexError>> = match r {
                Ok((_, v)) => match Bucket::parse(&v) {
                    Ok(b) => b.iter().map(|(k, v)| decode_value(decode_number(k)?, v)).collect(),
                    Err(e) => vec![Err(e)],
                },
                Err(e) => vec![Err(e.into())],
            };
            bindings
        })
    }

    /// Checks that both directions agree (every number has its reverse entry, every reverse
    /// entry its number), that the buckets keep their invariants, that the mirror is the
    /// store, and that the count is right. Returns the problems found (empty: fine).
    pub fn check_consistency(&self) -> Result<Vec<String>, IndexError> {
        let _w = self.inner.write.lock();
        let mut problems = Vec::new();
        for prefix in [FWD, REV] {
            for r in (InTree { tree: &self.inner.tree, prefix }).buckets() {
                let (k, v) = r?;
                if let Err(e) = Bucket::parse(&v)?.check(&k[1..]) {
                    problems.push(format!("{} bucket {:?}: {e}", prefix as char, String::from_utf8_lossy(&k[1..])));
                }
            }
        }
        let stored: Vec<(sled::IVec, sled::IVec)> = (InTree { tree: &self.inner.tree, prefix: FWD }).buckets().collect::<Result<_, _>>()?;
        let mirror = self.inner.forward.read();
        if stored.len() != mirror.0.len()
            || stored.iter().zip(mirror.0.iter()).any(|((k, v), (mk, mv))| key_u64(&k[1..]) != Some(*mk) || v[..] != mv[..])
        {
            problems.push("the in-memory mirror differs from the forward buckets".into());
        }
        drop(mirror);
        let rev = InTree { tree: &self.inner.tree, prefix: REV };
        let mut count = 0u64;
        for b in self.iter() {
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

    /// Bulk import (see [`ImportOptions`]); `import_with` also reports each durable chunk.
    pub fn import(&self, reader: impl BufRead, opts: &ImportOptions) -> Result<ImportSummary, IndexError> {
        self.import_with(reader, opts, &mut |_| {})
    }

    /// Bulk import; `on_ack` is called with the numbers of each chunk once it is durable.
    pub fn import_with(
        &self,
        reader: impl BufRead,
        opts: &ImportOptions,
        on_ack: &mut dyn FnMut(&[E164]),
    ) -> Result<ImportSummary, IndexError> {
        io::import(self, reader, opts, on_ack)
    }

    /// Writes every binding in `format` (the format import reads); returns how many.
    pub fn export(&self, w: impl Write, format: Format) -> Result<u64, IndexError> {
        io::export(self, w, format)
    }

    /// Applies one chunk of rows (number, canonical URI) atomically: one batch, one flush,
    /// then the events. Rows are applied in number order (a later row for the same number
    /// wins). Returns (new, replaced, unchanged).
    fn apply_chunk(&self, rows: &[(E164, String)], source: Source) -> Result<(u64, u64, u64), IndexError> {
        // Stable: of two rows for one number, the later one stays last and wins.
        let mut order: Vec<&(E164, String)> = rows.iter().collect();
        order.sort_by_key(|(n, _)| *n);
        let _w = self.inner.write.lock();
        self.inner.add_to_filters(rows.iter().map(|(n, _)| *n), rows.len() as u64);
        let now = unix_now();
        let publish = self.inner.tx.receiver_count() > 0;
        let mut events = Vec::new();
        let (mut new, mut replaced, mut unchanged) = (0u64, 0u64, 0u64);
        let mut w = Writer::new(&self.inner);
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
            return Ok((new, replaced, unchanged));
        }
        let count = self.inner.count.load(Ordering::Relaxed) + new;
        w.commit(count, |_| {})?;
        self.inner.count.store(count, Ordering::Relaxed);
        for e in events {
            let _ = self.inner.tx.send(e);
        }
        Ok((new, replaced, unchanged))
    }
}
