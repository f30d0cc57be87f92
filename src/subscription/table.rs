//! The registry of live list subscriptions: by dialog, and the reverse index from each
//! watched key (number or SIP user) to the subscriptions watching it. The one owner of
//! that shared state; each subscription's own state lives in its task (`actor.rs`).

use super::actor::Command;
use crate::index::Change;
use crate::numbers;
use crate::resolution::Key;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

pub type SubId = u64;

/// Commands waiting for one subscription's task; beyond this, it is told to resync.
const QUEUE: usize = 64;

/// How to reach a subscription's task.
#[derive(Clone)]
pub struct Handle {
    pub tx: mpsc::Sender<Command>,
    /// Set when a change could not be queued: the task sends full state instead.
    pub resync: Arc<AtomicBool>,
}

impl Handle {
    fn nudge(&self, cmd: Command) {
        if self.tx.try_send(cmd).is_err() {
            self.resync.store(true, Ordering::Release);
            let _ = self.tx.try_send(Command::Resync);
        }
    }
}

#[derive(Default)]
pub struct Subscriptions {
    next_id: AtomicU64,
    inner: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    by_dialog: HashMap<(Box<str>, Box<str>), SubId>,
    handles: HashMap<SubId, Handle>,
    watchers: HashMap<Key, Vec<SubId>>,
    /// Each subscription's slot in the abuse limits, freed by `remove`.
    permits: HashMap<SubId, crate::limits::SubPermit>,
}

impl Subscriptions {
    /// Registers a new subscription; returns its id and the receiving end for its task.
    pub fn insert(&self, call_id: &str, local_tag: &str, keys: impl Iterator<Item = Key>) -> (SubId, Handle, mpsc::Receiver<Command>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = mpsc::channel(QUEUE);
        let handle = Handle { tx, resync: Arc::new(AtomicBool::new(false)) };
        let mut t = self.inner.lock();
        t.by_dialog.insert((call_id.into(), local_tag.into()), id);
        t.handles.insert(id, handle.clone());
        for key in keys {
            let subs = t.watchers.entry(key).or_default();
            if subs.last() != Some(&id) {
                subs.push(id);
            }
        }
        (id, handle, rx)
    }

    /// Forgets a subscription; `keys` are the ones it was registered with.
    pub fn remove(&self, id: SubId, call_id: &str, local_tag: &str, keys: impl Iterator<Item = Key>) {
        let mut t = self.inner.lock();
        t.by_dialog.remove(&(call_id.into(), local_tag.into()));
        t.handles.remove(&id);
        t.permits.remove(&id);
        for key in keys {
            if let Some(subs) = t.watchers.get_mut(&key) {
                subs.retain(|s| *s != id);
                if subs.is_empty() {
                    t.watchers.remove(&key);
                }
            }
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
        self.inner.lock().watchers.len()
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

    /// After a gap in the change feed: every subscription re-sends full state.
    pub fn resync_all(&self) {
        let handles: Vec<Handle> = self.inner.lock().handles.values().cloned().collect();
        for h in handles {
            h.nudge(Command::Resync);
        }
    }

    fn notify_watchers(&self, key: &Key, removal: bool) {
        let handles: Vec<Handle> = {
            let t = self.inner.lock();
            let Some(ids) = t.watchers.get(key) else { return };
            ids.iter().filter_map(|id| t.handles.get(id).cloned()).collect()
        };
        for h in handles {
            h.nudge(Command::Changed { key: key.clone(), removal });
        }
    }
}

fn sip_key(uri: &str) -> Option<Key> {
    match numbers::from_uri(uri, None) {
        numbers::UriKind::Sip(s) => Some(Key::Sip(s.into())),
        _ => None,
    }
}
