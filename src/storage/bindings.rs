//! The binding index's store: which number is bound to which SIP URI, both ways, and the
//! feed of changes. [`crate::index::Index`] is the handle over it; it makes URIs canonical
//! and does import/export, so a store only ever sees canonical URIs and parsed numbers.
//!
//! The contract every implementation keeps (the tests of `index` check it through the
//! trait): a number is in one binding or in none; each write is atomic and durable before
//! it returns, and its changes are then published on the feed, in commit order; a write
//! that changes nothing publishes nothing. Must not know about SIP or HTTP.
//!
//! The trait's vocabulary (bindings, outcomes, errors) is defined here and re-exported by
//! `index`, where callers name it.

use super::feed::ChangeReceiver;
use super::StorageError;
use crate::numbers::{self, E164};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// How a binding was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// A single change through the admin API (or the CLI talking to it).
    Admin,
    /// A bulk import.
    Import,
    /// The CLI working directly on the data directory.
    Cli,
    /// Verified in-band by the service (e.g. a subscriber proved ownership).
    Verification,
    /// A code this version does not know (written by a newer version).
    Other,
}

/// A number's binding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    pub number: E164,
    /// Canonical `sip:user@host`.
    pub sip_uri: String,
    /// Unix time (seconds) of the bind.
    pub bound_at: u64,
    pub source: Source,
}

/// What [`Index::bind`](crate::index::Index::bind) did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "lowercase")]
pub enum BindOutcome {
    /// The number was not bound.
    New,
    /// It was already bound to that URI: nothing written, no event.
    Unchanged,
    /// It was bound to another URI, now replaced.
    Rebound { old_uri: String },
}

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("the index at {path} is locked by another process (is a smart-presence server running on this data directory?)")]
    Locked { path: PathBuf },
    #[error("not a SIP user URI: {0}")]
    InvalidUri(String),
    #[error(transparent)]
    Number(#[from] numbers::NumberError),
    #[error("corrupt index entry: {0}")]
    Corrupt(String),
    #[error("strict import rejected: {} bad line(s), nothing imported; first: line {}: {}",
        .0.len(), .0.first().map(|r| r.line).unwrap_or(0), .0.first().map(|r| r.reason.as_str()).unwrap_or(""))]
    StrictRejected(Vec<Rejection>),
    #[error("storage error: {0}")]
    Storage(#[from] StorageError),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// Counts shown by `bindings stats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Bound numbers.
    pub numbers: u64,
    /// Distinct SIP URIs with at least one number (computed by a scan: O(bindings)).
    pub sip_uris: u64,
    /// Bytes used by the database on disk.
    pub size_on_disk: u64,
    pub path: PathBuf,
}

/// A bad input line (of an import).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    /// 1-based line number in the input.
    pub line: u64,
    pub reason: String,
}

/// What one chunk of an import did (see [`BindingStore::apply_chunk`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChunkCounts {
    pub new: u64,
    pub replaced: u64,
    pub unchanged: u64,
}

/// Every binding, in numeric order of the numbers.
pub type Bindings = Box<dyn Iterator<Item = Result<Binding, IndexError>>>;

pub trait BindingStore: Send + Sync {
    /// Binds `n` to `uri` (canonical), replacing any other binding of `n` in the same
    /// atomic change.
    fn bind(&self, n: E164, uri: &str, source: Source) -> Result<BindOutcome, IndexError>;

    /// Removes the binding of `n`, if any.
    fn unbind(&self, n: E164) -> Result<Option<Binding>, IndexError>;

    /// The binding of `n`: the hot path of every list subscription.
    fn lookup(&self, n: E164) -> Result<Option<Binding>, IndexError>;

    /// The binding of each of `numbers`, in order: an address book at once.
    fn lookup_each(&self, numbers: &[E164]) -> Result<Vec<Option<Binding>>, IndexError> {
        numbers.iter().map(|n| self.lookup(*n)).collect()
    }

    /// Whether `n` is bound.
    fn is_bound(&self, n: E164) -> Result<bool, IndexError>;

    /// The bound ones among `numbers` with their URI, in the order given, each once.
    fn resolve(&self, numbers: &[E164]) -> Result<Vec<(E164, String)>, IndexError>;

    /// The numbers bound to `uri` (canonical), in numeric order.
    fn numbers_of(&self, uri: &str) -> Result<Vec<E164>, IndexError>;

    /// Binds each (number, canonical URI) row in one atomic change; of two rows for one
    /// number the later wins.
    fn apply_chunk(&self, rows: &[(E164, String)], source: Source) -> Result<ChunkCounts, IndexError>;

    /// Every binding in numeric order (not a snapshot).
    fn bindings(&self) -> Bindings;

    /// A subscription to the change feed (changes after this call).
    fn changes(&self) -> ChangeReceiver;

    /// Number of bound numbers.
    fn len(&self) -> u64;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn stats(&self) -> Result<Stats, IndexError>;

    /// The problems found by a full check of the store's invariants (empty: fine).
    fn check_consistency(&self) -> Result<Vec<String>, IndexError>;

    /// Whether lookups run at full speed yet (a store may warm up a cache after opening).
    fn warmed_up(&self) -> bool {
        true
    }
}
