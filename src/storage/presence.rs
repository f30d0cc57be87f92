//! Presence state's store: the publications (RFC 3903) in force per presentity, their
//! combined state and expiry. [`crate::presence::PresenceStore`] is the handle over it.
//!
//! The contract: a presentity is online while one of his publications says open; every
//! change of that combined state is announced (his URI) on the channel the store was made
//! with, so the subscription layer can notify; an entity-tag is good for one presentity
//! only and is replaced by each refresh or modification. Writes may fail
//! ([`PublishError::Storage`]: the handler answers 500); reads may not: a store that
//! cannot tell a presentity's state says it does not know it (None), as presence is soft
//! state. Must not know about subscriptions or SIP messages.
//!
//! [`Live`], [`Published`] and [`PublishError`] are defined here and re-exported by
//! `presence`; [`MemoryPublications`](super::memory_publications::MemoryPublications) is the
//! implementation that keeps them in memory.

use super::StorageError;
use std::time::{Duration, Instant};

/// A presentity's combined state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Live {
    /// Some publication says open.
    pub online: bool,
    /// When the state last changed (unix seconds): "last seen" once he is offline.
    pub updated: u64,
}

/// What a publication says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub open: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// RFC 3903 §6 step 4: 412.
    #[error("unknown entity-tag")]
    UnknownEtag,
    /// The store failed (never for the in-memory one).
    #[error("presence store: {0}")]
    Storage(#[from] StorageError),
}

pub trait PublicationStore: Send + Sync {
    /// A new publication for `uri` lasting `expires`; returns its entity-tag.
    fn publish(&self, uri: &str, state: Published, expires: Duration) -> Result<String, PublishError>;

    /// Refreshes (`state` None) or modifies `uri`'s publication `etag`; returns its new
    /// entity-tag.
    fn update(&self, uri: &str, etag: &str, state: Option<Published>, expires: Duration) -> Result<String, PublishError>;

    /// Removes `uri`'s publication `etag`.
    fn remove(&self, uri: &str, etag: &str) -> Result<(), PublishError>;

    /// The combined state of `uri`, if he published since the store was made.
    fn live(&self, uri: &str) -> Option<Live>;

    /// Drops the publications expired at `now`; returns how many.
    fn expire(&self, now: Instant) -> usize;

    /// Publications in force.
    fn publications(&self) -> usize;
}
