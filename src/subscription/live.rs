//! Live updates: follows the binding index's change feed and tells every subscription
//! watching a number (or SIP user) that changed. Flexisip's presence server only learns of
//! new users at the next re-subscribe; this is what makes ours push them.

use super::table::Subscriptions;
use crate::index::{ChangeError, Index};
use std::sync::Arc;
use tokio::sync::watch;

pub async fn follow(index: Index, table: Arc<Subscriptions>, mut shutdown: watch::Receiver<bool>) {
    let mut changes = index.changes();
    loop {
        let next = tokio::select! {
            c = changes.recv() => c,
            _ = shutdown.changed() => return,
        };
        match next {
            Ok(change) => table.on_change(&change),
            Err(ChangeError::Lagged(n)) => {
                tracing::warn!("change feed lagged by {n}: every subscription re-sends full state");
                table.resync_all();
            }
            Err(ChangeError::Closed) => return,
            Err(ChangeError::Empty) => {}
        }
    }
}
