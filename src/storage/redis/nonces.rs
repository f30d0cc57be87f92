//! Digest nonces in Redis, shared by every node, one namespace per verifier (`sip`, `http`):
//! `n:<ns>:secret` (the signing secret, 32 bytes, made once with `SET NX`, so a nonce issued
//! by one node is valid at every node) and `n:<ns>:nc:<nonce>` (the highest nonce-count
//! used, set by a script that raises it only upwards and expires it with the nonce). A
//! count is accepted once in the whole cluster.

use super::conn::Redis;
use crate::storage::nonces::NonceStore;
use crate::storage::StorageError;
use std::sync::Arc;

/// KEYS[1]: the count; ARGV[1]: the new count, ARGV[2]: its time to live in ms.
const RECORD: &str = r"
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) <= last then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
";

pub struct RedisNonces {
    redis: Arc<Redis>,
    namespace: String,
    secret: [u8; 32],
}

impl RedisNonces {
    /// The nonces of verifier `namespace`, its secret made by the first node that asks.
    pub fn open(redis: Arc<Redis>, namespace: &str) -> Result<RedisNonces, StorageError> {
        let secret = super::made_once::made_once(&redis, &format!("n:{namespace}:secret"))?;
        Ok(RedisNonces { redis, namespace: namespace.to_string(), secret })
    }
}

impl NonceStore for RedisNonces {
    fn secret(&self) -> [u8; 32] {
        self.secret
    }

    fn record(&self, nonce: &str, count: u32, until: u64, now: u64) -> Result<bool, StorageError> {
        let key = self.redis.key(&format!("n:{}:nc:{nonce}", self.namespace));
        // Kept a second past the nonce's end, so that clock steps between nodes cannot
        // forget a count while the nonce is still accepted somewhere.
        let ttl_ms = until.saturating_sub(now).saturating_add(1).saturating_mul(1000);
        let script = ::redis::Script::new(RECORD);
        let accepted: i64 = self.redis.run(|c| script.key(&key).arg(count).arg(ttl_ms).invoke(c))?;
        Ok(accepted == 1)
    }
}
