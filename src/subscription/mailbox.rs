//! Where an idle task's state waits, and how others reach it. Generic: it knows neither
//! what it parks nor what is posted, only that posts coalesce into one letters value.
//!
//! A subscription has a task only while it has something to do (a NOTIFY to send, changes
//! to coalesce): a hundred thousand idle tasks cost more than their subscriptions. In
//! between, its state `S` is *parked* here, and the first post takes it out again for the
//! poster to run. Posts coalesce into `L` (e.g. many changes to one list become one flag
//! set and a key set); the owner of `L` bounds it. Letters take room only while some
//! wait: a parked state with nothing posted holds none (a hundred thousand idle mailboxes
//! would otherwise each carry an empty `L`, ~200 bytes for a subscription's inbox).

use parking_lot::Mutex;
use tokio::sync::Notify;

/// What can be posted: empty until a post, taken whole by the task.
pub trait Letters: Default {
    fn is_empty(&self) -> bool;
}

/// What became of a post.
#[must_use = "a woken state must be resumed"]
pub enum Posted<S> {
    /// The mailbox is closed: its task has ended.
    Closed,
    /// Its task runs and will see the post.
    Queued,
    /// It was parked: the poster must resume it.
    Woken(Box<S>),
}

struct State<S, L> {
    /// What was posted since the last `take`; `None` when nothing was.
    letters: Option<Box<L>>,
    closed: bool,
    parked: Option<Box<S>>,
}

pub struct Mailbox<S, L> {
    state: Mutex<State<S, L>>,
    wake: Notify,
}

impl<S, L: Letters> Default for Mailbox<S, L> {
    fn default() -> Self {
        Mailbox { state: Mutex::new(State { letters: None, closed: false, parked: None }), wake: Notify::new() }
    }
}

impl<S, L: Letters> Mailbox<S, L> {
    /// Posts (`f` may also change nothing: a bare wake-up).
    pub fn post(&self, f: impl FnOnce(&mut L)) -> Posted<S> {
        let mut state = self.state.lock();
        if state.closed {
            return Posted::Closed;
        }
        f(state.letters.get_or_insert_with(Box::default));
        if let Some(parked) = state.parked.take() {
            return Posted::Woken(parked);
        }
        drop(state);
        self.wake.notify_one();
        Posted::Queued
    }

    /// Waits until something is posted (or was, since the last `take`).
    pub async fn posted(&self) {
        self.wake.notified().await
    }

    /// Takes what was posted.
    pub fn take(&self) -> L {
        self.state.lock().letters.take().map_or_else(L::default, |l| *l)
    }

    /// Parks `s` until the next post, unless something is already waiting: then `s` comes
    /// back to handle it.
    pub fn park(&self, s: Box<S>) -> Result<(), Box<S>> {
        let mut state = self.state.lock();
        if state.letters.as_ref().is_some_and(|l| !l.is_empty()) {
            return Err(s);
        }
        state.parked = Some(s);
        Ok(())
    }

    /// Refuses further posts (the task is ending).
    pub fn close(&self) {
        self.state.lock().closed = true;
    }

    pub fn is_closed(&self) -> bool {
        self.state.lock().closed
    }
}
