//! How the rest of the server reaches a subscription, and where an idle one waits.
//!
//! A subscription has a task only while it has something to do (a NOTIFY to send, changes
//! to coalesce): a hundred thousand idle tasks cost more than their subscriptions. In
//! between, its state is *parked* in its mailbox, and the first post takes it out again
//! for the poster to run (`actor::resume`). Posts coalesce: many changes to one list become
//! one flag set and a key set, bounded, beyond which the task is told to resend full state.

use super::actor::Subscription;
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
    /// Where that in-dialog SUBSCRIBE came from: the dialog follows it (target refresh).
    pub retarget: Option<crate::dialog::Retarget>,
    /// Watched keys whose binding or presence changed.
    pub changed: Vec<Key>,
    /// Some change may have removed a user: only full state can say so to liblinphone.
    pub full: bool,
}

impl Inbox {
    fn is_empty(&self) -> bool {
        self.refresh.is_none() && !self.unsubscribe && self.retarget.is_none() && self.changed.is_empty() && !self.full
    }
}

/// What became of a post.
#[must_use = "a woken subscription must be resumed"]
pub enum Posted {
    /// The subscription has ended.
    Closed,
    /// Its task runs and will see the post.
    Queued,
    /// It was parked: the poster must resume it (`actor::resume`).
    Woken(Box<Subscription>),
}

#[derive(Default)]
struct State {
    inbox: Inbox,
    closed: bool,
    parked: Option<Box<Subscription>>,
}

#[derive(Default)]
pub struct Mailbox {
    state: Mutex<State>,
    wake: Notify,
}

impl Mailbox {
    /// Posts to the subscription (`f` may also change nothing: a bare wake-up).
    pub fn post(&self, f: impl FnOnce(&mut Inbox)) -> Posted {
        let mut state = self.state.lock();
        if state.closed {
            return Posted::Closed;
        }
        f(&mut state.inbox);
        if state.inbox.changed.len() > MAX_CHANGED {
            state.inbox.changed = Vec::new();
            state.inbox.full = true;
        }
        if let Some(sub) = state.parked.take() {
            return Posted::Woken(sub);
        }
        drop(state);
        self.wake.notify_one();
        Posted::Queued
    }

    pub fn changed(&self, key: Key, removal: bool) -> Posted {
        self.post(|i| {
            if !i.changed.contains(&key) {
                i.changed.push(key);
            }
            i.full |= removal;
        })
    }

    /// Waits until something is posted (or was, since the last `take`).
    pub async fn posted(&self) {
        self.wake.notified().await
    }

    /// Takes what was posted.
    pub fn take(&self) -> Inbox {
        std::mem::take(&mut self.state.lock().inbox)
    }

    /// Parks `sub` until the next post, unless something is already waiting: then `sub`
    /// comes back to handle it.
    pub fn park(&self, sub: Box<Subscription>) -> Result<(), Box<Subscription>> {
        let mut state = self.state.lock();
        if !state.inbox.is_empty() {
            return Err(sub);
        }
        state.parked = Some(sub);
        Ok(())
    }

    /// Refuses further posts (the subscription is ending).
    pub fn close(&self) {
        self.state.lock().closed = true;
    }

    pub fn is_closed(&self) -> bool {
        self.state.lock().closed
    }
}
