//! The per-account discovery budget (issue 8): how many *new* numbers an account may learn
//! about (whether they are users), so that a client cannot scan the numbering plan.
//!
//! A token bucket per account: `burst` tokens at most, refilled continuously at
//! `refill_per_day`. Asking about a number the account was already charged for costs
//! nothing; a new number costs one token. Without a token, the number is reported as not
//! allowed (callers answer "not a user", never an error), logged and counted.
//!
//! Owns the rules; the state (per account, the bucket and the keyed hashes of the numbers
//! it was charged for) is kept by a [`BudgetStore`] (`crate::storage::budgets`; today
//! sled, `data_dir/budget`). Numbers are hashed so that the store does not keep address
//! books in clear; at most `max_remembered` per account (beyond, new numbers are still
//! charged but not remembered).
//!
//! Both address-book HTTP queries and SIP list subscriptions charge through [`Budget::charge`].
//! It knows nothing of accounts beyond their names and must not touch the binding index.

use crate::clock::unix_now;
use crate::config::BudgetConfig;
use crate::numbers::E164;
use crate::storage::budgets::{BudgetStore, Hash, Saved, TokenBucket};
use crate::storage::log_budgets::LogBudgets;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub use crate::storage::budgets::BudgetError;

/// The directory of the budget store inside the data directory.
pub fn dir_in(data_dir: &Path) -> PathBuf {
    data_dir.join("budget")
}

/// The answer of [`Budget::charge`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Allowed {
    /// Per number, in the order given: may the account learn about it?
    pub allowed: Vec<bool>,
    /// Numbers charged by this call (new to the account, within budget).
    pub newly_charged: usize,
    /// New numbers refused for lack of budget.
    pub over_budget: usize,
}

/// What an operator sees for one account.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Status {
    pub account: String,
    /// Tokens available now (whole numbers that may still be discovered at once).
    pub tokens: u64,
    pub burst: u32,
    pub refill_per_day: u32,
    /// Numbers remembered as already charged.
    pub remembered: u32,
}

/// The budget: a handle over a [`BudgetStore`]. Cheap to clone.
#[derive(Clone)]
pub struct Budget {
    store: Arc<dyn BudgetStore>,
    config: BudgetConfig,
    refused: Arc<AtomicU64>,
}

impl TokenBucket {
    /// Takes one token for a new number; false when none is left.
    fn take(&mut self) -> bool {
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }

    /// Adds what accrued since `updated_at`, capped at `burst`.
    fn refill(&mut self, now: u64, c: &BudgetConfig) {
        let elapsed = now.saturating_sub(self.updated_at) as f64;
        let added = elapsed * f64::from(c.refill_per_day) / 86_400.0;
        self.tokens = (self.tokens + added).min(f64::from(c.burst));
        self.updated_at = now.max(self.updated_at);
    }

    /// The bucket as of `now`: a missing one is full, an unreadable one empty.
    fn at(saved: Saved, now: u64, c: &BudgetConfig) -> TokenBucket {
        let mut b = match saved {
            Saved::Found(b) => b,
            Saved::Unreadable => TokenBucket { tokens: 0.0, updated_at: now, remembered: 0 },
            Saved::Missing => TokenBucket { tokens: f64::from(c.burst), updated_at: now, remembered: 0 },
        };
        b.refill(now, c);
        b
    }
}

impl Budget {
    /// Opens (creating if needed) the store in `dir` (a record log).
    pub fn open(dir: &Path, config: &BudgetConfig) -> Result<Budget, BudgetError> {
        Ok(Budget::with_store(Arc::new(LogBudgets::open(dir)?), config))
    }

    /// A budget over any store.
    pub fn with_store(store: Arc<dyn BudgetStore>, config: &BudgetConfig) -> Budget {
        Budget { store, config: config.clone(), refused: Arc::new(AtomicU64::new(0)) }
    }

    /// Charges `account` for learning about `numbers` (now).
    pub fn charge(&self, account: &str, numbers: &[E164]) -> Result<Allowed, BudgetError> {
        self.charge_at(account, numbers, unix_now())
    }

    /// [`Budget::charge`] at a given Unix time (tests).
    pub fn charge_at(&self, account: &str, numbers: &[E164], now: u64) -> Result<Allowed, BudgetError> {
        let salt = self.store.salt();
        let hashes: Vec<Hash> = numbers.iter().map(|n| hash(&salt, account, *n)).collect();
        // A number may come twice (two spellings of it): only then is a new number looked
        // for among those charged by this call.
        let mut sorted = hashes.clone();
        sorted.sort_unstable();
        let has_repeats = sorted.windows(2).any(|w| w[0] == w[1]);
        let c = &self.config;
        let mut out = Allowed { allowed: Vec::new(), newly_charged: 0, over_budget: 0 };
        self.store.charge(account, &mut |saved, known| {
            let mut bucket = TokenBucket::at(saved, now, c);
            let room = (c.max_remembered as usize).saturating_sub(known.len());
            let mut charged_now: Vec<Hash> = Vec::new();
            out = Allowed { allowed: Vec::with_capacity(hashes.len()), newly_charged: 0, over_budget: 0 };
            for h in &hashes {
                let is_known = known.binary_search(h).is_ok() || (has_repeats && charged_now.contains(h));
                let ok = is_known || bucket.take();
                if !is_known && ok {
                    out.newly_charged += 1;
                    charged_now.push(*h);
                } else if !ok {
                    out.over_budget += 1;
                }
                out.allowed.push(ok);
            }
            if out.newly_charged == 0 {
                return None;
            }
            let mut all = known;
            all.extend(charged_now.into_iter().take(room));
            all.sort_unstable();
            bucket.remembered = all.len() as u32;
            Some((bucket, all))
        })?;
        if out.over_budget > 0 {
            self.refused.fetch_add(out.over_budget as u64, Ordering::Relaxed);
            tracing::warn!(account, over_budget = out.over_budget, "discovery budget exhausted: numbers answered as not users");
        }
        Ok(out)
    }

    /// The account's budget now.
    pub fn status(&self, account: &str) -> Result<Status, BudgetError> {
        let c = &self.config;
        let b = TokenBucket::at(self.store.bucket(account)?, unix_now(), c);
        Ok(Status {
            account: account.to_string(),
            tokens: b.tokens.max(0.0) as u64,
            burst: c.burst,
            refill_per_day: c.refill_per_day,
            remembered: b.remembered,
        })
    }

    /// Forgets the account's bucket and charged numbers: a full budget again.
    pub fn reset(&self, account: &str) -> Result<(), BudgetError> {
        Ok(self.store.reset(account)?)
    }

    /// New numbers refused for lack of budget since start (all accounts).
    pub fn refused_total(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

/// The keyed hash a number is remembered by (salted: the store holds no number): the
/// first 4 bytes of a SHA-256 (before, 8: the stores read those records, [`Hash`]).
fn hash(salt: &[u8; 16], account: &str, n: E164) -> Hash {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(account.as_bytes());
    h.update([0]);
    h.update(n.as_key());
    let digest = h.finalize();
    Hash::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::StorageError;

    fn nums(range: std::ops::Range<u64>) -> Vec<E164> {
        range.map(|i| E164::from_digits(33_600_000_000 + i).unwrap()).collect()
    }

    fn budget(dir: &Path, burst: u32, refill: u32) -> Budget {
        Budget::open(dir, &BudgetConfig { burst, refill_per_day: refill, max_remembered: 1000 }).unwrap()
    }

    #[test]
    fn new_numbers_cost_old_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let b = budget(dir.path(), 3, 0);
        let first = b.charge_at("alice", &nums(0..2), 1000).unwrap();
        assert_eq!(first, Allowed { allowed: vec![true, true], newly_charged: 2, over_budget: 0 });
        let again = b.charge_at("alice", &nums(0..4), 1000).unwrap();
        assert_eq!(again, Allowed { allowed: vec![true, true, true, false], newly_charged: 1, over_budget: 1 });
        assert_eq!(b.status("alice").unwrap().tokens, 0);
        assert_eq!(b.charge_at("bob", &nums(0..1), 1000).unwrap().newly_charged, 1, "per account");
        b.reset("alice").unwrap();
        assert_eq!(b.charge_at("alice", &nums(3..6), 1000).unwrap().over_budget, 0);
    }

    #[test]
    fn refills_over_time_and_persists() {
        let dir = tempfile::tempdir().unwrap();
        {
            let b = budget(dir.path(), 2, 86_400);
            assert_eq!(b.charge_at("a", &nums(0..3), 100).unwrap().over_budget, 1);
        }
        let b = budget(dir.path(), 2, 86_400);
        assert_eq!(b.charge_at("a", &nums(0..2), 100).unwrap().newly_charged, 0, "remembered after reopen");
        let later = b.charge_at("a", &nums(2..4), 101).unwrap();
        assert_eq!(later.allowed, vec![true, false], "one token per second came back");
    }

    #[test]
    fn duplicates_in_one_call_cost_once() {
        let dir = tempfile::tempdir().unwrap();
        let b = budget(dir.path(), 1, 0);
        let n = nums(0..1)[0];
        assert_eq!(b.charge_at("a", &[n, n, n], 5).unwrap().allowed, vec![true, true, true]);
    }

    /// A record the sled store wrote before hashes were cut to 4 bytes (8-byte hashes, no
    /// layout byte) still says which numbers were charged once copied into the log (and
    /// the sled files are gone); the charges go on from it.
    #[test]
    fn an_old_sled_record_of_8_byte_hashes_is_carried_over() {
        let dir = tempfile::tempdir().unwrap();
        let salt = [5u8; 16];
        let old_hash = |n: E164| {
            let mut h = Sha256::new();
            h.update(salt);
            h.update(b"alice");
            h.update([0]);
            h.update(n.as_key());
            u64::from_be_bytes(h.finalize()[..8].try_into().unwrap())
        };
        {
            let db = sled::open(dir.path()).unwrap();
            db.insert("salt", &salt).unwrap();
            let mut old: Vec<u64> = nums(0..3).into_iter().map(old_hash).collect();
            old.sort_unstable();
            let blob: Vec<u8> = old.iter().flat_map(|h| h.to_be_bytes()).collect();
            db.open_tree("charged").unwrap().insert("alice", blob).unwrap();
            let bucket = TokenBucket { tokens: 1.0, updated_at: 1000, remembered: 3 };
            db.open_tree("buckets").unwrap().insert("alice", bucket.to_bytes()).unwrap();
            db.flush().unwrap();
        }
        {
            let b = budget(dir.path(), 3, 0);
            let again = b.charge_at("alice", &nums(0..5), 1000).unwrap();
            assert_eq!(again.allowed, vec![true, true, true, true, false], "the 3 old ones free, one token left");
            assert_eq!(again.newly_charged, 1);
            assert_eq!(b.status("alice").unwrap().remembered, 4);
        }
        assert!(!crate::storage::sled::is_in(dir.path()), "the sled files deleted");
        let b = budget(dir.path(), 3, 0);
        assert_eq!(b.charge_at("alice", &nums(0..4), 1000).unwrap().newly_charged, 0, "all four remembered");
    }

    /// A second store, in memory: the rules hold through the trait whatever keeps the state.
    #[derive(Default)]
    struct MemoryBudgets(parking_lot::Mutex<std::collections::HashMap<String, (TokenBucket, Vec<Hash>)>>);

    impl BudgetStore for MemoryBudgets {
        fn salt(&self) -> [u8; 16] {
            [7; 16]
        }
        fn bucket(&self, account: &str) -> Result<Saved, StorageError> {
            Ok(self.0.lock().get(account).map_or(Saved::Missing, |(b, _)| Saved::Found(*b)))
        }
        fn charge(&self, account: &str, charge: &mut crate::storage::budgets::Charge<'_>) -> Result<(), StorageError> {
            let mut map = self.0.lock();
            let (saved, known) = match map.get(account) {
                Some((b, h)) => (Saved::Found(*b), h.clone()),
                None => (Saved::Missing, Vec::new()),
            };
            if let Some(new) = charge(saved, known) {
                map.insert(account.to_string(), new);
            }
            Ok(())
        }
        fn reset(&self, account: &str) -> Result<(), StorageError> {
            self.0.lock().remove(account);
            Ok(())
        }
    }

    #[test]
    fn the_rules_hold_over_another_store() {
        let config = BudgetConfig { burst: 3, refill_per_day: 86_400, max_remembered: 1000 };
        let b = Budget::with_store(Arc::new(MemoryBudgets::default()), &config);
        assert_eq!(b.charge_at("alice", &nums(0..2), 1000).unwrap().newly_charged, 2);
        let again = b.charge_at("alice", &nums(0..4), 1000).unwrap();
        assert_eq!(again, Allowed { allowed: vec![true, true, true, false], newly_charged: 1, over_budget: 1 });
        assert_eq!(b.charge_at("alice", &nums(3..4), 1001).unwrap().allowed, vec![true], "refilled");
        assert_eq!(b.refused_total(), 1);
        b.reset("alice").unwrap();
        assert_eq!(b.status("alice").unwrap().remembered, 0);
    }
}
