//! Resuming the stored subscriptions after a start (`durable.rs` keeps them).
//!
//! The store is read on a thread of its own while the listeners already serve: each
//! unexpired record is put back in the table and handed to the pacer, which gives it a
//! full-state NOTIFY with a new version at `subscription.resume_per_second` (a million
//! resumed subscriptions must not burst); the progress is logged. Until the whole store is
//! read, a refresh or unsubscribe for a dialog not in the table yet waits for the load to
//! end (see `loading.rs`) instead of getting 481. Expired records are dropped. A UDP
//! subscriber is reached at its recorded address. A TCP subscriber's connection died with
//! the old process: the NOTIFY goes on a new connection to its Contact, once; if that fails
//! the subscription ends (a phone behind NAT re-subscribes at its next refresh). We never
//! open TLS connections, so a TLS subscription is not resumed.

use super::actor::{self, Shared};
use super::durable::Stored;
use super::record::{Handle, Names, Subscription};
use crate::sip::Uri;
use crate::transport::Protocol;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// What a start found in the store.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Resumed {
    /// Put back in the table, each to get its NOTIFY.
    resumed: usize,
    expired: usize,
    /// Not resumable: TLS, a Contact we cannot reach over TCP, or over the caps.
    dropped: usize,
}

/// Ends the load however the loading thread ends (a panic too): nothing then waits for it.
struct LoadEnds(Arc<Shared>);

impl Drop for LoadEnds {
    fn drop(&mut self) {
        self.0.store.read_back_done();
        self.0.loading.set(false);
    }
}

/// Reads the store back on a thread of its own and starts the paced NOTIFYs as records
/// come. `held_while_pacing` is dropped once every resumed subscription has been started
/// (the server is not ready until then).
pub fn resume<G: Send + 'static>(shared: &Arc<Shared>, per_second: u32, held_while_pacing: G) {
    if shared.store.is_empty() {
        return; // a first start: ready at once
    }
    let (ready, queue) = mpsc::unbounded_channel();
    shared.store.begin_read_back();
    shared.loading.set(true);
    let ends = LoadEnds(shared.clone());
    tokio::task::spawn_blocking(move || load(&ends.0, ready));
    tokio::spawn(pace(shared.clone(), queue, per_second.max(1), held_while_pacing));
}

/// Records put back in the table before their numbers go into the reverse index, at once.
/// A bigger batch visits each of the index's buckets less often (8,192 lists of 100
/// numbers put ~12 entries in a bucket) and holds the table's lock longer (tens of ms).
const LOAD_BATCH: usize = 8192;

/// A batch goes to the index and the pacer once this old, full or not: the pacer is never
/// left waiting on a slow load (a debug build, a busy machine).
const LOAD_BATCH_AGE: std::time::Duration = std::time::Duration::from_millis(100);

/// Loaded subscriptions not handed to the pacer yet, with their numbers to watch.
struct Batch {
    revived: Vec<Revived>,
    since: std::time::Instant,
}

/// A subscription back in the table, its numbers not watched yet (see `revive`).
type Revived = (Subscription, Handle, Vec<crate::numbers::E164>);

impl Batch {
    fn new() -> Batch {
        Batch { revived: Vec::new(), since: std::time::Instant::now() }
    }

    fn is_due(&self) -> bool {
        self.revived.len() >= LOAD_BATCH || self.since.elapsed() >= LOAD_BATCH_AGE
    }

    /// The batch's numbers into the index, then its subscriptions to the pacer; false when
    /// the pacer is gone (the runtime is stopping).
    fn hand_over(&mut self, shared: &Shared, ready: &mpsc::UnboundedSender<(Subscription, Handle)>) -> bool {
        shared.table.watch_loaded(self.revived.iter().map(|(sub, _, numbers)| (sub.id, numbers.as_slice())));
        self.since = std::time::Instant::now();
        self.revived.drain(..).all(|(sub, mailbox, _)| ready.send((sub, mailbox)).is_ok())
    }
}

/// Puts every unexpired record back in the table and hands it to the pacer.
fn load(shared: &Arc<Shared>, ready: mpsc::UnboundedSender<(Subscription, Handle)>) {
    let now = crate::clock::unix_now();
    let started = std::time::Instant::now();
    let mut counts = Resumed::default();
    let mut batch = Batch::new();
    for stored in shared.store.read_back() {
        if shared.loading.stopping() {
            batch.hand_over(shared, &ready);
            tracing::info!(read = counts.resumed + counts.expired + counts.dropped, "stopping: the stored subscriptions not read back yet stay stored for the next start");
            return;
        }
        if stored.expires_at <= now {
            counts.expired += 1;
            shared.store.forget(&stored);
            continue;
        }
        let Ok(revived) = revive(shared, stored, now) else {
            counts.dropped += 1;
            continue;
        };
        batch.revived.push(revived);
        counts.resumed += 1;
        if batch.is_due() && !batch.hand_over(shared, &ready) {
            return;
        }
    }
    if !batch.hand_over(shared, &ready) {
        return;
    }
    if counts != Resumed::default() {
        let secs = started.elapsed().as_secs_f64();
        tracing::info!(resumed = counts.resumed, expired = counts.expired, dropped = counts.dropped, secs, "stored subscriptions loaded");
    }
}

/// A stored subscription back in the table, its numbers not watched yet (see
/// `Subscriptions::insert_unwatched`), or the record back (logged and forgotten) when it
/// cannot go on.
fn revive(shared: &Arc<Shared>, s: Stored, now: u64) -> Result<Revived, Stored> {
    let mut dialog = s.dialog.clone();
    if let Err(why) = reach(&mut dialog) {
        return drop_record(shared, s, why);
    }
    let permit = match shared.limits.subscribe(&s.subscriber, dialog.target.remote.ip(), s.entries.len()) {
        Ok(p) => p.marked_single(s.single),
        Err(_) => return drop_record(shared, s, "over the subscription caps"),
    };
    let mut sub = unstored(s, dialog, now);
    sub.permit = Some(permit);
    let (id, mailbox, numbers) = shared.table.insert_unwatched(sub.dialog.call_id(), sub.dialog.local_tag(), sub.keys(), sub.expires_at);
    sub.id = id;
    if let Some(owner) = shared.lists.owner_of_record(sub.names.list_uri(), sub.names.subscriber()) {
        // A stored list follows its book again, and catches up with what changed meanwhile.
        shared.table.follow_book(id, &owner);
        shared.lists.books.touch(&owner);
    }
    Ok((sub, mailbox, numbers))
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

/// The subscription a record describes, out of any table, going on from its reservation:
/// up to its end when the store holds it for this start (`Stored::reserved`), else its
/// first send rewrites the record with a new one.
fn unstored(s: Stored, dialog: crate::dialog::Dialog, now: u64) -> Subscription {
    let limit = |from: u32| if s.reserved { from.saturating_add(super::durable::RESERVE) } else { 0 };
    let (version_limit, cseq_limit) = (limit(s.version_from), limit(s.cseq_from));
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
        version_limit,
        cseq_limit,
    };
    sub.dialog.next_cseq = s.cseq_from;
    sub
}

/// Goes on with a subscription that another process held and recorded (a cluster node
/// that died) as ours: back in the table, reached as `sent_by` (our Via and Contact), its
/// full state sent at once from its reservation (a version and CSeq above any that process
/// used: liblinphone 5.1 takes it as the new state of the same dialog). The record back
/// when it cannot go on (logged).
pub fn adopt(shared: &Arc<Shared>, mut s: Stored, sent_by: &str) -> Result<(), Stored> {
    shared.store.claim(&s.dialog); // not to be read back as well, if this node is still loading
    let target = s.dialog.target;
    s.dialog.retarget(&crate::dialog::Retarget { remote_target: None, target, sent_by: sent_by.to_string() });
    let (sub, mailbox, numbers) = revive(shared, s, crate::clock::unix_now())?;
    shared.table.watch_loaded([(sub.id, numbers.as_slice())]);
    actor::start(sub, shared.clone(), mailbox, None);
    Ok(())
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

fn drop_record<T>(shared: &Shared, s: Stored, why: &str) -> Result<T, Stored> {
    tracing::info!(call_id = %s.dialog.call_id(), "stored subscription not resumed: {why}; the phone re-subscribes at its next refresh");
    shared.store.forget(&s);
    Err(s)
}

/// Where a TCP Contact listens: its host, when an IP address, and port (5060 by default).
fn contact_addr(uri: &str) -> Option<SocketAddr> {
    let uri = Uri::parse(uri).ok()?;
    let ip: IpAddr = uri.host.trim_start_matches('[').trim_end_matches(']').parse().ok()?;
    Some(SocketAddr::new(ip, uri.port.unwrap_or(5060)))
}

/// Starts the resumed subscriptions at `per_second` as the load hands them over, in steps
/// of 10 ms, logging progress.
async fn pace<G>(shared: Arc<Shared>, mut queue: mpsc::UnboundedReceiver<(Subscription, Handle)>, per_second: u32, _held: G) {
    let started = Instant::now();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut next_log = LOG_EVERY;
    let (mut done, mut since, mut done_since) = (0, started, 0);
    loop {
        tick.tick().await;
        // As many as the rate allows by the end of this tick (the first tick starts some at
        // once); a tick that came late (the workers are busy) starts more, and the slots
        // keep that from becoming a burst. When the load is behind, the rate counts again
        // from when it had nothing to give, so what it gives later does not burst either.
        let due = done_since + ((since.elapsed() + TICK).as_secs_f64() * f64::from(per_second)) as usize;
        while done < due {
            match queue.try_recv() {
                Ok((sub, mailbox)) => actor::start_resumed(sub, shared.clone(), mailbox, slot(&in_flight).await),
                Err(mpsc::error::TryRecvError::Empty) => {
                    // Counted from the next tick on (`elapsed` is 0 until then): one tick's
                    // worth at the next tick, not two.
                    (since, done_since) = (Instant::now() + TICK, done);
                    break;
                }
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    if done > 0 {
                        tracing::info!(total = done, secs = started.elapsed().as_secs_f64(), "every stored subscription resumed (full-state NOTIFYs started)");
                    }
                    return;
                }
            }
            done += 1;
        }
        if done >= next_log {
            tracing::info!(done, "resuming stored subscriptions");
            next_log += LOG_EVERY;
        }
    }
}

/// Progress is logged every this many resumed subscriptions.
const LOG_EVERY: usize = 100_000;

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
