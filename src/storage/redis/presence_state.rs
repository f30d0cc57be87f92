//! One presentity's presence as the cluster shares it: his publications in force (oldest
//! first, each with its entity-tag and expiry in unix milliseconds), his combined state
//! ([`Live`]) and a version that every write of it increases. The same record is the value
//! of his Redis key, the payload of his change-feed entry and an entry of each node's
//! mirror, so every node combines alike (`memory_publications::combine`).
//!
//! Pure data and rules: no Redis, no channel. Must not know about subscriptions or SIP.

use crate::body::rich::Doc;
use crate::storage::memory_publications::combine;
use crate::storage::presence::{Live, PublishError, Published};
use crate::storage::StorageError;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// One publication in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    pub etag: String,
    pub state: Published,
    /// Unix milliseconds.
    pub expires_ms: u64,
}

/// A presentity's publications and combined state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Presentity {
    /// Increased by every write in Redis: a mirror never goes back to an older one.
    pub version: u64,
    /// Oldest first (a refresh or modification makes a publication the newest).
    pub publications: Vec<Publication>,
    /// None until he first published.
    pub live: Option<Live>,
}

impl Presentity {
    /// Adds a publication (the newest).
    pub fn publish(&mut self, etag: String, state: Published, expires_ms: u64) {
        self.publications.push(Publication { etag, state, expires_ms });
    }

    /// Refreshes (`state` None) or modifies publication `etag` under the entity-tag `new`.
    pub fn update(&mut self, etag: &str, new: String, state: Option<Published>, expires_ms: u64) -> Result<(), PublishError> {
        let mut p = self.take(etag)?;
        if let Some(s) = state {
            p.state = s;
        }
        p.etag = new;
        p.expires_ms = expires_ms;
        self.publications.push(p);
        Ok(())
    }

    pub fn remove(&mut self, etag: &str) -> Result<(), PublishError> {
        self.take(etag).map(drop)
    }

    fn take(&mut self, etag: &str) -> Result<Publication, PublishError> {
        let i = self.publications.iter().position(|p| p.etag == etag).ok_or(PublishError::UnknownEtag)?;
        Ok(self.publications.remove(i))
    }

    /// Drops the publications expired at `now_ms` and recombines (a change dated when the
    /// last of them expired, so that every node dates it alike); true if any was dropped.
    pub fn expire(&mut self, now_ms: u64) -> bool {
        let last = self.publications.iter().filter(|p| p.expires_ms <= now_ms).map(|p| p.expires_ms).max();
        let Some(at) = last else { return false };
        self.publications.retain(|p| p.expires_ms > now_ms);
        self.settle(at / 1000);
        true
    }

    /// Recombines his state; true if it changed. `at`: unix seconds of the change.
    pub fn settle(&mut self, at: u64) -> bool {
        let states: Vec<&Published> = self.publications.iter().rev().map(|p| &p.state).collect();
        match combine(&states, self.live.as_ref(), at) {
            Some(live) => {
                self.live = Some(live);
                true
            }
            None => false,
        }
    }

    /// When his next publication expires (unix milliseconds).
    pub fn earliest(&self) -> Option<u64> {
        self.publications.iter().map(|p| p.expires_ms).min()
    }

    pub fn encode(&self) -> Result<Vec<u8>, StorageError> {
        let record = Record {
            version: self.version,
            publications: self
                .publications
                .iter()
                .map(|p| PublicationRecord { etag: p.etag.clone(), open: p.state.open, expires_ms: p.expires_ms, doc: p.state.doc.as_deref().cloned() })
                .collect(),
            live: self.live.as_ref().map(|l| LiveRecord { online: l.online, updated: l.updated, doc: l.doc.as_deref().cloned() }),
        };
        postcard::to_allocvec(&record).map_err(StorageError::new)
    }

    pub fn decode(bytes: &[u8]) -> Result<Presentity, StorageError> {
        let r: Record = postcard::from_bytes(bytes).map_err(StorageError::new)?;
        Ok(Presentity {
            version: r.version,
            publications: r
                .publications
                .into_iter()
                .map(|p| Publication { etag: p.etag, state: Published::with_doc(p.open, p.doc.unwrap_or_default()), expires_ms: p.expires_ms })
                .collect(),
            live: r.live.map(|l| Live { online: l.online, updated: l.updated, doc: l.doc.map(Arc::new) }),
        })
    }
}

/// The stored form (postcard): change it only with a new key name or a migration.
#[derive(Serialize, Deserialize)]
struct Record {
    version: u64,
    publications: Vec<PublicationRecord>,
    live: Option<LiveRecord>,
}

#[derive(Serialize, Deserialize)]
struct PublicationRecord {
    etag: String,
    open: bool,
    expires_ms: u64,
    doc: Option<Doc>,
}

#[derive(Serialize, Deserialize)]
struct LiveRecord {
    online: bool,
    updated: u64,
    doc: Option<Doc>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::rich::{capabilities_of_specs, Note};

    fn rich(open: bool) -> Published {
        let doc = Doc { notes: vec![Note { lang: None, text: "hi".into() }], capabilities: capabilities_of_specs("groupchat/1.1"), ..Doc::default() };
        Published::with_doc(open, doc)
    }

    #[test]
    fn publish_update_remove_and_round_trip() {
        let mut p = Presentity::default();
        p.publish("a".into(), Published::basic(false), 5_000);
        p.publish("b".into(), rich(true), 9_000);
        assert!(p.settle(1));
        assert!(p.live.as_ref().unwrap().online);
        p.update("a", "c".into(), Some(Published::basic(true)), 7_000).unwrap();
        assert_eq!(p.publications.last().unwrap().etag, "c", "a modification is the newest");
        assert!(matches!(p.update("a", "d".into(), None, 1), Err(PublishError::UnknownEtag)));
        assert_eq!(p.earliest(), Some(7_000));
        p.version = 7;
        assert_eq!(Presentity::decode(&p.encode().unwrap()).unwrap(), p);
        p.remove("b").unwrap();
        assert!(matches!(p.remove("b"), Err(PublishError::UnknownEtag)));
    }

    #[test]
    fn expiry_is_dated_when_the_last_one_expired_and_keeps_capabilities() {
        let mut p = Presentity::default();
        p.publish("a".into(), rich(true), 5_000);
        p.settle(1);
        assert!(!p.expire(4_999));
        assert!(p.expire(6_000));
        let live = p.live.clone().unwrap();
        assert!(!live.online);
        assert_eq!(live.updated, 5, "dated at the expiry, not at the sweep");
        let kept = live.doc.unwrap();
        assert!(kept.notes.is_empty() && !kept.capabilities.is_empty());
        assert_eq!(p.earliest(), None);
    }
}
