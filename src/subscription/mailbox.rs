//! How the rest of the server reaches a subscription's task: a small shared inbox instead
//! of a channel (a tokio channel allocates a block of slots per subscription; this is a
//! few words). Posts coalesce: many changes to one list become one flag set and a key set,
//! bounded, beyond which the task is told to resend full state.

use crate::resolution::Key;
use parking_lot::Mutex;
use tokio::sync::Notify;

/// Changed keys kept before falling back to a full-state resync.
const MAX_CHANGED: usize = 256;

#[derive(Default)]
pub struct Inbox {
    /// An in-dialog SUBSCRIBE with this Expires was answered 200.
    pub refresh: Option<u32>,
    /// An in-dialog SUBSCRIBE with Expires 0 was answered 200.
    pub unsubscribe: bool,
    /// Watched keys whose binding or presence changed.
    pub changed: Vec<Key>,
    /// Some change may have removed a user: only full state can say so to liblinphone.
    pub full: bool,
}

#[derive(Default)]
pub struct Mailbox {
    inbox: Mutex<(Inbox, bool)>,
    wake: Notify,
}

impl Mailbox {
    /// Posts to the task; false when it has ended.
    pub fn post(&self, f: impl FnOnce(&mut Inbox)) -> bool {
        let mut guard = self.inbox.lock();
        let (inbox, closed) = &mut *guard;
        if *closed {
            return false;
        }
        f(inbox);
        if inbox.changed.len() > MAX_CHANGED {
            inbox.changed.clear();
            inbox.full = true;
        }
        drop(guard);
        self.wake.notify_one();
        true
    }

    pub fn changed(&self, key: Key, removal: bool) -> bool {
        self.post(|i| {
            if !i.changed.contains(&key) {
                i.changed.push(key);
            }
            i.full |= removal;
        })
    }

    /// Waits for posts and takes them.
    pub async fn take(&self) -> Inbox {
        self.wake.notified().await;
        std::mem::take(&mut self.inbox.lock().0)
    }

    /// Refuses further posts (the task is ending).
    pub fn close(&self) {
        self.inbox.lock().1 = true;
    }

    pub fn is_closed(&self) -> bool {
        self.inbox.lock().1
    }
}
