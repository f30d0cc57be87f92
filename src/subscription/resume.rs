//! Resuming the stored subscriptions after a start (`durable.rs` keeps them).
//!
//! Every unexpired record is put back in the table at once, before the listeners accept
//! anything, so that a refresh arriving early finds its dialog. Each then gets a full-state
//! NOTIFY with a new version, paced at `subscription.resume_per_second` so that a hundred
//! thousand resumed subscriptions do not burst; the progress is logged. Expired records are
//! dropped. A UDP subscriber is reached at its recorded address. A TCP subscriber's
//! connection died with the old process: the NOTIFY goes on a new connection to its
//! Contact, once; if that fails the subscription ends (a phone behind NAT re-subscribes at
//! its next refresh). We never open TLS connections, so a TLS subscription is not resumed.

use super::actor::{self, Shared};
use super::durable::Stored;
use super::record::{Handle, Names, Subscription};
use crate::sip::Uri;
use crate::transport::Protocol;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// What a start found in the store.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Resumed {
    /// Put back in the table, each to get its NOTIFY.
    pub resumed: usize,
    pub expired: usize,
    /// Not resumable: TLS, a Contact we cannot reach over TCP, or over the caps.
    pub dropped: usize,
}

/// Loads the store into the table and starts the paced NOTIFYs; returns the counts.
/// `held_while_pacing` is dropped once every resumed subscription has been started (the
/// server is not ready until then).
pub fn resume<G: Send + 'static>(shared: &Arc<Shared>, per_second: u32, held_while_pacing: G) -> Resumed {
    let now = crate::clock::unix_now();
    let mut counts = Resumed::default();
    let mut ready = Vec::new();
    for stored in shared.store.load() {
        if stored.expires_at <= now {
            counts.expired += 1;
            shared.store.forget(&stored);
            continue;
        }
        match revive(shared, stored, now) {
            Some(r) => ready.push(r),
            None => counts.dropped += 1,
        }
    }
    counts.resumed = ready.len();
    if !ready.is_empty() || counts.expired > 0 || counts.dropped > 0 {
        tracing::info!(resumed = counts.resumed, expired = counts.expired, dropped = counts.dropped, "stored subscriptions loaded");
    }
    if !ready.is_empty() {
        tokio::spawn(pace(shared.clone(), ready, per_second.max(1), held_while_pacing));
    }
    counts
}

/// A stored subscription back in the table, or None (logged) when it cannot go on.
fn revive(shared: &Arc<Shared>, s: Stored, now: u64) -> Option<(Subscription, Handle)> {
    let mut dialog = s.dialog.clone();
    if let Err(why) = reach(&mut dialog) {
        return drop_record(shared, &s, why);
    }
    let permit = match shared.limits.subscribe(&s.subscriber, dialog.target.remote.ip(), s.entries.len()) {
        Ok(p) => p.marked_single(s.single),
        Err(_) => return drop_record(shared, &s, "over the subscription caps"),
    };
    let mut sub = unstored(s, dialog, now);
    sub.permit = Some(permit);
    let (id, mailbox) = shared.table.insert(sub.dialog.call_id(), sub.dialog.local_tag(), sub.keys(), sub.expires_at);
    sub.id = id;
    if let Some(owner) = shared.lists.owner_of_record(sub.names.list_uri(), sub.names.subscriber()) {
        // A stored list follows its book again, and catches up with what changed meanwhile.
        shared.table.follow_book(id, &owner);
        shared.lists.books.touch(&owner);
    }
    Some((sub, mailbox))
}

/// Points a stored dialog at where it can be reached from a new process: a UDP subscriber
/// where it was, a TCP one at its Contact; Err (why) when it cannot be.
fn reach(dialog: &mut crate::dialog::Dialog) -> Result<(), &'static str> {
    match dialog.target.protocol {
        Protocol::Udp => Ok(()),
        Protocol::Tcp => match contact_addr(dialog.remote_target()) {
            Some(addr) => {
                dialog.target.remote = addr;
                Ok(())
            }
            None => Err("its Contact is no address we can connect to"),
        },
        Protocol::Tls => Err("TLS connections are never opened by us"),
    }
}

/// The subscription a record describes, out of any table, going on from its reservation.
fn unstored(s: Stored, dialog: crate::dialog::Dialog, now: u64) -> Subscription {
    let mut sub = Subscription {
        id: 0,
        dialog,
        names: Names::new(&s.list_uri, &s.subscriber),
        entries: s.entries,
        version: s.version_from,
        expires_at: Instant::now() + Duration::from_secs(s.expires_at.saturating_sub(now)),
        last_sent: Instant::now(),
        format: s.format,
        single: s.single,
        permit: None,
        version_limit: 0,
        cseq_limit: 0,
    };
    sub.dialog.next_cseq = s.cseq_from;
    sub
}

/// Goes on with a subscription that another process held and recorded (a cluster node
/// that died) as ours: back in the table, reached as `sent_by` (our Via and Contact), its
/// full state sent at once from its reservation (a version and CSeq above any that process
/// used: liblinphone 5.1 takes it as the new state of the same dialog). False when it
/// cannot go on (logged).
pub fn adopt(shared: &Arc<Shared>, mut s: Stored, sent_by: &str) -> bool {
    let target = s.dialog.target;
    s.dialog.retarget(&crate::dialog::Retarget { remote_target: None, target, sent_by: sent_by.to_string() });
    match revive(shared, s, crate::clock::unix_now()) {
        Some((sub, mailbox)) => {
            actor::start(sub, shared.clone(), mailbox, None);
            true
        }
        None => false,
    }
}

/// Ends a subscription that another process held and recorded (a cluster node that died):
/// its last NOTIFY, `terminated;reason=deactivated`, sent as `sent_by` (our Via and
/// Contact), from a CSeq above any that process used. Nothing is recorded here. False when
/// it could not be sent (logged).
pub async fn deactivate_stored(shared: &Shared, s: Stored, sent_by: &str) -> bool {
    let mut dialog = s.dialog.clone();
    if let Err(why) = reach(&mut dialog) {
        tracing::info!(call_id = %dialog.call_id(), "a taken-over subscription is not told it ends: {why}");
        return false;
    }
    let target = dialog.target;
    dialog.retarget(&crate::dialog::Retarget { remote_target: None, target, sent_by: sent_by.to_string() });
    let mut sub = unstored(s, dialog, crate::clock::unix_now());
    actor::deactivate_unstored(&mut sub, shared).await;
    true
}

fn drop_record<T>(shared: &Shared, s: &Stored, why: &str) -> Option<T> {
    tracing::info!(call_id = %s.dialog.call_id(), "stored subscription not resumed: {why}; the phone re-subscribes at its next refresh");
    shared.store.forget(s);
    None
}

/// Where a TCP Contact listens: its host, when an IP address, and port (5060 by default).
fn contact_addr(uri: &str) -> Option<SocketAddr> {
    let uri = Uri::parse(uri).ok()?;
    let ip: IpAddr = uri.host.trim_start_matches('[').trim_end_matches(']').parse().ok()?;
    Some(SocketAddr::new(ip, uri.port.unwrap_or(5060)))
}

/// Starts the resumed subscriptions at `per_second`, in steps of 10 ms, logging progress.
async fn pace<G>(shared: Arc<Shared>, ready: Vec<(Subscription, Handle)>, per_second: u32, _held: G) {
    let total = ready.len();
    let started = Instant::now();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut next_log = total / 10;
    let mut done = 0;
    let mut ready = ready.into_iter();
    while done < total {
        tick.tick().await;
        // As many as the rate allows by the end of this tick (the first tick starts some at
        // once); a tick that came late (the workers are busy) starts more, and the slots
        // keep that from becoming a burst.
        let due = ((started.elapsed() + TICK).as_secs_f64() * f64::from(per_second)) as usize;
        for (sub, mailbox) in ready.by_ref().take(due.saturating_sub(done)) {
            actor::start_resumed(sub, shared.clone(), mailbox, slot(&in_flight).await);
            done += 1;
        }
        if done >= next_log && done < total {
            tracing::info!(done, total, "resuming stored subscriptions");
            next_log += (total / 10).max(1);
        }
    }
    tracing::info!(total, secs = started.elapsed().as_secs_f64(), "every stored subscription resumed (full-state NOTIFYs started)");
}

/// How often the resumption starts what is due.
const TICK: Duration = Duration::from_millis(10);

/// Resumed subscriptions whose first NOTIFY is not answered yet, at most. Beyond the rate,
/// this is what keeps a node that builds NOTIFYs slower than `resume_per_second` from
/// queueing work faster than it can send it: the queue delays its own receive loop, the
/// answers to its NOTIFYs are dropped from a full socket buffer, and phones that answered
/// are then taken for unreachable (seen at a million resumed subscriptions).
const MAX_IN_FLIGHT: usize = 512;

/// A slot for one more resumed NOTIFY. A phone that does not answer holds its slot until
/// Timer F; one waited on for a second is given up on (a new slot is added in its place),
/// so unreachable phones slow the resumption down but do not stop it.
/// (None only if the semaphore were closed, which it never is.)
async fn slot(in_flight: &Arc<Semaphore>) -> Option<OwnedSemaphorePermit> {
    loop {
        match tokio::time::timeout(Duration::from_secs(1), in_flight.clone().acquire_owned()).await {
            Ok(permit) => return permit.ok(),
            Err(_) => in_flight.add_permits(1),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn tcp_contacts_give_an_address() {
        assert_eq!(super::contact_addr("sip:alice@192.0.2.7:5070;transport=tcp"), Some("192.0.2.7:5070".parse().unwrap()));
        assert_eq!(super::contact_addr("sip:alice@[2001:db8::1];transport=tcp"), Some("[2001:db8::1]:5060".parse().unwrap()));
        assert_eq!(super::contact_addr("sip:alice@phone.example.org;transport=tcp"), None);
    }
}
