//! Subscriptions that survive a restart: each one is recorded when it is created, refreshed,
//! moved (target refresh) and ended, in a sled database of its own in `data_dir`.
//!
//! A record holds what it takes to go on: the dialog, the expiry, the watched list (its
//! compact form), the NOTIFY format, and the CSeq and version *reserved* ahead. A resumed
//! dialog starts at the reservation, so it never reuses a CSeq or a version, and the
//! record is rewritten only when a reservation runs out (every `RESERVE` NOTIFYs), never per
//! NOTIFY.
//!
//! Writes are behind the request path: `put` and `remove` only note the change, and a
//! writer thread applies what was noted every `BATCH_MS` in one sled batch. A subscription
//! created and ended within one batch never reaches sled (load tests, fetches in all but
//! name), and a burst of new subscriptions costs one batch, not a write each. sled writes
//! back every `FLUSH_MS`: a crash loses at most the subscriptions created, refreshed or
//! ended in the last `BATCH_MS + FLUSH_MS`; a clean stop writes everything.
//!
//! In cluster mode a [`Mirror`] (`cluster::records`) gets the same batches after sled, so
//! the records reach Redis with no write per request; a batch it could not take makes it
//! rewrite everything from sled at the next one.
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
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};

/// CSeqs and versions reserved per record write.
pub const RESERVE: u32 = 1024;
/// How often sled writes back.
pub const FLUSH_MS: u64 = 500;
/// How often noted changes are applied to sled.
pub const BATCH_MS: u64 = 100;
/// The layout of the records; another one is refused with a clear error.
const LAYOUT: u32 = 1;
const LAYOUT_KEY: &[u8] = b"\0layout";

/// Where the records live inside the data directory.
pub fn dir_in(data_dir: &Path) -> PathBuf {
    data_dir.join("subscriptions")
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("subscription store: {0}")]
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

/// sled's page cache for a store of up to `max_subscriptions` (0: no limit): 64 bytes each,
/// between 1 and 64 MiB. A restart reads every record and rewrites each resumed one; with
/// a cache far below the store, sled pulls pages back from its log and rewrites them for
/// each (300,000 resumed: 22.5 s with 64 MiB against 30.6 s with 1 MiB, BENCHMARKS.md).
fn cache_for(max_subscriptions: usize) -> u64 {
    const MIB: u64 = 1 << 20;
    match max_subscriptions {
        0 => 64 * MIB,
        n => (n as u64).saturating_mul(64).clamp(MIB, 64 * MIB),
    }
}

#[derive(Clone)]
pub struct SubscriptionStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    /// Changes noted and not yet applied, by record key.
    pending: Mutex<HashMap<Vec<u8>, Change>>,
    mirror: OnceLock<Arc<dyn Mirror>>,
    /// The mirror missed a batch: the next one rewrites it whole.
    mirror_stale: AtomicBool,
    /// While the records are read back (`begin_read_back` to `read_back_done`), the keys
    /// of the dialogs this process took on otherwise meanwhile (created, adopted): they are
    /// not read back (their dialog is in the table, or ended).
    claimed: Mutex<Option<HashSet<Vec<u8>>>>,
}

/// A noted change of one record.
enum Change {
    /// A record that sled has never had (so its removal cancels it).
    New(Vec<u8>),
    Put(Vec<u8>),
    Remove,
}

impl SubscriptionStore {
    /// Opens the store with a page cache sized for `max_subscriptions` (see [`cache_for`]).
    pub fn open(dir: &Path, max_subscriptions: usize) -> Result<SubscriptionStore, StoreError> {
        let db = sled::Config::new().path(dir).flush_every_ms(Some(FLUSH_MS)).cache_capacity(cache_for(max_subscriptions)).open()?;
        match db.get(LAYOUT_KEY)? {
            None => {
                db.insert(LAYOUT_KEY, &LAYOUT.to_be_bytes())?;
                db.flush()?;
            }
            Some(v) => {
                let found = v.as_ref().try_into().map(u32::from_be_bytes).unwrap_or(0);
                if found != LAYOUT {
                    return Err(StoreError::Layout { path: dir.display().to_string(), found });
                }
            }
        }
        let inner = Arc::new(Inner { db, pending: Mutex::new(HashMap::new()), mirror: OnceLock::new(), mirror_stale: AtomicBool::new(false), claimed: Mutex::new(None) });
        let weak = Arc::downgrade(&inner);
        std::thread::Builder::new().name("subscription-store".into()).spawn(move || write_behind(weak)).map_err(|e| sled::Error::Unsupported(e.to_string()))?;
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
        let bytes = postcard::to_allocvec(&stored).map_err(|e| sled::Error::Unsupported(e.to_string()))?;
        let k = key(&sub.dialog);
        if created {
            self.claim_key(&k);
        }
        let mut pending = self.inner.pending.lock();
        let still_new = created || matches!(pending.get(&k), Some(Change::New(_)));
        pending.insert(k, if still_new { Change::New(bytes) } else { Change::Put(bytes) });
        Ok((version_from, cseq_from))
    }

    /// Notes that the subscription of `dialog` ended.
    pub fn remove(&self, dialog: &Dialog) {
        let mut pending = self.inner.pending.lock();
        let k = key(dialog);
        if let Some(Change::New(_)) = pending.get(&k) {
            pending.remove(&k);
        } else {
            pending.insert(k, Change::Remove);
        }
    }

    /// From now until [`read_back_done`](Self::read_back_done), records are read back
    /// while the server runs: the dialogs this process takes on otherwise meanwhile are
    /// claimed (`put` of a created one, [`claim`](Self::claim)) and not read back. Call it
    /// before anything can create a subscription.
    pub fn begin_read_back(&self) {
        *self.inner.claimed.lock() = Some(HashSet::new());
    }

    /// Every record but the claimed ones, read as it goes from sled; one that does not
    /// decode is logged, removed, and skipped.
    pub fn read_back(&self) -> impl Iterator<Item = Stored> + '_ {
        self.inner.db.iter().filter_map(move |item| {
            let (k, v) = match item {
                Ok(kv) => kv,
                Err(e) => {
                    tracing::error!("subscription store: cannot read a record: {e}");
                    return None;
                }
            };
            if k.as_ref() == LAYOUT_KEY || self.inner.claimed.lock().as_ref().is_some_and(|c| c.contains(k.as_ref())) {
                return None;
            }
            match postcard::from_bytes::<Stored>(&v) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(bytes = v.len(), "subscription store: a corrupt record skipped and removed: {e}");
                    let _ = self.inner.db.remove(k);
                    None
                }
            }
        })
    }

    /// This process holds `dialog` (adopted from another node): not to be read back.
    pub fn claim(&self, dialog: &Dialog) {
        self.claim_key(&key(dialog));
    }

    fn claim_key(&self, k: &[u8]) {
        if let Some(claimed) = self.inner.claimed.lock().as_mut() {
            claimed.insert(k.to_vec());
        }
    }

    /// The records are read back: nothing more needs claiming.
    pub fn read_back_done(&self) {
        *self.inner.claimed.lock() = None;
    }

    /// Whether a record of `dialog` is stored (not counting what is noted and not yet
    /// written).
    pub fn holds(&self, call_id: &str, local_tag: &str) -> bool {
        self.inner.db.contains_key(dialog_key(call_id, local_tag)).unwrap_or(false)
    }

    /// Removes a record by its dialog key (an expired or unresumable one).
    pub fn forget(&self, stored: &Stored) {
        if let Err(e) = self.inner.db.remove(key(&stored.dialog)) {
            tracing::warn!("subscription store: cannot remove a record: {e}");
        }
    }

    /// Applies what was noted and writes everything back now (a clean stop).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.inner.apply()?;
        self.inner.db.flush()?;
        Ok(())
    }

    /// From now on, every batch goes to `mirror` too, starting with every record held.
    pub fn mirror_to(&self, mirror: Arc<dyn Mirror>) {
        self.inner.mirror_stale.store(true, Ordering::Relaxed);
        let _ = self.inner.mirror.set(mirror);
    }

    /// Forgets every record whose key `keep` refuses (before `resume`: a cluster node drops
    /// the subscriptions a survivor took over).
    pub fn retain(&self, keep: impl Fn(&[u8]) -> bool) {
        for k in self.inner.db.iter().keys().flatten() {
            if k.as_ref() != LAYOUT_KEY && !keep(&k) {
                let _ = self.inner.db.remove(k);
            }
        }
    }

    /// Records held (once applied).
    pub fn len(&self) -> usize {
        self.inner.db.len().saturating_sub(1)
    }

    /// Whether no record is stored (reads at most two keys, where `len` reads them all).
    pub fn is_empty(&self) -> bool {
        self.inner.db.iter().keys().filter_map(Result::ok).all(|k| k.as_ref() == LAYOUT_KEY)
    }

    pub fn size_on_disk(&self) -> u64 {
        self.inner.db.size_on_disk().unwrap_or(0)
    }
}

impl Inner {
    /// Applies the noted changes in one sled batch.
    fn apply(&self) -> Result<(), StoreError> {
        let noted = std::mem::take(&mut *self.pending.lock());
        if !noted.is_empty() {
            let mut batch = sled::Batch::default();
            for (k, change) in &noted {
                match change {
                    Change::New(v) | Change::Put(v) => batch.insert(k.as_slice(), v.as_slice()),
                    Change::Remove => batch.remove(k.as_slice()),
                }
            }
            self.db.apply_batch(batch)?;
        }
        self.to_mirror(&noted);
        Ok(())
    }

    /// Gives the mirror the batch just applied, or everything when it missed one.
    fn to_mirror(&self, noted: &HashMap<Vec<u8>, Change>) {
        let Some(mirror) = self.mirror.get() else { return };
        let result = if self.mirror_stale.load(Ordering::Relaxed) {
            if !mirror.reachable() {
                return;
            }
            let all: Vec<(Vec<u8>, Vec<u8>)> = self.db.iter().flatten().filter(|(k, _)| k.as_ref() != LAYOUT_KEY).map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
            mirror.replace(&all)
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

/// The writer thread: applies the noted changes every `BATCH_MS` while the store lives.
fn write_behind(store: Weak<Inner>) {
    loop {
        std::thread::sleep(std::time::Duration::from_millis(BATCH_MS));
        let Some(inner) = store.upgrade() else { return };
        if let Err(e) = inner.apply() {
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
