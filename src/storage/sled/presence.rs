//! Presence that survives a restart (`data_dir/presence`): the publications in force (entity
//! tag, presentity, what it says, expiry), each presentity's last known state ("last seen"),
//! and the embedded registrar's registrations.
//!
//! The state itself is [`MemoryPublications`]'s, which this store wraps: reads are served
//! from memory, every write is also recorded in sled (written back every 500 ms: a crash
//! loses at most that last instant; a clean stop flushes). At open, the records are put
//! back: unexpired publications with their entity-tags (a publisher's next refresh finds
//! its tag), last states, registrations; expired ones are dropped, a record that does not
//! decode is skipped with a log line.
//!
//! Layout: publications are in the tree `publications_v2` ([`Record`], with the rich
//! document); the first layout's tree `publications` ([`RecordV1`], open/closed only) is
//! still read at open and each of its records moved to the new tree (migrated once, then
//! the old tree is empty). What long-term presence keeps of a user's document beyond his
//! publications (his capabilities last announced) is in `kept_docs`.

use crate::body::rich::Doc;
use crate::clock::unix_now;
use crate::storage::memory_publications::MemoryPublications;
use crate::storage::presence::{Live, PublishError, Published};
use crate::storage::registrations::{Registration, RegistrationStore};
use crate::storage::{PublicationStore, StorageError};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

pub struct SledPublications {
    memory: MemoryPublications,
    db: sled::Db,
    /// Entity-tag → [`Record`].
    publications: sled::Tree,
    /// Entity-tag → [`RecordV1`]: the first layout, migrated at open.
    publications_v1: sled::Tree,
    /// Presentity → a [`Doc`] with only his capabilities last announced (kept offline).
    kept_docs: sled::Tree,
    /// Presentity → [`LastSeen`].
    last_seen: sled::Tree,
    /// Address of record → [`Registration`].
    registrations: sled::Tree,
}

#[derive(Serialize, Deserialize)]
struct Record {
    uri: String,
    open: bool,
    /// Unix seconds.
    expires_at: u64,
    doc: Option<Doc>,
}

/// A publication in the first layout (before rich presence).
#[derive(Serialize, Deserialize)]
struct RecordV1 {
    uri: String,
    open: bool,
    expires_at: u64,
}

#[derive(Serialize, Deserialize)]
struct LastSeen {
    online: bool,
    updated: u64,
}

impl SledPublications {
    /// Opens (or creates) the store and puts its state back in memory; returns it with the
    /// receiving end of its change channel.
    pub fn open(dir: &Path) -> Result<(SledPublications, mpsc::UnboundedReceiver<Box<str>>), StorageError> {
        let db = super::open(&sled::Config::new().path(dir).flush_every_ms(Some(500)).cache_capacity(1 << 20))?;
        let (memory, rx) = MemoryPublications::new();
        let store = SledPublications {
            publications: db.open_tree("publications_v2")?,
            publications_v1: db.open_tree("publications")?,
            kept_docs: db.open_tree("kept_docs")?,
            last_seen: db.open_tree("last_seen")?,
            registrations: db.open_tree("registrations")?,
            memory,
            db,
        };
        store.load();
        Ok((store, rx))
    }

    fn load(&self) {
        self.migrate_v1();
        let mut kept: std::collections::HashMap<String, Doc> = decoded::<Doc>(&self.kept_docs).into_iter().collect();
        for (uri, last) in decoded::<LastSeen>(&self.last_seen) {
            let doc = kept.remove(&uri).map(std::sync::Arc::new);
            self.memory.restore_last(&uri, Live { online: last.online, updated: last.updated, doc });
        }
        let (now, mono) = (unix_now(), Instant::now());
        let mut restored = 0;
        for (etag, r) in decoded::<Record>(&self.publications) {
            if r.expires_at <= now {
                let _ = self.publications.remove(etag.as_bytes());
                continue;
            }
            let state = Published::with_doc(r.open, r.doc.unwrap_or_default());
            self.memory.restore(etag, &r.uri, state, mono + Duration::from_secs(r.expires_at - now));
            restored += 1;
        }
        if restored > 0 {
            tracing::info!(publications = restored, "stored presence loaded");
        }
    }

    /// Moves the first layout's publications to the current tree (once: then it is empty).
    fn migrate_v1(&self) {
        let old = decoded::<RecordV1>(&self.publications_v1);
        for (etag, r) in &old {
            let moved = encode(&Record { uri: r.uri.clone(), open: r.open, expires_at: r.expires_at, doc: None })
                .and_then(|v| Ok(self.publications.insert(etag.as_bytes(), v)?))
                .and_then(|_| Ok(self.publications_v1.remove(etag.as_bytes())?));
            if let Err(e) = moved {
                tracing::warn!("presence store: a publication of the first layout not migrated: {e}");
            }
        }
        if !old.is_empty() {
            tracing::info!(publications = old.len(), "presence store: publications migrated to the current layout");
        }
    }

    /// Records publication `etag` as memory now has it, and its presentity's state.
    fn record(&self, etag: &str, uri: &str) -> Result<(), StorageError> {
        if let Some((state, until)) = self.memory.publication(etag) {
            let expires_at = unix_now() + until.saturating_duration_since(Instant::now()).as_secs();
            let r = Record { uri: uri.to_string(), open: state.open, expires_at, doc: state.doc.as_deref().cloned() };
            self.publications.insert(etag.as_bytes(), encode(&r)?)?;
        }
        self.record_last(uri)
    }

    fn record_last(&self, uri: &str) -> Result<(), StorageError> {
        if let Some(l) = self.memory.live(uri) {
            self.last_seen.insert(uri.as_bytes(), encode(&LastSeen { online: l.online, updated: l.updated })?)?;
            // Only what outlives his publications: the capabilities last announced.
            match l.doc.as_ref().filter(|d| !d.capabilities.is_empty()) {
                Some(d) => self.kept_docs.insert(uri.as_bytes(), encode(&Doc { capabilities: d.capabilities.clone(), ..Doc::default() })?).map(drop)?,
                None => self.kept_docs.remove(uri.as_bytes()).map(drop)?,
            }
        }
        Ok(())
    }

    /// Writes everything back now (a clean stop).
    pub fn flush(&self) -> Result<(), StorageError> {
        self.db.flush()?;
        Ok(())
    }
}

impl PublicationStore for SledPublications {
    fn publish(&self, uri: &str, state: Published, expires: Duration) -> Result<String, PublishError> {
        let etag = self.memory.publish(uri, state, expires)?;
        self.record(&etag, uri)?;
        Ok(etag)
    }

    fn update(&self, uri: &str, etag: &str, state: Option<Published>, expires: Duration) -> Result<String, PublishError> {
        let new = self.memory.update(uri, etag, state, expires)?;
        self.publications.remove(etag.as_bytes()).map_err(StorageError::from)?;
        self.record(&new, uri)?;
        Ok(new)
    }

    fn remove(&self, uri: &str, etag: &str) -> Result<(), PublishError> {
        self.memory.remove(uri, etag)?;
        self.publications.remove(etag.as_bytes()).map_err(StorageError::from)?;
        self.record_last(uri)?;
        Ok(())
    }

    fn live(&self, uri: &str) -> Option<Live> {
        self.memory.live(uri)
    }

    fn expire(&self, now: Instant) -> usize {
        let gone = self.memory.expire_listed(now);
        for (etag, uri) in &gone {
            let written = self.publications.remove(etag.as_bytes()).map_err(StorageError::from).and_then(|_| self.record_last(uri));
            if let Err(e) = written {
                tracing::warn!("presence store: an expired publication not recorded: {e}");
            }
        }
        gone.len()
    }

    fn publications(&self) -> usize {
        self.memory.publications()
    }

    fn announce(&self, uri: &str) {
        self.memory.announce(uri)
    }
}

impl RegistrationStore for SledPublications {
    fn save(&self, aor: &str, registration: &Registration) -> Result<(), StorageError> {
        self.registrations.insert(aor.as_bytes(), encode(registration)?)?;
        Ok(())
    }

    fn remove(&self, aor: &str) -> Result<(), StorageError> {
        self.registrations.remove(aor.as_bytes())?;
        Ok(())
    }

    fn get(&self, aor: &str) -> Result<Option<Registration>, StorageError> {
        let raw = self.registrations.get(aor.as_bytes())?;
        raw.map(|v| postcard::from_bytes(&v).map_err(StorageError::new)).transpose()
    }

    fn load(&self) -> Vec<(String, Registration)> {
        decoded(&self.registrations)
    }
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StorageError> {
    postcard::to_allocvec(value).map_err(StorageError::new)
}

/// Every record of `tree` that decodes, keyed by its UTF-8 key; others are skipped and
/// logged.
fn decoded<T: for<'de> Deserialize<'de>>(tree: &sled::Tree) -> Vec<(String, T)> {
    let mut out = Vec::new();
    for item in tree.iter() {
        let decoded = item
            .map_err(|e| e.to_string())
            .and_then(|(k, v)| Ok((String::from_utf8(k.to_vec()).map_err(|e| e.to_string())?, postcard::from_bytes::<T>(&v).map_err(|e| e.to_string())?)));
        match decoded {
            Ok(kv) => out.push(kv),
            Err(e) => tracing::warn!("presence store: a corrupt record skipped: {e}"),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::rich::{capabilities_of_specs, Doc, Note};

    const BOB: &str = "sip:bob@example.org";

    #[test]
    fn first_layout_publications_are_migrated() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::Config::new().path(dir.path()).open().unwrap();
            let old = db.open_tree("publications").unwrap();
            let r = RecordV1 { uri: BOB.into(), open: true, expires_at: unix_now() + 600 };
            old.insert("etag1", encode(&r).unwrap()).unwrap();
            db.flush().unwrap();
        }
        let (store, _rx) = SledPublications::open(dir.path()).unwrap();
        assert_eq!(store.publications(), 1);
        assert!(store.live(BOB).unwrap().online);
        assert!(store.publications_v1.is_empty(), "moved out of the old tree");
        assert_eq!(store.publications.len(), 1);
        // Its entity-tag still works.
        store.update(BOB, "etag1", None, Duration::from_secs(60)).unwrap();
    }

    #[test]
    fn rich_publications_and_kept_capabilities_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let doc = Doc { notes: vec![Note { lang: Some("en".into()), text: "In a call".into() }], capabilities: capabilities_of_specs("groupchat/1.1"), ..Doc::default() };
        {
            let (store, _rx) = SledPublications::open(dir.path()).unwrap();
            store.publish(BOB, Published::with_doc(true, doc.clone()), Duration::from_secs(600)).unwrap();
            let gone = store.publish("sip:carol@example.org", Published::with_doc(true, doc.clone()), Duration::from_secs(600)).unwrap();
            PublicationStore::remove(&store, "sip:carol@example.org", &gone).unwrap();
            store.flush().unwrap();
        }
        let (store, _rx) = SledPublications::open(dir.path()).unwrap();
        assert_eq!(store.live(BOB).unwrap().doc.as_deref(), Some(&doc));
        let carol = store.live("sip:carol@example.org").unwrap();
        assert!(!carol.online);
        let kept = carol.doc.expect("capabilities kept while offline");
        assert!(kept.notes.is_empty() && kept.capabilities == doc.capabilities);
    }
}
