//! Budgets in an append-only record log (`storage::log`, `data_dir/budget/records.log`):
//! one record per account, `[bucket: 20 bytes][charged hashes]` ([`TokenBucket::to_bytes`],
//! [`hashes_to_bytes`]), the last one written winning; the salt is the record of the empty
//! key. In memory, only where each account's record starts, under a keyed hash of its name
//! (~24-40 B an account, where sled held ~250-380 B in the heap: BENCHMARKS.md, "Memory per
//! held subscription"). A charge reads its account's record from the page cache and appends
//! the new one; the log is synced every `SYNC_MS` by a thread of its own, and rewritten with
//! only the live records by that thread once the dead ones outnumber them (charges wait
//! meanwhile: about a second for a million accounts). A store of the older layout (sled, in the same
//! directory) is copied in at the first start.
//!
//! Two accounts of one hash (2^-64 a pair, keyed per process) would share a slot: the
//! record's own key is checked, so one of them reads as never charged, which errs towards
//! the user. Charges and resets are serialised by one lock (one process holds the file).

use super::budgets::{hashes_from_bytes, hashes_to_bytes, BudgetError, BudgetStore, Charge, Hash, Saved, TokenBucket};
use super::log::{live_entries, Kind, Live, Log, Tally};
use super::StorageError;
use parking_lot::Mutex;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// The layout of the records.
const LAYOUT: u32 = 1;
/// How often what was written is synced.
const SYNC_MS: u64 = 500;
/// A bucket's bytes at the head of a record.
const BUCKET: usize = 20;

pub struct LogBudgets {
    state: Arc<Mutex<State>>,
    salt: [u8; 16],
}

struct State {
    log: Log,
    /// Each account's record, by the keyed hash of its name, and the count of live and dead
    /// records since the last rewrite (or the start).
    live: Live,
    hasher: RandomState,
    unsynced: bool,
    /// Reused for reading records.
    buffer: Vec<u8>,
}

impl LogBudgets {
    /// Opens (creating if needed) the store in `dir`.
    pub fn open(dir: &Path) -> Result<LogBudgets, BudgetError> {
        std::fs::create_dir_all(dir)?;
        let (mut log, opened) = Log::open(&dir.join("records.log"), LAYOUT).map_err(StorageError::new)?;
        if opened.dropped > 0 {
            tracing::warn!(bytes = opened.dropped, "budget store: the end of the log was cut short (a crash while writing); the records before it are kept");
        }
        super::sled::carry_into(dir, &mut log, "budget store", |put| super::sled::SledBudgets::each_record(dir, put))?;
        let hasher = RandomState::new();
        let live = live_entries(&log.reader()?, &hasher)?;
        let mut state = State { log, live, hasher, unsynced: false, buffer: Vec::new() };
        let salt = match state.read(&[])?.and_then(|v| <[u8; 16]>::try_from(v).ok()) {
            Some(salt) => salt,
            None => {
                let salt: [u8; 16] = rand::random();
                state.write(Kind::Put, &[], &salt)?;
                state.log.sync()?;
                salt
            }
        };
        let state = Arc::new(Mutex::new(state));
        let weak = Arc::downgrade(&state);
        std::thread::Builder::new().name("budget-store".into()).spawn(move || maintain(weak))?;
        Ok(LogBudgets { state, salt })
    }
}

impl State {
    /// The value of `key`'s record, if it has one. A record that cannot be read is an
    /// error (the budget then refuses, as for any store failure), not a missing one.
    fn read(&mut self, key: &[u8]) -> Result<Option<&[u8]>, StorageError> {
        let Some(&offset) = self.live.at.get(&self.hasher.hash_one(key)) else { return Ok(None) };
        let entry = self.log.read_at(offset, &mut self.buffer).map_err(StorageError::new)?;
        // another account of the same hash reads as none
        Ok((entry.key == key).then_some(entry.value))
    }

    /// Appends `key`'s new record (or its removal) and writes it at once.
    fn write(&mut self, kind: Kind, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        let offset = self.log.end();
        self.log.push(kind, key, value).map_err(StorageError::new)?;
        self.log.write().map_err(StorageError::new)?;
        self.unsynced = true;
        let hash = self.hasher.hash_one(key);
        let (at, tally) = (&mut self.live.at, &mut self.live.tally);
        match kind {
            Kind::Put => tally.put(at.insert(hash, offset).is_some()),
            Kind::Remove => tally.remove(at.remove(&hash).is_some()),
            Kind::Mark => {}
        }
        Ok(())
    }

    /// Rewrites the log with the live records once the dead ones outnumber them.
    fn rewrite_if_due(&mut self) -> std::io::Result<()> {
        let end = self.log.end();
        if !self.live.tally.rewrite_due(end) {
            return Ok(());
        }
        let mut order: Vec<(u64, u64)> = self.live.at.iter().map(|(&hash, &offset)| (offset, hash)).collect();
        order.sort_unstable();
        let moved = match self.log.rewrite(order.iter().map(|(offset, _)| *offset)) {
            Ok(moved) => moved,
            Err(e) => {
                self.live.tally.dead = 0; // tried again once as many dead records have come
                return Err(e);
            }
        };
        self.live.at = order.iter().zip(moved).map(|(&(_, hash), offset)| (hash, offset)).collect();
        self.live.tally = Tally { live: self.live.at.len() as u64, dead: 0 };
        tracing::info!(before = end, after = self.log.end(), "budget store: log rewritten with its live records");
        Ok(())
    }
}

/// The store's own thread: syncs every `SYNC_MS` and rewrites the log when it is due.
fn maintain(state: Weak<Mutex<State>>) {
    loop {
        std::thread::sleep(Duration::from_millis(SYNC_MS));
        let Some(state) = state.upgrade() else { return };
        let mut state = state.lock();
        let synced = if state.unsynced { state.log.sync() } else { Ok(()) };
        state.unsynced &= synced.is_err();
        if let Err(e) = synced.and_then(|()| state.rewrite_if_due()) {
            tracing::error!("budget store: {e}");
        }
    }
}

/// An account's record: its bucket and hashes.
fn record(bucket: &TokenBucket, hashes: &[Hash]) -> Vec<u8> {
    [bucket.to_bytes(), hashes_to_bytes(hashes)].concat()
}

impl BudgetStore for LogBudgets {
    fn salt(&self) -> [u8; 16] {
        self.salt
    }

    fn bucket(&self, account: &str) -> Result<Saved, StorageError> {
        let mut state = self.state.lock();
        Ok(match state.read(account.as_bytes())? {
            Some(v) => TokenBucket::from_bytes(v).map_or(Saved::Unreadable, Saved::Found),
            None => Saved::Missing,
        })
    }

    fn charge(&self, account: &str, charge: &mut Charge<'_>) -> Result<(), StorageError> {
        let mut state = self.state.lock();
        let (saved, hashes) = match state.read(account.as_bytes())? {
            Some(v) => (TokenBucket::from_bytes(v).map_or(Saved::Unreadable, Saved::Found), v.get(BUCKET..).map_or_else(Vec::new, hashes_from_bytes)),
            None => (Saved::Missing, Vec::new()),
        };
        let Some((bucket, hashes)) = charge(saved, hashes) else { return Ok(()) };
        // Written at once, synced within SYNC_MS: a crash can forget the last instant of
        // charges, which errs towards the user.
        state.write(Kind::Put, account.as_bytes(), &record(&bucket, &hashes))
    }

    fn reset(&self, account: &str) -> Result<(), StorageError> {
        let mut state = self.state.lock();
        state.write(Kind::Remove, account.as_bytes(), &[])?;
        state.log.sync().map_err(StorageError::new)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn charge_to(store: &LogBudgets, account: &str, tokens: f64, hashes: Vec<Hash>) {
        let bucket = TokenBucket { tokens, updated_at: 1, remembered: hashes.len() as u32 };
        store.charge(account, &mut |_, _| Some((bucket, hashes.clone()))).unwrap();
    }

    fn remembered(store: &LogBudgets, account: &str) -> (Saved, Vec<Hash>) {
        let mut seen = None;
        store
            .charge(account, &mut |saved, hashes| {
                seen = Some((saved, hashes));
                None
            })
            .unwrap();
        seen.unwrap()
    }

    /// Sled files beside a log with records (a copy whose deletion a crash cut short, or an
    /// older build run in between) are deleted, never copied over the log: their salt
    /// would make every remembered number unknown.
    #[test]
    fn sled_files_beside_a_log_are_deleted_not_copied() {
        let dir = tempfile::tempdir().unwrap();
        let store = LogBudgets::open(dir.path()).unwrap();
        let salt = store.salt();
        charge_to(&store, "sip:alice@example.org", 3.0, vec![1, 2, 3]);
        drop(store);
        drop(super::super::sled::SledBudgets::open(dir.path()).unwrap()); // a fresh salt of its own
        assert!(super::super::sled::is_in(dir.path()));
        let store = LogBudgets::open(dir.path()).unwrap();
        assert_eq!(store.salt(), salt);
        assert_eq!(remembered(&store, "sip:alice@example.org").1, vec![1, 2, 3]);
        assert!(!super::super::sled::is_in(dir.path()), "the sled files deleted");
    }

    #[test]
    fn records_salt_and_resets_survive_a_reopen_and_a_rewrite() {
        let dir = tempfile::tempdir().unwrap();
        let store = LogBudgets::open(dir.path()).unwrap();
        let salt = store.salt();
        for round in 0..3 {
            for i in 0..20_000u32 {
                charge_to(&store, &format!("sip:{i}@example.org"), f64::from(round), (i..i + 100).collect());
            }
        }
        store.reset("sip:7@example.org").unwrap();
        // (the store's thread may have rewritten it already)
        store.state.lock().rewrite_if_due().unwrap();
        let after = store.state.lock().log.end();
        // 60,000 records of ~450 bytes were written: only a rewrite leaves less than that
        let written = 3 * 20_000 * 400;
        assert!(after < written, "{after} of more than {written} written");
        let check = |store: &LogBudgets| {
            assert_eq!(store.bucket("sip:7@example.org").unwrap(), Saved::Missing);
            for i in [0u32, 8, 19_999] {
                let (saved, hashes) = remembered(store, &format!("sip:{i}@example.org"));
                assert_eq!(saved, Saved::Found(TokenBucket { tokens: 2.0, updated_at: 1, remembered: 100 }));
                assert_eq!(hashes, (i..i + 100).collect::<Vec<_>>());
            }
        };
        check(&store);
        drop(store);
        let store = LogBudgets::open(dir.path()).unwrap();
        assert_eq!(store.salt(), salt);
        check(&store);
    }
}
