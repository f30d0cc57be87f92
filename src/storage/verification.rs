//! Provisioning's verification state: per number and device, the current one-time code's
//! record; per number, the send window of all its devices; the devices that verified a
//! number; and code references (for delivery reports). [`crate::provisioning::Verifications`]
//! is the handle over it and keeps the rules (limits, windows, code checks).
//!
//! The contract: every write is durable before it returns; a record is found by its
//! number and device, and by its current reference once [`VerificationStore::save_new_code`]
//! stored it. Must not know about SMS, accounts or the binding index. [`StateError`] is
//! re-exported by `provisioning`.

use super::StorageError;
use crate::numbers::E164;
use serde::{Deserialize, Serialize};

/// A failure of the verification state's store, or of opening it.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("storage error: {0}")]
    Storage(#[from] StorageError),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// One number and device's verification.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CodeRecord {
    /// Id of the current code (random hex); given to the gateway as the reference.
    pub id: String,
    /// SHA-256 of `id:code`; empty once used.
    pub code_hash: String,
    pub sent_at: u64,
    pub expires_at: u64,
    /// Codes sent since `window_start`.
    pub sends: u32,
    pub window_start: u64,
    /// Wrong codes entered for the current code.
    pub wrong: u32,
    /// `submitted` (to the gateway), `failed` (the gateway refused it), or what the gateway's
    /// delivery report said (`delivered`, ...).
    pub delivery: String,
}

/// Codes sent to one number, all devices together, since `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendWindow {
    pub sends: u32,
    pub start: u64,
}

pub trait VerificationStore: Send + Sync {
    /// The record of `n` and `device`.
    fn record(&self, n: E164, device: &str) -> Result<Option<CodeRecord>, StorageError>;

    /// The number and device whose current code has reference `id`.
    fn by_reference(&self, id: &str) -> Result<Option<(E164, String)>, StorageError>;

    /// `n`'s send window.
    fn window(&self, n: E164) -> Result<Option<SendWindow>, StorageError>;

    /// Stores a record after a new code: `record` (with its new reference, `old_id`'s
    /// reference dropped) and `n`'s window.
    fn save_new_code(
        &self,
        n: E164,
        device: &str,
        record: &CodeRecord,
        old_id: Option<&str>,
        window: SendWindow,
    ) -> Result<(), StorageError>;

    /// Stores a record whose reference did not change.
    fn save(&self, n: E164, device: &str, record: &CodeRecord) -> Result<(), StorageError>;

    /// Remembers that `device` verified `n` at `at`.
    fn remember_device(&self, n: E164, device: &str, at: u64) -> Result<(), StorageError>;

    fn knows_device(&self, n: E164, device: &str) -> Result<bool, StorageError>;

    /// Removes the records `done` says are over (with their references) and the windows
    /// `window_over` says are over (and any it cannot read); returns how many records.
    fn sweep(&self, done: &dyn Fn(&CodeRecord) -> bool, window_over: &dyn Fn(&SendWindow) -> bool) -> Result<usize, StorageError>;

    /// Holds `n`'s records and window against the other processes sharing the store, for
    /// one read-modify-write of the handle (nothing to hold for a store one process owns).
    fn hold(&self, _n: E164) -> Result<super::Held, StorageError> {
        Ok(super::Held::nothing())
    }
}
