//! The embedded registrar's registrations in Redis, shared by the nodes: one string per
//! address of record (`registration:<aor>`, a postcard [`Registration`]) that Redis itself
//! deletes when its last contact expires. The registrar reads an AOR's record before each
//! change ([`RegistrationStore::shared`]), so a REGISTER may reach any node.
//!
//! | key | type | written by | read by | expiry |
//! |---|---|---|---|---|
//! | `registration:<aor>` | string: [`Registration`] (postcard) | the node that took a REGISTER | the node that takes the next one; none at start | at its last contact's expiry (`EXAT`) |
//! Must not know about SIP messages.

use super::presence_feed::glob_escape;
use super::Redis;
use crate::storage::registrations::{Registration, RegistrationStore};
use crate::storage::StorageError;
use std::sync::Arc;

/// Keys read at once when loading.
const LOAD_BATCH: usize = 500;

pub struct RedisRegistrations {
    redis: Arc<Redis>,
    /// A record's key is this followed by the AOR.
    prefix: String,
}

impl RedisRegistrations {
    pub fn new(redis: Arc<Redis>) -> RedisRegistrations {
        RedisRegistrations { prefix: redis.key("registration:"), redis }
    }
}

impl RegistrationStore for RedisRegistrations {
    fn save(&self, aor: &str, registration: &Registration) -> Result<(), StorageError> {
        let key = format!("{}{aor}", self.prefix);
        let until = registration.contacts.iter().map(|(_, t)| *t).max().unwrap_or(0);
        if until <= crate::clock::unix_now() {
            return self.remove(aor);
        }
        let bytes = postcard::to_allocvec(registration).map_err(StorageError::new)?;
        self.redis.run(|c| {
            ::redis::cmd("SET").arg(&key).arg(&bytes).arg("EXAT").arg(until).exec(c)?;
            self.redis.durable(c)
        })
    }

    fn remove(&self, aor: &str) -> Result<(), StorageError> {
        let key = format!("{}{aor}", self.prefix);
        self.redis.run(|c| ::redis::cmd("DEL").arg(&key).exec(c))
    }

    fn get(&self, aor: &str) -> Result<Option<Registration>, StorageError> {
        let key = format!("{}{aor}", self.prefix);
        let raw: Option<Vec<u8>> = self.redis.run(|c| ::redis::cmd("GET").arg(&key).query(c))?;
        Ok(raw.and_then(|b| decode(aor, &b)))
    }

    fn shared(&self) -> bool {
        true
    }

    fn load(&self) -> Vec<(String, Registration)> {
        let loaded = self.redis.run(|c| {
            let pattern = format!("{}*", glob_escape(&self.prefix));
            let (mut cursor, mut out) = (0u64, Vec::new());
            loop {
                let (next, names): (u64, Vec<String>) = ::redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(LOAD_BATCH).query(c)?;
                if !names.is_empty() {
                    let values: Vec<Option<Vec<u8>>> = ::redis::cmd("MGET").arg(&names).query(c)?;
                    out.extend(names.into_iter().zip(values).filter_map(|(n, v)| Some((n.strip_prefix(&self.prefix)?.to_string(), v?))));
                }
                if next == 0 {
                    return Ok(out);
                }
                cursor = next;
            }
        });
        match loaded {
            Ok(records) => records.into_iter().filter_map(|(aor, b)| Some((aor.clone(), decode(&aor, &b)?))).collect(),
            Err(e) => {
                tracing::warn!("registrations not loaded from Redis (read at each REGISTER instead): {e}");
                Vec::new()
            }
        }
    }
}

fn decode(aor: &str, bytes: &[u8]) -> Option<Registration> {
    postcard::from_bytes(bytes).map_err(|e| tracing::warn!(aor, "a stored registration that does not decode skipped: {e}")).ok()
}
