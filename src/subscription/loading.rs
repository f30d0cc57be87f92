//! Whether the stored subscriptions are still being read back after a start
//! (`resume.rs` reads them). A request for a dialog that is not in the table then may be for
//! one not read yet: it waits for the end of the load before it is told the dialog is
//! unknown (before the store was read back beside the listeners, it waited unread in the
//! socket).
//!
//! Owns the flag and the stop request only; it must not read the store itself.

use super::durable::SubscriptionStore;
use super::table::Subscriptions;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::watch;

#[derive(Default)]
pub struct Loading {
    on: watch::Sender<bool>,
    /// A stop is under way: the load ends at the next record.
    stop: AtomicBool,
}

impl Loading {
    /// Whether the store is still being read back.
    pub fn is_on(&self) -> bool {
        *self.on.borrow()
    }

    /// Whether this dialog may be one stored and not read back yet (not in the table, and
    /// stored). Always false once the load is over.
    pub fn may_hold(&self, table: &Subscriptions, store: &SubscriptionStore, call_id: &str, local_tag: &str) -> bool {
        self.is_on() && table.find(call_id, local_tag).is_none() && store.holds(call_id, local_tag)
    }

    /// Returns once the whole store is read back.
    pub async fn finished(&self) {
        let mut rx = self.on.subscribe();
        let _ = rx.wait_for(|on| !on).await;
    }

    /// Ends the load at the next record (a stop): what is not read back stays stored, for
    /// the next start. Returns once it has ended.
    pub async fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        self.finished().await;
    }

    /// Whether the load should end now (a stop is under way).
    pub(super) fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// The load begins (true) or has ended (false).
    pub(super) fn set(&self, on: bool) {
        self.on.send_replace(on);
    }
}
