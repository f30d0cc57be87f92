//! Discovery budgets in Redis, shared by every node: per account `b:bucket:<account>` (the
//! bucket, 20 bytes as in sled: tokens f64, updated_at u64, remembered u32, big-endian) and
//! `b:charged:<account>` (the sorted 4-byte hashes it was charged for, as in sled), and the salt in
//! `b:salt` (made once with `SET NX`, so every node hashes alike).
//!
//! A charge is a compare-and-set: `WATCH` both keys, read, run the handle's closure, write in
//! `MULTI`/`EXEC`; a charge of the same account by another node meanwhile aborts the `EXEC`
//! and the closure runs again on what that node wrote. A budget spent on one node is spent
//! on all. While Redis does not answer, charges go to this node's memory ([`Outage`]).

use super::budget_outage::Outage;
use super::conn::Redis;
use crate::storage::budgets::{hashes_from_bytes, hashes_to_bytes, BudgetError, BudgetStore, Charge, Saved, TokenBucket};
use crate::storage::StorageError;
use std::sync::Arc;

/// Compare-and-set attempts before a charge fails as contended.
const ATTEMPTS: usize = 50;

pub struct RedisBudgets {
    redis: Arc<Redis>,
    salt: [u8; 16],
    outage: Outage,
}

fn saved(v: Option<Vec<u8>>) -> Saved {
    match v {
        Some(v) => TokenBucket::from_bytes(&v).map_or(Saved::Unreadable, Saved::Found),
        None => Saved::Missing,
    }
}

impl RedisBudgets {
    /// The store on `redis`, its salt made by the first node that asks.
    pub fn open(redis: Arc<Redis>) -> Result<RedisBudgets, BudgetError> {
        let salt = super::made_once::made_once(&redis, "b:salt")?;
        Ok(RedisBudgets { redis, salt, outage: Outage::default() })
    }

    fn keys(&self, account: &str) -> (String, String) {
        (self.redis.key(&format!("b:bucket:{account}")), self.redis.key(&format!("b:charged:{account}")))
    }
}

impl BudgetStore for RedisBudgets {
    fn salt(&self) -> [u8; 16] {
        self.salt
    }

    fn bucket(&self, account: &str) -> Result<Saved, StorageError> {
        let (bucket, _) = self.keys(account);
        Ok(saved(self.redis.run(|c| ::redis::cmd("GET").arg(&bucket).query(c))?))
    }

    fn charge(&self, account: &str, charge: &mut Charge<'_>) -> Result<(), StorageError> {
        let (bucket, charged) = self.keys(account);
        let result = self.redis.run(|c| compare_and_set(c, account, &bucket, &charged, charge));
        match result {
            Ok(charged) => {
                self.outage.over();
                charged
            }
            Err(_) if !self.redis.reachable() && self.outage.charge(account, charge) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn reset(&self, account: &str) -> Result<(), StorageError> {
        let (bucket, charged) = self.keys(account);
        self.redis.run(|c| {
            ::redis::cmd("DEL").arg(&bucket).arg(&charged).query::<()>(c)?;
            self.redis.durable(c)
        })
    }
}

/// The charge's `WATCH`, read, `MULTI`/`EXEC`, again while another node's write aborts it.
fn compare_and_set(c: &mut ::redis::Connection, account: &str, bucket: &str, charged: &str, charge: &mut Charge<'_>) -> ::redis::RedisResult<Result<(), StorageError>> {
    for _ in 0..ATTEMPTS {
        ::redis::cmd("WATCH").arg(bucket).arg(charged).query::<()>(c)?;
        let (b, h): (Option<Vec<u8>>, Option<Vec<u8>>) = ::redis::pipe().get(bucket).get(charged).query(c)?;
        let known = hashes_from_bytes(&h.unwrap_or_default());
        let Some((new_bucket, hashes)) = charge(saved(b), known) else {
            ::redis::cmd("UNWATCH").query::<()>(c)?;
            return Ok(Ok(()));
        };
        let done: Option<()> = ::redis::pipe().atomic().set(bucket, new_bucket.to_bytes()).ignore().set(charged, hashes_to_bytes(&hashes)).ignore().query(c)?;
        if done.is_some() {
            return Ok(Ok(()));
        }
    }
    Ok(Err(StorageError::new(format!("budget of {account:?}: too contended, try again"))))
}
