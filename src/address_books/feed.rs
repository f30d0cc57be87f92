//! Which books changed since the subscriptions last looked: a set of account names and a
//! wake-up. Posts coalesce (ten uploads of one book before the follower runs are one
//! entry), so it is bounded by the number of accounts, never by the rate of changes.

use parking_lot::Mutex;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::Notify;

#[derive(Default)]
pub struct Feed {
    dirty: Mutex<HashSet<Box<str>>>,
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
