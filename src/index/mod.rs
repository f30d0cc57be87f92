//! The verified-number index: which phone number belongs to which SIP user.
//!
//! One sled tree, `bindings`, holds two kinds of keys (the design is in `docs/bindings.md`):
//!
//! - `n` + number (8 bytes, big-endian) → binding (`[version][bound_at u64 BE][source u8][uri]`);
//! - `u` + canonical SIP URI + `0x00` + number (8 bytes) → empty: the reverse entry, so that
//!   one URI lists its numbers with a prefix scan;
//! - `m` + name → metadata (the number count).
//!
//! Both directions live in one tree so that every change (one bind in a sled transaction,
//! one import chunk in one `apply_batch`) is atomic on disk, including after a crash.
//! Every write is serialised by a process-wide writer lock, flushed before it is
//! acknowledged, and only then published on the change feed, in commit order.
//!
//! A number is exactly in one binding or in none: binding a bound number to another URI
//! replaces the old binding and its reverse entry in the same atomic change.

pub mod admin;
pub mod cli;
mod filter;
mod io;

use crate::numbers::{self, Region, UriKind, E164};
use filter::{Filter, FilterState};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::broadcast;

pub use io::{Format, ImportOptions, ImportSummary, Rejection};

const NUM: u8 = b'n';
const REV: u8 = b'u';
const META_COUNT: &[u8] = b"mcount";
const VALUE_VERSION: u8 = 1;
/// Events kept for slow change-feed consumers before they are told they lagged.
pub const CHANGE_CAPACITY: usize = 1 << 16;

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
    /// Bound numbers (and some formerly bound): lets `resolve`/`lookup` skip sled for most
    /// numbers that are not users. Built in the background (at open, and larger when
    /// outgrown); until the first build completes, every lookup goes to sled.
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

pub(crate) fn num_key(n: E164) -> [u8; 9] {
    let mut k = [NUM; 9];
    k[1..].copy_from_slice(&n.as_key());
    k
}

fn rev_prefix(uri: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(uri.len() + 10);
    k.push(REV);
    k.extend_from_slice(uri.as_bytes());
    k.push(0);
    k
}

fn rev_key(uri: &str, n: E164) -> Vec<u8> {
    let mut k = rev_prefix(uri);
    k.extend_from_slice(&n.as_key());
    k
}

fn encode_value(uri: &str, bound_at: u64, source: Source) -> Vec<u8> {
    let mut v = Vec::with_capacity(10 + uri.len());
    v.push(VALUE_VERSION);
    v.extend_from_slice(&bound_at.to_be_bytes());
    v.push(source.code());
    v.extend_from_slice(uri.as_bytes());
    v
}

fn value_uri(v: &[u8]) -> Result<&str, IndexError> {
    if v.len() < 10 || v[0] != VALUE_VERSION {
        return Err(IndexError::Corrupt(format!("binding value of {} bytes", v.len())));
    }
    std::str::from_utf8(&v[10..]).map_err(|_| IndexError::Corrupt("binding URI is not UTF-8".into()))
}

fn decode_value(n: E164, v: &[u8]) -> Result<Binding, IndexError> {
    let uri = value_uri(v)?;
    let bound_at = u64::from_be_bytes(v[1..9].try_into().expect("length checked"));
    Ok(Binding { number: n, sip_uri: uri.to_string(), bound_at, source: Source::from_code(v[9]) })
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
            for (i, k) in tree.scan_prefix([NUM]).keys().enumerate() {
                if i % 4096 == 0 && stop.load(Ordering::Relaxed) {
                    return;
                }
                match k {
                    Ok(k) => {
                        if let Some(n) = E164::from_key(&k[1..]) {
                            f.insert(n);
                        }
                    }
                    Err(e) => {
                        tracing::warn!("index filter build failed, lookups go to the store: {e}");
                        state.write().building = None;
                        return;
                    }
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

    #[inline]
    fn may_contain(&self, n: E164) -> bool {
        match &self.filter.read().active {
            Some(f) => f.may_contain(n),
            None => true,
        }
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Canonical form of a SIP user URI, or an error if the string is not one (a phone-number
/// URI cannot be a binding target).
pub fn canonical_sip_uri(uri: &str) -> Result<String, IndexError> {
    match numbers::from_uri(uri, None) {
        UriKind::Sip(s) => Ok(s),
        UriKind::Phone(n) => Err(IndexError::InvalidUri(format!("{uri:?} is a phone number ({n}), not a SIP user"))),
        UriKind::Invalid(why) => Err(IndexError::InvalidUri(why)),
    }
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

type TxResult<T> = Result<T, sled::transaction::ConflictableTransactionError<IndexError>>;

fn tx_err(e: sled::transaction::TransactionError<IndexError>) -> IndexError {
    match e {
        sled::transaction::TransactionError::Abort(e) => e,
        sled::transaction::TransactionError::Storage(e) => IndexError::Sled(e),
    }
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
        let db = loop {
            match sled::Config::new().path(dir).mode(sled::Mode::HighThroughput).open() {
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
        let count = match tree.get(META_COUNT)? {
            Some(v) if v.len() == 8 => u64::from_be_bytes(v.as_ref().try_into().expect("8 bytes")),
            _ => {
                // First open (or a store from before the counter): count once.
                let c = tree.scan_prefix([NUM]).keys().count() as u64;
                tree.insert(META_COUNT, &c.to_be_bytes())?;
                db.flush()?;
                c
            }
        };
        let (tx, _) = broadcast::channel(CHANGE_CAPACITY);
        let index = Index {
            inner: Arc::new(Inner {
                db,
                tree,
                write: Mutex::new(()),
                count: AtomicU64::new(count),
                filter: Arc::new(RwLock::new(FilterState::default())),
                stop: Arc::new(std::sync::atomic::AtomicBool::new(false)),
                builder: Mutex::new(None),
                tx,
                path: dir.to_path_buf(),
            }),
        };
        index.inner.start_filter_build((count * 2).max(options.filter_capacity));
        Ok(index)
    }

    /// Whether the in-memory filter of bound numbers is built (lookups of unbound numbers
    /// are then answered without the store). Correctness never depends on it.
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
        let nkey = num_key(n);
        let value = encode_value(&uri, unix_now(), source);
        let count = self.inner.count.load(Ordering::Relaxed);
        let new_rev = rev_key(&uri, n);
        let (active, building) = self.inner.filters_for(1);
        for f in active.iter().chain(building.iter()) {
            f.insert(n);
        }
        let outcome = self
            .inner
            .tree
            .transaction(|t| -> TxResult<BindOutcome> {
                let old = t.get(nkey)?;
                let outcome = match &old {
                    Some(v) => {
                        let old_uri = value_uri(v).map_err(sled::transaction::ConflictableTransactionError::Abort)?;
                        if old_uri == uri {
                            return Ok(BindOutcome::Unchanged);
                        }
                        t.remove(rev_key(old_uri, n))?;
                        BindOutcome::Rebound { old_uri: old_uri.to_string() }
                    }
                    None => {
                        t.insert(META_COUNT, &(count + 1).to_be_bytes())?;
                        BindOutcome::New
                    }
                };
                t.insert(&nkey, value.as_slice())?;
                t.insert(new_rev.as_slice(), &[][..])?;
                Ok(outcome)
            })
            .map_err(tx_err)?;
        if outcome == BindOutcome::Unchanged {
            return Ok(outcome);
        }
        self.inner.db.flush()?;
        let old = match &outcome {
            BindOutcome::New => {
                self.inner.count.store(count + 1, Ordering::Relaxed);
                None
            }
            BindOutcome::Rebound { old_uri } => Some(old_uri.clone()),
            BindOutcome::Unchanged => unreachable!(),
        };
        let _ = self.inner.tx.send(Change { number: n, old, new: Some(uri) });
        Ok(outcome)
    }

    /// Removes the binding of `n`, if any; durable before it returns.
    pub fn unbind(&self, n: E164) -> Result<Option<Binding>, IndexError> {
        let _w = self.inner.write.lock();
        let nkey = num_key(n);
        let count = self.inner.count.load(Ordering::Relaxed);
        let removed = self
            .inner
            .tree
            .transaction(|t| -> TxResult<Option<Binding>> {
                let Some(old) = t.get(nkey)? else { return Ok(None) };
                let b = decode_value(n, &old).map_err(sled::transaction::ConflictableTransactionError::Abort)?;
                t.remove(&nkey)?;
                t.remove(rev_key(&b.sip_uri, n))?;
                t.insert(META_COUNT, &count.saturating_sub(1).to_be_bytes())?;
                Ok(Some(b))
            })
            .map_err(tx_err)?;
        if let Some(b) = &removed {
            self.inner.db.flush()?;
            self.inner.count.store(count.saturating_sub(1), Ordering::Relaxed);
            let _ = self.inner.tx.send(Change { number: n, old: Some(b.sip_uri.clone()), new: None });
        }
        Ok(removed)
    }

    /// The binding of `n`. The hot path: one tree lookup and one allocation (the URI).
    pub fn lookup(&self, n: E164) -> Result<Option<Binding>, IndexError> {
        if !self.inner.may_contain(n) {
            return Ok(None);
        }
        match self.inner.tree.get(num_key(n))? {
            Some(v) => Ok(Some(decode_value(n, &v)?)),
            None => Ok(None),
        }
    }

    /// Whether `n` is bound (no allocation).
    pub fn is_bound(&self, n: E164) -> Result<bool, IndexError> {
        if !self.inner.may_contain(n) {
            return Ok(false);
        }
        Ok(self.inner.tree.contains_key(num_key(n))?)
    }

    /// Resolves an address book: the bound ones among `numbers`, with their URI, in the
    /// order given (duplicates kept once). Lookups are made in key order for locality.
    pub fn resolve(&self, numbers: &[E164]) -> Result<Vec<(E164, String)>, IndexError> {
        let mut sorted: Vec<(E164, u32)> = numbers.iter().enumerate().map(|(i, n)| (*n, i as u32)).collect();
        sorted.sort_unstable();
        sorted.dedup_by_key(|(n, _)| *n);
        let mut found: Vec<(u32, E164, String)> = Vec::new();
        let filter = self.inner.filter.read().active.clone();
        for (n, i) in sorted {
            if filter.as_ref().is_some_and(|f| !f.may_contain(n)) {
                continue;
            }
            if let Some(v) = self.inner.tree.get(num_key(n))? {
                found.push((i, n, value_uri(&v)?.to_string()));
            }
        }
        found.sort_unstable_by_key(|(i, _, _)| *i);
        Ok(found.into_iter().map(|(_, n, u)| (n, u)).collect())
    }

    /// The numbers bound to `sip_uri` (made canonical), in numeric order.
    pub fn numbers_of(&self, sip_uri: &str) -> Result<Vec<E164>, IndexError> {
        let uri = canonical_sip_uri(sip_uri)?;
        let prefix = rev_prefix(&uri);
        let mut out = Vec::new();
        for k in self.inner.tree.scan_prefix(&prefix).keys() {
            let k = k?;
            let n = E164::from_key(&k[prefix.len()..])
                .ok_or_else(|| IndexError::Corrupt(format!("reverse key of {} bytes", k.len())))?;
            out.push(n);
        }
        Ok(out)
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
        let mut last: Option<sled::IVec> = None;
        for k in self.inner.tree.scan_prefix([REV]).keys() {
            let k = k?;
            let uri_part = &k[..k.len().saturating_sub(9)];
            if last.as_deref() != Some(uri_part) {
                uris += 1;
                last = Some(uri_part.into());
            }
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
        self.inner.tree.scan_prefix([NUM]).map(|r| {
            let (k, v) = r?;
            let n = E164::from_key(&k[1..]).ok_or_else(|| IndexError::Corrupt("number key".into()))?;
            decode_value(n, &v)
        })
    }

    /// Checks that both directions agree: every number has its reverse entry, every reverse
    /// entry its number, and the count is right. Returns the problems found (empty: fine).
    pub fn check_consistency(&self) -> Result<Vec<String>, IndexError> {
        let mut problems = Vec::new();
        let mut count = 0u64;
        for b in self.iter() {
            let b = b?;
            count += 1;
            if !self.inner.tree.contains_key(rev_key(&b.sip_uri, b.number))? {
                problems.push(format!("{} -> {} has no reverse entry", b.number, b.sip_uri));
            }
        }
        for k in self.inner.tree.scan_prefix([REV]).keys() {
            let k = k?;
            if k.len() < 10 || k[k.len() - 9] != 0 {
                problems.push(format!("malformed reverse key of {} bytes", k.len()));
                continue;
            }
            let uri = String::from_utf8_lossy(&k[1..k.len() - 9]).into_owned();
            let Some(n) = E164::from_key(&k[k.len() - 8..]) else {
                problems.push(format!("bad number in reverse key of {uri}"));
                continue;
            };
            match self.lookup(n)? {
                Some(b) if b.sip_uri == uri => {}
                Some(b) => problems.push(format!("reverse {uri} -> {n} but {n} is bound to {}", b.sip_uri)),
                None => problems.push(format!("reverse {uri} -> {n} but {n} is not bound")),
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
    /// then the events. Returns (new, replaced, unchanged).
    fn apply_chunk(
        &self,
        rows: &[(E164, String)],
        source: Source,
        last_in_chunk: &mut std::collections::HashMap<E164, usize>,
    ) -> Result<(u64, u64, u64), IndexError> {
        let _w = self.inner.write.lock();
        let (active, building) = self.inner.filters_for(rows.len() as u64);
        let tree = &self.inner.tree;
        let now = unix_now();
        let publish = self.inner.tx.receiver_count() > 0;
        let mut events = Vec::new();
        let mut batch = sled::Batch::default();
        let (mut new, mut replaced, mut unchanged) = (0u64, 0u64, 0u64);
        last_in_chunk.clear();
        for (i, (n, uri)) in rows.iter().enumerate() {
            let nkey = num_key(*n);
            let stored;
            let old: Option<&str> = match last_in_chunk.get(n) {
                Some(&j) => Some(rows[j].1.as_str()),
                // Not in the filter: certainly not bound, skip the store (most rows of an
                // import into a fresh or growing store).
                None if active.as_ref().is_some_and(|f| !f.may_contain(*n)) => None,
                None => {
                    stored = tree.get(nkey)?;
                    match &stored {
                        Some(v) => Some(value_uri(v)?),
                        None => None,
                    }
                }
            };
            if old == Some(uri.as_str()) {
                unchanged += 1;
                continue;
            }
            for f in active.iter().chain(building.iter()) {
                f.insert(*n);
            }
            batch.insert(&nkey[..], encode_value(uri, now, source));
            match old {
                Some(o) => {
                    batch.remove(rev_key(o, *n));
                    replaced += 1;
                }
                None => new += 1,
            }
            batch.insert(rev_key(uri, *n), &[][..]);
            if publish {
                events.push(Change { number: *n, old: old.map(str::to_string), new: Some(uri.clone()) });
            }
            last_in_chunk.insert(*n, i);
        }
        if new + replaced == 0 {
            return Ok((new, replaced, unchanged));
        }
        let count = self.inner.count.load(Ordering::Relaxed) + new;
        batch.insert(META_COUNT, &count.to_be_bytes());
        tree.apply_batch(batch)?;
        self.inner.db.flush()?;
        self.inner.count.store(count, Ordering::Relaxed);
        for e in events {
            let _ = self.inner.tx.send(e);
        }
        Ok((new, replaced, unchanged))
    }
}
