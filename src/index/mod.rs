//! The verified-number index: which phone number belongs to which SIP user, and the feed
//! of its changes.
//!
//! [`Index`] is the handle every caller uses (SIP subscriptions, provisioning, the admin
//! API, the CLI): it makes URIs canonical and does bulk import/export, and holds the
//! bindings through [`BindingStore`] (`crate::storage::bindings`, which also defines the
//! [`Binding`], [`Source`], [`BindOutcome`] and [`IndexError`] re-exported here), so it never
//! touches a backend. A number is exactly in one binding or in none: binding a bound number to
//! another URI replaces the old binding and its reverse entry in the same atomic change.
//!
//! Files, one job each: `input` (canonical URIs, numbers as people write them), `io`
//! (import/export formats), and the sled store: `sled_store`
//! (the trait implementation: open, reads, write paths, filter builds), `writer` (one
//! atomic change), `migrate` (the old layout), `encoding` (key and value bytes), `packed`
//! (buckets), `mirror` (the in-memory copy lookups read) and `filter` (bound numbers, to
//! skip most misses). The change feed is `crate::storage::feed`, which any store publishes
//! through. This module must not know about SIP messages or HTTP.

mod encoding;
mod filter;
mod input;
mod io;
mod migrate;
mod mirror;
mod packed;
mod sled_store;
mod writer;

use crate::numbers::{self, Region, E164};
use crate::storage::bindings::BindingStore;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use crate::storage::bindings::{BindOutcome, Binding, IndexError, Rejection, Source, Stats};
pub use crate::storage::feed::{Change, ChangeError, ChangeFeed, ChangeReceiver, CHANGE_CAPACITY};
pub use input::{canonical_sip_uri, parse_number, MAX_URI_BYTES};
pub use io::{Format, ImportOptions, ImportSummary};

/// The directory of the index inside the data directory.
pub fn dir_in(data_dir: &Path) -> PathBuf {
    data_dir.join("index")
}

/// Tuning of [`Index::open_with`].
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// Numbers the in-memory filter is first sized for (16 bits each); it is rebuilt 4 times
    /// larger in the background when outgrown. Default 1M (2 MiB), or twice the bound
    /// numbers when more.
    pub filter_capacity: u64,
}

impl Default for OpenOptions {
    fn default() -> OpenOptions {
        OpenOptions { filter_capacity: 1 << 20 }
    }
}

/// The index: a handle over a [`BindingStore`]. Cheap to clone; Send + Sync.
#[derive(Clone)]
pub struct Index {
    store: Arc<dyn BindingStore>,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index").field("numbers", &self.len()).finish()
    }
}

impl Index {
    /// Opens (creating if needed) the sled index in `dir`. Fails with
    /// [`IndexError::Locked`] when another process has it open.
    pub fn open(dir: &Path) -> Result<Index, IndexError> {
        Index::open_with(dir, &OpenOptions::default())
    }

    /// [`Index::open`] with options.
    pub fn open_with(dir: &Path, options: &OpenOptions) -> Result<Index, IndexError> {
        Ok(Index::with_store(Arc::new(sled_store::SledBindings::open(dir, options)?)))
    }

    /// An index over any store.
    pub fn with_store(store: Arc<dyn BindingStore>) -> Index {
        Index { store }
    }

    /// Whether lookups run at full speed yet (for the sled store: the in-memory filter of
    /// bound numbers is built). Correctness never depends on it.
    pub fn filter_ready(&self) -> bool {
        self.store.warmed_up()
    }

    /// Binds `n` to `sip_uri` (made canonical), replacing any other binding of `n` in the
    /// same atomic change. Returns once the change is durable, after publishing it.
    pub fn bind(&self, n: E164, sip_uri: &str, source: Source) -> Result<BindOutcome, IndexError> {
        self.store.bind(n, &canonical_sip_uri(sip_uri)?, source)
    }

    /// Removes the binding of `n`, if any; durable before it returns.
    pub fn unbind(&self, n: E164) -> Result<Option<Binding>, IndexError> {
        self.store.unbind(n)
    }

    /// The binding of `n`. The hot path (for sled: a filter probe, a mirror lookup, one
    /// allocation).
    pub fn lookup(&self, n: E164) -> Result<Option<Binding>, IndexError> {
        self.store.lookup(n)
    }

    /// The binding of each of `numbers`, in order (for sled: one filter pass, one lock).
    pub fn lookup_each(&self, numbers: &[E164]) -> Result<Vec<Option<Binding>>, IndexError> {
        self.store.lookup_each(numbers)
    }

    /// Whether `n` is bound (no allocation).
    pub fn is_bound(&self, n: E164) -> Result<bool, IndexError> {
        self.store.is_bound(n)
    }

    /// Resolves an address book: the bound ones among `numbers`, with their URI, in the
    /// order given (duplicates kept once).
    pub fn resolve(&self, numbers: &[E164]) -> Result<Vec<(E164, String)>, IndexError> {
        self.store.resolve(numbers)
    }

    /// The numbers bound to `sip_uri` (made canonical), in numeric order.
    pub fn numbers_of(&self, sip_uri: &str) -> Result<Vec<E164>, IndexError> {
        self.store.numbers_of(&canonical_sip_uri(sip_uri)?)
    }

    /// The region to read national numbers of `sip_uri`'s address book with: the region of
    /// his first bound number, else `default` (the configured default region).
    pub fn region_of(&self, sip_uri: &str, default: Option<Region>) -> Result<Option<Region>, IndexError> {
        let own = self.numbers_of(sip_uri)?.first().copied();
        Ok(numbers::effective_region(own, default))
    }

    /// Subscribes to the change feed (changes after this call).
    pub fn changes(&self) -> ChangeReceiver {
        self.store.changes()
    }

    /// Number of bound numbers.
    pub fn len(&self) -> u64 {
        self.store.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn stats(&self) -> Result<Stats, IndexError> {
        self.store.stats()
    }

    /// Every binding, in numeric order of the numbers (not a snapshot: changes made during
    /// the iteration may or may not be seen).
    pub fn iter(&self) -> impl Iterator<Item = Result<Binding, IndexError>> {
        self.store.bindings()
    }

    /// Checks the store's invariants (for sled: both directions agree, the buckets keep
    /// their invariants, the mirror is the store, the count is right). Returns the problems
    /// found (empty: fine).
    pub fn check_consistency(&self) -> Result<Vec<String>, IndexError> {
        self.store.check_consistency()
    }

    /// Bulk import (see [`ImportOptions`]); `import_with` also reports each durable chunk.
    pub fn import(&self, reader: impl BufRead, opts: &ImportOptions) -> Result<ImportSummary, IndexError> {
        self.import_with(reader, opts, &mut |_| {})
    }

    /// Bulk import; `on_ack` is called with the numbers of each chunk once it is durable.
    pub fn import_with(
        &self,
        reader: impl BufRead,
        opts: &ImportOptions,
        on_ack: &mut dyn FnMut(&[E164]),
    ) -> Result<ImportSummary, IndexError> {
        io::import(self, reader, opts, on_ack)
    }

    /// Writes every binding in `format` (the format import reads); returns how many.
    pub fn export(&self, w: impl Write, format: Format) -> Result<u64, IndexError> {
        io::export(self, w, format)
    }
}
