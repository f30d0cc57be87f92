//! This node's mirror of the cluster's presence: every presentity's publications and
//! combined state ([`Presentity`]), read without Redis (the list NOTIFY path reads it per
//! entry). Kept current by this node's own writes and by the change feed
//! (`presence_feed`); a record never replaces a newer one (versions). Publications expire
//! here at their time too, Redis or not. Each change of a combined state is announced on
//! this node's channel, once.
//!
//! Owns the mirror and the channel; must not talk to Redis.

use super::presence_state::Presentity;
use crate::storage::presence::Live;
use parking_lot::Mutex;
use std::collections::{BTreeSet, HashMap};
use tokio::sync::mpsc;

#[derive(Default)]
struct Inner {
    by_uri: HashMap<Box<str>, Presentity>,
    /// (Earliest expiry in unix ms, presentity), for each presentity with publications.
    expiry: BTreeSet<(u64, Box<str>)>,
    publications: usize,
}

pub struct Mirror {
    inner: Mutex<Inner>,
    changes: mpsc::UnboundedSender<Box<str>>,
}

impl Mirror {
    pub fn new(changes: mpsc::UnboundedSender<Box<str>>) -> Mirror {
        Mirror { inner: Mutex::new(Inner::default()), changes }
    }

    /// Takes `p` for `uri` unless the mirror has a newer version (`force`: whatever it
    /// has, after a full reload); announces him if his combined state changed.
    pub fn apply(&self, uri: &str, mut p: Presentity, now_ms: u64, force: bool) {
        p.expire(now_ms);
        let mut inner = self.inner.lock();
        let old = inner.by_uri.get(uri);
        if !force && old.is_some_and(|o| o.version > p.version) {
            return;
        }
        let changed = old.map(|o| &o.live) != Some(&p.live);
        inner.put(uri, p);
        drop(inner);
        if changed {
            self.announce_now(uri);
        }
    }

    /// After a full reload: presentities the mirror has and Redis no longer has are
    /// forgotten (and announced: watchers read them as unknown).
    pub fn retain_only(&self, known: &std::collections::HashSet<Box<str>>) {
        let gone: Vec<Box<str>> = self.inner.lock().by_uri.keys().filter(|u| !known.contains(*u)).cloned().collect();
        for uri in gone {
            self.inner.lock().forget(&uri);
            self.announce_now(&uri);
        }
    }

    pub fn live(&self, uri: &str) -> Option<Live> {
        self.inner.lock().by_uri.get(uri).and_then(|p| p.live.clone())
    }

    /// Drops the publications expired at `now_ms` and announces who changed; returns how
    /// many were dropped.
    pub fn expire(&self, now_ms: u64) -> usize {
        let mut inner = self.inner.lock();
        let due: Vec<Box<str>> = inner.expiry.range(..(now_ms + 1, Box::<str>::from(""))).map(|(_, u)| u.clone()).collect();
        let mut dropped = 0;
        let mut announced = Vec::new();
        for uri in due {
            let Some(mut p) = inner.by_uri.get(&uri).cloned() else { continue };
            let (before, live) = (p.publications.len(), p.live.clone());
            p.expire(now_ms);
            dropped += before - p.publications.len();
            if p.live != live {
                announced.push(uri.clone());
            }
            inner.put(&uri, p);
        }
        drop(inner);
        for uri in announced {
            self.announce_now(&uri);
        }
        dropped
    }

    pub fn publications(&self) -> usize {
        self.inner.lock().publications
    }

    /// Announces `uri` if he has rich presence (what "share my status" changes).
    pub fn announce(&self, uri: &str) {
        let rich = self.inner.lock().by_uri.get(uri).is_some_and(|p| p.live.as_ref().is_some_and(|l| l.doc.is_some()));
        if rich {
            self.announce_now(uri);
        }
    }

    /// Whether the receiving end (the subscription layer) is gone.
    pub fn closed(&self) -> bool {
        self.changes.is_closed()
    }

    fn announce_now(&self, uri: &str) {
        let _ = self.changes.send(uri.into());
    }
}

impl Inner {
    fn put(&mut self, uri: &str, p: Presentity) {
        self.forget(uri);
        if let Some(t) = p.earliest() {
            self.expiry.insert((t, uri.into()));
        }
        self.publications += p.publications.len();
        self.by_uri.insert(uri.into(), p);
    }

    fn forget(&mut self, uri: &str) {
        if let Some(old) = self.by_uri.remove(uri) {
            self.publications -= old.publications.len();
            if let Some(t) = old.earliest() {
                self.expiry.remove(&(t, Box::from(uri)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::presence::Published;

    const BOB: &str = "sip:bob@example.org";

    fn online(version: u64, until: u64) -> Presentity {
        let mut p = Presentity { version, ..Presentity::default() };
        p.publish(format!("e{version}"), Published::basic(true), until);
        p.settle(1);
        p
    }

    #[test]
    fn older_versions_are_ignored_and_changes_announced_once() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let m = Mirror::new(tx);
        m.apply(BOB, online(2, 10_000), 0, false);
        m.apply(BOB, online(2, 10_000), 0, false);
        let mut offline = online(1, 10_000);
        offline.publications.clear();
        offline.settle(2);
        m.apply(BOB, offline, 0, false);
        assert!(m.live(BOB).unwrap().online, "version 1 is older");
        assert_eq!(std::iter::from_fn(|| rx.try_recv().ok()).count(), 1);
        assert_eq!(m.publications(), 1);
        assert_eq!(m.expire(9_999), 0);
        assert_eq!(m.expire(10_000), 1);
        assert!(!m.live(BOB).unwrap().online);
        assert_eq!(m.publications(), 0);
        assert_eq!(rx.try_recv().unwrap().as_ref(), BOB);
        // An expired publication arriving late is dropped on arrival, not announced online.
        m.apply(BOB, online(3, 10_000), 20_000, false);
        assert!(!m.live(BOB).unwrap().online);
        m.retain_only(&Default::default());
        assert!(m.live(BOB).is_none());
    }
}
