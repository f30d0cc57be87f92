//! What a list subscription does, run by a task of its own while it has something to do.
//! The task owns the subscription's state (dialog, list, version, expiry) and sends its
//! NOTIFYs one after another, so versions go out in order: the first at once, one after
//! each refresh, coalesced ones for live changes, and the final `terminated` one. Idle, it
//! parks the state in the mailbox and ends; a post (a change, a refresh, its expiry time)
//! resumes it in a new task. It ends for good, and unregisters, on unsubscribe, expiry, or
//! a NOTIFY the subscriber rejects (RFC 6665 §4.2.2).

use super::dialog::Dialog;
use super::mailbox::Mailbox;
use super::table::{SubId, Subscriptions, Woken};
use crate::body::{ResourceState, UserPresence};
use crate::index::Index;
use crate::presence::PresenceStore;
use crate::notification::{self, Format, SubState};
use super::watched::WatchedList;
use crate::resolution::{self, Key, User};
use crate::transaction::{ClientTransactions, Outcome};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// What every subscription task shares.
pub struct Shared {
    pub index: Index,
    pub auth: Arc<crate::auth::Authenticator>,
    pub budget: crate::budget::Budget,
    pub presence: Arc<PresenceStore>,
    /// Offline users still show as reachable (see `PresenceConfig::long_term`).
    pub long_term: bool,
    pub client_tx: Arc<ClientTransactions>,
    pub table: Arc<Subscriptions>,
    pub min_interval: Duration,
}

pub struct Subscription {
    pub id: SubId,
    pub dialog: Dialog,
    pub list_uri: Box<str>,
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
}

/// Changes waiting for the next NOTIFY.
#[derive(Default)]
struct Pending {
    keys: HashSet<Key>,
    full: bool,
    due: Option<Instant>,
}

impl Subscription {
    pub fn keys(&self) -> impl Iterator<Item = Key> + '_ {
        self.entries.keys()
    }

    fn remaining(&self) -> u32 {
        self.expires_at.saturating_duration_since(Instant::now()).as_secs() as u32
    }

    /// Sends full state; false when the subscriber rejected it.
    async fn send_full(&mut self, shared: &Shared, state: SubState) -> bool {
        let view = self.entries.view();
        let keys = (0..view.len()).map(|i| view.key(i));
        let users = resolution::resolve_all(&shared.index, &shared.presence, keys);
        let all: Vec<(usize, Option<User>)> = users.into_iter().enumerate().collect();
        self.send(shared, true, &all, state).await
    }

    async fn send_partial(&mut self, shared: &Shared, keys: &HashSet<Key>) -> bool {
        let view = self.entries.view();
        let changed: Vec<(usize, Option<User>)> = (0..view.len())
            .filter_map(|i| Some((i, view.key(i).filter(|k| keys.contains(k))?)))
            .map(|(i, k)| (i, resolution::user_of(&shared.index, &shared.presence, &k).ok().flatten()))
            .collect();
        if changed.is_empty() {
            return true;
        }
        let state = SubState::Active { expires: self.remaining() };
        self.send(shared, false, &changed, state).await
    }

    async fn send(&mut self, shared: &Shared, full: bool, items: &[(usize, Option<User>)], state: SubState) -> bool {
        if self.single {
            let user = items.first().and_then(|(_, u)| u.as_ref()).map(|u| presence_of(u, shared.long_term));
            let view = self.entries.view();
            let entity = view.uri(0);
            let req = notification::presentity_notify(&mut self.dialog, self.format, state, &entity, user);
            return deliver(shared, &self.dialog, req).await;
        }
        let view = self.entries.view();
        let uris: Vec<_> = items.iter().map(|(i, _)| view.uri(*i)).collect();
        let resources: Vec<ResourceState> = items
            .iter()
            .zip(&uris)
            .map(|((_, user), uri)| ResourceState { uri, user: user.as_ref().map(|u| presence_of(u, shared.long_term)) })
            .collect();
        let requests = notification::list_notifies(
            &mut self.dialog,
            &self.list_uri,
            &mut self.version,
            full,
            &resources,
            self.format,
            state,
        );
        drop(resources);
        drop(uris);
        for req in requests {
            if !deliver(shared, &self.dialog, req).await {
                return false;
            }
        }
        true
    }

    /// The last NOTIFY: `terminated`, without a body.
    async fn send_terminated(&mut self, shared: &Shared, reason: &'static str) {
        let req = notification::notify_request(&mut self.dialog, self.format, SubState::Terminated { reason }, None);
        deliver(shared, &self.dialog, req).await;
    }
}

/// What a watcher is told of a user. Online: open. Offline with `long_term`: still open
/// with his SIP URI, marked away, with his last-seen time (as Flexisip does), so the app
/// keeps showing him as a user; else closed. The contact is always his bound SIP URI.
fn presence_of(user: &User, long_term: bool) -> UserPresence<'_> {
    let online = user.live.as_ref().is_some_and(|l| l.online);
    let last_seen = user.live.as_ref().map_or(user.since, |l| l.updated);
    UserPresence {
        contact: &user.contact,
        basic_open: online || long_term,
        away: !online && long_term,
        timestamp: Some(last_seen),
    }
}

/// Sends one NOTIFY; false when the answer ends the subscription (RFC 6665 §4.2.2).
async fn deliver(shared: &Shared, dialog: &Dialog, req: crate::sip::Request) -> bool {
    match shared.client_tx.request(req, dialog.target, dialog.sent_by()).await {
        Outcome::Response(r) if (200..300).contains(&r.status) => true,
        Outcome::Response(r) => {
            let ends = matches!(r.status, 404 | 405 | 408 | 410 | 416 | 480..=485 | 489 | 501 | 604);
            tracing::debug!(call_id = %dialog.call_id(), status = r.status, "NOTIFY answered");
            !ends
        }
        Outcome::Timeout => {
            tracing::debug!(call_id = %dialog.call_id(), "NOTIFY timed out");
            false
        }
        Outcome::TransportError(e) => {
            tracing::debug!(call_id = %dialog.call_id(), "NOTIFY not sent: {e}");
            false
        }
    }
}

/// Starts a new subscription: its first NOTIFY, then whatever comes.
pub fn start(sub: Subscription, shared: Arc<Shared>, mailbox: Arc<Mailbox>) {
    tokio::spawn(run(Box::new(sub), shared, mailbox, true));
}

/// Runs parked subscriptions that a post woke.
pub fn resume(woken: Vec<Woken>, shared: &Arc<Shared>) {
    for w in woken {
        tokio::spawn(run(w.sub, shared.clone(), w.mailbox, false));
    }
}

/// Wakes the subscriptions whose time is up, four times a second, until `shutdown`.
pub async fn expire(shared: Arc<Shared>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = tick.tick() => resume(shared.table.expire(Instant::now()), &shared),
            _ = shutdown.changed() => return,
        }
    }
}

/// Runs the subscription until it has nothing left to do (then parks it) or it ends (then
/// unregisters it). Sending is boxed: the future stays small.
async fn run(mut sub: Box<Subscription>, shared: Arc<Shared>, mailbox: Arc<Mailbox>, first: bool) {
    let mut alive = true;
    if first {
        alive = Box::pin(sub.send_full(&shared, SubState::Active { expires: sub.remaining() })).await;
        sub.last_sent = Instant::now();
    }
    let mut pending = Pending::default();
    while alive && Instant::now() < sub.expires_at {
        let inbox = match pending.due {
            None => match mailbox.park(sub) {
                Ok(()) => return,
                Err(back) => {
                    sub = back;
                    mailbox.take()
                }
            },
            Some(due) => tokio::select! {
                _ = mailbox.posted() => mailbox.take(),
                _ = tokio::time::sleep_until(due.min(sub.expires_at)) => {
                    if Instant::now() >= due {
                        alive = flush(&mut sub, &shared, std::mem::take(&mut pending)).await;
                    }
                    continue;
                }
            },
        };
        if inbox.unsubscribe {
            break;
        }
        if let Some(expires) = inbox.refresh {
            sub.expires_at = Instant::now() + Duration::from_secs(expires.into());
            shared.table.schedule(sub.id, sub.expires_at);
            pending = Pending::default();
            alive = Box::pin(sub.send_full(&shared, SubState::Active { expires })).await;
            sub.last_sent = Instant::now();
            continue;
        }
        pending.full |= inbox.full;
        pending.keys.extend(inbox.changed);
        if pending.full || !pending.keys.is_empty() {
            pending.due.get_or_insert(sub.last_sent + shared.min_interval);
        }
    }
    mailbox.close();
    if alive {
        Box::pin(sub.send_terminated(&shared, "timeout")).await;
    }
    shared.table.remove(sub.id, sub.dialog.call_id(), sub.dialog.local_tag(), sub.keys());
}

/// Sends what `pending` gathered; false when the subscriber rejected it.
async fn flush(sub: &mut Subscription, shared: &Shared, pending: Pending) -> bool {
    let alive = if pending.full {
        Box::pin(sub.send_full(shared, SubState::Active { expires: sub.remaining() })).await
    } else {
        Box::pin(sub.send_partial(shared, &pending.keys)).await
    };
    sub.last_sent = Instant::now();
    alive
}

/// A fetch (RFC 6665 §4.4.3, Expires 0): one full-state NOTIFY that also terminates.
pub async fn fetch(mut sub: Subscription, shared: &Shared) {
    sub.send_full(shared, super::handler::FETCH_STATE).await;
}

#[cfg(test)]
mod size_tests {
    #[test]
    fn parked_state_is_small() {
        // What every idle subscription holds, besides its list and strings.
        let size = std::mem::size_of::<super::Subscription>();
        eprintln!("Subscription: {size} bytes");
        assert!(size <= 512, "Subscription is {size} bytes");
    }
}
