//! The change feed: every change of the index, published once it is durable, in commit
//! order, to every subscriber. Bounded per subscriber; a slow one is told it lagged, never
//! left with a silent gap. Any store can publish through it; it knows no backend. Each
//! change carries the time it was published, so consumers can tell how far behind they are.
//! `index` re-exports it: callers subscribe through `Index::changes`.

use crate::numbers::E164;
use serde::Serialize;
use std::time::Instant;
use tokio::sync::broadcast;

/// Events kept for slow change-feed consumers before they are told they lagged.
pub const CHANGE_CAPACITY: usize = 1 << 16;

/// One change of the index, published after it is durable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub number: E164,
    /// The URI the number was bound to before (None: it was not bound).
    pub old: Option<String>,
    /// The URI it is bound to now (None: unbound).
    pub new: Option<String>,
}

/// Why a receive from the change feed gave no change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    /// The consumer was too slow and this many changes were dropped for it: it must resync
    /// (re-read what it needs from the index) and then go on receiving.
    #[error("change feed lagged: {0} changes missed, resync needed")]
    Lagged(u64),
    /// Every `Index` handle is gone.
    #[error("change feed closed")]
    Closed,
    /// `try_recv` only: nothing pending.
    #[error("no change pending")]
    Empty,
}

/// A change and when it was published.
#[derive(Debug, Clone)]
struct Stamped(Change, Instant);

/// The sending side, held by a store.
pub struct ChangeFeed {
    tx: broadcast::Sender<Stamped>,
}

impl Default for ChangeFeed {
    fn default() -> ChangeFeed {
        ChangeFeed { tx: broadcast::channel(CHANGE_CAPACITY).0 }
    }
}

impl ChangeFeed {
    pub fn publish(&self, change: Change) {
        let _ = self.tx.send(Stamped(change, Instant::now()));
    }

    /// Whether anyone listens (a bulk write can then skip building its events).
    pub fn has_subscribers(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    pub fn subscribe(&self) -> ChangeReceiver {
        ChangeReceiver { rx: self.tx.subscribe() }
    }
}

/// A subscription to the change feed. Bounded ([`CHANGE_CAPACITY`]); a consumer that falls
/// behind gets [`ChangeError::Lagged`] once, never a silent gap.
pub struct ChangeReceiver {
    rx: broadcast::Receiver<Stamped>,
}

impl ChangeReceiver {
    pub async fn recv(&mut self) -> Result<Change, ChangeError> {
        self.recv_stamped().await.map(|(change, _)| change)
    }

    /// The next change and when it was published.
    pub async fn recv_stamped(&mut self) -> Result<(Change, Instant), ChangeError> {
        self.rx.recv().await.map(|Stamped(c, at)| (c, at)).map_err(|e| match e {
            broadcast::error::RecvError::Lagged(n) => ChangeError::Lagged(n),
            broadcast::error::RecvError::Closed => ChangeError::Closed,
        })
    }

    pub fn try_recv(&mut self) -> Result<Change, ChangeError> {
        self.rx.try_recv().map(|s| s.0).map_err(|e| match e {
            broadcast::error::TryRecvError::Lagged(n) => ChangeError::Lagged(n),
            broadcast::error::TryRecvError::Closed => ChangeError::Closed,
            broadcast::error::TryRecvError::Empty => ChangeError::Empty,
        })
    }

    /// For non-async consumers (not from inside an async task).
    pub fn blocking_recv(&mut self) -> Result<Change, ChangeError> {
        self.rx.blocking_recv().map(|s| s.0).map_err(|e| match e {
            broadcast::error::RecvError::Lagged(n) => ChangeError::Lagged(n),
            broadcast::error::RecvError::Closed => ChangeError::Closed,
        })
    }

    /// Changes published and not yet received here.
    pub fn backlog(&self) -> usize {
        self.rx.len()
    }
}
