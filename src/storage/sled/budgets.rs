//! Budgets in their own sled database (`data_dir/budget`), two trees:
//!
//! - `buckets`: account → `[tokens f64 BE][updated_at u64 BE][remembered u32 BE]`;
//! - `charged`: account → the sorted 4-byte hashes of the numbers it was charged for
//!   ([`hashes_to_bytes`]; a record of the older 8-byte layout is read too, and rewritten
//!   by the account's next charge), one value per account so a charge is one read and one
//!   write whatever the list size;
//!
//! and the salt under `salt` in the default tree. Charges and resets of all accounts are
//! serialised by one lock (one process holds the database).

use crate::storage::budgets::{hashes_from_bytes, hashes_to_bytes, BudgetError, BudgetStore, Charge, Hash, Saved, TokenBucket};
use crate::storage::StorageError;
use parking_lot::Mutex;
use std::path::Path;

const SALT_KEY: &[u8] = b"salt";

pub struct SledBudgets {
    db: sled::Db,
    buckets: sled::Tree,
    charged: sled::Tree,
    salt: [u8; 16],
    write: Mutex<()>,
}

impl From<sled::Error> for BudgetError {
    fn from(e: sled::Error) -> BudgetError {
        BudgetError::Storage(e.into())
    }
}

impl SledBudgets {
    /// Opens (creating if needed) the store in `dir`.
    pub fn open(dir: &Path) -> Result<SledBudgets, BudgetError> {
        std::fs::create_dir_all(dir)?;
        // A small cache: the store is written once per new list SUBSCRIBE and read back only on
        // the next one; with 16 MiB, sled's cache of 100,000 new accounts was ~160 bytes
        // of every held subscription.
        let db = super::open(&sled::Config::new().path(dir).cache_capacity(2 << 20))?;
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
            buckets: db.open_tree("buckets")?,
            charged: db.open_tree("charged")?,
            db,
            salt,
            write: Mutex::new(()),
        })
    }

    /// The store of this layout in `dir` as the records of `storage::log_budgets`
    /// (`put(key, value)`: the salt under the empty key, each account's bucket followed by
    /// its hashes); returns how many accounts ([`super::carry_into`] calls it).
    pub fn each_record(dir: &Path, put: &mut dyn FnMut(&[u8], &[u8])) -> Result<u64, BudgetError> {
        let old = SledBudgets::open(dir)?;
        put(&[], &old.salt);
        let mut accounts = 0;
        for item in old.buckets.iter() {
            let (account, bucket) = item?;
            let hashes = old.charged.get(&account)?.map_or_else(Vec::new, |h| hashes_to_bytes(&hashes_from_bytes(&h)));
            put(&account, &[bucket.as_ref(), &hashes].concat());
            accounts += 1;
        }
        Ok(accounts)
    }

    /// The sorted hashes of the numbers `account` was charged for.
    fn remembered(&self, account: &str) -> Result<Vec<Hash>, StorageError> {
        Ok(self.charged.get(account.as_bytes())?.map_or_else(Vec::new, |blob| hashes_from_bytes(&blob)))
    }
}

impl BudgetStore for SledBudgets {
    fn salt(&self) -> [u8; 16] {
        self.salt
    }

    fn bucket(&self, account: &str) -> Result<Saved, StorageError> {
        Ok(match self.buckets.get(account.as_bytes())? {
            Some(v) => TokenBucket::from_bytes(&v).map_or(Saved::Unreadable, Saved::Found),
            None => Saved::Missing,
        })
    }

    fn charge(&self, account: &str, charge: &mut Charge<'_>) -> Result<(), StorageError> {
        let _w = self.write.lock();
        let Some((bucket, hashes)) = charge(self.bucket(account)?, self.remembered(account)?) else { return Ok(()) };
        // No flush here: sled writes back within flush_every_ms. A crash can forget the
        // last instant of charges, which errs towards the user; an fsync per SUBSCRIBE
        // would cap the subscription rate.
        self.charged.insert(account.as_bytes(), hashes_to_bytes(&hashes))?;
        self.buckets.insert(account.as_bytes(), bucket.to_bytes())?;
        Ok(())
    }

    fn reset(&self, account: &str) -> Result<(), StorageError> {
        let _w = self.write.lock();
        self.charged.remove(account.as_bytes())?;
        self.buckets.remove(account.as_bytes())?;
        self.db.flush()?;
        Ok(())
    }
}
