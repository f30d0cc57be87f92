//! The binding index's store: which number is bound to which SIP URI, both ways, and the
//! feed of changes. [`crate::index::Index`] is the handle over it; it makes URIs canonical
//! and does import/export, so a store only ever sees canonical URIs and parsed numbers.
//!
//! The contract every implementation keeps (the tests of `index` check it through the
//! trait): a number is in one binding or in none; each write is atomic and durable before
//! it returns, and its changes are then published on the feed, in commit order; a write
//! that changes nothing publishes nothing. Must not know about SIP or HTTP.

use crate::index::{BindOutcome, Binding, ChangeReceiver, IndexError, Source, Stats};
use crate::numbers::E164;

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
