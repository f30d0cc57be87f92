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
use super::log::{live_entries, Kind, Live, Log, Reader};
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
    reader: Reader,
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
        let copied = super::sled::SledBudgets::copy_into(dir, &mut |key, value| log.push(Kind::Put, key, value))?;
        log.write()?;
        log.sync()?;
        if let Some(accounts) = copied {
            super::sled::remove_files(dir)?;
            tracing::info!(accounts, "budget store: the records of the older layout (sled) copied into the log");
        }
        let hasher = RandomState::new();
        let reader = log.reader()?;
        let live = live_entries(&reader, &hasher)?;
        let mut state = State { log, reader, live, hasher, unsynced: false, buffer: Vec::new() };
        let salt = match state.read(&[]).and_then(|v| <[u8; 16]>::try_from(v).ok()) {
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
    /// The value of `key`'s record, if it has one.
    fn read(&mut self, key: &[u8]) -> Option<&[u8]> {
        let offset = *self.live.at.get(&self.hasher.hash_one(key))?;
        match self.reader.read_at(offset, &mut self.buffer) {
            Ok(entry) if entry.key == key => Some(entry.value),
            Ok(_) => None, // another account of the same hash
            Err(e) => {
                tracing::error!("budget store: cannot read a record: {e}");
                None
            }
        }
    }

    /// Appends `key`'s new record (or its removal) and writes it at once.
    fn write(&mut self, kind: Kind, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        let offset = self.log.end();
        self.log.push(kind, key, value);
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
        let after = self.log.rewrite(self.live.in_file_order())?;
        self.reader = self.log.reader()?;
        self.live = live_entries(&self.reader, &self.hasher)?;
        tracing::info!(before = end, after, "budget store: log rewritten with its live records");
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
        state.unsynced = false;
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
        Ok(match state.read(account.as_bytes()) {
            Some(v) => TokenBucket::from_bytes(v).map_or(Saved::Unreadable, Saved::Found),
            None => Saved::Missing,
        })
    }

    fn charge(&self, account: &str, charge: &mut Charge<'_>) -> Result<(), StorageError> {
        let mut state = self.state.lock();
        let (saved, hashes) = match state.read(account.as_bytes()) {
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
        let written = 3 * 20_000 * 400;
        assert!(after < written / 2, "{after} of more than {written} written");
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
