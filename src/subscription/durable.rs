//! Subscriptions that survive a restart: each one is recorded when it is created, refreshed,
//! moved (target refresh) and ended, in a sled database of its own in `data_dir`.
//!
//! A record holds what it takes to go on: the dialog, the expiry, the watched list (its
//! compact form), the NOTIFY format, and the CSeq and version *reserved* ahead. A resumed
//! dialog starts at the reservation, so it never reuses a CSeq or a version, and the
//! record is rewritten only when a reservation runs out (every `RESERVE` NOTIFYs), never per
//! NOTIFY. sled writes back every `FLUSH_MS`: a crash loses at most the subscriptions
//! created or refreshed in that last interval; a clean stop flushes.
//!
//! Owns the records and their encoding only; the actor decides when to write, `resume.rs`
//! when to read. Must not send anything.

use super::record::Subscription;
use super::watched::WatchedList;
use crate::dialog::Dialog;
use crate::notification::Format;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// CSeqs and versions reserved per record write.
pub const RESERVE: u32 = 1024;
/// How often sled writes back (a crash loses at most this much).
pub const FLUSH_MS: u64 = 500;
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

#[derive(Clone)]
pub struct SubscriptionStore {
    db: sled::Db,
}

impl SubscriptionStore {
    pub fn open(dir: &Path) -> Result<SubscriptionStore, StoreError> {
        let db = sled::Config::new().path(dir).flush_every_ms(Some(FLUSH_MS)).cache_capacity(8 << 20).open()?;
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
        Ok(SubscriptionStore { db })
    }

    /// Records `sub` (created, refreshed, moved, or past its reservation): reserves the
    /// next `RESERVE` versions and CSeqs and returns where the reservation ends.
    pub fn put(&self, sub: &Subscription, subscriber: &str, expires_at: u64) -> Result<(u32, u32), StoreError> {
        let version_from = sub.version.saturating_add(RESERVE);
        let cseq_from = sub.dialog.next_cseq.saturating_add(RESERVE);
        let stored = StoredRef {
            dialog: &sub.dialog,
            list_uri: &sub.list_uri,
            entries: &sub.entries,
            expires_at,
            version_from,
            cseq_from,
            format: sub.format,
            single: sub.single,
            subscriber,
        };
        let bytes = postcard::to_allocvec(&stored).map_err(|e| sled::Error::Unsupported(e.to_string()))?;
        self.db.insert(key(&sub.dialog), bytes)?;
        Ok((version_from, cseq_from))
    }

    pub fn remove(&self, dialog: &Dialog) -> Result<(), StoreError> {
        self.db.remove(key(dialog))?;
        Ok(())
    }

    /// Every record; one that does not decode is logged, removed, and skipped.
    pub fn load(&self) -> Vec<Stored> {
        let mut out = Vec::new();
        for item in self.db.iter() {
            let (k, v) = match item {
                Ok(kv) => kv,
                Err(e) => {
                    tracing::error!("subscription store: cannot read a record: {e}");
                    continue;
                }
            };
            if k.as_ref() == LAYOUT_KEY {
                continue;
            }
            match postcard::from_bytes::<Stored>(&v) {
                Ok(s) => out.push(s),
                Err(e) => {
                    tracing::warn!(bytes = v.len(), "subscription store: a corrupt record skipped and removed: {e}");
                    let _ = self.db.remove(k);
                }
            }
        }
        out
    }

    /// Removes a record by its dialog key (an expired or unresumable one).
    pub fn forget(&self, stored: &Stored) {
        if let Err(e) = self.db.remove(key(&stored.dialog)) {
            tracing::warn!("subscription store: cannot remove a record: {e}");
        }
    }

    /// Writes everything back now (a clean stop).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    /// Records held and bytes on disk.
    pub fn len(&self) -> usize {
        self.db.len().saturating_sub(1)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
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
    let mut k = Vec::with_capacity(dialog.call_id().len() + dialog.local_tag().len() + 1);
    k.extend_from_slice(dialog.call_id().as_bytes());
    k.push(0);
    k.extend_from_slice(dialog.local_tag().as_bytes());
    k
}
