//! The embedded registrar's registrations in Redis, shared by the nodes: one string per
//! address of record (`registration:<aor>`, a postcard [`Registration`]) that Redis itself
//! deletes when its last contact expires. The registrar reads an AOR's record before each
//! change ([`RegistrationStore::shared`]), so a REGISTER may reach any node, and holds the
//! AOR's lock ([`key_lock`]) from that read to its write, so that two nodes changing one AOR
//! at once do not overwrite each other's contacts (nor the publication's entity-tag).
//!
//! | key | type | written by | read by | expiry |
//! |---|---|---|---|---|
//! | `registration:<aor>` | string: [`Registration`] (postcard) | the node that took a REGISTER | the node that takes the next one; none at start | at its last contact's expiry (`EXAT`) |
//! | `lock:registration:<aor>` | string: a holder's token | the node serving a REGISTER of the AOR | the others serving one | released after the write; lease [`key_lock::LEASE`] |
//! Must not know about SIP messages.

use super::{key_lock, Redis};
use crate::storage::held::Held;
use crate::storage::registrations::{Registration, RegistrationStore};
use crate::storage::StorageError;
use std::sync::Arc;

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
        self.redis.run(|c| {
            ::redis::cmd("DEL").arg(&key).exec(c)?;
            self.redis.durable(c)
        })
    }

    fn get(&self, aor: &str) -> Result<Option<Registration>, StorageError> {
        let key = format!("{}{aor}", self.prefix);
        let raw: Option<Vec<u8>> = self.redis.run(|c| ::redis::cmd("GET").arg(&key).query(c))?;
        Ok(raw.and_then(|b| decode(aor, &b)))
    }

    fn shared(&self) -> bool {
        true
    }

    fn hold(&self, aor: &str) -> Result<Held, StorageError> {
        key_lock::hold(&self.redis, &format!("registration:{aor}"))
    }
}

fn decode(aor: &str, bytes: &[u8]) -> Option<Registration> {
    postcard::from_bytes(bytes).map_err(|e| tracing::warn!(aor, "a stored registration that does not decode skipped: {e}")).ok()
}
