//! A random value made once for the whole cluster (a salt, a secret, a key): the first node
//! to ask stores its own with `SET NX`, every node then reads back the one that won. Owns
//! no key names: the stores give theirs.

use super::conn::Redis;
use crate::storage::StorageError;
use rand::Rng;

/// The `N` random bytes under `name` (a key name without the prefix), made if missing.
pub fn made_once<const N: usize>(redis: &Redis, name: &str) -> Result<[u8; N], StorageError> {
    let key = redis.key(name);
    let mut mine = [0u8; N];
    rand::thread_rng().fill(&mut mine[..]);
    let stored: Vec<u8> = redis.run(|c| {
        ::redis::cmd("SET").arg(&key).arg(&mine[..]).arg("NX").query::<()>(c)?;
        ::redis::cmd("GET").arg(&key).query(c)
    })?;
    stored.as_slice().try_into().map_err(|_| StorageError::new(format!("{key} is not {N} bytes")))
}
