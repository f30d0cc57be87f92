//! Live presence: the publications (RFC 3903) in force for each presentity, combined into
//! one state (any open tuple makes him online), with expiry.
//!
//! [`PresenceStore`] is the handle the PUBLISH handler, the registrar and the subscription
//! layer use; it holds the state through [`PublicationStore`]. [`MemoryPublications`]
//! (`storage::memory_publications`) holds it in memory; the server wraps it in
//! `storage::sled::SledPublications`, which records every write so that publications,
//! entity-tags and "last seen" survive a restart; in a cluster, `storage::redis::RedisPublications`
//! shares them between the nodes. The types the store speaks ([`Live`],
//! [`Published`], [`PublishError`]) are defined in `storage::presence`. Every
//! change is sent on the channel given at creation, for the subscription layer to notify
//! watchers. With the accounts ([`PresenceStore::sharing`]), a user who turned "share my
//! status" off is read without his rich presence: watchers see only that he is a user;
//! [`PresenceStore::announce`] tells them when that setting changes.
//! It must not know about subscriptions or SIP messages.

use crate::storage::PublicationStore;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

pub use crate::storage::memory_publications::MemoryPublications;
pub use crate::storage::presence::{Live, PublishError, Published};

/// Presence state: a handle over a [`PublicationStore`]. Cheap to clone.
#[derive(Clone)]
pub struct PresenceStore {
    store: Arc<dyn PublicationStore>,
    /// Whose status may be shared ("share my status"); everyone's without it.
    accounts: Option<crate::accounts::Accounts>,
}

impl PresenceStore {
    /// The in-memory store, and the receiving end of its change channel (presentity URIs).
    pub fn new() -> (PresenceStore, mpsc::UnboundedReceiver<Box<str>>) {
        let (store, rx) = MemoryPublications::new();
        (PresenceStore::with_store(Arc::new(store)), rx)
    }

    /// A handle over any store (which announces changes on its own channel).
    pub fn with_store(store: Arc<dyn PublicationStore>) -> PresenceStore {
        PresenceStore { store, accounts: None }
    }

    /// Reads each user's "share my status" setting from `accounts` (see [`Self::live`]).
    pub fn sharing(mut self, accounts: crate::accounts::Accounts) -> PresenceStore {
        self.accounts = Some(accounts);
        self
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

    /// The combined state of `uri`, if he ever published since start; without his rich
    /// presence when he does not share his status.
    pub fn live(&self, uri: &str) -> Option<Live> {
        let mut live = self.store.live(uri)?;
        if live.doc.is_some() && self.accounts.as_ref().is_some_and(|a| !a.shares_status(uri)) {
            live.doc = None;
        }
        Some(live)
    }

    /// Announces `uri` as changed though nothing was published: his "share my status"
    /// changed, so his watchers must read him again. Nothing when he has no rich presence
    /// (then the setting shows nothing).
    pub fn announce(&self, uri: &str) {
        self.store.announce(uri)
    }

    /// Sets "share my status" of `username` in `accounts` (the ones this store reads it
    /// from) and, when it changed, announces him: the one way a running server changes it
    /// (provisioning and admin routes). True when it changed. Blocking (a durable write).
    pub fn set_share_status(&self, accounts: &crate::accounts::Accounts, username: &str, share: bool) -> Result<bool, crate::accounts::AccountError> {
        let changed = accounts.set_share_status(username, share)?;
        if changed {
            tracing::info!(user = %username, share_status = share, "share my status changed");
            // Keyed as the presence store keys him (the identity his PUBLISH is taken as).
            let uri = format!("sip:{username}@{}", accounts.realm());
            self.announce(&crate::identity::aor(&uri).unwrap_or(uri));
        }
        Ok(changed)
    }

    /// Drops expired publications; returns how many.
    pub fn expire(&self, now: Instant) -> usize {
        self.store.expire(now)
    }

    pub fn publications(&self) -> usize {
        self.store.publications()
    }
}

/// Expires publications once a second, until `shutdown`; off the async workers, as the
/// store may write (sled) or talk to Redis (a cluster's sweep).
pub fn spawn_expiry(store: std::sync::Arc<PresenceStore>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let store = store.clone();
                    let _ = tokio::task::spawn_blocking(move || store.expire(Instant::now())).await;
                }
                _ = shutdown.changed() => return,
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOB: &str = "sip:bob@example.org";
    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn any_open_publication_makes_him_online() {
        let (store, mut rx) = PresenceStore::new();
        let phone = store.publish(BOB, Published::basic(true), HOUR).unwrap();
        let desk = store.publish(BOB, Published::basic(false), HOUR).unwrap();
        assert!(store.live(BOB).unwrap().online);
        store.remove(BOB, &phone).unwrap();
        assert!(!store.live(BOB).unwrap().online);
        let desk = store.update(BOB, &desk, Some(Published::basic(true)), HOUR).unwrap();
        assert!(store.live(BOB).unwrap().online);
        assert_eq!(std::iter::from_fn(|| rx.try_recv().ok()).count(), 3, "online, offline, online");
        assert!(matches!(store.update(BOB, "nope", None, HOUR), Err(PublishError::UnknownEtag)));
        assert!(matches!(store.update("sip:eve@example.org", &desk, None, HOUR), Err(PublishError::UnknownEtag)));
    }

    fn doc(pidf: &str) -> crate::body::rich::Doc {
        crate::body::rich::read(pidf.as_bytes()).unwrap()
    }

    const PHONE: &str = r#"<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity="sip:bob@example.org"><tuple id="a"><status><basic>open</basic></status><note xml:lang="en">In a call</note></tuple><dm:person id="p"><rpid:activities><rpid:on-the-phone/></rpid:activities></dm:person></presence>"#;
    const DESK: &str = r#"<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" xmlns:op="urn:oma:xml:prs:pidf:oma-pres" entity="sip:bob@example.org"><tuple id="b"><status><basic>closed</basic></status><op:service-description><op:service-id>groupchat</op:service-id><op:version>1.1</op:version></op:service-description><note xml:lang="fr">Au bureau</note></tuple><dm:person id="q"><rpid:activities><rpid:meeting/></rpid:activities></dm:person></presence>"#;

    #[test]
    fn two_devices_compose_and_an_expired_one_leaves() {
        let (store, mut rx) = PresenceStore::new();
        let desk = store.publish(BOB, Published::with_doc(false, doc(DESK)), Duration::from_millis(0)).unwrap();
        store.publish(BOB, Published::with_doc(true, doc(PHONE)), HOUR).unwrap();
        let live = store.live(BOB).unwrap();
        assert!(live.online);
        let d = live.doc.unwrap();
        assert_eq!(d.person.as_ref().unwrap().activities, vec![Box::from("on-the-phone")], "the newest person");
        let notes: Vec<&str> = d.notes.iter().map(|n| &*n.text).collect();
        assert_eq!(notes, ["In a call", "Au bureau"]);
        assert_eq!(&*d.capabilities[0].id, "groupchat");
        let _ = std::iter::from_fn(|| rx.try_recv().ok()).count();
        // The desk's publication expires: its note goes, and watchers are told; the
        // capabilities last announced stay until others are (long-term presence).
        assert_eq!(store.expire(Instant::now() + Duration::from_millis(1)), 1);
        let d = store.live(BOB).unwrap().doc.unwrap();
        assert_eq!(d.notes.len(), 1);
        assert_eq!(&*d.capabilities[0].id, "groupchat");
        assert_eq!(std::iter::from_fn(|| rx.try_recv().ok()).count(), 1);
        assert!(matches!(store.update(BOB, &desk, None, HOUR), Err(PublishError::UnknownEtag)));
    }

    #[test]
    fn offline_keeps_only_capabilities() {
        let (store, _rx) = PresenceStore::new();
        let mut both = doc(PHONE);
        both.capabilities = doc(DESK).capabilities;
        let tag = store.publish(BOB, Published::with_doc(true, both), HOUR).unwrap();
        let seen = store.live(BOB).unwrap().updated;
        store.remove(BOB, &tag).unwrap();
        let live = store.live(BOB).unwrap();
        assert!(!live.online);
        assert!(live.updated >= seen);
        let kept = live.doc.unwrap();
        assert!(kept.person.is_none() && kept.notes.is_empty());
        assert_eq!(&*kept.capabilities[0].id, "groupchat");
    }

    #[test]
    fn a_setting_change_is_announced_and_read() {
        let dir = tempfile::tempdir().unwrap();
        let accounts = crate::accounts::Accounts::open(dir.path(), "example.org").unwrap();
        accounts.create("bob", "x", &[]).unwrap();
        let (store, mut rx) = PresenceStore::new();
        let store = store.sharing(accounts.clone());
        store.announce(BOB);
        assert!(rx.try_recv().is_err(), "no state yet: nothing to announce");
        let tag = store.publish(BOB, Published::basic(true), HOUR).unwrap();
        assert_eq!(rx.try_recv().unwrap().as_ref(), BOB);
        store.announce(BOB);
        assert!(rx.try_recv().is_err(), "no rich presence: the setting shows nothing");
        store.update(BOB, &tag, Some(Published::with_doc(true, doc(PHONE))), HOUR).unwrap();
        assert_eq!(rx.try_recv().unwrap().as_ref(), BOB);
        assert!(store.set_share_status(&accounts, "bob", false).unwrap());
        assert_eq!(rx.try_recv().unwrap().as_ref(), BOB, "announced");
        let live = store.live(BOB).unwrap();
        assert!(live.online && live.doc.is_none());
        assert!(!store.set_share_status(&accounts, "bob", false).unwrap(), "unchanged");
        assert!(rx.try_recv().is_err(), "unchanged: not announced");
        assert!(matches!(accounts.settings("nobody"), Err(crate::accounts::AccountError::NotFound(_))));
        assert!(matches!(accounts.set_share_status("nobody", false), Err(crate::accounts::AccountError::NotFound(_))));
        assert!(accounts.set_share_status("bob", true).unwrap());
        assert!(store.live(BOB).unwrap().doc.is_some());
    }

    #[test]
    fn expiry_takes_him_offline() {
        let (store, _rx) = PresenceStore::new();
        store.publish(BOB, Published::basic(true), Duration::from_millis(0)).unwrap();
        assert_eq!(store.expire(Instant::now() + Duration::from_millis(1)), 1);
        assert!(!store.live(BOB).unwrap().online);
        assert_eq!(store.publications(), 0);
    }
}
