//! A lock on one key across every node: `SET lock NX PX` with a random token, released by
//! a script that deletes it only if it still holds that token. Stores take it around the
//! read-modify-writes the handles make (accounts, verifications, address books), which a
//! handle's in-process lock cannot serialise across nodes.
//!
//! The lease bounds a dead holder's cost: [`LEASE`]; a write that takes longer than that
//! is not protected (the store calls under a lock are a few Redis commands). Waiting is
//! bounded by [`WAIT`], after which the call fails as the store being unavailable.

use super::conn::Redis;
use crate::storage::held::Held;
use crate::storage::StorageError;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a lock lives if its holder never releases it.
pub const LEASE: Duration = Duration::from_secs(5);
/// How long a caller waits for a lock before giving up.
pub const WAIT: Duration = Duration::from_secs(3);

const RELEASE: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";

/// Takes the lock `lock:<name>` (waiting up to [`WAIT`]); released when the [`Held`] drops.
pub fn hold(redis: &Arc<Redis>, name: &str) -> Result<Held, StorageError> {
    let key = redis.key(&format!("lock:{name}"));
    let token = format!("{:032x}", rand::random::<u128>());
    let started = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        // GET: the lock's holder before, so that a retry after a lost reply (`Redis::run`
        // tries twice) finds the lock its own.
        let before: Option<String> = redis.run(|c| {
            ::redis::cmd("SET").arg(&key).arg(&token).arg("NX").arg("GET").arg("PX").arg(LEASE.as_millis() as u64).query(c)
        })?;
        if before.is_none_or(|holder| holder == token) {
            break;
        }
        if started.elapsed() > WAIT {
            return Err(StorageError::new(format!("{key} stayed locked for {WAIT:?}")));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
    let redis = redis.clone();
    Ok(Held::until_drop(move || {
        let released = redis.run(|c| ::redis::Script::new(RELEASE).key(&key).arg(&token).invoke::<i64>(c));
        if let Err(e) = released {
            tracing::warn!(%key, "lock not released (it expires by itself): {e}");
        }
    }))
}
