//! Digest nonces' state: the secret nonces are signed with, and per nonce the highest
//! nonce-count used (a count not above it is a replay). [`crate::auth::digest::Digest`]
//! issues and checks nonces; a store only keeps the secret and the counts.
//!
//! The contract: the secret is made once and is the same for every process sharing the
//! store; [`NonceStore::record`] is atomic (two processes recording one count: one wins);
//! a nonce's count is forgotten once it expires, so the table stays bounded by the nonces
//! in use. [`MemoryNonces`] is the one-process store. Must not know about SIP or HTTP.

use super::StorageError;
use parking_lot::Mutex;
use std::collections::HashMap;

pub trait NonceStore: Send + Sync {
    /// The key nonces are signed with.
    fn secret(&self) -> [u8; 32];

    /// Records `count` for `nonce`, which expires at `until` (Unix seconds; `now` is the
    /// time of the call): true when `count` is above every count recorded for it before.
    fn record(&self, nonce: &str, count: u32, until: u64, now: u64) -> Result<bool, StorageError>;
}

/// One process's nonces: a random secret and an in-memory table pruned as nonces expire.
pub struct MemoryNonces {
    secret: [u8; 32],
    counts: Mutex<HashMap<String, (u64, u32)>>,
}

impl Default for MemoryNonces {
    fn default() -> MemoryNonces {
        MemoryNonces { secret: rand::random(), counts: Mutex::new(HashMap::new()) }
    }
}

impl NonceStore for MemoryNonces {
    fn secret(&self) -> [u8; 32] {
        self.secret
    }

    fn record(&self, nonce: &str, count: u32, until: u64, now: u64) -> Result<bool, StorageError> {
        let mut counts = self.counts.lock();
        counts.retain(|_, (t, _)| now <= *t);
        let last = counts.entry(nonce.to_string()).or_insert((until, 0));
        if count <= last.1 {
            return Ok(false);
        }
        last.1 = count;
        Ok(true)
    }
}
