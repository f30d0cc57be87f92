//! Live presence: the publications (RFC 3903) in force for each presentity, combined into
//! one state (any open tuple makes him online), with expiry.
//!
//! [`PresenceStore`] is the handle the PUBLISH handler, the registrar and the subscription
//! layer use; it holds the state through [`PublicationStore`]. [`MemoryPublications`] holds
//! it in memory; the server wraps it in `storage::sled::SledPublications`, which records
//! every write so that publications, entity-tags and "last seen" survive a restart. Every
//! change is sent on the channel given at creation, for the subscription layer to notify
//! watchers.
//! It must not know about subscriptions or SIP messages.

use crate::clock::unix_now;
use crate::storage::{PublicationStore, StorageError};
use parking_lot::Mutex;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

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

struct Publication {
    uri: Box<str>,
    state: Published,
    expires_at: Instant,
}

#[derive(Default)]
struct Inner {
    by_etag: HashMap<String, Publication>,
    by_uri: HashMap<Box<str>, Vec<String>>,
    last: HashMap<Box<str>, Live>,
    expiry: BTreeSet<(Instant, String)>,
}

/// Presence state: a handle over a [`PublicationStore`]. Cheap to clone.
#[derive(Clone)]
pub struct PresenceStore {
    store: Arc<dyn PublicationStore>,
}

impl PresenceStore {
    /// The in-memory store, and the receiving end of its change channel (presentity URIs).
    pub fn new() -> (PresenceStore, mpsc::UnboundedReceiver<Box<str>>) {
        let (store, rx) = MemoryPublications::new();
        (PresenceStore::with_store(Arc::new(store)), rx)
    }

    /// A handle over any store (which announces changes on its own channel).
    pub fn with_store(store: Arc<dyn PublicationStore>) -> PresenceStore {
        PresenceStore { store }
    }

    /// A new publication for `uri`; returns its entity-tag.
    pub fn publish(&self, uri: &str, state: Published, expires: Duration) -> Result<String, PublishError> {
        self.store.publish(uri, state, expires)
    }

    /// Refreshes (`state` None) or modifies a publication; returns its new entity-tag.
    /// `uri` must be the one it was published for.
    pub fn update(&self, uri: &str, etag: &str, state: Option<Published>, expires: Duration) -> Result<String, PublishError> {
        self.store.update(uri, etag, state, expires)
    }

    /// Removes a publication (Expires: 0).
    pub fn remove(&self, uri: &str, etag: &str) -> Result<(), PublishError> {
        self.store.remove(uri, etag)
    }

    /// The combined state of `uri`, if he ever published since start.
    pub fn live(&self, uri: &str) -> Option<Live> {
        self.store.live(uri)
    }

    /// Drops expired publications; returns how many.
    pub fn expire(&self, now: Instant) -> usize {
        self.store.expire(now)
    }

    pub fn publications(&self) -> usize {
        self.store.publications()
    }
}

/// The publications in memory.
pub struct MemoryPublications {
    inner: Mutex<Inner>,
    changes: mpsc::UnboundedSender<Box<str>>,
}

fn new_etag() -> String {
    crate::sip::new_tag() + &crate::sip::new_tag()
}

impl MemoryPublications {
    /// The store, and the receiving end of its change channel (presentity URIs).
    pub fn new() -> (MemoryPublications, mpsc::UnboundedReceiver<Box<str>>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (MemoryPublications { inner: Mutex::new(Inner::default()), changes: tx }, rx)
    }

    /// Puts back a presentity's last known state (from a durable store, at start).
    pub(crate) fn restore_last(&self, uri: &str, live: Live) {
        self.inner.lock().last.insert(uri.into(), live);
    }

    /// Puts back a publication (from a durable store, at start); its presentity's state
    /// is recomputed, and announced only if it changed.
    pub(crate) fn restore(&self, etag: String, uri: &str, state: Published, expires_at: Instant) {
        let mut inner = self.inner.lock();
        inner.insert(etag, Publication { uri: uri.into(), state, expires_at });
        self.settle(&mut inner, uri);
    }

    /// What publication `etag` says, and until when.
    pub(crate) fn publication(&self, etag: &str) -> Option<(Published, Instant)> {
        self.inner.lock().by_etag.get(etag).map(|p| (p.state.clone(), p.expires_at))
    }

    /// Drops the publications expired at `now`; returns them (entity-tag, presentity).
    pub(crate) fn expire_listed(&self, now: Instant) -> Vec<(String, Box<str>)> {
        let mut inner = self.inner.lock();
        let due: Vec<(Instant, String)> = inner.expiry.range(..(now, String::new())).cloned().collect();
        let mut gone = Vec::with_capacity(due.len());
        for (_, etag) in due {
            if let Some(uri) = inner.by_etag.get(&etag).map(|p| p.uri.clone()) {
                inner.take(&etag, &uri);
                self.settle(&mut inner, &uri);
                gone.push((etag, uri));
            }
        }
        gone
    }

    /// Recomputes `uri`'s combined state and announces a change.
    fn settle(&self, inner: &mut Inner, uri: &str) {
        let online = inner
            .by_uri
            .get(uri)
            .is_some_and(|etags| etags.iter().any(|e| inner.by_etag.get(e).is_some_and(|p| p.state.open)));
        let changed = inner.last.get(uri).is_none_or(|l| l.online != online);
        if changed {
            inner.last.insert(uri.into(), Live { online, updated: unix_now() });
            let _ = self.changes.send(uri.into());
        }
    }
}

impl PublicationStore for MemoryPublications {
    fn publish(&self, uri: &str, state: Published, expires: Duration) -> Result<String, PublishError> {
        let etag = new_etag();
        let mut inner = self.inner.lock();
        inner.insert(etag.clone(), Publication { uri: uri.into(), state, expires_at: Instant::now() + expires });
        self.settle(&mut inner, uri);
        Ok(etag)
    }

    fn update(&self, uri: &str, etag: &str, state: Option<Published>, expires: Duration) -> Result<String, PublishError> {
        let mut inner = self.inner.lock();
        let mut publication = inner.take(etag, uri).ok_or(PublishError::UnknownEtag)?;
        if let Some(s) = state {
            publication.state = s;
        }
        publication.expires_at = Instant::now() + expires;
        let new = new_etag();
        inner.insert(new.clone(), publication);
        self.settle(&mut inner, uri);
        Ok(new)
    }

    fn remove(&self, uri: &str, etag: &str) -> Result<(), PublishError> {
        let mut inner = self.inner.lock();
        inner.take(etag, uri).ok_or(PublishError::UnknownEtag)?;
        self.settle(&mut inner, uri);
        Ok(())
    }

    fn live(&self, uri: &str) -> Option<Live> {
        self.inner.lock().last.get(uri).cloned()
    }

    fn expire(&self, now: Instant) -> usize {
        self.expire_listed(now).len()
    }

    fn publications(&self) -> usize {
        self.inner.lock().by_etag.len()
    }
}

impl Inner {
    fn insert(&mut self, etag: String, p: Publication) {
        self.expiry.insert((p.expires_at, etag.clone()));
        self.by_uri.entry(p.uri.clone()).or_default().push(etag.clone());
        self.by_etag.insert(etag, p);
    }

    fn take(&mut self, etag: &str, uri: &str) -> Option<Publication> {
        if self.by_etag.get(etag).is_none_or(|p| &*p.uri != uri) {
            return None;
        }
        let p = self.by_etag.remove(etag)?;
        self.expiry.remove(&(p.expires_at, etag.to_string()));
        if let Some(list) = self.by_uri.get_mut(uri) {
            list.retain(|e| e != etag);
            if list.is_empty() {
                self.by_uri.remove(uri);
            }
        }
        Some(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOB: &str = "sip:bob@example.org";
    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn any_open_publication_makes_him_online() {
        let (store, mut rx) = PresenceStore::new();
        let phone = store.publish(BOB, Published { open: true }, HOUR).unwrap();
        let desk = store.publish(BOB, Published { open: false }, HOUR).unwrap();
        assert!(store.live(BOB).unwrap().online);
        store.remove(BOB, &phone).unwrap();
        assert!(!store.live(BOB).unwrap().online);
        let desk = store.update(BOB, &desk, Some(Published { open: true }), HOUR).unwrap();
        assert!(store.live(BOB).unwrap().online);
        assert_eq!(std::iter::from_fn(|| rx.try_recv().ok()).count(), 3, "online, offline, online");
        assert!(matches!(store.update(BOB, "nope", None, HOUR), Err(PublishError::UnknownEtag)));
        assert!(matches!(store.update("sip:eve@example.org", &desk, None, HOUR), Err(PublishError::UnknownEtag)));
    }

    #[test]
    fn expiry_takes_him_offline() {
        let (store, _rx) = PresenceStore::new();
        store.publish(BOB, Published { open: true }, Duration::from_millis(0)).unwrap();
        assert_eq!(store.expire(Instant::now() + Duration::from_millis(1)), 1);
        assert!(!store.live(BOB).unwrap().online);
        assert_eq!(store.publications(), 0);
    }
}

/// Expires publications once a second, until `shutdown`.
pub fn spawn_expiry(store: std::sync::Arc<PresenceStore>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tick.tick() => { store.expire(Instant::now()); }
                _ = shutdown.changed() => return,
            }
        }
    });
}
