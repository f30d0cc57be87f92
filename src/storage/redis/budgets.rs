//! Discovery budgets in Redis, shared by every node: per account `b:bucket:<account>` (the
//! bucket, 20 bytes as in sled: tokens f64, updated_at u64, remembered u32, big-endian) and
//! `b:charged:<account>` (the sorted 8-byte hashes it was charged for), and the salt in
//! `b:salt` (made once with `SET NX`, so every node hashes alike).
//!
//! A charge is a compare-and-set: `WATCH` both keys, read, run the handle's closure, write in
//! `MULTI`/`EXEC`; a charge of the same account by another node meanwhile aborts the `EXEC`
//! and the closure runs again on what that node wrote. A budget spent on one node is spent
//! on all.

use super::conn::Redis;
use crate::storage::budgets::{BudgetError, BudgetStore, Charge, Saved, TokenBucket};
use crate::storage::StorageError;
use std::sync::Arc;

/// Compare-and-set attempts before a charge fails as contended.
const ATTEMPTS: usize = 50;

pub struct RedisBudgets {
    redis: Arc<Redis>,
    salt: [u8; 16],
}

fn decode(v: &[u8]) -> Option<TokenBucket> {
    let tokens = f64::from_be_bytes(v.get(0..8)?.try_into().ok()?);
    let updated_at = u64::from_be_bytes(v.get(8..16)?.try_into().ok()?);
    let remembered = u32::from_be_bytes(v.get(16..20)?.try_into().ok()?);
    Some(TokenBucket { tokens, updated_at, remembered })
}

fn encode(b: &TokenBucket) -> Vec<u8> {
    [&b.tokens.to_be_bytes()[..], &b.updated_at.to_be_bytes(), &b.remembered.to_be_bytes()].concat()
}

fn saved(v: Option<Vec<u8>>) -> Saved {
    match v {
        Some(v) => decode(&v).map_or(Saved::Unreadable, Saved::Found),
        None => Saved::Missing,
    }
}

impl RedisBudgets {
    /// The store on `redis`, its salt made by the first node that asks.
    pub fn open(redis: Arc<Redis>) -> Result<RedisBudgets, BudgetError> {
        let key = redis.key("b:salt");
        let mine: [u8; 16] = rand::random();
        let stored: Vec<u8> = redis.run(|c| {
            ::redis::cmd("SET").arg(&key).arg(&mine[..]).arg("NX").query::<()>(c)?;
            ::redis::cmd("GET").arg(&key).query(c)
        })?;
        let salt = stored.as_slice().try_into().map_err(|_| StorageError::new(format!("{key} is not 16 bytes")))?;
        Ok(RedisBudgets { redis, salt })
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
        self.redis.run(|c| {
            for _ in 0..ATTEMPTS {
                ::redis::cmd("WATCH").arg(&bucket).arg(&charged).query::<()>(c)?;
                let (b, h): (Option<Vec<u8>>, Option<Vec<u8>>) = ::redis::pipe().get(&bucket).get(&charged).query(c)?;
                let known = h.unwrap_or_default().chunks_exact(8).map(|x| u64::from_be_bytes(x.try_into().unwrap_or([0; 8]))).collect();
                let Some((new_bucket, hashes)) = charge(saved(b), known) else {
                    ::redis::cmd("UNWATCH").query::<()>(c)?;
                    return Ok(Ok(()));
                };
                let blob: Vec<u8> = hashes.iter().flat_map(|h| h.to_be_bytes()).collect();
                let done: Option<()> = ::redis::pipe().atomic().set(&bucket, encode(&new_bucket)).ignore().set(&charged, blob).ignore().query(c)?;
                if done.is_some() {
                    return Ok(Ok(()));
                }
            }
            Ok(Err(StorageError::new(format!("budget of {account:?}: too contended, try again"))))
        })?
    }

    fn reset(&self, account: &str) -> Result<(), StorageError> {
        let (bucket, charged) = self.keys(account);
        self.redis.run(|c| {
            ::redis::cmd("DEL").arg(&bucket).arg(&charged).query::<()>(c)?;
            self.redis.durable(c)
        })
    }
}
