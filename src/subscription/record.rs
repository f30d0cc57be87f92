//! What one subscription is: its dialog, its list, its version and lifetime, and the
//! letters posted to it while it waits. A leaf: the other parts of `subscription` (the
//! actor that runs it, the table that finds it, the handler that creates it) all depend on
//! this file, and it on none of them.

use super::mailbox::{Letters, Mailbox};
use super::watched::WatchedList;
use crate::dialog::{Dialog, Retarget};
use crate::notification::Format;
use crate::resolution::Key;
use std::sync::Arc;
use tokio::time::Instant;

/// A subscription's number in the table.
pub type SubId = u32;

pub struct Subscription {
    pub id: SubId,
    pub dialog: Dialog,
    /// The list's URI (the SUBSCRIBE's Request-URI) and whose subscription it is (the
    /// canonical SIP URI the per-account caps count it under).
    pub names: Names,
    pub entries: WatchedList,
    pub version: u32,
    pub expires_at: Instant,
    /// When the last NOTIFY went out (live changes wait `Shared::min_interval` after it).
    pub last_sent: Instant,
    pub format: Format,
    /// A single-presentity subscription (RFC 3856): PIDF bodies, one entry.
    pub single: bool,
    /// The subscription's slot in the abuse limits, freed when it ends.
    pub permit: Option<crate::limits::SubPermit>,
    /// The version and CSeq reserved up to in the stored record (`durable.rs`): reached,
    /// the record is rewritten with a new reservation.
    pub version_limit: u32,
    pub cseq_limit: u32,
}

/// Two texts of a subscription in one allocation: two `Box<str>` took 8 bytes more, and
/// every byte counts to keep the parked `Subscription` in mimalloc's 256-byte size class
/// (`actor::size_tests`).
pub struct Names {
    text: Box<str>,
    split: usize,
}

impl Names {
    pub fn new(list_uri: &str, subscriber: &str) -> Names {
        Names { text: [list_uri, subscriber].concat().into(), split: list_uri.len() }
    }

    pub fn list_uri(&self) -> &str {
        &self.text[..self.split]
    }

    pub fn subscriber(&self) -> &str {
        &self.text[self.split..]
    }
}

impl Subscription {
    pub fn keys(&self) -> impl Iterator<Item = Key> + '_ {
        self.entries.keys()
    }

    /// Its expiry in Unix seconds (stored records outlive the process's clock).
    pub fn expires_unix(&self) -> u64 {
        crate::clock::unix_now() + u64::from(self.remaining())
    }

    /// Seconds left, for `Subscription-State: active;expires=`.
    pub fn remaining(&self) -> u32 {
        self.expires_at.saturating_duration_since(Instant::now()).as_secs() as u32
    }
}

/// How the rest of the server reaches a subscription.
pub type Handle = Arc<Mailbox<Subscription, Inbox>>;

/// A parked subscription that a post woke: the poster runs it (`actor::resume`).
pub struct Woken {
    pub sub: Box<Subscription>,
    pub mailbox: Handle,
}

/// Changed keys kept before falling back to a full-state resync.
const MAX_CHANGED: usize = 256;

/// What is posted to a subscription; posts coalesce into one of these.
#[derive(Default)]
pub struct Inbox {
    /// An in-dialog SUBSCRIBE with this Expires was answered 200.
    pub refresh: Option<u32>,
    /// An in-dialog SUBSCRIBE with Expires 0 was answered 200.
    pub unsubscribe: bool,
    /// Where that in-dialog SUBSCRIBE came from: the dialog follows it (target refresh).
    pub retarget: Option<Retarget>,
    /// The server is leaving: end with `terminated;reason=deactivated` (RFC 6665 §4.2.2:
    /// the phone re-subscribes at once, elsewhere).
    pub deactivate: bool,
    /// Another cluster node adopted it: end here without a word (`End::HandedOver`).
    pub handed_over: bool,
    /// Watched keys whose binding or presence changed.
    pub changed: Vec<Key>,
    /// Some change may have removed a user: only full state can say so to liblinphone.
    pub full: bool,
    /// When the earliest binding change waiting here was published (the NOTIFY that
    /// carries it is timed from then, `crate::metrics`).
    pub binding_at: Option<std::time::Instant>,
    /// The stored book behind a stored-list subscription changed (`books.rs`): the newest.
    pub relist: Option<Relist>,
}

/// A stored list's new entries, or its end.
#[derive(Clone)]
pub enum Relist {
    /// Watch this list from now on (added entries get a partial NOTIFY; removed ones are
    /// shown closed, then dropped by a full state).
    List(WatchedList),
    /// The book was deleted: the subscription ends (`terminated;reason=noresource`).
    Gone,
}

impl Inbox {
    /// `key` changed; `removal` when it may have stopped being a user. Bounded: past
    /// `MAX_CHANGED` keys, the subscription resends full state instead.
    pub fn change(&mut self, key: Key, removal: bool) {
        if !self.changed.contains(&key) {
            self.changed.push(key);
        }
        self.full |= removal;
        if self.changed.len() > MAX_CHANGED {
            self.changed = Vec::new();
            self.full = true;
        }
    }

    /// The change posted came from a binding change published `at`.
    pub fn binding_changed(&mut self, at: std::time::Instant) {
        self.binding_at = earliest(self.binding_at, Some(at));
    }
}

/// The earlier of two optional times.
pub fn earliest(a: Option<std::time::Instant>, b: Option<std::time::Instant>) -> Option<std::time::Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        _ => a.or(b),
    }
}

impl Letters for Inbox {
    fn is_empty(&self) -> bool {
        self.refresh.is_none() && !self.unsubscribe && !self.deactivate && !self.handed_over && self.retarget.is_none() && self.changed.is_empty() && !self.full && self.relist.is_none()
    }
}
