//! What a list subscription does, run by a task of its own while it has something to do.
//! The task owns the subscription's state (dialog, list, version, expiry) and sends its
//! NOTIFYs one after another, so versions go out in order: the first at once, one after
//! each refresh, coalesced ones for live changes, and the final `terminated` one. Idle, it
//! parks the state in the mailbox and ends; a post (a change, a refresh, its expiry time)
//! resumes it in a new task. It ends for good, and unregisters, on unsubscribe, expiry, or
//! a NOTIFY the subscriber rejects (RFC 6665 §4.2.2).
//!
//! No silent loss: while the subscriber can be reached, a subscription ends only with a
//! NOTIFY saying why. A NOTIFY unanswered by Timer F on a connection that is still open
//! reached a slow phone (liblinphone can take longer than Timer F on a big state), not a
//! dead one: the subscription goes on. Whatever cannot be delivered is logged at warn and
//! counted (`Subscriptions::stats`).

use super::record::{Handle, Relist, Subscription, Woken};
use super::watched::WatchedList;
use super::table::Subscriptions;
use crate::body::{ResourceState, UserPresence};
use crate::dialog::Dialog;
use crate::index::Index;
use crate::presence::PresenceStore;
use crate::notification::{self, SubState};
use crate::resolution::{self, Key, User};
use crate::transaction::{ClientTransactions, Outcome};
use crate::transport::SendError;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// What every subscription task shares.
pub struct Shared {
    pub index: Index,
    pub auth: Arc<crate::auth::Authenticator>,
    /// Reads and charges new lists (region, classification, budget).
    pub discovery: crate::discovery::Discovery,
    /// Caps on subscriptions per account and source.
    pub limits: Arc<crate::limits::Limits>,
    pub presence: Arc<PresenceStore>,
    /// Offline users still show as reachable (see `PresenceConfig::long_term`).
    pub long_term: bool,
    pub client_tx: Arc<ClientTransactions>,
    pub table: Arc<Subscriptions>,
    pub min_interval: Duration,
    /// Where subscriptions are recorded to survive a restart.
    pub store: super::durable::SubscriptionStore,
    /// Times the first NOTIFY and the NOTIFYs carrying binding changes (None: metrics off).
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
    /// The stored address books served at the list URI (`books.rs`).
    pub lists: super::books::StoredLists,
    /// Whether the store is still being read back after a start (`resume.rs`).
    pub loading: super::loading::Loading,
}

/// Changes waiting for the next NOTIFY.
#[derive(Default)]
struct Pending {
    keys: HashSet<Key>,
    full: bool,
    due: Option<Instant>,
    /// When the earliest binding change among them was published.
    binding_at: Option<std::time::Instant>,
}

impl Subscription {
    /// Records the subscription (created, refreshed or moved) with a fresh reservation of
    /// versions and CSeqs. A store that fails is logged: the subscription goes on, it only
    /// would not survive a restart.
    fn record(&mut self, shared: &Shared) {
        let created = self.version == 0 && self.version_limit == 0;
        match shared.store.put(self, self.names.subscriber(), self.expires_unix(), created) {
            Ok((version, cseq)) => (self.version_limit, self.cseq_limit) = (version, cseq),
            Err(e) => tracing::warn!(call_id = %self.dialog.call_id(), "subscription not recorded (lost on restart): {e}"),
        }
    }

    /// Before a send: renews the reservation when less than half of it is left (a send
    /// uses at most ~50 versions), so no version or CSeq is used past what is stored.
    fn keep_reservation(&mut self, shared: &Shared) {
        let half = super::durable::RESERVE / 2;
        if self.version_limit.saturating_sub(self.version) < half || self.cseq_limit.saturating_sub(self.dialog.next_cseq) < half {
            self.record(shared);
        }
    }

    /// Sends full state; `Err` when the subscription must end.
    async fn send_full(&mut self, shared: &Shared, state: SubState) -> Sent {
        let view = self.entries.view();
        let keys = (0..view.len()).map(|i| view.key(i));
        let users = resolution::resolve_all(&shared.index, &shared.presence, keys);
        let all: Vec<(usize, Option<User>)> = users.into_iter().enumerate().collect();
        self.send(shared, true, &all, state).await
    }

    /// The entries watching `keys`, each with who it is now.
    fn changed(&self, shared: &Shared, keys: &HashSet<Key>) -> Vec<(usize, Option<User>)> {
        let view = self.entries.view();
        (0..view.len())
            .filter_map(|i| Some((i, view.key(i).filter(|k| keys.contains(k))?)))
            .map(|(i, k)| (i, resolution::user_of(&shared.index, &shared.presence, &k).ok().flatten()))
            .collect()
    }

    async fn send_partial(&mut self, shared: &Shared, keys: &HashSet<Key>) -> Sent {
        let changed = self.changed(shared, keys);
        if changed.is_empty() {
            return Ok(());
        }
        let state = SubState::Active { expires: self.remaining() };
        self.send(shared, false, &changed, state).await
    }

    /// Before the full state that takes users away: a partial NOTIFY showing each of them
    /// `closed`. liblinphone 5.1 clears a user that a full state leaves out without calling
    /// the app back; this NOTIFY is what fires its presence callback, and the full state
    /// after it then clears the number for good.
    async fn send_removals(&mut self, shared: &Shared, keys: &HashSet<Key>) -> Sent {
        if self.single {
            return Ok(());
        }
        let gone: Vec<usize> = self.changed(shared, keys).into_iter().filter(|(_, u)| u.is_none()).map(|(i, _)| i).collect();
        self.send_closed(shared, &gone).await
    }

    /// A partial NOTIFY showing the entries `gone` (positions in the list) `closed`.
    async fn send_closed(&mut self, shared: &Shared, gone: &[usize]) -> Sent {
        if gone.is_empty() {
            return Ok(());
        }
        self.keep_reservation(shared);
        let view = self.entries.view();
        let (text, at) = view.uris(gone.iter().copied());
        let resources: Vec<ResourceState> = at
            .iter()
            .map(|r| &text[r.clone()])
            .map(|uri| ResourceState { uri, user: Some(UserPresence { contact: uri, basic_open: false, away: false, timestamp: None, doc: None }) })
            .collect();
        let state = SubState::Active { expires: self.remaining() };
        let requests = notification::list_notifies(&mut self.dialog, self.names.list_uri(), &mut self.version, false, &resources, self.format, state);
        drop(resources);
        drop(text);
        self.deliver_all(shared, requests).await
    }

    async fn send(&mut self, shared: &Shared, full: bool, items: &[(usize, Option<User>)], state: SubState) -> Sent {
        self.keep_reservation(shared);
        if self.single {
            let user = items.first().and_then(|(_, u)| u.as_ref()).map(|u| presence_of(u, shared.long_term));
            let view = self.entries.view();
            let entity = view.uri(0);
            let req = notification::presentity_notify(&mut self.dialog, self.format, state, &entity, user);
            return deliver(shared, &self.dialog, req).await;
        }
        let view = self.entries.view();
        let (text, at) = view.uris(items.iter().map(|(i, _)| *i));
        let resources: Vec<ResourceState> = items
            .iter()
            .zip(&at)
            .map(|((_, user), r)| ResourceState { uri: &text[r.clone()], user: user.as_ref().map(|u| presence_of(u, shared.long_term)) })
            .collect();
        let requests = notification::list_notifies(
            &mut self.dialog,
            self.names.list_uri(),
            &mut self.version,
            full,
            &resources,
            self.format,
            state,
        );
        drop(resources);
        drop(text);
        self.deliver_all(shared, requests).await
    }

    /// Sends NOTIFYs one after the other, each once the one before is answered.
    async fn deliver_all(&self, shared: &Shared, requests: Vec<crate::sip::Request>) -> Sent {
        for req in requests {
            deliver(shared, &self.dialog, req).await?;
        }
        Ok(())
    }

    /// The last NOTIFY, without a body, when the subscriber can still be told.
    async fn send_terminated(&mut self, shared: &Shared, end: End) {
        let Some(reason) = end.reason() else { return };
        self.keep_reservation(shared);
        let req = notification::notify_request(&mut self.dialog, self.format, SubState::Terminated { reason }, None);
        let _ = deliver(shared, &self.dialog, req).await;
    }
}

/// Why a subscription ends, which decides its last NOTIFY (RFC 6665 §4.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Its time ran out: `terminated;reason=timeout`.
    Expired,
    /// The subscriber un-subscribed: `terminated`, no reason.
    Unsubscribed,
    /// The server is leaving (a clean stop set to deactivate): `terminated;reason=deactivated`,
    /// and the phone re-subscribes at once.
    Deactivated,
    /// The stored list it watched is gone (its book was deleted):
    /// `terminated;reason=noresource`.
    NoResource,
    /// A NOTIFY could not be sent at all though the subscriber can be reached (a state too
    /// large for a datagram): `terminated;reason=rejected`, so the phone does not believe
    /// it is subscribed, and does not retry the same list at once.
    Undeliverable,
    /// The subscriber refused a NOTIFY, or cannot be reached: nothing more is sent.
    Lost,
    /// Another cluster node adopted it while this one could not renew its lease: that
    /// node speaks in the dialog now, so nothing more is sent from here.
    HandedOver,
}

impl End {
    /// The `reason` of the last NOTIFY; None when no last NOTIFY is sent.
    fn reason(self) -> Option<Option<&'static str>> {
        match self {
            End::Expired => Some(Some("timeout")),
            End::Unsubscribed => Some(None),
            End::Deactivated => Some(Some("deactivated")),
            End::Undeliverable => Some(Some("rejected")),
            End::NoResource => Some(Some("noresource")),
            End::Lost | End::HandedOver => None,
        }
    }
}

/// Ok while the subscription goes on.
type Sent = Result<(), End>;

/// What a watcher is told of a user. Online: open, with his composed rich presence.
/// Offline with `long_term`: still open with his SIP URI, marked away, with his last-seen
/// time and what is kept of his document (his capabilities), as Flexisip does, so the app
/// keeps showing him as a user; else closed. The contact is always his bound SIP URI.
fn presence_of(user: &User, long_term: bool) -> UserPresence<'_> {
    let online = user.live.as_ref().is_some_and(|l| l.online);
    let last_seen = user.live.as_ref().map_or(user.since, |l| l.updated);
    let doc = user.live.as_ref().and_then(|l| l.doc.as_deref()).filter(|_| online || long_term);
    UserPresence {
        contact: &user.contact,
        basic_open: online || long_term,
        away: !online && long_term,
        timestamp: Some(last_seen),
        doc,
    }
}

/// Sends one NOTIFY and decides from its outcome whether the subscription goes on.
async fn deliver(shared: &Shared, dialog: &Dialog, req: crate::sip::Request) -> Sent {
    let stats = shared.table.stats();
    let call_id = dialog.call_id();
    match shared.client_tx.request(req, dialog.target, dialog.sent_by()).await {
        Outcome::Response(r) if (200..300).contains(&r.status) => Ok(()),
        Outcome::Response(r) if matches!(r.status, 404 | 405 | 408 | 410 | 416 | 480..=485 | 489 | 501 | 604) => {
            tracing::debug!(%call_id, status = r.status, "NOTIFY refused: the subscription ends");
            stats.count(&stats.refused);
            Err(End::Lost)
        }
        Outcome::Response(r) => {
            tracing::debug!(%call_id, status = r.status, "NOTIFY answered");
            Ok(())
        }
        Outcome::Timeout if shared.client_tx.is_connected(&dialog.target) => {
            tracing::warn!(%call_id, "NOTIFY unanswered by Timer F on an open connection: the subscriber is slow; the subscription goes on");
            stats.count(&stats.unanswered_kept);
            Ok(())
        }
        Outcome::Timeout => {
            tracing::warn!(%call_id, target = %dialog.target.remote, "NOTIFY unanswered by Timer F: the subscriber is unreachable; the subscription ends");
            stats.count(&stats.unreachable);
            Err(End::Lost)
        }
        Outcome::TransportError(e @ SendError::TooLarge(_)) => {
            tracing::warn!(%call_id, "NOTIFY not sent ({e}): the subscription ends with a terminated NOTIFY");
            stats.count(&stats.undeliverable);
            Err(End::Undeliverable)
        }
        Outcome::TransportError(e) => {
            tracing::warn!(%call_id, target = %dialog.target.remote, "NOTIFY not sent ({e}): the subscriber is unreachable; the subscription ends");
            stats.count(&stats.unreachable);
            Err(End::Lost)
        }
    }
}

/// Starts a new subscription: its first NOTIFY, then whatever comes. `received`: when its
/// SUBSCRIBE arrived (the first NOTIFY is timed from it), if known.
pub fn start(sub: Subscription, shared: Arc<Shared>, mailbox: Handle, received: Option<std::time::Instant>) {
    tokio::spawn(run(Box::new(sub), shared, mailbox, Some(First { received, slot: None })));
}

/// Starts a subscription taken back after a restart (`resume::pace`); `slot` is given back
/// once its first NOTIFY is answered or has failed (the resumption paces itself by it).
pub fn start_resumed(sub: Subscription, shared: Arc<Shared>, mailbox: Handle, slot: Option<tokio::sync::OwnedSemaphorePermit>) {
    tokio::spawn(run(Box::new(sub), shared, mailbox, Some(First { received: None, slot })));
}

/// The first NOTIFY of a subscription being started: when its SUBSCRIBE arrived, if known,
/// and the slot of a paced resumption it holds until that NOTIFY's outcome.
struct First {
    received: Option<std::time::Instant>,
    slot: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// Runs parked subscriptions that a post woke.
pub fn resume(woken: Vec<Woken>, shared: &Arc<Shared>) {
    for w in woken {
        tokio::spawn(run(w.sub, shared.clone(), w.mailbox, None));
    }
}

/// Sends the last NOTIFY (`terminated;reason=deactivated`) of a subscription that is in no
/// table and no store (`resume::deactivate_stored`): its reservation is not renewed.
pub async fn deactivate_unstored(sub: &mut Subscription, shared: &Shared) {
    (sub.version_limit, sub.cseq_limit) = (u32::MAX, u32::MAX);
    sub.send_terminated(shared, End::Deactivated).await;
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
/// unregisters it). `first`: a new one, which sends its full state at once (Some(when its
/// SUBSCRIBE arrived) when known). Sending is boxed: the future stays small.
async fn run(mut sub: Box<Subscription>, shared: Arc<Shared>, mailbox: Handle, first: Option<First>) {
    let mut sent: Sent = Ok(());
    if let Some(First { received, slot }) = first {
        sub.record(&shared);
        sent = Box::pin(sub.send_full(&shared, SubState::Active { expires: sub.remaining() })).await;
        drop(slot);
        sub.last_sent = Instant::now();
        if let (Some(m), Some(at), Ok(())) = (&shared.metrics, received, &sent) {
            m.first_notify(at);
        }
    }
    let mut pending = Pending::default();
    while sent.is_ok() && Instant::now() < sub.expires_at {
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
                        sent = flush(&mut sub, &shared, std::mem::take(&mut pending)).await;
                    }
                    continue;
                }
            },
        };
        if let Some(to) = &inbox.retarget {
            if !sub.dialog.retarget(to) {
                tracing::warn!(call_id = %sub.dialog.call_id(), "target refresh ignored: its texts are too long");
            }
        }
        if inbox.handed_over {
            sent = Err(End::HandedOver);
            break;
        }
        if inbox.deactivate {
            sent = Err(End::Deactivated);
            break;
        }
        if inbox.unsubscribe {
            sent = Err(End::Unsubscribed);
            break;
        }
        if let Some(relist) = inbox.relist {
            sent = match relist {
                Relist::Gone => Err(End::NoResource),
                Relist::List(list) => Box::pin(sub.relist(&shared, list)).await,
            };
            sub.last_sent = Instant::now();
            if sent.is_err() {
                break;
            }
        }
        if let Some(expires) = inbox.refresh {
            sub.expires_at = Instant::now() + Duration::from_secs(expires.into());
            shared.table.schedule(sub.id, sub.expires_at);
            sub.record(&shared);
            let binding_at = super::record::earliest(pending.binding_at, inbox.binding_at);
            pending = Pending::default();
            sent = Box::pin(sub.send_full(&shared, SubState::Active { expires })).await;
            sub.last_sent = Instant::now();
            time_binding(&shared, binding_at, &sent);
            continue;
        }
        pending.binding_at = super::record::earliest(pending.binding_at, inbox.binding_at);
        pending.full |= inbox.full;
        pending.keys.extend(inbox.changed);
        if pending.full || !pending.keys.is_empty() {
            pending.due.get_or_insert(sub.last_sent + shared.min_interval);
        }
    }
    mailbox.close();
    let end = sent.err().unwrap_or(End::Expired);
    Box::pin(sub.send_terminated(&shared, end)).await;
    shared.store.remove(&sub.dialog);
    shared.table.remove(sub.id, sub.dialog.call_id(), sub.dialog.local_tag(), sub.keys());
}

impl Subscription {
    /// Its stored book changed: it watches `new` from now on. Added entries go out in a
    /// partial NOTIFY; when entries were dropped, the users among them are first shown
    /// closed (as a user who leaves), then a full state drops them (liblinphone 5.1 forgets
    /// a resource only on a full state).
    async fn relist(&mut self, shared: &Shared, new: WatchedList) -> Sent {
        let (old_uris, new_uris) = (uris_of(&self.entries), uris_of(&new));
        let dropped: Vec<usize> = {
            let view = self.entries.view();
            (0..view.len()).filter(|i| !new_uris.contains(&*view.uri(*i))).collect()
        };
        let leaving: Vec<usize> = {
            let view = self.entries.view();
            let keys = dropped.iter().filter_map(|i| view.key(*i).map(|k| (*i, k)));
            keys.filter(|(_, k)| matches!(resolution::user_of(&shared.index, &shared.presence, k), Ok(Some(_)))).map(|(i, _)| i).collect()
        };
        let closed = self.send_closed(shared, &leaving).await;
        let (old_keys, new_keys): (HashSet<Key>, HashSet<Key>) = (self.keys().collect(), new.keys().collect());
        shared.table.rewatch(self.id, old_keys.difference(&new_keys).cloned(), new_keys.difference(&old_keys).cloned());
        self.entries = new;
        if let Some(permit) = self.permit.as_mut() {
            permit.resize(self.entries.len());
        }
        closed?;
        let state = SubState::Active { expires: self.remaining() };
        if !dropped.is_empty() {
            return self.send_full(shared, state).await;
        }
        let view = self.entries.view();
        let added: Vec<(usize, Option<User>)> = (0..view.len())
            .filter(|i| !old_uris.contains(&*view.uri(*i)))
            .map(|i| (i, view.key(i).and_then(|k| resolution::user_of(&shared.index, &shared.presence, &k).ok().flatten())))
            .collect();
        drop(view);
        if added.is_empty() {
            return Ok(());
        }
        self.send(shared, false, &added, state).await
    }
}

/// Every entry URI of a list.
fn uris_of(list: &WatchedList) -> HashSet<String> {
    let view = list.view();
    (0..view.len()).map(|i| view.uri(i).into_owned()).collect()
}

/// Sends what `pending` gathered.
async fn flush(sub: &mut Subscription, shared: &Shared, pending: Pending) -> Sent {
    let binding_at = pending.binding_at;
    let sent = if pending.full {
        match Box::pin(sub.send_removals(shared, &pending.keys)).await {
            Ok(()) => Box::pin(sub.send_full(shared, SubState::Active { expires: sub.remaining() })).await,
            Err(end) => Err(end),
        }
    } else {
        Box::pin(sub.send_partial(shared, &pending.keys)).await
    };
    sub.last_sent = Instant::now();
    time_binding(shared, binding_at, &sent);
    sent
}

/// A NOTIFY carrying binding changes, the earliest published `since`, went out.
fn time_binding(shared: &Shared, since: Option<std::time::Instant>, sent: &Sent) {
    if let (Some(m), Some(at), Ok(())) = (&shared.metrics, since, sent) {
        m.binding_notify(at);
    }
}

/// The Subscription-State of a one-shot fetch (Expires: 0 on a new subscription).
pub const FETCH_STATE: SubState = SubState::Terminated { reason: Some("timeout") };

/// A fetch (RFC 6665 §4.4.3, Expires 0): one full-state NOTIFY that also terminates.
pub async fn fetch(mut sub: Subscription, shared: &Shared) {
    let _ = sub.send_full(shared, FETCH_STATE).await;
}

#[cfg(test)]
mod size_tests {
    #[test]
    fn parked_state_is_small() {
        // What every idle subscription holds, besides its list and strings.
        let size = std::mem::size_of::<super::Subscription>();
        eprintln!("Subscription: {size} bytes");
        // mimalloc's size classes around it: 256, 320, 384...; every parked subscription
        // is boxed (`mailbox.rs`), so 8 bytes over 256 cost 64 per subscription. What
        // keeps it there: the dialog's part ends in u16, a connection id with a niche, the
        // NOTIFY format's limits in u32, a list's rare non-number entries behind a thin
        // pointer, the permit's entry count in u32.
        assert!(size <= 256, "Subscription is {size} bytes");
    }
}
