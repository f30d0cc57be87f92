//! Subscriptions that survive a restart: each one is recorded when it is created, refreshed,
//! moved (target refresh) and ended, in an append-only record log (`storage::log`) in
//! `data_dir/subscriptions/records.log`.
//!
//! A record holds what it takes to go on: the dialog, the expiry, the watched list (its
//! compact form), the NOTIFY format, and the CSeq and version *reserved* ahead. A resumed
//! dialog starts at the reservation, so it never reuses a CSeq or a version, and the
//! record is rewritten only when half a reservation is used (every `RESERVE / 2` NOTIFYs),
//! never per NOTIFY. A start that finds records appends a *mark* to the log (synced before
//! anything is sent): a record read back goes on one reservation further for each start
//! after the first since it was written, so a restart rewrites no record to move its
//! reservation (a million writes at a million held). In cluster mode it still does: the
//! copy in Redis knows nothing of the marks.
//!
//! Writes are behind the request path: `put` and `remove` only note the change, and a
//! writer thread appends what was noted every `BATCH_MS` in one write. A subscription
//! created and ended within one batch never reaches the file (load tests, fetches in all
//! but name), and a burst of new subscriptions costs one write, not one each. The file is
//! synced every `FLUSH_MS`: a crash of the process loses at most the last `BATCH_MS` of
//! changes, a power cut the last `BATCH_MS + FLUSH_MS`; a clean stop writes everything.
//! The log is rewritten with only its live records once the dead ones (replaced, removed)
//! outnumber them (never while it is being read back).
//!
//! Nothing of a record stays in memory between a start's read back and the next: where
//! sled kept ~140 B per held subscription in the heap, the file is in the kernel's page
//! cache. While the records are read back, a map of their keys' hashes to where they are
//! (24 B each) answers [`SubscriptionStore::holds`]. A store of the older layout (a sled
//! database in the same directory) is copied into the log at the first start.
//!
//! In cluster mode a [`Mirror`] (`cluster::records`) gets the same batches after the file,
//! so the records reach Redis with no write per request; a batch it could not take makes it
//! rewrite everything from the file at the next one.
//!
//! Owns the records and their encoding only; the actor decides when to write, `resume.rs`
//! when to read. Must not send anything.

use super::record::Subscription;
use super::watched::WatchedList;
use crate::dialog::Dialog;
use crate::notification::Format;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use crate::storage::log::{self, Kind, Log, LogError, Reader, Tally};
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

/// CSeqs and versions reserved per record write.
pub const RESERVE: u32 = 1024;
/// How often the log is synced to disk.
pub const FLUSH_MS: u64 = 500;
/// How often noted changes are appended to the log.
pub const BATCH_MS: u64 = 100;
/// The layout of the records; another one is refused with a clear error.
const LAYOUT: u32 = 1;
/// The key under which the older sled store kept its layout.
const SLED_LAYOUT_KEY: &[u8] = b"\0layout";

/// Where the records live inside the data directory.
pub fn dir_in(data_dir: &Path) -> PathBuf {
    data_dir.join("subscriptions")
}

/// The log file inside [`dir_in`].
pub fn log_in(dir: &Path) -> PathBuf {
    dir.join("records.log")
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("subscription store: {0}")]
    Log(#[from] LogError),
    #[error("subscription store: {0}")]
    Io(#[from] std::io::Error),
    #[error("subscription store: {0}")]
    Encode(String),
    #[error("subscription store of the older layout: {0}")]
    Sled(#[from] sled::Error),
    #[error("subscription store at {path} has layout {found}, this server reads layout {LAYOUT}: move it away (its subscriptions are lost; phones re-subscribe at their next refresh) or run the matching version")]
    Layout { path: String, found: u32 },
}

/// One stored subscription.
#[derive(Serialize, Deserialize)]
pub struct Stored {
    pub dialog: Dialog,
    pub list_uri: Box<str>,
    pub entries: WatchedList,
    /// Unix seconds.
    pub expires_at: u64,
    /// The first version and CSeq a resumed dialog may use.
    pub version_from: u32,
    pub cseq_from: u32,
    pub format: Format,
    pub single: bool,
    /// Whose subscription it is (the key of the per-account caps).
    pub subscriber: Box<str>,
    /// Not stored: the store has reserved `RESERVE` versions and CSeqs from `version_from`
    /// and `cseq_from` for this start already (its mark), so the resumed dialog needs no
    /// rewrite of its record before it sends.
    #[serde(skip)]
    pub reserved: bool,
}

impl Stored {
    /// Read back after `starts` starts' marks (this one's included): each start before this
    /// one may have used the reservation the previous one moved to, up to half of it (a
    /// dialog rewrites its record when less than half is left), so this start goes on one
    /// reservation further per start in between. `reserved`: this start's mark holds it.
    fn move_reservation(&mut self, starts: usize, reserved: bool) {
        let skip = RESERVE.saturating_mul(u32::try_from(starts.saturating_sub(1)).unwrap_or(u32::MAX));
        self.version_from = self.version_from.saturating_add(skip);
        self.cseq_from = self.cseq_from.saturating_add(skip);
        self.reserved = reserved;
    }
}

/// A second home of the records (Redis, in cluster mode), written by the same batches.
pub trait Mirror: Send + Sync {
    /// Writes `puts` (key, encoded record) and removes `removes`.
    fn apply(&self, puts: &[(&[u8], &[u8])], removes: &[&[u8]]) -> Result<(), String>;
    /// Replaces every record with `all` (after a batch that did not get through).
    fn replace(&self, all: &[(Vec<u8>, Vec<u8>)]) -> Result<(), String>;
    /// Whether it answers now: a whole rewrite reads every record first, which is not
    /// worth doing every batch while the mirror is away.
    fn reachable(&self) -> bool {
        true
    }
}

#[derive(Clone)]
pub struct SubscriptionStore {
    inner: Arc<Inner>,
}

struct Inner {
    writer: Mutex<Writer>,
    /// Changes noted and not yet applied, by record key.
    pending: Mutex<HashMap<Vec<u8>, Change>>,
    mirror: OnceLock<Arc<dyn Mirror>>,
    /// The mirror missed a batch: the next one rewrites it whole.
    mirror_stale: AtomicBool,
    /// While the records are read back (`begin_read_back` to `read_back_done`), the keys
    /// of the dialogs this process took on otherwise meanwhile (adopted): they are not
    /// read back (their dialog is in the table, or ended).
    claimed: Mutex<Option<HashSet<Vec<u8>>>>,
    /// The records found at the start, until they are read back.
    found: Mutex<Option<Found>>,
    hasher: RandomState,
}

/// The log and what its rewrites go by; only the writer thread and a clean stop use it.
struct Writer {
    log: Log,
    /// Written since the last sync.
    unsynced: bool,
    last_sync: Instant,
    /// Its live and dead records, as counted since the last rewrite (or the start).
    tally: Tally,
}

/// Records as keys and encoded values.
type Records = Vec<(Vec<u8>, Vec<u8>)>;

/// The live records of one version of the log: their keys' hashes, where they start; and
/// where the starts' marks are (this start's last).
struct Found {
    at: HashMap<u64, u64>,
    marks: Vec<u64>,
    reader: Reader,
}

/// A noted change of one record.
enum Change {
    /// A record that the log has never had (so its removal cancels it).
    New(Vec<u8>),
    Put(Vec<u8>),
    Remove,
}

impl SubscriptionStore {
    /// Opens the store in `dir` (creating it), copying in a store of the older layout if
    /// there is one, and finds the records to read back.
    pub fn open(dir: &Path) -> Result<SubscriptionStore, StoreError> {
        std::fs::create_dir_all(dir)?;
        let path = log_in(dir);
        let (mut log, opened) = Log::open(&path, LAYOUT)?;
        if opened.dropped > 0 {
            tracing::warn!(bytes = opened.dropped, "subscription store: the end of the log was cut short (a crash while writing); the records before it are kept");
        }
        crate::storage::sled::carry_into(dir, &mut log, "subscription store", |put| sled_records(dir, put))?;
        let hasher = RandomState::new();
        let reader = log.reader()?;
        let live = log::live_entries(&reader, &hasher)?;
        let mut marks = live.marks;
        if !live.at.is_empty() {
            // This start's mark, on disk before any resumed dialog sends (`read_back`).
            marks.push(log.end());
            log.push(Kind::Mark, &[], &[])?;
            log.write()?;
            log.sync()?;
        }
        let writer = Writer { tally: live.tally, log, unsynced: false, last_sync: Instant::now() };
        let at = live.at;
        let inner = Arc::new(Inner {
            writer: Mutex::new(writer),
            pending: Mutex::new(HashMap::new()),
            mirror: OnceLock::new(),
            mirror_stale: AtomicBool::new(false),
            claimed: Mutex::new(None),
            found: Mutex::new((!at.is_empty()).then_some(Found { at, marks, reader })),
            hasher,
        });
        let weak = Arc::downgrade(&inner);
        std::thread::Builder::new().name("subscription-store".into()).spawn(move || write_behind(weak))?;
        Ok(SubscriptionStore { inner })
    }

    /// Records `sub` (`created`, or refreshed, moved, resumed, past its reservation):
    /// reserves the next `RESERVE` versions and CSeqs and returns where the reservation ends.
    pub fn put(&self, sub: &Subscription, subscriber: &str, expires_at: u64, created: bool) -> Result<(u32, u32), StoreError> {
        let version_from = sub.version.saturating_add(RESERVE);
        let cseq_from = sub.dialog.next_cseq.saturating_add(RESERVE);
        let stored = StoredRef {
            dialog: &sub.dialog,
            list_uri: sub.names.list_uri(),
            entries: &sub.entries,
            expires_at,
            version_from,
            cseq_from,
            format: sub.format,
            single: sub.single,
            subscriber,
        };
        let bytes = postcard::to_allocvec(&stored).map_err(|e| StoreError::Encode(e.to_string()))?;
        let k = key(&sub.dialog);
        let mut pending = self.inner.pending.lock();
        let still_new = created || matches!(pending.get(&k), Some(Change::New(_)));
        pending.insert(k, if still_new { Change::New(bytes) } else { Change::Put(bytes) });
        Ok((version_from, cseq_from))
    }

    /// Notes that the subscription of `dialog` ended.
    pub fn remove(&self, dialog: &Dialog) {
        self.remove_key(key(dialog));
    }

    fn remove_key(&self, k: Vec<u8>) {
        let mut pending = self.inner.pending.lock();
        if let Some(Change::New(_)) = pending.get(&k) {
            pending.remove(&k);
        } else {
            pending.insert(k, Change::Remove);
        }
    }

    /// From now until [`read_back_done`](Self::read_back_done), records are read back
    /// while the server runs: the dialogs this process adopts meanwhile are claimed
    /// ([`claim`](Self::claim)) and not read back. Call it before anything can adopt one.
    pub fn begin_read_back(&self) {
        *self.inner.claimed.lock() = Some(HashSet::new());
    }

    /// Every record found at the start but the claimed ones, in the order they were
    /// written; one that does not decode is logged, removed, and skipped. Each comes with
    /// its reservation moved past what the starts since it was written may have used (see
    /// [`Stored::reserved`]).
    pub fn read_back(&self) -> impl Iterator<Item = Stored> + '_ {
        let (offsets, marks, reader) = match self.inner.found.lock().as_ref() {
            Some(found) => {
                let reader = found.reader.try_clone().inspect_err(|e| tracing::error!("subscription store: the records cannot be read back (they stay stored): {e}"));
                (log::records_in_file_order(&found.at), found.marks.clone(), reader.ok())
            }
            None => (Vec::new(), Vec::new(), None),
        };
        // A mirror's copy of a record does not know of this log's marks: its reader (a node
        // that adopts it) must see the reservation a resumed dialog uses, so it is rewritten.
        let by_marks = self.inner.mirror.get().is_none();
        let mut buffer = Vec::new();
        offsets.into_iter().filter_map(move |offset| {
            let entry = match reader.as_ref()?.read_at(offset, &mut buffer) {
                Ok(entry) => entry,
                Err(e) => {
                    tracing::error!("subscription store: cannot read a record: {e}");
                    return None;
                }
            };
            if self.inner.claimed.lock().as_ref().is_some_and(|c| c.contains(entry.key)) {
                return None;
            }
            match postcard::from_bytes::<Stored>(entry.value) {
                Ok(mut s) => {
                    let starts_since = marks.len() - marks.partition_point(|&m| m < offset);
                    s.move_reservation(starts_since, by_marks);
                    Some(s)
                }
                Err(e) => {
                    tracing::warn!(bytes = entry.value.len(), "subscription store: a corrupt record skipped and removed: {e}");
                    self.remove_key(entry.key.to_vec());
                    None
                }
            }
        })
    }

    /// This process holds `dialog` (adopted from another node): not to be read back.
    pub fn claim(&self, dialog: &Dialog) {
        if let Some(claimed) = self.inner.claimed.lock().as_mut() {
            claimed.insert(key(dialog));
        }
    }

    /// The records are read back: nothing more needs claiming, or finding.
    pub fn read_back_done(&self) {
        *self.inner.claimed.lock() = None;
        *self.inner.found.lock() = None;
    }

    /// Whether a record of `dialog` was found at the start, until all of them are read
    /// back (the caller asks the table first: one read back is in it).
    pub fn holds(&self, call_id: &str, local_tag: &str) -> bool {
        let hash = self.inner.hasher.hash_one(dialog_key(call_id, local_tag));
        self.inner.found.lock().as_ref().is_some_and(|f| f.at.contains_key(&hash))
    }

    /// Removes a record (an expired or unresumable one).
    pub fn forget(&self, stored: &Stored) {
        self.remove(&stored.dialog);
    }

    /// Applies what was noted and writes everything to disk now (a clean stop).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.inner.apply()?;
        let mut writer = self.inner.writer.lock();
        writer.log.sync()?;
        writer.unsynced = false;
        Ok(())
    }

    /// From now on, every batch goes to `mirror` too, starting with every record held.
    pub fn mirror_to(&self, mirror: Arc<dyn Mirror>) {
        self.inner.mirror_stale.store(true, Ordering::Relaxed);
        let _ = self.inner.mirror.set(mirror);
    }

    /// Forgets every record found at the start whose key `keep` refuses (before `resume`:
    /// a cluster node drops the subscriptions a survivor took over).
    pub fn retain(&self, keep: impl Fn(&[u8]) -> bool) {
        let mut gone = Vec::new();
        let mut found = self.inner.found.lock();
        if let Some(Found { at, reader, .. }) = found.as_mut() {
            let mut buffer = Vec::new();
            at.retain(|_, offset| match reader.read_at(*offset, &mut buffer) {
                Ok(entry) if !keep(entry.key) => {
                    gone.push(entry.key.to_vec());
                    false
                }
                _ => true,
            });
            if at.is_empty() {
                *found = None; // nothing to read back: the log's rewrites may begin
            }
        }
        drop(found);
        for k in gone {
            self.remove_key(k);
        }
    }

    /// Whether no record was found at the start to read back.
    pub fn is_empty(&self) -> bool {
        self.inner.found.lock().as_ref().is_none_or(|f| f.at.is_empty())
    }

    /// The log's size on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.inner.writer.lock().log.end()
    }
}

impl Inner {
    /// Appends the noted changes in one write. The writer's lock is taken first and held
    /// throughout, so two batches (the writer thread's and a stop's `flush`) reach the file
    /// and the mirror in the order they were noted. A batch the file refuses is noted
    /// again (unless newer changes of its records came meanwhile), for the next try.
    fn apply(&self) -> Result<(), StoreError> {
        let mut writer = self.writer.lock();
        let noted = std::mem::take(&mut *self.pending.lock());
        if !noted.is_empty() {
            let mut tally = writer.tally;
            for (k, change) in &noted {
                let pushed = match change {
                    Change::New(v) | Change::Put(v) => writer.log.push(Kind::Put, k, v),
                    Change::Remove => writer.log.push(Kind::Remove, k, &[]),
                };
                match (pushed, change) {
                    (Err(e), _) => tracing::error!(key_bytes = k.len(), "subscription store: a record not written (lost on restart): {e}"),
                    (Ok(()), Change::New(_)) => tally.put(false),
                    (Ok(()), Change::Put(_)) => tally.put(true),
                    (Ok(()), Change::Remove) => tally.remove(true),
                }
            }
            if let Err(e) = writer.log.write() {
                let mut pending = self.pending.lock();
                for (k, change) in noted {
                    pending.entry(k).or_insert(change);
                }
                return Err(e.into());
            }
            writer.tally = tally;
            writer.unsynced = true;
        }
        self.to_mirror(&writer, &noted);
        Ok(())
    }

    /// Syncs what was written once `FLUSH_MS` have passed since the last sync, and rewrites
    /// the log once its dead records outnumber the live ones (not while it is read back:
    /// the reader would keep the old file's space to the end).
    fn maintain(&self) -> Result<(), StoreError> {
        let mut writer = self.writer.lock();
        if writer.unsynced && writer.last_sync.elapsed() >= Duration::from_millis(FLUSH_MS) {
            writer.log.sync()?;
            writer.unsynced = false;
            writer.last_sync = Instant::now();
        }
        let end = writer.log.end();
        if writer.tally.rewrite_due(end) && self.found.lock().is_none() {
            let started = Instant::now();
            let rewritten = log::live_entries(&writer.log.reader()?, &self.hasher).and_then(|live| {
                writer.log.rewrite(live.in_file_order())?;
                Ok(live.at.len() as u64)
            });
            // A failure is tried again once as many dead records have come again.
            writer.tally = Tally { live: rewritten.as_ref().map_or(writer.tally.live, |live| *live), dead: 0 };
            rewritten?;
            writer.unsynced = false;
            let after = writer.log.end();
            tracing::info!(before = end, after, secs = started.elapsed().as_secs_f64(), "subscription store: log rewritten with its live records");
        }
        Ok(())
    }

    /// Every live record, read from the log (for a mirror's rewrite).
    fn all_records(writer: &Writer, hasher: &RandomState) -> Result<Records, StoreError> {
        let reader = writer.log.reader()?;
        let live = log::live_entries(&reader, hasher)?;
        let mut buffer = Vec::new();
        let mut all = Vec::with_capacity(live.at.len());
        for offset in live.records_in_file_order() {
            let entry = reader.read_at(offset, &mut buffer)?;
            all.push((entry.key.to_vec(), entry.value.to_vec()));
        }
        Ok(all)
    }

    /// Gives the mirror the batch just applied, or everything when it missed one.
    fn to_mirror(&self, writer: &Writer, noted: &HashMap<Vec<u8>, Change>) {
        let Some(mirror) = self.mirror.get() else { return };
        let result = if self.mirror_stale.load(Ordering::Relaxed) {
            if !mirror.reachable() {
                return;
            }
            Inner::all_records(writer, &self.hasher).map_err(|e| e.to_string()).and_then(|all| mirror.replace(&all))
        } else if noted.is_empty() {
            return;
        } else {
            let mut puts = Vec::new();
            let mut removes = Vec::new();
            for (k, change) in noted {
                match change {
                    Change::New(v) | Change::Put(v) => puts.push((k.as_slice(), v.as_slice())),
                    Change::Remove => removes.push(k.as_slice()),
                }
            }
            mirror.apply(&puts, &removes)
        };
        if let Err(e) = &result {
            tracing::warn!("subscription records not mirrored (rewritten whole once it is back): {e}");
        }
        self.mirror_stale.store(result.is_err(), Ordering::Relaxed);
    }
}

/// The records of a store of the older layout (a sled database in `dir`, for
/// `storage::sled::carry_into`): each put; how many. Another layout is refused.
fn sled_records(dir: &Path, put: &mut dyn FnMut(&[u8], &[u8])) -> Result<u64, StoreError> {
    let db = crate::storage::sled::open(&sled::Config::new().path(dir))?;
    let found = db.get(SLED_LAYOUT_KEY)?.map(|v| v.as_ref().try_into().map(u32::from_be_bytes).unwrap_or(0));
    if let Some(found) = found.filter(|&f| f != LAYOUT) {
        return Err(StoreError::Layout { path: dir.display().to_string(), found });
    }
    let mut copied = 0;
    for item in db.iter() {
        let (k, v) = item?;
        if k.as_ref() != SLED_LAYOUT_KEY {
            put(&k, &v);
            copied += 1;
        }
    }
    Ok(copied)
}

/// The writer thread: applies the noted changes every `BATCH_MS` while the store lives.
fn write_behind(store: Weak<Inner>) {
    loop {
        std::thread::sleep(Duration::from_millis(BATCH_MS));
        let Some(inner) = store.upgrade() else { return };
        if let Err(e) = inner.apply().and_then(|()| inner.maintain()) {
            tracing::error!("subscription store: changes not written: {e}");
        }
    }
}

/// A record as stored (here or in a mirror); None when it does not decode.
pub fn decode(bytes: &[u8]) -> Option<Stored> {
    postcard::from_bytes(bytes).ok()
}

/// The same fields borrowed, to write without copying the list.
#[derive(Serialize)]
struct StoredRef<'a> {
    dialog: &'a Dialog,
    list_uri: &'a str,
    entries: &'a WatchedList,
    expires_at: u64,
    version_from: u32,
    cseq_from: u32,
    format: Format,
    single: bool,
    subscriber: &'a str,
}

/// A record's key: the dialog's Call-ID and our tag.
fn key(dialog: &Dialog) -> Vec<u8> {
    dialog_key(dialog.call_id(), dialog.local_tag())
}

/// A record's key: the Call-ID and our tag.
fn dialog_key(call_id: &str, local_tag: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(call_id.len() + local_tag.len() + 1);
    k.extend_from_slice(call_id.as_bytes());
    k.push(0);
    k.extend_from_slice(local_tag.as_bytes());
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Appends `n` records of 1 KiB under keys `k0..`, then removes every key but the
    /// multiples of ten, straight through the log (what the batches do).
    fn fill(store: &SubscriptionStore, n: usize) {
        let mut writer = store.inner.writer.lock();
        for i in 0..n {
            writer.log.push(Kind::Put, format!("k{i}").as_bytes(), &[i as u8; 1024]).unwrap();
        }
        for i in (0..n).filter(|i| i % 10 != 0) {
            writer.log.push(Kind::Remove, format!("k{i}").as_bytes(), &[]).unwrap();
        }
        writer.log.write().unwrap();
    }

    #[test]
    fn the_log_is_rewritten_with_its_live_records_once_read_back() {
        let dir = tempfile::tempdir().unwrap();
        fill(&SubscriptionStore::open(dir.path()).unwrap(), 10_000);
        let store = SubscriptionStore::open(dir.path()).unwrap();
        let before = store.size_on_disk();
        assert!(before > 8 << 20, "past the size worth a rewrite");
        store.inner.maintain().unwrap();
        assert_eq!(store.size_on_disk(), before, "not while the records found at the start wait to be read back");
        store.read_back_done();
        store.inner.maintain().unwrap();
        let after = store.size_on_disk();
        assert!(after < before / 5, "{after} of {before}");
        let mut keys: Vec<String> = Inner::all_records(&store.inner.writer.lock(), &store.inner.hasher).unwrap().into_iter().map(|(k, _)| String::from_utf8(k).unwrap()).collect();
        keys.sort();
        let mut want: Vec<String> = (0..10_000).step_by(10).map(|i| format!("k{i}")).collect();
        want.sort();
        assert_eq!(keys, want);
        drop(store);
        let again = SubscriptionStore::open(dir.path()).unwrap();
        assert_eq!(again.inner.found.lock().as_ref().unwrap().at.len(), 1_000, "the rewritten log reads back whole");
    }

    #[test]
    fn records_found_at_the_start_are_held_until_read_back_and_retain_drops_some() {
        let dir = tempfile::tempdir().unwrap();
        fill(&SubscriptionStore::open(dir.path()).unwrap(), 100);
        let store = SubscriptionStore::open(dir.path()).unwrap();
        let hash = |k: &str| store.inner.hasher.hash_one(k.as_bytes());
        let found = |k: &str| store.inner.found.lock().as_ref().unwrap().at.contains_key(&hash(k));
        assert!(found("k0") && found("k90") && !found("k1"));
        store.retain(|k| k != b"k90");
        assert!(found("k0") && !found("k90"));
        assert!(!store.is_empty());
        store.inner.apply().unwrap();
        drop(store);
        let store = SubscriptionStore::open(dir.path()).unwrap();
        let at = store.inner.found.lock().as_ref().unwrap().at.len();
        assert_eq!(at, 9, "the refused one removed in the log too");
        store.read_back_done();
        assert!(store.is_empty() && !store.holds("k0", ""));
        // a node whose records a survivor took over drops them all: nothing to read back
        drop(store);
        let store = SubscriptionStore::open(dir.path()).unwrap();
        store.retain(|_| false);
        assert!(store.is_empty() && store.inner.found.lock().is_none(), "the log's rewrites may begin");
        let empty = tempfile::tempdir().unwrap();
        assert!(SubscriptionStore::open(empty.path()).unwrap().inner.found.lock().is_none(), "nothing to read back: rewrites may begin");
    }
}
