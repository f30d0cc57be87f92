//! Keeps a node's mirror of the bindings current: the full load at start, the consumer
//! thread reading the Redis Stream of changes from the last id it applied (its own
//! connection, `XREAD BLOCK`), and the full resynchronisation when the node fell behind the
//! stream's trimming or Redis lost changes it had seen. Every change reaches the local
//! [`ChangeFeed`] exactly once, published here (local writes too: the writer waits until
//! this thread has applied its stream entry).
//!
//! Owns the mirror's updates, the applied position and the feed's publishing; the write
//! scripts and the trait are `bindings.rs`'s.

use super::binding_mirror::{Mirror, Value};
use super::conn::Redis;
use super::follow::{self, Follower, Pace};
use super::stream::{self, Behind, EntryId, Position};
use crate::numbers::E164;
use crate::storage::feed::{Change, ChangeFeed};
use crate::storage::StorageError;
use ::redis::{Connection, RedisResult};
use parking_lot::{Condvar, Mutex, RwLock};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest wait of one `XREAD BLOCK` (the stop flag is checked between reads).
const BLOCK: Duration = Duration::from_millis(1000);
/// Stream entries read at once.
const READ_COUNT: usize = 2000;
/// Fields read per `HSCAN` page during a load.
const SCAN_PAGE: usize = 10_000;
/// Pause before reconnecting after a failure.
const RETRY: Duration = Duration::from_millis(300);
/// How long a writer waits for the consumer to apply its own change before applying it to
/// the mirror itself (the consumer still publishes it when it gets there).
const WRITER_WAIT: Duration = Duration::from_secs(2);


/// The keys of the bindings (under the cluster's prefix).
pub(super) struct Keys {
    /// HASH: number digits -> `uri \t bound_at \t source`.
    pub fwd: String,
    /// Prefix of the SETs of numbers per URI (`<rev><uri>`).
    pub rev: String,
    /// STREAM of changes: fields `n` (digits), `o` (old URI or ""), `v` (new value or "").
    pub stream: String,
}

/// What the store and its consumer thread share.
pub(super) struct Shared {
    pub redis: Arc<Redis>,
    pub keys: Keys,
    pub mirror: RwLock<Mirror>,
    /// The last stream entry applied to the mirror.
    applied: Mutex<Position>,
    advanced: Condvar,
    pub feed: ChangeFeed,
    pub stop: AtomicBool,
}




impl Shared {
    pub fn new(redis: Arc<Redis>, keys: Keys) -> Shared {
        Shared {
            redis,
            keys,
            mirror: RwLock::new(Mirror::default()),
            applied: Mutex::new(Position::default()),
            advanced: Condvar::new(),
            feed: ChangeFeed::default(),
            stop: AtomicBool::new(false),
        }
    }

    /// The first load: fills the mirror (publishing nothing) and the position to read from.
    pub fn load_initial(&self) -> Result<(), crate::storage::StorageError> {
        let (fresh, start) = self.redis.run(|c| self.load(c))?;
        *self.mirror.write() = fresh;
        *self.applied.lock() = start;
        Ok(())
    }

    /// Reads every binding, in pages; returns them and the stream position they are at
    /// least as new as (changes after it are applied again on top, which is harmless).
    fn load(&self, c: &mut Connection) -> RedisResult<(Mirror, Position)> {
        let info = stream::info(c, &self.keys.stream)?.unwrap_or_default();
        let start = info.end();
        let total: usize = ::redis::cmd("HLEN").arg(&self.keys.fwd).query(c)?;
        let mut fresh = Mirror::with_capacity(total);
        let mut cursor = 0u64;
        loop {
            let (next, page): (u64, Vec<(String, String)>) =
                ::redis::cmd("HSCAN").arg(&self.keys.fwd).arg(cursor).arg("COUNT").arg(SCAN_PAGE).query(c)?;
            for (n, v) in &page {
                match (n.parse::<u64>(), Value::parse(v)) {
                    (Ok(n), Some(v)) => {
                        fresh.set(n, &v);
                    }
                    _ => tracing::warn!(number = %n, "unreadable binding in Redis, skipped"),
                }
            }
            if next == 0 {
                return Ok((fresh, start));
            }
            cursor = next;
        }
    }

    /// Reloads everything, publishes the differences with the mirror as changes (so that
    /// watchers are told), and goes on from the new position. Never silent: logs at warn.
    fn resync(&self, c: &mut Connection, why: &str) -> RedisResult<()> {
        let started = Instant::now();
        tracing::warn!(reason = why, "binding mirror behind Redis: full resynchronisation");
        let (fresh, start) = self.load(c)?;
        let changes = diff(&self.mirror.read(), &fresh);
        *self.mirror.write() = fresh;
        let count = changes.len();
        changes.into_iter().for_each(|ch| self.feed.publish(ch));
        self.advance(start);
        tracing::warn!(changes = count, bindings = self.mirror.read().len(), ms = started.elapsed().as_millis() as u64, "binding mirror resynchronised");
        Ok(())
    }

    fn advance(&self, to: Position) {
        *self.applied.lock() = to;
        self.advanced.notify_all();
    }

    /// Waits until the consumer applied entry `id` (a local write); past [`WRITER_WAIT`],
    /// applies it to the mirror with `apply` so that this node sees its own write.
    pub fn wait_applied(&self, id: EntryId, apply: impl FnOnce(&mut Mirror)) {
        let deadline = Instant::now() + WRITER_WAIT;
        let mut applied = self.applied.lock();
        while applied.id < id {
            if self.advanced.wait_until(&mut applied, deadline).timed_out() {
                drop(applied);
                tracing::warn!(entry = %id, "binding stream consumer late: write applied to the mirror directly");
                apply(&mut self.mirror.write());
                return;
            }
        }
    }

    /// One step: the trimming check and a read of the stream in one `MULTI` (so nothing
    /// can be trimmed between them), applied; when there is nothing new, a blocking read
    /// waits for the next change (its entries are read again by the next step: a blocked
    /// read may be served after a script appended and trimmed several entries).
    fn step(&self, c: &mut Connection) -> RedisResult<()> {
        let last = *self.applied.lock();
        let (info, entries) = stream::read_after(c, &self.keys.stream, last, READ_COUNT)?;
        match stream::gap(info.as_ref(), last) {
            Some(Behind::Gone) => return self.resync(c, "the change stream is gone from Redis"),
            Some(Behind::Lost) => return self.resync(c, "Redis holds fewer changes than this node applied (lost in a failover or restart)"),
            Some(Behind::Trimmed(_)) => return self.resync(c, "changes this node had not read were trimmed from the stream"),
            None => {}
        }
        if entries.is_empty() {
            return stream::wait_after(c, &self.keys.stream, last, BLOCK);
        }
        self.apply(entries)
    }

    fn apply(&self, entries: Vec<::redis::streams::StreamId>) -> RedisResult<()> {
        let Some(last) = entries.last().and_then(|e| EntryId::parse(&e.id)) else { return Ok(()) };
        let added = self.applied.lock().count + entries.len() as u64;
        let mut changes = Vec::with_capacity(entries.len());
        {
            let mut mirror = self.mirror.write();
            for e in &entries {
                match change_of(&e.map) {
                    Some((n, old, value)) => {
                        let new = match Value::parse(&value) {
                            Some(v) => {
                                mirror.set(n.digits(), &v);
                                Some(v.uri.to_string())
                            }
                            None => {
                                mirror.remove(n.digits());
                                None
                            }
                        };
                        changes.push(Change { number: n, old: Some(old).filter(|o| !o.is_empty()), new });
                    }
                    None => tracing::warn!(entry = %e.id, "unreadable binding change in the stream, skipped"),
                }
            }
        }
        changes.into_iter().for_each(|c| self.feed.publish(c));
        self.advance(Position { id: last, count: added });
        Ok(())
    }
}

/// (number, old URI, new value) of a stream entry.
fn change_of(map: &HashMap<String, ::redis::Value>) -> Option<(E164, String, String)> {
    let text = |k: &str| map.get(k).and_then(|v| ::redis::from_redis_value::<String>(v.clone()).ok());
    let n = E164::from_digits(text("n")?.parse().ok()?).ok()?;
    Some((n, text("o")?, text("v")?))
}

/// The changes that turn `old` into `fresh`.
fn diff(old: &Mirror, fresh: &Mirror) -> Vec<Change> {
    let mut changes = Vec::new();
    let number = |n: u64| E164::from_digits(n).ok();
    for (n, uri) in fresh.entries() {
        let before = old.uri_of(n);
        if before != Some(uri) {
            if let Some(number) = number(n) {
                changes.push(Change { number, old: before.map(|s| s.to_string()), new: Some(uri.to_string()) });
            }
        }
    }
    for (n, uri) in old.entries() {
        if !fresh.contains(n) {
            if let Some(number) = number(n) {
                changes.push(Change { number, old: Some(uri.to_string()), new: None });
            }
        }
    }
    changes
}


/// Starts the consumer thread; it runs until `shared.stop` is set.
pub(super) fn spawn(shared: Arc<Shared>) -> std::io::Result<()> {
    let pace = Pace { read_timeout: shared.redis.options().timeout + BLOCK, unreachable: RETRY, failed: RETRY };
    let redis = shared.redis.clone();
    let mut consumer = Consumer { shared, failing: false };
    std::thread::Builder::new().name("binding-stream".into()).spawn(move || follow::run(&redis, pace, &mut consumer)).map(|_| ())
}

/// The consumer thread: the shared state it applies the stream to, and whether it is
/// failing (said once, and once when it recovers).
struct Consumer {
    shared: Arc<Shared>,
    failing: bool,
}

impl Follower for Consumer {
    fn stopped(&self) -> bool {
        self.shared.stop.load(Ordering::Relaxed)
    }

    fn step(&mut self, conn: &mut Connection) -> Result<bool, StorageError> {
        self.shared.step(conn).map_err(StorageError::new)?;
        Ok(true)
    }

    fn unreachable(&mut self, e: &StorageError) {
        if !self.failing {
            tracing::warn!(error = %e, "binding stream: Redis unreachable, lookups go on from the mirror");
            self.failing = true;
        }
    }

    fn failed(&mut self, e: &StorageError) {
        if !self.failing {
            tracing::warn!(error = %e, "binding stream read failed; reconnecting");
            self.failing = true;
        }
    }

    fn went_on(&mut self) {
        if self.failing {
            tracing::info!("binding stream: Redis reachable again, catching up");
            self.failing = false;
        }
    }
}
