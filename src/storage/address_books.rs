//! Stored address books' store: one book per account, as the handle
//! [`crate::address_books::AddressBooks`] writes it. A store keeps opaque records: the
//! handle has already replaced every number by a keyed hash (its tag) and sealed the raw
//! forms, so nothing here can read a number back.
//!
//! The contract: a book is found by its owner key (itself a keyed hash of the account
//! name); each write is atomic and durable before it returns. Read-modify-writes are
//! serialised by the handle's lock and, across processes, by [`AddressBookStore::hold`].
//! Must not know about SIP, HTTP or the keys.
//!
//! [`StoredBook`] and [`BookError`] are defined here and re-exported by `address_books`.

use super::StorageError;
use serde::{Deserialize, Serialize};

/// A keyed hash: of an E.164 number (a contact's tag) or of an account name (a book's key).
pub type Tag = [u8; 16];

/// Lower-case hex of `bytes` (owner tags in shared stores, the books' key file).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `N` bytes from exactly `2N` hex digits; None for anything else.
pub fn from_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    if text.len() != N * 2 {
        return None;
    }
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// One account's book as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredBook {
    /// Bumped by every change; a delta names the version it applies to.
    pub version: u64,
    /// Unix seconds of the last change.
    pub updated_at: u64,
    /// One tag per contact, in the order of the sealed contacts.
    pub tags: Vec<Tag>,
    /// The contacts' raw forms (number as given, display name), sealed by the handle.
    pub sealed: Vec<u8>,
}

/// One change of a book, as the change list needs it. A book's last changes (its log,
/// oldest first) are kept beside it, apart: reading a book for a subscription never reads
/// its log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoggedChange {
    /// The version this change made (it applied to `version - 1`).
    pub version: u64,
    /// How many contacts it added and removed (to bound the log without opening it).
    pub size: u32,
    /// What it added and removed, sealed by the handle.
    pub sealed: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum BookError {
    #[error("no address book")]
    NotFound,
    #[error("the address book is at version {current}, the delta was made for {asked}")]
    Conflict { current: u64, asked: u64 },
    #[error("{count} contacts, at most {max} per address book")]
    TooLarge { count: usize, max: usize },
    #[error("invalid contact: {0}")]
    Invalid(String),
    #[error("corrupt address book: {0}")]
    Corrupt(String),
    #[error("storage error: {0}")]
    Storage(#[from] StorageError),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

pub trait AddressBookStore: Send + Sync {
    /// The book, without its log.
    fn get(&self, owner: &Tag) -> Result<Option<StoredBook>, BookError>;

    /// The book's log, oldest first (empty when there is no book).
    fn log(&self, owner: &Tag) -> Result<Vec<LoggedChange>, BookError>;

    /// Writes the book and its log together (creating or replacing them).
    fn put(&self, owner: &Tag, book: &StoredBook, log: &[LoggedChange]) -> Result<(), BookError>;

    /// Removes the book and its log; false when there was none.
    fn remove(&self, owner: &Tag) -> Result<bool, BookError>;

    /// Holds `owner`'s book against the other processes sharing the store, for one
    /// read-modify-write of the handle (nothing to hold for a store one process owns).
    fn hold(&self, _owner: &Tag) -> Result<super::Held, BookError> {
        Ok(super::Held::nothing())
    }
}
