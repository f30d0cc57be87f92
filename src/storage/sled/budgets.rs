//! Budgets in their own sled database (`data_dir/budget`): one tree, `accounts`, with one
//! record per account:
//!
//! - key: the first 8 bytes of SHA-256(salt, `account:`, the account's name), so that
//!   the store holds no account name either, and every key is stored inline (sled keeps a
//!   key over 22 bytes, e.g. `sip:alice@example.org`, in an allocation of its own);
//! - value: the bucket (`[tokens f64 BE][updated_at u64 BE][remembered u32 BE]`, 20
//!   bytes), then the sorted 4-byte hashes of the numbers it was charged for
//!   ([`hashes_to_bytes`]): a charge is one read and one write whatever the list size;
//!
//! and the salt under `salt` in the default tree. Stores written before kept two trees
//! keyed by the account's name, `buckets` (the bucket) and `charged` (its 8-byte hashes):
//! an account found only there is read from them, and its next charge moves it into
//! `accounts` (one key and one write per charge instead of two: ~50 bytes less of sled's
//! memory per account, BENCHMARKS.md). Charges and resets of all accounts are serialised
//! by one lock (one process holds the database).

use crate::storage::budgets::{hashes_from_bytes, hashes_to_bytes, BudgetError, BudgetStore, Charge, Hash, Saved, TokenBucket};
use crate::storage::StorageError;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use std::path::Path;

const SALT_KEY: &[u8] = b"salt";
/// A record's bucket, before its hashes.
const BUCKET_BYTES: usize = 20;

pub struct SledBudgets {
    db: sled::Db,
    accounts: sled::Tree,
    /// The older layout's trees, read until each account's next charge.
    old_buckets: sled::Tree,
    old_charged: sled::Tree,
    salt: [u8; 16],
    write: Mutex<()>,
}

impl From<sled::Error> for BudgetError {
    fn from(e: sled::Error) -> BudgetError {
        BudgetError::Storage(e.into())
    }
}

/// An account's record as stored: where it was found, its bucket and its hashes.
struct Record {
    old: bool,
    bucket: Saved,
    hashes: Vec<Hash>,
}

fn saved(bytes: Option<&[u8]>) -> Saved {
    match bytes {
        Some(v) => TokenBucket::from_bytes(v).map_or(Saved::Unreadable, Saved::Found),
        None => Saved::Missing,
    }
}

impl SledBudgets {
    /// Opens (creating if needed) the store in `dir`.
    pub fn open(dir: &Path) -> Result<SledBudgets, BudgetError> {
        std::fs::create_dir_all(dir)?;
        // A small cache: the store is written once per new list SUBSCRIBE and read back only on
        // the next one; with 16 MiB, sled's cache of 100,000 new accounts was ~160 bytes
        // of every held subscription.
        let db = sled::Config::new().path(dir).cache_capacity(2 << 20).open()?;
        let salt = match db.get(SALT_KEY)? {
            Some(v) if v.len() == 16 => v.as_ref().try_into().unwrap_or([0; 16]),
            _ => {
                let s: [u8; 16] = rand::random();
                db.insert(SALT_KEY, &s)?;
                db.flush()?;
                s
            }
        };
        Ok(SledBudgets {
            accounts: db.open_tree("accounts")?,
            old_buckets: db.open_tree("buckets")?,
            old_charged: db.open_tree("charged")?,
            db,
            salt,
            write: Mutex::new(()),
        })
    }

    /// The key of `account`'s record.
    fn key(&self, account: &str) -> [u8; 8] {
        let mut h = Sha256::new();
        h.update(self.salt);
        h.update(b"account:");
        h.update(account.as_bytes());
        let digest = h.finalize();
        let mut key = [0; 8];
        key.copy_from_slice(&digest[..8]);
        key
    }

    /// `account`'s record, from `accounts` or else from the older trees.
    fn read(&self, account: &str, key: &[u8; 8]) -> Result<Record, StorageError> {
        if let Some(v) = self.accounts.get(key)? {
            let (bucket, hashes) = v.split_at(BUCKET_BYTES.min(v.len()));
            return Ok(Record { old: false, bucket: saved(Some(bucket)), hashes: hashes_from_bytes(hashes) });
        }
        let bucket = self.old_buckets.get(account.as_bytes())?;
        let hashes = self.old_charged.get(account.as_bytes())?.map_or_else(Vec::new, |blob| hashes_from_bytes(&blob));
        Ok(Record { old: bucket.is_some() || !hashes.is_empty(), bucket: saved(bucket.as_deref()), hashes })
    }

    /// Forgets `account` in the older trees.
    fn forget_old(&self, account: &str) -> Result<(), StorageError> {
        self.old_charged.remove(account.as_bytes())?;
        self.old_buckets.remove(account.as_bytes())?;
        Ok(())
    }
}

impl BudgetStore for SledBudgets {
    fn salt(&self) -> [u8; 16] {
        self.salt
    }

    fn bucket(&self, account: &str) -> Result<Saved, StorageError> {
        Ok(self.read(account, &self.key(account))?.bucket)
    }

    fn charge(&self, account: &str, charge: &mut Charge<'_>) -> Result<(), StorageError> {
        let key = self.key(account);
        let _w = self.write.lock();
        let record = self.read(account, &key)?;
        let Some((bucket, hashes)) = charge(record.bucket, record.hashes) else { return Ok(()) };
        // No flush here: sled writes back within flush_every_ms. A crash can forget the
        // last instant of charges, which errs towards the user; an fsync per SUBSCRIBE
        // would cap the subscription rate. A crash between the insert and the removal of
        // the older record leaves both: the new one is read first.
        let value = [bucket.to_bytes(), hashes_to_bytes(&hashes)].concat();
        self.accounts.insert(key, value)?;
        if record.old {
            self.forget_old(account)?;
        }
        Ok(())
    }

    fn reset(&self, account: &str) -> Result<(), StorageError> {
        let key = self.key(account);
        let _w = self.write.lock();
        self.accounts.remove(key)?;
        self.forget_old(account)?;
        self.db.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() { out.extend(files(&p)) } else { out.push(p) }
        }
        out
    }

    #[test]
    fn the_store_holds_no_account_name() {
        let dir = tempfile::tempdir().unwrap();
        let name = "sip:carol-the-unlikely@example.org";
        {
            let store = SledBudgets::open(dir.path()).unwrap();
            let bucket = TokenBucket { tokens: 2.0, updated_at: 10, remembered: 1 };
            store.charge(name, &mut |_, _| Some((bucket, vec![42]))).unwrap();
            store.db.flush().unwrap();
            assert_eq!(store.bucket(name).unwrap(), Saved::Found(bucket));
        }
        for file in files(dir.path()) {
            let bytes = std::fs::read(&file).unwrap();
            assert!(!bytes.windows(12).any(|w| w == b"carol-the-un"), "{} holds the name", file.display());
        }
        let store = SledBudgets::open(dir.path()).unwrap();
        let mut known = Vec::new();
        store.charge(name, &mut |_, k| {
            known = k;
            None
        }).unwrap();
        assert_eq!(known, vec![42], "read back after reopening");
    }

    #[test]
    fn an_account_in_the_older_trees_is_read_and_reset() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledBudgets::open(dir.path()).unwrap();
        let bucket = TokenBucket { tokens: 1.0, updated_at: 5, remembered: 1 };
        store.old_buckets.insert("bob", bucket.to_bytes()).unwrap();
        store.old_charged.insert("bob", &0x0000_0007_0000_0001u64.to_be_bytes()).unwrap();
        assert_eq!(store.bucket("bob").unwrap(), Saved::Found(bucket));
        store.reset("bob").unwrap();
        assert_eq!(store.bucket("bob").unwrap(), Saved::Missing);
        assert!(store.old_buckets.is_empty() && store.old_charged.is_empty());
    }
}
