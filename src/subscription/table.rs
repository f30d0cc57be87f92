//! The registry of live list subscriptions: by dialog, and the reverse index from each
//! watched key (number or SIP user) to the subscriptions watching it. The one owner of
//! that shared state; each subscription's own state lives in its task (`actor.rs`).

use super::mailbox::Mailbox;
use crate::index::Change;
use crate::numbers;
use crate::resolution::Key;
use parking_lot::Mutex;
use std::collections::HashMap;
use super::phones::PhoneIndex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

pub type SubId = u32;

/// How to reach a subscription's task.
pub type Handle = Arc<Mailbox>;

#[derive(Default)]
pub struct Subscriptions {
    next_id: AtomicU32,
    inner: Mutex<Table>,
}

/// Who watches one SIP user. Most numbers have one watcher: no allocation for them.
enum Watchers {
    One(SubId),
    Many(Vec<SubId>),
}

impl Watchers {
    fn add(&mut self, id: SubId) {
        match self {
            Watchers::One(first) if *first == id => {}
            Watchers::One(first) => *self = Watchers::Many(vec![*first, id]),
            Watchers::Many(ids) if ids.last() == Some(&id) => {}
            Watchers::Many(ids) => ids.push(id),
        }
    }

    /// Removes `id`; true when nobody is left.
    fn remove(&mut self, id: SubId) -> bool {
        match self {
            Watchers::One(first) => *first == id,
            Watchers::Many(ids) => {
                ids.retain(|s| *s != id);
                let (empty, single) = (ids.is_empty(), (ids.len() == 1).then(|| ids[0]));
                if let Some(only) = single {
                    *self = Watchers::One(only);
                }
                empty
            }
        }
    }

    fn ids(&self) -> &[SubId] {
        match self {
            Watchers::One(id) => std::slice::from_ref(id),
            Watchers::Many(ids) => ids,
        }
    }
}

#[derive(Default)]
struct Table {
    by_dialog: HashMap<(Box<str>, Box<str>), SubId>,
    handles: HashMap<SubId, Handle>,
    /// The reverse index: numbers in a packed table, SIP users in a map.
    phones: PhoneIndex,
    sips: HashMap<Box<str>, Watchers>,
    /// Each subscription's slot in the abuse limits, freed by `remove`.
    permits: HashMap<SubId, crate::limits::SubPermit>,
}

impl Table {
    fn watch(&mut self, key: Key, id: SubId) {
        match key {
            Key::Phone(n) => self.phones.watch(n, id),
            Key::Sip(uri) => {
                self.sips.entry(uri).and_modify(|w| w.add(id)).or_insert(Watchers::One(id));
            }
        }
    }

    fn unwatch(&mut self, key: &Key, id: SubId) {
        match key {
            Key::Phone(n) => self.phones.unwatch(*n, id),
            Key::Sip(uri) => {
                if self.sips.get_mut(uri).is_some_and(|w| w.remove(id)) {
                    self.sips.remove(uri);
                }
            }
        }
    }

    fn watchers(&self, key: &Key) -> &[SubId] {
        match key {
            Key::Phone(n) => self.phones.watchers(*n),
            Key::Sip(uri) => self.sips.get(uri).map_or(&[], Watchers::ids),
        }
    }
}

impl Subscriptions {
    /// Registers a new subscription; returns its id and the receiving end for its task.
    pub fn insert(&self, call_id: &str, local_tag: &str, keys: impl Iterator<Item = Key>) -> (SubId, Handle) {
        let id = self.new_id();
        let handle = Handle::default();
        let mut t = self.inner.lock();
        t.by_dialog.insert((call_id.into(), local_tag.into()), id);
        t.handles.insert(id, handle.clone());
        for key in keys {
            t.watch(key, id);
        }
        (id, handle)
    }

    /// The next id: never 0, nor `SubId::MAX` (the reverse index's marker).
    fn new_id(&self) -> SubId {
        loop {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
            if id != 0 && id != SubId::MAX {
                return id;
            }
        }
    }

    /// Forgets a subscription; `keys` are the ones it was registered with.
    pub fn remove(&self, id: SubId, call_id: &str, local_tag: &str, keys: impl Iterator<Item = Key>) {
        let mut t = self.inner.lock();
        t.by_dialog.remove(&(call_id.into(), local_tag.into()));
        t.handles.remove(&id);
        t.permits.remove(&id);
        for key in keys {
            t.unwatch(&key, id);
        }
    }

    /// Keeps a subscription's limits slot until `remove`.
    pub fn hold(&self, id: SubId, permit: crate::limits::SubPermit) {
        self.inner.lock().permits.insert(id, permit);
    }

    pub fn find(&self, call_id: &str, local_tag: &str) -> Option<Handle> {
        let t = self.inner.lock();
        let id = t.by_dialog.get(&(call_id.into(), local_tag.into()))?;
        t.handles.get(id).cloned()
    }

    pub fn len(&self) -> usize {
        self.inner.lock().handles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of distinct keys watched (for stats and tests).
    pub fn watched_keys(&self) -> usize {
        let t = self.inner.lock();
        t.phones.len() + t.sips.len()
    }

    /// Tells every subscription watching what `change` touched.
    pub fn on_change(&self, change: &Change) {
        let phone = Key::Phone(change.number);
        self.notify_watchers(&phone, change.new.is_none());
        if change.old != change.new {
            if let Some(old) = change.old.as_deref().and_then(sip_key) {
                self.notify_watchers(&old, true);
            }
            if let Some(new) = change.new.as_deref().and_then(sip_key) {
                self.notify_watchers(&new, false);
            }
        }
    }

    /// A user's presence changed: every subscription watching one of his numbers, or his
    /// SIP URI, gets his new state.
    pub fn on_presence(&self, uri: &str, numbers: &[crate::numbers::E164]) {
        for n in numbers {
            self.notify_watchers(&Key::Phone(*n), false);
        }
        self.notify_watchers(&Key::Sip(uri.into()), false);
    }

    /// After a gap in the change feed: every subscription re-sends full state.
    pub fn resync_all(&self) {
        let handles: Vec<Handle> = self.inner.lock().handles.values().cloned().collect();
        for h in handles {
            h.post(|i| i.full = true);
        }
    }

    fn notify_watchers(&self, key: &Key, removal: bool) {
        let handles: Vec<Handle> = {
            let t = self.inner.lock();
            t.watchers(key).iter().filter_map(|id| t.handles.get(id).cloned()).collect()
        };
        for h in handles {
            h.changed(key.clone(), removal);
        }
    }
}

fn sip_key(uri: &str) -> Option<Key> {
    match numbers::from_uri(uri, None) {
        numbers::UriKind::Sip(s) => Some(Key::Sip(s.into())),
        _ => None,
    }
}
