//! The registry of live list subscriptions: by dialog, the reverse index from each
//! watched key (number or SIP user) to the subscriptions watching it, and when each
//! expires. The one owner of that shared state; each subscription's own state lives in
//! its task or, while idle, parked in its mailbox (`actor.rs`, `mailbox.rs`).

use super::mailbox::Posted;
use super::record::{Handle, Inbox, Relist, SubId, Woken};
use crate::index::Change;
use crate::numbers::{self, E164};
use crate::resolution::Key;
use parking_lot::Mutex;
use std::cmp::Reverse;
use std::collections::hash_map::RandomState;
use std::collections::{BinaryHeap, HashMap};
use std::hash::BuildHasher;
use super::phones::PhoneIndex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use tokio::time::Instant;


pub struct Subscriptions {
    next_id: AtomicU32,
    stats: DeliveryStats,
    /// Expiry times are kept in whole seconds from here (4 bytes each).
    epoch: Instant,
    inner: Mutex<Table>,
}

impl Default for Subscriptions {
    fn default() -> Self {
        Subscriptions { next_id: AtomicU32::new(0), stats: DeliveryStats::default(), epoch: Instant::now(), inner: Mutex::default() }
    }
}

/// NOTIFYs that did not arrive, by what became of their subscription; each is also
/// logged at warn where it happens (`actor::deliver`).
#[derive(Debug, Default)]
pub struct DeliveryStats {
    /// Unanswered by Timer F on a connection still open: the subscription went on.
    pub unanswered_kept: AtomicU64,
    /// Unanswered over UDP, or not sent for want of a connection: the subscription ended.
    pub unreachable: AtomicU64,
    /// Too large to send at all: the subscription ended with a terminated NOTIFY.
    pub undeliverable: AtomicU64,
    /// Refused by the subscriber (481 and the like): the subscription ended.
    pub refused: AtomicU64,
}

impl DeliveryStats {
    pub fn count(&self, counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Who watches one SIP user. Most numbers have one watcher: no allocation for them.
enum Watchers {
    One(SubId),
    Many(Vec<SubId>),
}

impl Watchers {
    fn add(&mut self, id: SubId) {
        match self {
            Watchers::One(first) if *first == id => {}
            Watchers::One(first) => *self = Watchers::Many(vec![*first, id]),
            Watchers::Many(ids) if ids.last() == Some(&id) => {}
            Watchers::Many(ids) => ids.push(id),
        }
    }

    /// Removes `id`; true when nobody is left.
    fn remove(&mut self, id: SubId) -> bool {
        match self {
            Watchers::One(first) => *first == id,
            Watchers::Many(ids) => {
                ids.retain(|s| *s != id);
                let (empty, single) = (ids.is_empty(), (ids.len() == 1).then(|| ids[0]));
                if let Some(only) = single {
                    *self = Watchers::One(only);
                }
                empty
            }
        }
    }

    fn ids(&self) -> &[SubId] {
        match self {
            Watchers::One(id) => std::slice::from_ref(id),
            Watchers::Many(ids) => ids,
        }
    }
}

#[derive(Default)]
struct Table {
    /// By a keyed 64-bit hash of (Call-ID, our tag): 12 bytes, not two strings. Two
    /// dialogs whose hashes collide (once in 2^64 pairs; the key is secret) would make the
    /// older unreachable for refreshes, which then get 481 and re-subscribe.
    by_dialog: HashMap<u64, SubId>,
    dialog_hasher: RandomState,
    handles: HashMap<SubId, Handle>,
    /// The reverse index: numbers in a packed table, SIP users in a map.
    phones: PhoneIndex,
    sips: HashMap<Box<str>, Watchers>,
    /// When each subscription expires, in seconds from `epoch`, soonest first. A refresh
    /// adds an entry; the stale one only wakes the subscription for nothing.
    expiry: BinaryHeap<Reverse<(u32, SubId)>>,
    /// Stored-list subscriptions by the account whose book they watch, and back.
    books: HashMap<Box<str>, Vec<SubId>>,
    book_of: HashMap<SubId, Box<str>>,
}

impl Table {
    fn dialog_key(&self, call_id: &str, local_tag: &str) -> u64 {
        self.dialog_hasher.hash_one((call_id, local_tag))
    }

    fn watch(&mut self, key: Key, id: SubId) {
        match key {
            Key::Phone(n) => self.phones.watch(n, id),
            Key::Sip(uri) => {
                self.sips.entry(uri).and_modify(|w| w.add(id)).or_insert(Watchers::One(id));
            }
        }
    }

    fn unwatch(&mut self, key: &Key, id: SubId) {
        match key {
            Key::Phone(n) => self.phones.unwatch(*n, id),
            Key::Sip(uri) => {
                if self.sips.get_mut(uri).is_some_and(|w| w.remove(id)) {
                    self.sips.remove(uri);
                }
            }
        }
    }

    fn watchers(&self, key: &Key) -> Vec<SubId> {
        match key {
            Key::Phone(n) => self.phones.watchers(*n),
            Key::Sip(uri) => self.sips.get(uri).map_or(Vec::new(), |w| w.ids().to_vec()),
        }
    }
}

/// A list's phone numbers (watched in one go) and its other keys.
fn phones_apart(keys: impl Iterator<Item = Key>) -> (Vec<E164>, Vec<Key>) {
    let mut phones = Vec::new();
    let mut others = Vec::new();
    for key in keys {
        match key {
            Key::Phone(n) => phones.push(n),
            other => others.push(other),
        }
    }
    (phones, others)
}

impl Subscriptions {
    /// Registers a new subscription; returns its id and the receiving end for its task.
    pub fn insert(&self, call_id: &str, local_tag: &str, keys: impl Iterator<Item = Key>, expires_at: Instant) -> (SubId, Handle) {
        let (phones, others) = phones_apart(keys);
        self.enter(call_id, local_tag, others, expires_at, |t, id| t.phones.watch_all(&phones, id))
    }

    /// `insert` for a restart's load: the list's numbers come back, not watched yet. The
    /// load gives many lists' numbers to `watch_loaded` at once, before it starts any of
    /// them (only a started subscription's task removes it from the table).
    pub fn insert_unwatched(&self, call_id: &str, local_tag: &str, keys: impl Iterator<Item = Key>, expires_at: Instant) -> (SubId, Handle, Vec<E164>) {
        let (phones, others) = phones_apart(keys);
        let (id, handle) = self.enter(call_id, local_tag, others, expires_at, |_, _| ());
        (id, handle, phones)
    }

    /// Subscriptions from `insert_unwatched` watch their numbers, put in the index's order
    /// outside the lock: the lock is held for the index's writes alone.
    pub fn watch_loaded<'a>(&self, lists: impl IntoIterator<Item = (SubId, &'a [E164])>) {
        let locator = self.inner.lock().phones.locator();
        let ordered = locator.order(lists);
        self.inner.lock().phones.watch_ordered(ordered);
    }

    fn enter(&self, call_id: &str, local_tag: &str, others: Vec<Key>, expires_at: Instant, watch_phones: impl FnOnce(&mut Table, SubId)) -> (SubId, Handle) {
        let id = self.new_id();
        let handle = Handle::default();
        let due = self.seconds(expires_at);
        crate::memory::long_lived(|| {
            let mut t = self.inner.lock();
            let dialog = t.dialog_key(call_id, local_tag);
            t.by_dialog.insert(dialog, id);
            t.handles.insert(id, handle.clone());
            t.expiry.push(Reverse((due, id)));
            watch_phones(&mut t, id);
            for key in others {
                t.watch(key, id);
            }
        });
        (id, handle)
    }

    /// Subscription `id` now expires at `at` (a refresh).
    pub fn schedule(&self, id: SubId, at: Instant) {
        let due = self.seconds(at);
        self.inner.lock().expiry.push(Reverse((due, id)));
    }

    /// Wakes the subscriptions due to expire by `now`; they end themselves.
    pub fn expire(&self, now: Instant) -> Vec<Woken> {
        let now = now.saturating_duration_since(self.epoch).as_secs();
        let mut due = Vec::new();
        {
            let mut t = self.inner.lock();
            while let Some(Reverse((at, id))) = t.expiry.peek().copied() {
                if u64::from(at) > now {
                    break;
                }
                t.expiry.pop();
                due.extend(t.handles.get(&id).cloned());
            }
            if t.expiry.len() * 4 < t.expiry.capacity() {
                let keep = t.expiry.len() * 2;
                t.expiry.shrink_to(keep);
            }
        }
        wake_all(due, |_| {})
    }

    /// `at` in whole seconds from `epoch`, rounded up (an expiry never comes early).
    fn seconds(&self, at: Instant) -> u32 {
        let d = at.saturating_duration_since(self.epoch);
        let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
        u32::try_from(secs).unwrap_or(u32::MAX)
    }

    /// The next id: never 0, nor `SubId::MAX` (the reverse index's marker).
    fn new_id(&self) -> SubId {
        loop {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
            if id != 0 && id != SubId::MAX {
                return id;
            }
        }
    }

    /// Forgets a subscription; `keys` are the ones it was registered with.
    pub fn remove(&self, id: SubId, call_id: &str, local_tag: &str, keys: impl Iterator<Item = Key>) {
        crate::memory::long_lived(|| self.forget(id, call_id, local_tag, keys));
    }

    /// `remove`, among long-lived allocations: the index frees chunks and shrinks their lists.
    fn forget(&self, id: SubId, call_id: &str, local_tag: &str, keys: impl Iterator<Item = Key>) {
        let mut t = self.inner.lock();
        let dialog = t.dialog_key(call_id, local_tag);
        if t.by_dialog.get(&dialog) == Some(&id) {
            t.by_dialog.remove(&dialog);
        }
        t.handles.remove(&id);
        let (phones, others) = phones_apart(keys);
        t.phones.unwatch_all(&phones, id);
        for key in others {
            t.unwatch(&key, id);
        }
        if let Some(owner) = t.book_of.remove(&id) {
            forget_book(&mut t.books, &owner, id);
            shrink(&mut t.book_of);
        }
        shrink(&mut t.handles);
        shrink(&mut t.by_dialog);
        shrink(&mut t.sips);
    }

    pub fn find(&self, call_id: &str, local_tag: &str) -> Option<Handle> {
        let t = self.inner.lock();
        let id = t.by_dialog.get(&t.dialog_key(call_id, local_tag))?;
        t.handles.get(id).cloned()
    }

    /// What became of NOTIFYs that did not arrive.
    pub fn stats(&self) -> &DeliveryStats {
        &self.stats
    }

    pub fn len(&self) -> usize {
        self.inner.lock().handles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries of the reverse index: (number, subscription) pairs and SIP URIs watched
    /// (for stats and tests).
    pub fn watched_keys(&self) -> usize {
        let t = self.inner.lock();
        t.phones.len() + t.sips.len()
    }

    /// Tells every subscription watching what `change` (published `at`) touched; returns
    /// those it woke.
    pub fn on_change(&self, change: &Change, at: std::time::Instant) -> Vec<Woken> {
        let phone = Key::Phone(change.number);
        let mut woken = self.notify_watchers(&phone, change.new.is_none(), Some(at));
        if change.old != change.new {
            if let Some(old) = change.old.as_deref().and_then(sip_key) {
                woken.extend(self.notify_watchers(&old, true, Some(at)));
            }
            if let Some(new) = change.new.as_deref().and_then(sip_key) {
                woken.extend(self.notify_watchers(&new, false, Some(at)));
            }
        }
        woken
    }

    /// A user's presence changed: every subscription watching one of his numbers, or his
    /// SIP URI, gets his new state. Returns those it woke.
    pub fn on_presence(&self, uri: &str, numbers: &[crate::numbers::E164]) -> Vec<Woken> {
        let mut woken = Vec::new();
        for n in numbers {
            woken.extend(self.notify_watchers(&Key::Phone(*n), false, None));
        }
        woken.extend(self.notify_watchers(&Key::Sip(uri.into()), false, None));
        woken
    }

    /// A clean stop set to deactivate: every subscription ends with
    /// `terminated;reason=deactivated`. Returns those it woke.
    pub fn deactivate_all(&self) -> Vec<Woken> {
        let handles: Vec<Handle> = self.inner.lock().handles.values().cloned().collect();
        wake_all(handles, |i| i.deactivate = true)
    }

    /// Another cluster node adopted every subscription: each ends without a NOTIFY.
    pub fn hand_over_all(&self) -> Vec<Woken> {
        let handles: Vec<Handle> = self.inner.lock().handles.values().cloned().collect();
        wake_all(handles, |i| i.handed_over = true)
    }

    /// After a gap in the change feed: every subscription re-sends full state.
    pub fn resync_all(&self) -> Vec<Woken> {
        let handles: Vec<Handle> = self.inner.lock().handles.values().cloned().collect();
        wake_all(handles, |i| i.full = true)
    }

    /// Subscription `id` watches `owner`'s stored book (`books.rs`).
    pub fn follow_book(&self, id: SubId, owner: &str) {
        let mut t = self.inner.lock();
        if !t.handles.contains_key(&id) {
            return;
        }
        t.books.entry(owner.into()).or_default().push(id);
        t.book_of.insert(id, owner.into());
    }

    /// Whether some subscription watches `owner`'s stored book.
    pub fn follows_book(&self, owner: &str) -> bool {
        self.inner.lock().books.contains_key(owner)
    }

    /// The owners whose stored books subscriptions here watch.
    pub fn book_owners(&self) -> Vec<Box<str>> {
        self.inner.lock().books.keys().cloned().collect()
    }

    /// `owner`'s stored book changed: each subscription watching it gets `relist`.
    /// Returns those it woke.
    pub fn relist(&self, owner: &str, relist: &Relist) -> Vec<Woken> {
        let handles: Vec<Handle> = {
            let t = self.inner.lock();
            t.books.get(owner).into_iter().flatten().filter_map(|id| t.handles.get(id).cloned()).collect()
        };
        wake_all(handles, |i| i.relist = Some(relist.clone()))
    }

    /// Subscription `id` now watches a new list: the reverse index follows.
    pub fn rewatch(&self, id: SubId, removed: impl Iterator<Item = Key>, added: impl Iterator<Item = Key>) {
        let mut t = self.inner.lock();
        for key in removed {
            t.unwatch(&key, id);
        }
        for key in added {
            t.watch(key, id);
        }
        shrink(&mut t.sips);
    }

    /// `binding_at`: when the binding change behind this was published.
    fn notify_watchers(&self, key: &Key, removal: bool, binding_at: Option<std::time::Instant>) -> Vec<Woken> {
        let handles: Vec<Handle> = {
            let t = self.inner.lock();
            t.watchers(key).iter().filter_map(|id| t.handles.get(id).cloned()).collect()
        };
        let mut woken = Vec::new();
        for h in handles {
            let post = |i: &mut Inbox| {
                i.change(key.clone(), removal);
                binding_at.inspect(|at| i.binding_changed(*at));
            };
            if let Posted::Woken(sub) = h.post(post) {
                woken.push(Woken { sub, mailbox: h });
            }
        }
        woken
    }
}

/// Posts `f` to each of `handles`; returns the subscriptions it woke.
fn wake_all(handles: Vec<Handle>, f: impl Fn(&mut Inbox)) -> Vec<Woken> {
    let mut woken = Vec::new();
    for h in handles {
        if let Posted::Woken(sub) = h.post(&f) {
            woken.push(Woken { sub, mailbox: h });
        }
    }
    woken
}

/// Takes `id` off `owner`'s stored-list subscriptions.
fn forget_book(books: &mut HashMap<Box<str>, Vec<SubId>>, owner: &str, id: SubId) {
    if let Some(ids) = books.get_mut(owner) {
        ids.retain(|s| *s != id);
        if ids.is_empty() {
            books.remove(owner);
            shrink(books);
        }
    }
}

/// Gives back the room of a map that lost most of its entries.
fn shrink<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>) {
    if map.len() * 4 < map.capacity() && map.capacity() > 64 {
        map.shrink_to(map.len() * 2);
    }
}

fn sip_key(uri: &str) -> Option<Key> {
    match numbers::from_uri(uri, None) {
        numbers::UriKind::Sip(s) => Some(Key::Sip(s.into())),
        _ => None,
    }
}
