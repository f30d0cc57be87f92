//! Which books changed since the subscriptions last looked: a set of account names and a
//! wake-up. Posts coalesce (ten uploads of one book before the follower runs are one
//! entry), so it is bounded by the number of accounts, never by the rate of changes.
//! In cluster mode other nodes' changes arrive as owner keys (`mark_key`), or as "any book
//! may have changed" (`mark_all`); those are bounded too: past [`MAX_KEYS`] they become
//! "any".

use parking_lot::Mutex;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::Notify;

/// Owner keys kept before they become "any book may have changed".
pub const MAX_KEYS: usize = 65_536;

/// Other nodes' changes not yet taken.
#[derive(Default)]
pub struct Remote {
    pub keys: HashSet<super::Tag>,
    pub all: bool,
}

#[derive(Default)]
pub struct Feed {
    dirty: Mutex<HashSet<Box<str>>>,
    remote: Mutex<Remote>,
    wake: Notify,
    /// Changes marked since start (any book): a reader that saw it unchanged across its
    /// work knows no book changed meanwhile.
    generation: AtomicU64,
}

impl Feed {
    /// `owner`'s book changed (or was deleted).
    pub fn mark(&self, owner: &str) {
        self.dirty.lock().insert(owner.into());
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// Another node changed the book of the owner whose key is `key`.
    pub fn mark_key(&self, key: super::Tag) {
        {
            let mut r = self.remote.lock();
            if !r.all && r.keys.len() < MAX_KEYS {
                r.keys.insert(key);
            } else {
                r.all = true;
                r.keys.clear();
            }
        }
        self.bump();
    }

    /// Any book may have changed (changes from other nodes were missed).
    pub fn mark_all(&self) {
        {
            let mut r = self.remote.lock();
            r.all = true;
            r.keys.clear();
        }
        self.bump();
    }

    fn bump(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// Other nodes' changes, once each.
    pub fn take_remote(&self) -> Remote {
        let mut r = self.remote.lock();
        let out = std::mem::take(&mut *r);
        r.keys.shrink_to(64);
        out
    }

    /// How many changes were marked so far.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Waits until some book changed since the last `take` (a mark made before the wait
    /// counts: the wake-up is kept).
    pub async fn changed(&self) {
        self.wake.notified().await
    }

    /// The owners whose books changed, once each.
    pub fn take(&self) -> Vec<Box<str>> {
        let mut dirty = self.dirty.lock();
        let out = dirty.drain().collect();
        dirty.shrink_to(64);
        out
    }
}
