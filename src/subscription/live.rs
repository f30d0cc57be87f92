//! Live updates: follows the binding index's change feed and tells every subscription
//! watching a number (or SIP user) that changed. Flexisip's presence server only learns of
//! new users at the next re-subscribe; this is what makes ours push them.

use super::actor::{resume, Shared};
use super::record::Relist;
use super::watched::WatchedList;
use crate::discovery::Seeker;
use crate::index::ChangeError;
use std::sync::Arc;
use tokio::sync::watch;

pub async fn follow(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut changes = shared.index.changes();
    let table = &shared.table;
    loop {
        let next = tokio::select! {
            c = changes.recv_stamped() => c,
            _ = shutdown.changed() => return,
        };
        match next {
            Ok((change, at)) => {
                shared.metrics.as_deref().inspect(|m| m.feed_taken(at, changes.backlog()));
                resume(table.on_change(&change, at), &shared)
            }
            Err(ChangeError::Lagged(n)) => {
                tracing::warn!("change feed lagged by {n}: every subscription re-sends full state");
                shared.metrics.as_deref().inspect(|m| m.feed_resync());
                resume(table.resync_all(), &shared);
            }
            Err(ChangeError::Closed) => return,
            Err(ChangeError::Empty) => {}
        }
    }
}

/// Presence changes: each presentity that changed is announced to the subscriptions
/// watching any of his numbers (or his SIP URI), at most once per `interval` (RFC 3856
/// §6.10); changes inside the interval are coalesced into one at its end.
pub async fn follow_presence(
    mut changed: tokio::sync::mpsc::UnboundedReceiver<Box<str>>,
    shared: Arc<Shared>,
    interval: std::time::Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    use std::collections::HashMap;
    use tokio::time::Instant;
    let mut last: HashMap<Box<str>, Instant> = HashMap::new();
    let mut waiting: HashMap<Box<str>, Instant> = HashMap::new();
    loop {
        let next_due = waiting.values().min().copied();
        let sleep = tokio::time::sleep_until(next_due.unwrap_or_else(|| Instant::now() + interval));
        tokio::select! {
            uri = changed.recv() => match uri {
                Some(uri) => {
                    let due = last.get(&uri).map_or(Instant::now(), |t| *t + interval);
                    waiting.entry(uri).or_insert(due);
                }
                None => return,
            },
            _ = sleep => {}
            _ = shutdown.changed() => return,
        }
        let now = Instant::now();
        let ready: Vec<Box<str>> = waiting.iter().filter(|(_, due)| **due <= now).map(|(u, _)| u.clone()).collect();
        for uri in ready {
            waiting.remove(&uri);
            last.insert(uri.clone(), now);
            let numbers = shared.index.numbers_of(&uri).unwrap_or_default();
            resume(shared.table.on_presence(&uri, &numbers), &shared);
        }
        last.retain(|_, t| now.duration_since(*t) < interval);
    }
}

/// Stored books: each change reaches the subscriptions watching that book (`books.rs`)
/// as their new list, or their end when the book was deleted.
pub async fn follow_books(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = shared.lists.books.feed().changed() => {}
            _ = shutdown.changed() => return,
        }
        // This node's changes, and other nodes' ones to books followed here, once each.
        let mut owners: std::collections::HashSet<Box<str>> = shared.lists.books.feed().take().into_iter().collect();
        owners.extend(shared.lists.books.changed_elsewhere(|| shared.table.book_owners()));
        for owner in owners {
            if !shared.table.follows_book(&owner) {
                continue;
            }
            if let Some(relist) = relist_of(&shared, owner.clone()).await {
                resume(shared.table.relist(&owner, &relist), &shared);
            }
        }
    }
}

/// `owner`'s book as a list (its new numbers charged to his budget), or `Gone`; None
/// (logged) when it cannot be read.
async fn relist_of(shared: &Arc<Shared>, owner: Box<str>) -> Option<Relist> {
    let s = shared.clone();
    let read = crate::discovery::blocking(move || match s.lists.books.numbers(&owner) {
        Ok(Some(numbers)) => {
            let uris = s.lists.entry_uris(numbers.into_iter());
            let who = Seeker { budget_key: &owner, sip_uri: "", numbers: &[] };
            Some(Relist::List(WatchedList::new(s.discovery.entries(&who, uris))))
        }
        Ok(None) => Some(Relist::Gone),
        Err(e) => {
            tracing::warn!("stored book not read, its subscriptions keep their list: {e}");
            None
        }
    });
    read.await.flatten()
}
