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
//!
//! One task at a time waits on a mailbox (the one running its state), so the wake-up is
//! a waker slot and a flag under the same lock as the rest, not a `tokio::sync::Notify`
//! (its own lock and wait list): 64 bytes a mailbox instead of 80.

use parking_lot::Mutex;
use std::task::{Poll, Waker};

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
    parked: Option<Box<S>>,
    /// The task waiting in [`Mailbox::posted`], to wake on a post.
    waiter: Option<Waker>,
    /// A post the running task has not yet seen in [`Mailbox::posted`].
    unseen: bool,
    closed: bool,
}

pub struct Mailbox<S, L> {
    state: Mutex<State<S, L>>,
}

impl<S, L: Letters> Default for Mailbox<S, L> {
    fn default() -> Self {
        Mailbox { state: Mutex::new(State { letters: None, parked: None, waiter: None, unseen: false, closed: false }) }
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
        state.unseen = true;
        let waiter = state.waiter.take();
        drop(state);
        if let Some(w) = waiter {
            w.wake();
        }
        Posted::Queued
    }

    /// Waits until something is posted (or was, since this last returned). Cancel-safe:
    /// a post that comes after it is dropped is seen by the next call.
    pub async fn posted(&self) {
        std::future::poll_fn(|cx| {
            let mut state = self.state.lock();
            if std::mem::take(&mut state.unseen) {
                return Poll::Ready(());
            }
            if !state.waiter.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                state.waiter = Some(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
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
        // Nobody waits for a parked state; a post wakes it by handing it back.
        state.waiter = None;
        state.unseen = false;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Count(u32);

    impl Letters for Count {
        fn is_empty(&self) -> bool {
            self.0 == 0
        }
    }

    type Box8 = Mailbox<u8, Count>;

    #[test]
    fn a_mailbox_is_small() {
        // What every held subscription keeps besides its state: 64 bytes, with the Arc's
        // counts, in mimalloc's 64-byte class.
        assert!(std::mem::size_of::<Box8>() <= 48, "{}", std::mem::size_of::<Box8>());
    }

    #[tokio::test]
    async fn a_post_wakes_the_waiting_task_or_waits_for_it() {
        let m = std::sync::Arc::new(Box8::default());
        // Posted before anyone waits: the next wait returns at once.
        assert!(matches!(m.post(|c| c.0 += 1), Posted::Queued));
        tokio::time::timeout(std::time::Duration::from_secs(5), m.posted()).await.unwrap();
        assert_eq!(m.take().0, 1);
        // Posted while a task waits: it wakes.
        let waiting = tokio::spawn({
            let m = m.clone();
            async move {
                m.posted().await;
                m.take().0
            }
        });
        tokio::task::yield_now().await;
        assert!(matches!(m.post(|c| c.0 += 2), Posted::Queued));
        assert_eq!(tokio::time::timeout(std::time::Duration::from_secs(5), waiting).await.unwrap().unwrap(), 2);
        // A wait given up (as in a `select!`) loses no post.
        assert!(tokio::time::timeout(std::time::Duration::from_millis(10), m.posted()).await.is_err());
        assert!(matches!(m.post(|c| c.0 += 3), Posted::Queued));
        tokio::time::timeout(std::time::Duration::from_secs(5), m.posted()).await.unwrap();
        // Parked: a post hands the state back instead.
        assert_eq!(m.take().0, 3);
        assert!(m.park(Box::new(9)).is_ok());
        assert!(matches!(m.post(|c| c.0 += 1), Posted::Woken(s) if *s == 9));
        m.close();
        assert!(matches!(m.post(|_| {}), Posted::Closed));
    }
}
