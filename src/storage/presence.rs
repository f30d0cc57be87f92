//! Presence state's store: the publications (RFC 3903) in force per presentity, their
//! combined state and expiry. [`crate::presence::PresenceStore`] is the handle over it.
//!
//! The contract: a presentity is online while one of his publications says open; what they
//! say beyond that (`body::rich::Doc`) is composed into one document, the newest publication
//! first (`body::rich::compose`); the capabilities last announced are kept (offline too:
//! long-term presence) until others are announced. Every change of that combined state (online, or the composed
//! document) is announced (his URI) on the channel the store was made
//! with, so the subscription layer can notify; an entity-tag is good for one presentity
//! only and is replaced by each refresh or modification. Writes may fail
//! ([`PublishError::Storage`]: the handler answers 503 with Retry-After); reads may not: a store that
//! cannot tell a presentity's state says it does not know it (None), as presence is soft
//! state. Must not know about subscriptions or SIP messages.
//!
//! [`Live`], [`Published`] and [`PublishError`] are defined here and re-exported by
//! `presence`; [`MemoryPublications`](super::memory_publications::MemoryPublications) is the
//! implementation that keeps them in memory.

use super::StorageError;
use crate::body::rich::Doc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A presentity's combined state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Live {
    /// Some publication says open.
    pub online: bool,
    /// When he last came online or went offline (unix seconds): "last seen" once he is
    /// offline.
    pub updated: u64,
    /// The composed rich presence, with the capabilities last announced.
    pub doc: Option<Arc<Doc>>,
}

/// What a publication says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub open: bool,
    /// Beyond open/closed, if it says anything (never an empty document).
    pub doc: Option<Arc<Doc>>,
}

impl Published {
    /// Open or closed, and nothing else.
    pub fn basic(open: bool) -> Published {
        Published { open, doc: None }
    }

    /// Open or closed, with `doc` unless it is empty.
    pub fn with_doc(open: bool, doc: Doc) -> Published {
        Published { open, doc: (!doc.is_empty()).then(|| Arc::new(doc)) }
    }
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

    /// Announces `uri` on the change channel without a write, when he has rich presence
    /// (the only part that reads differently): what watchers may see of him changed
    /// elsewhere (his "share my status").
    fn announce(&self, uri: &str);
}
