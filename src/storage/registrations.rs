//! The embedded registrar's registrations: each address of record's contacts with their
//! expiry, and the presence publication they keep open. Stored so that a restart keeps
//! registered phones registered (and online) until their next REGISTER.
//! [`crate::registrar::Registrar`] is the only user. Must not know about SIP messages.

use crate::storage::StorageError;
use serde::{Deserialize, Serialize};

/// One address of record's registration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// (Contact URI, expiry in Unix seconds).
    pub contacts: Vec<(String, u64)>,
    /// The entity-tag of the presence publication the registration keeps.
    pub etag: Option<String>,
}

pub trait RegistrationStore: Send + Sync {
    fn save(&self, aor: &str, registration: &Registration) -> Result<(), StorageError>;
    fn remove(&self, aor: &str) -> Result<(), StorageError>;
    /// One AOR's stored registration.
    fn get(&self, aor: &str) -> Result<Option<Registration>, StorageError>;
    /// Whether other processes change it too (cluster mode): then the registrar reads an
    /// AOR's registration from it before each change, and a write it cannot make refuses
    /// the REGISTER (503).
    fn shared(&self) -> bool {
        false
    }
    /// A lock on `aor`'s registration across the processes sharing the store, held by the
    /// registrar around its read, publication and write of it (nothing to take for a
    /// store one process owns: the registrar's own lock serialises it).
    fn hold(&self, _aor: &str) -> Result<super::Held, StorageError> {
        Ok(super::Held::nothing())
    }
    /// Every stored registration (expired contacts included: the registrar drops them),
    /// read once at start. A shared store has none to give: the registrar reads its record
    /// of an AOR at each REGISTER instead.
    fn load(&self) -> Vec<(String, Registration)> {
        Vec::new()
    }
}
