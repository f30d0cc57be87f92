//! Stored address books (Contact Sync): each account's copy of its phone's address book,
//! kept server-side so the phone need not send it with every list SUBSCRIBE, and served
//! as the account's list URI (RFC 4662 with a server-side list).
//!
//! Owns the rules of a book: one entry per E.164 number (the first raw form given wins),
//! the size cap, versions (every change bumps it; a delta names the version it applies
//! to), the bounded change log, and what the store may see. The store (`crate::storage::
//! address_books`, today sled in `data_dir/address-books`) never sees a number, a name or
//! an account name in clear:
//!
//! - each number is stored as its keyed hash (HMAC-SHA256 with a server secret, `Tag`),
//!   and the book itself is found by the keyed hash of the account name;
//! - the raw forms (the number as the phone gave it, the display name) are needed only to
//!   echo them back to the owner (export, change lists): they are sealed with
//!   ChaCha20-Poly1305, bound to the book's key (`keys.rs`).
//!
//! The trade-off: whoever reads the store alone learns how many contacts each (anonymous)
//! book has and when it changed, and can tell whether two books share a number, but not
//! which number; with the key as well (config or `data_dir/address-books.key`) everything
//! opens. A lost key loses every book (phones upload again). The server opens a book
//! when it must serve it (list subscriptions, queries), so the numbers live in memory
//! while watched, and in the subscription store (`subscription::durable`) while a
//! subscription lasts, exactly as for request-contained lists: the book store is what
//! keeps them for good, and it alone is protected this way.
//!
//! Every write goes through one writer lock and is durable before the call returns; each
//! change is then marked in the [`Feed`] that the subscriptions follow. Must not know SIP
//! or HTTP; charging the discovery budget is the caller's (`discovery`).

mod feed;
mod keys;
mod log;

pub use crate::storage::address_books::{BookError, StoredBook, Tag};
pub use feed::Feed;
pub use keys::{master_key, KEY_FILE};

use crate::clock::unix_now;
use crate::numbers::E164;
use crate::storage::address_books::{AddressBookStore, LoggedChange};
use crate::storage::sled::SledAddressBooks;
use keys::Keys;
use log::{Delta, SealedContact};
use parking_lot::Mutex;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The directory of the book store inside the data directory.
pub fn dir_in(data_dir: &Path) -> PathBuf {
    data_dir.join("address-books")
}

/// One contact of a book.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    pub e164: E164,
    /// The number as the phone gave it (echoed back).
    pub number: String,
    pub name: Option<String>,
}

/// A book opened.
#[derive(Debug, Clone)]
pub struct Book {
    pub version: u64,
    pub updated_at: u64,
    pub contacts: Vec<Contact>,
}

/// What changed since a version.
#[derive(Debug, Clone)]
pub struct Changes {
    pub version: u64,
    /// False when the log no longer reaches back to the version asked: read the whole book.
    pub complete: bool,
    pub added: Vec<Contact>,
    pub removed: Vec<Contact>,
}

/// The caps of a book.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_contacts: usize,
    /// Versions kept in the change log.
    pub log_versions: usize,
}

/// Longest raw number and display name kept (bytes).
pub const MAX_NUMBER_LEN: usize = 64;
pub const MAX_NAME_LEN: usize = 128;

/// The book store: a handle over an [`AddressBookStore`]. Cheap to clone.
#[derive(Clone)]
pub struct AddressBooks {
    store: Arc<dyn AddressBookStore>,
    keys: Arc<Keys>,
    limits: Limits,
    write: Arc<Mutex<()>>,
    feed: Arc<Feed>,
}

impl AddressBooks {
    /// Opens (creating if needed) the sled store in `dir`, with the master key `key`.
    pub fn open(dir: &Path, key: &[u8; 32], limits: Limits) -> Result<AddressBooks, BookError> {
        AddressBooks::with_store(Arc::new(SledAddressBooks::open(dir)?), key, limits)
    }

    /// Books over any store.
    pub fn with_store(store: Arc<dyn AddressBookStore>, key: &[u8; 32], limits: Limits) -> Result<AddressBooks, BookError> {
        let keys = Arc::new(Keys::new(key)?);
        Ok(AddressBooks { store, keys, limits, write: Arc::new(Mutex::new(())), feed: Arc::default() })
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The changes subscriptions follow.
    pub fn feed(&self) -> &Feed {
        &self.feed
    }

    /// What a cluster store calls with other nodes' changes (`Some(owner key)`, or None:
    /// any book may have changed); false once these books are gone.
    pub fn remote_marker(&self) -> impl Fn(Option<Tag>) -> bool + Send + 'static {
        let feed = Arc::downgrade(&self.feed);
        move |key| {
            let Some(f) = feed.upgrade() else { return false };
            match key {
                Some(k) => f.mark_key(k),
                None => f.mark_all(),
            }
            true
        }
    }

    /// Which of `owners` (those this node follows, asked for only when another node changed
    /// a book: never in one process) other nodes changed since last asked.
    pub fn changed_elsewhere(&self, owners: impl FnOnce() -> Vec<Box<str>>) -> Vec<Box<str>> {
        let remote = self.feed.take_remote();
        if remote.all {
            return owners();
        }
        if remote.keys.is_empty() {
            return Vec::new();
        }
        owners().into_iter().filter(|o| remote.keys.contains(&self.owner_key(o))).collect()
    }

    /// Replaces `owner`'s book (creating it); returns the new version.
    pub fn replace(&self, owner: &str, contacts: Vec<Contact>) -> Result<u64, BookError> {
        let contacts = self.checked(dedup(contacts))?;
        let key = self.owner_key(owner);
        let _w = self.write.lock();
        let _held = self.store.hold(&key)?;
        let old = self.store.get(&key)?;
        let before = match &old {
            Some(b) => self.open_contacts(&key, b)?,
            None => Vec::new(),
        };
        let after: Vec<SealedContact> = contacts.iter().map(SealedContact::of).collect();
        let delta = log::diff(&before, &after);
        self.write_book(owner, &key, old.unwrap_or_default(), after, delta)
    }

    /// Applies a delta made for version `base`: `add` (new numbers, or new names of known
    /// ones) and `remove`. `Conflict` when the book is no longer at `base` (0: no book).
    pub fn apply(&self, owner: &str, base: u64, add: Vec<Contact>, remove: &[E164]) -> Result<u64, BookError> {
        let add = self.checked(dedup(add))?;
        let key = self.owner_key(owner);
        let _w = self.write.lock();
        let _held = self.store.hold(&key)?;
        let old = self.store.get(&key)?.unwrap_or_default();
        if old.version != base {
            return Err(BookError::Conflict { current: old.version, asked: base });
        }
        let before = self.open_contacts(&key, &old)?;
        let gone: std::collections::HashSet<u64> = remove.iter().map(|n| n.digits()).collect();
        let mut after: Vec<SealedContact> = before.iter().filter(|c| !gone.contains(&c.digits)).cloned().collect();
        for c in &add {
            match after.iter_mut().find(|o| o.digits == c.e164.digits()) {
                Some(known) => *known = SealedContact::of(c),
                None => after.push(SealedContact::of(c)),
            }
        }
        if after.len() > self.limits.max_contacts {
            return Err(BookError::TooLarge { count: after.len(), max: self.limits.max_contacts });
        }
        let delta = log::diff(&before, &after);
        self.write_book(owner, &key, old, after, delta)
    }

    /// `owner`'s book, opened.
    pub fn get(&self, owner: &str) -> Result<Option<Book>, BookError> {
        let key = self.owner_key(owner);
        let Some(stored) = self.store.get(&key)? else { return Ok(None) };
        let contacts = self.open_contacts(&key, &stored)?.into_iter().filter_map(SealedContact::contact).collect();
        Ok(Some(Book { version: stored.version, updated_at: stored.updated_at, contacts }))
    }

    /// The numbers of `owner`'s book, in book order (what a stored list watches): the book
    /// opened without copying its raw forms.
    pub fn numbers(&self, owner: &str) -> Result<Option<Vec<E164>>, BookError> {
        let key = self.owner_key(owner);
        let Some(stored) = self.store.get(&key)? else { return Ok(None) };
        let plain = self.keys.open(&key, &stored.sealed)?;
        let contacts: Vec<log::SealedRef> = postcard::from_bytes(&plain).map_err(|e| BookError::Corrupt(e.to_string()))?;
        Ok(Some(contacts.iter().filter_map(|c| log::number_of(c.digits)).collect()))
    }

    /// The version and size of `owner`'s book, without opening it.
    pub fn version(&self, owner: &str) -> Result<Option<(u64, usize)>, BookError> {
        Ok(self.store.get(&self.owner_key(owner))?.map(|b| (b.version, b.tags.len())))
    }

    /// The size of `owner`'s stored book and of its change log (their encodings), for
    /// sizing and benches.
    pub fn stored_bytes(&self, owner: &str) -> Result<Option<(usize, usize)>, BookError> {
        let key = self.owner_key(owner);
        let Some(book) = self.store.get(&key)? else { return Ok(None) };
        let log = self.store.log(&key)?;
        let size = |r: Result<Vec<u8>, postcard::Error>| r.map(|v| v.len()).map_err(|e| BookError::Corrupt(e.to_string()));
        Ok(Some((size(postcard::to_allocvec(&book))?, size(postcard::to_allocvec(&log))?)))
    }

    /// What changed in `owner`'s book since `since`; None when there is no book.
    pub fn changes_since(&self, owner: &str, since: u64) -> Result<Option<Changes>, BookError> {
        let key = self.owner_key(owner);
        let Some(stored) = self.store.get(&key)? else { return Ok(None) };
        let version = stored.version;
        let log = self.store.log(&key)?;
        let reaches = since >= version || log.iter().any(|c| c.version == since + 1);
        if !reaches {
            return Ok(Some(Changes { version, complete: false, added: Vec::new(), removed: Vec::new() }));
        }
        let deltas = log.iter().filter(|c| c.version > since).map(|c| self.open_delta(&key, c)).collect::<Result<Vec<_>, _>>()?;
        let (added, removed) = log::net(deltas);
        let current = self.open_contacts(&key, &stored)?;
        let added = added.iter().filter_map(|d| current.iter().find(|c| c.digits == *d)).cloned().filter_map(SealedContact::contact).collect();
        let removed = removed.into_iter().filter_map(SealedContact::contact).collect();
        Ok(Some(Changes { version, complete: true, added, removed }))
    }

    /// Deletes `owner`'s book; false when there was none. Its subscriptions end.
    pub fn delete(&self, owner: &str) -> Result<bool, BookError> {
        let _w = self.write.lock();
        let existed = self.store.remove(&self.owner_key(owner))?;
        if existed {
            self.feed.mark(owner);
        }
        Ok(existed)
    }

    /// Marks `owner`'s book as changed (a resumed subscription catches up with it).
    pub fn touch(&self, owner: &str) {
        self.feed.mark(owner);
    }

    fn owner_key(&self, owner: &str) -> Tag {
        self.keys.tag(b"account", owner.as_bytes())
    }

    fn checked(&self, contacts: Vec<Contact>) -> Result<Vec<Contact>, BookError> {
        if contacts.len() > self.limits.max_contacts {
            return Err(BookError::TooLarge { count: contacts.len(), max: self.limits.max_contacts });
        }
        if let Some(c) = contacts.iter().find(|c| c.number.len() > MAX_NUMBER_LEN || c.name.as_ref().is_some_and(|n| n.len() > MAX_NAME_LEN)) {
            let what = if c.number.len() > MAX_NUMBER_LEN { "number" } else { "name" };
            return Err(BookError::Invalid(format!("a {what} over {} bytes", if what == "number" { MAX_NUMBER_LEN } else { MAX_NAME_LEN })));
        }
        Ok(contacts)
    }

    /// Writes the new contacts as the next version, logs `delta`, and marks the change.
    fn write_book(&self, owner: &str, key: &Tag, old: StoredBook, after: Vec<SealedContact>, delta: Delta) -> Result<u64, BookError> {
        let version = old.version + 1;
        let mut log = self.store.log(key)?;
        let size = (delta.added.len() + delta.removed.len()) as u32;
        log.push(LoggedChange { version, size, sealed: self.seal(key, &delta)? });
        trim_log(&mut log, self.limits);
        let book = StoredBook {
            version,
            updated_at: unix_now(),
            tags: after.iter().map(|c| self.keys.tag(b"number", &c.digits.to_be_bytes())).collect(),
            sealed: self.seal(key, &after)?,
        };
        self.store.put(key, &book, &log)?;
        self.feed.mark(owner);
        Ok(version)
    }

    fn seal<T: serde::Serialize>(&self, key: &Tag, value: &T) -> Result<Vec<u8>, BookError> {
        let plain = postcard::to_allocvec(value).map_err(|e| BookError::Corrupt(e.to_string()))?;
        self.keys.seal(key, &plain)
    }

    fn open_contacts(&self, key: &Tag, book: &StoredBook) -> Result<Vec<SealedContact>, BookError> {
        let plain = self.keys.open(key, &book.sealed)?;
        postcard::from_bytes(&plain).map_err(|e| BookError::Corrupt(e.to_string()))
    }

    fn open_delta(&self, key: &Tag, change: &LoggedChange) -> Result<Delta, BookError> {
        let plain = self.keys.open(key, &change.sealed)?;
        postcard::from_bytes(&plain).map_err(|e| BookError::Corrupt(e.to_string()))
    }
}

/// One contact per number, the first given kept.
fn dedup(contacts: Vec<Contact>) -> Vec<Contact> {
    let mut seen = std::collections::HashSet::new();
    contacts.into_iter().filter(|c| seen.insert(c.e164)).collect()
}

/// Keeps the log within `log_versions` changes and twice a full book of contacts.
fn trim_log(log: &mut Vec<LoggedChange>, limits: Limits) {
    let max_size = 2 * limits.max_contacts as u64;
    while log.len() > limits.log_versions.max(1) || (log.len() > 1 && log.iter().map(|c| u64::from(c.size)).sum::<u64>() > max_size) {
        log.remove(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contact(n: &str, name: &str) -> Contact {
        Contact { e164: n.parse().unwrap(), number: n.trim_start_matches('+').into(), name: Some(name.into()) }
    }

    fn books(dir: &Path) -> AddressBooks {
        AddressBooks::open(dir, &[3; 32], Limits { max_contacts: 4, log_versions: 3 }).unwrap()
    }

    #[test]
    fn other_nodes_changes_are_told_by_owner_key_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let b = books(dir.path());
        let followed = || vec![Box::<str>::from("alice"), "bob".into()];
        let mark = b.remote_marker();
        assert!(b.changed_elsewhere(followed).is_empty(), "nothing marked");
        let before = b.feed().generation();
        assert!(mark(Some(b.owner_key("bob"))) && mark(Some(b.owner_key("carol"))));
        assert!(b.feed().generation() > before, "a remote mark wakes the follower");
        assert_eq!(b.changed_elsewhere(followed), vec![Box::<str>::from("bob")], "only followed owners, by key");
        assert!(b.changed_elsewhere(followed).is_empty(), "taken once");
        assert!(mark(None));
        assert_eq!(b.changed_elsewhere(followed), followed(), "a gap: every followed owner");
        for i in 0..=feed::MAX_KEYS {
            b.feed().mark_key(b.keys.tag(b"test", &i.to_le_bytes()));
        }
        assert_eq!(b.changed_elsewhere(followed), followed(), "past the bound: every followed owner");
        drop(b);
        assert!(!mark(None), "the books gone, the feed thread is told to end");
    }

    #[test]
    fn versions_deltas_and_change_lists() {
        let dir = tempfile::tempdir().unwrap();
        let b = books(dir.path());
        assert!(b.get("alice").unwrap().is_none());
        let v1 = b.replace("alice", vec![contact("+33612345678", "Bob"), contact("+33612345679", "Carol"), contact("+33612345678", "dup")]).unwrap();
        assert_eq!(v1, 1);
        assert_eq!(b.version("alice").unwrap(), Some((1, 2)));
        assert!(matches!(b.apply("alice", 0, vec![], &[]), Err(BookError::Conflict { current: 1, asked: 0 })));
        let v2 = b.apply("alice", 1, vec![contact("+4915100000001", "Dan")], &["+33612345679".parse().unwrap()]).unwrap();
        assert_eq!(v2, 2);
        let book = b.get("alice").unwrap().unwrap();
        let names: Vec<_> = book.contacts.iter().map(|c| c.name.clone().unwrap()).collect();
        assert_eq!(names, vec!["Bob", "Dan"]);
        let numbers: Vec<E164> = vec!["+33612345678".parse().unwrap(), "+4915100000001".parse().unwrap()];
        assert_eq!(b.numbers("alice").unwrap(), Some(numbers));
        let ch = b.changes_since("alice", 1).unwrap().unwrap();
        assert!(ch.complete);
        assert_eq!((ch.added.len(), ch.removed.len()), (1, 1));
        assert_eq!(ch.removed[0].number, "33612345679", "the raw form comes back");
        let all = b.changes_since("alice", 0).unwrap().unwrap();
        assert_eq!(all.added.len(), 2);
        for _ in 0..3 {
            let v = b.version("alice").unwrap().unwrap().0;
            b.apply("alice", v, vec![contact("+33612345670", "Eve")], &[]).unwrap();
        }
        assert!(!b.changes_since("alice", 0).unwrap().unwrap().complete, "the log is trimmed");
        let too_many: Vec<Contact> = (0..5).map(|i| contact(&format!("+3361234560{i}"), "x")).collect();
        assert!(matches!(b.replace("alice", too_many), Err(BookError::TooLarge { count: 5, max: 4 })));
        assert!(b.delete("alice").unwrap());
        assert!(!b.delete("alice").unwrap());
        let mut marked = b.feed().take();
        marked.sort();
        assert_eq!(marked, vec![Box::<str>::from("alice")]);
    }

    #[test]
    fn the_store_holds_no_number_and_no_name() {
        let dir = tempfile::tempdir().unwrap();
        {
            let b = books(dir.path());
            b.replace("alice", vec![contact("+33612345678", "Bobby Tables")]).unwrap();
        }
        for file in walk(dir.path()) {
            let bytes = std::fs::read(&file).unwrap();
            for needle in [&b"33612345678"[..], b"Bobby", b"alice", &33612345678u64.to_be_bytes()] {
                assert!(!bytes.windows(needle.len()).any(|w| w == needle), "{} holds {:?}", file.display(), String::from_utf8_lossy(needle));
            }
        }
        assert_eq!(books(dir.path()).get("alice").unwrap().unwrap().contacts[0].name.as_deref(), Some("Bobby Tables"));
        let other_key = AddressBooks::open(dir.path(), &[4; 32], Limits { max_contacts: 4, log_versions: 3 });
        assert!(other_key.is_err() || other_key.unwrap().get("alice").unwrap().is_none(), "another key finds no book");
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
        }
        out
    }
}
