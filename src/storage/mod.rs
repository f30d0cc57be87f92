//! Storage seams: each kind of state the server keeps sits behind one small trait, so that
//! a second backend (e.g. Redis, shared by several nodes) can be added without touching a
//! handler.
//!
//! The rule: handlers (SIP, provisioning HTTP, admin HTTP, CLIs) use the handle types only,
//! [`Index`](crate::index::Index), [`PresenceStore`](crate::presence::PresenceStore),
//! [`Budget`](crate::budget::Budget), [`Accounts`](crate::accounts::Accounts) and
//! [`Verifications`](crate::provisioning::Verifications); each handle keeps the domain
//! rules (canonical URIs, token buckets, HA1s, send limits) and holds its state through an
//! `Arc<dyn ...Store>` from this module. Traits speak the domain's types and errors, never
//! a backend's; a trait method is what the handles need, not what a backend offers.
//!
//! Each trait's file also defines its vocabulary (the plain data and error types it speaks),
//! which the domain module re-exports where callers name it. So this module is a leaf: it
//! uses no domain module, only `numbers`, `clock` and `sip::new_tag` (entity-tags), and the domain
//! modules depend on it, never the other way (`tests/layering.rs` checks it).
//!
//! | trait (file)                                 | its vocabulary, re-exported by          | today's implementation |
//! |----------------------------------------------|-----------------------------------------|------------------------|
//! | [`BindingStore`] (`bindings`; feed: `feed`)  | `index`: `Binding`, `Source`, `BindOutcome`, `IndexError`, `Stats`, `Rejection`, `Change`, `ChangeFeed`, `ChangeReceiver` | `index::sled_store` (sled, with an in-memory mirror); `memory_bindings` (tests) |
//! | [`PublicationStore`] (`presence`)            | `presence`: `Live`, `Published`, `PublishError` | [`sled::SledPublications`] (wraps [`memory_publications::MemoryPublications`], recorded in sled); cluster: [`redis::RedisPublications`] |
//! | [`RegistrationStore`] (`registrations`)      | (used by `registrar` as is)             | [`sled::SledPublications`]; cluster: [`redis::RedisRegistrations`] |
//! | [`BudgetStore`] (`budgets`)                  | `budget`: `BudgetError`                 | [`log_budgets::LogBudgets`] (an older [`sled::SledBudgets`] is copied in); cluster: [`redis::RedisBudgets`] |
//! | [`AccountStore`] (`accounts`)                | `accounts`: `Account`, `AccountError`   | [`sled::SledAccounts`]; cluster: [`redis::RedisAccounts`] |
//! | [`AddressBookStore`] (`address_books`)       | `address_books`: `StoredBook`, `BookError`, `Tag` | [`sled::SledAddressBooks`]; cluster: [`redis::RedisAddressBooks`] |
//! | [`VerificationStore`] (`verification`)       | `provisioning`: `StateError`            | [`sled::SledVerifications`]; cluster: [`redis::RedisVerifications`] |
//! | (a file format, no trait) `log`             | `subscription::durable`, `log_budgets`   | an append-only record log, for stores written far more than read |
//! | [`NonceStore`] (`nonces`)                    | (used by `auth::digest` as is)          | [`nonces::MemoryNonces`]; cluster: [`redis::RedisNonces`] |
//!
//! Atomicity: every store call that writes is atomic and durable in the store, and a
//! budget charge is one read-modify-write inside the store. The read-modify-writes of
//! accounts (provisioning) and verifications (codes, limits) are serialised by their
//! handle's lock, which holds within one process only: a store shared by several nodes
//! must make those atomic too: the handles take the store's `hold` (a [`Held`] lock, nothing
//! for sled; a per-key Redis lock in `storage::redis`) around them. Digest nonces' secret and
//! counts: [`NonceStore`] (`nonces`; in memory for one process).
//!
//! This module must not know about SIP messages, HTTP or configuration files.

pub mod accounts;
pub mod address_books;
pub mod bindings;
pub mod budgets;
pub mod feed;
pub mod held;
pub mod log;
pub mod log_budgets;
#[cfg(test)]
mod memory_bindings;
pub mod memory_publications;
pub mod nonces;
pub mod presence;
pub mod registrations;
pub mod redis;
pub mod sled;
pub mod verification;

pub use accounts::AccountStore;
pub use address_books::AddressBookStore;
pub use bindings::BindingStore;
pub use budgets::BudgetStore;
pub use held::Held;
pub use nonces::NonceStore;
pub use presence::PublicationStore;
pub use registrations::RegistrationStore;
pub use verification::VerificationStore;

/// A failure of the storage backend (I/O, a lost connection, ...), its cause kept as text
/// and source but not as a backend type.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct StorageError(Box<dyn std::error::Error + Send + Sync>);

impl StorageError {
    pub fn new(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> StorageError {
        StorageError(cause.into())
    }
}
