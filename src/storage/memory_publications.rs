//! The [`PublicationStore`] in memory: the publications in force by entity-tag and by
//! presentity (oldest first), each presentity's combined state (any open publication makes
//! him online; their documents composed, the newest first) and the expiry order. Announces each change of a combined state on its channel. Used
//! alone (tests, `PresenceStore::new`) and wrapped by [`SledPublications`](super::sled::SledPublications),
//! which records its writes. Must not know about subscriptions or SIP messages.

use super::presence::{Live, PublicationStore, PublishError, Published};
use crate::body::rich;
use crate::clock::unix_now;
use std::sync::Arc;
use parking_lot::Mutex;
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

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
        let states: Vec<&Published> = inner.by_uri.get(uri).map_or(Vec::new(), |etags| etags.iter().rev().filter_map(|e| inner.by_etag.get(e)).map(|p| &p.state).collect());
        if let Some(live) = combine(&states, inner.last.get(uri), unix_now()) {
            inner.last.insert(uri.into(), live);
            let _ = self.changes.send(uri.into());
        }
    }
}

/// The combined state of publications `states` (the newest first) following `last`, or
/// None when it is the same; `at` (unix seconds) is when it changed. Shared with the
/// cluster's store (`storage::redis`), so that every node combines alike.
pub(crate) fn combine(states: &[&Published], last: Option<&Live>, at: u64) -> Option<Live> {
    let online = states.iter().any(|s| s.open);
    let mut composed = rich::compose(states.iter().filter_map(|s| s.doc.as_deref()));
    // Long-term presence: the capabilities last announced stay (offline too) until a
    // publication or registration announces others.
    if composed.capabilities.is_empty() {
        composed.capabilities = last.and_then(|l| l.doc.as_deref()).map(|d| d.capabilities.clone()).unwrap_or_default();
    }
    let doc = (!composed.is_empty()).then(|| Arc::new(composed));
    let updated = match last {
        Some(l) if l.online == online && l.doc == doc => return None,
        Some(l) if l.online == online => l.updated,
        _ => at,
    };
    Some(Live { online, updated, doc })
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

    fn announce(&self, uri: &str) {
        if self.inner.lock().last.get(uri).is_some_and(|l| l.doc.is_some()) {
            let _ = self.changes.send(uri.into());
        }
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
