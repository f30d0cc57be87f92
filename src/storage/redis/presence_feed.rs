//! The presence change feed, read by each node: a thread of its own follows the Redis
//! Stream of changed presentities from the last id it read and applies each record to the
//! node's [`Mirror`] (which announces changes to this node's watchers). Nothing is lost
//! silently: at start, and whenever entries may have been missed (the stream was trimmed
//! past the last id read, or Redis came back without it), the node reloads every
//! presentity from Redis and announces those that changed.
//!
//! Owns the feed's position and its connection; the keys' meaning is `presence`'s.

use super::follow::{self, Follower, Pace};
use super::presence_mirror::Mirror;
use super::presence_state::Presentity;
use super::stream::{self, EntryId, Position};
use super::{scan, Redis};
use crate::storage::StorageError;
use ::redis::{Connection, Value};
use std::collections::HashSet;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// Longest blocking read: how soon the thread notices its store is gone.
const BLOCK: Duration = Duration::from_secs(1);
/// Entries read at once.
const BATCH: usize = 512;
/// Keys read at once in a full reload.
const RELOAD_BATCH: usize = 500;

/// The keys the feed reads.
pub struct Keys {
    pub redis: Arc<Redis>,
    /// The stream of changes.
    pub stream: String,
    /// A presentity's key is `presentity` followed by his URI.
    pub presentity: String,
}

/// Fills `mirror` from Redis, then follows the stream on a thread until `mirror` is dropped
/// or its channel closed.
pub fn start(keys: Keys, mirror: &Arc<Mirror>) -> Result<(), StorageError> {
    let at = reload(&keys, mirror)?;
    let mut feed = Feed { keys, mirror: Arc::downgrade(mirror), at };
    let pace = Pace { read_timeout: BLOCK * 3, unreachable: super::conn::BACKOFF, failed: Duration::ZERO };
    let redis = feed.keys.redis.clone();
    std::thread::Builder::new().name("presence-feed".into()).spawn(move || follow::run(&redis, pace, &mut feed)).map_err(StorageError::new)?;
    Ok(())
}

/// The feed thread's state: where it is in the stream, and the mirror it fills.
struct Feed {
    keys: Keys,
    mirror: Weak<Mirror>,
    at: Position,
}

impl Follower for Feed {
    fn stopped(&self) -> bool {
        self.mirror.upgrade().is_none_or(|m| m.closed())
    }

    fn step(&mut self, conn: &mut Connection) -> Result<bool, StorageError> {
        let Some(mirror) = self.mirror.upgrade() else { return Ok(false) };
        step(&self.keys, &mirror, conn, &mut self.at)?;
        Ok(true)
    }

    fn unreachable(&mut self, e: &StorageError) {
        tracing::debug!("presence feed: Redis unreachable: {e}");
    }

    fn failed(&mut self, e: &StorageError) {
        tracing::warn!("presence feed: {e}; reconnecting");
    }
}

/// Reads what follows `at`, with the stream's state in the same instant (one MULTI), and
/// applies it; reloads in full if entries after `at` are gone; waits (a blocking read)
/// when there is nothing new.
fn step(keys: &Keys, mirror: &Mirror, conn: &mut Connection, at: &mut Position) -> Result<(), StorageError> {
    let (info, entries) = stream::read_after(conn, &keys.stream, *at, BATCH).map_err(StorageError::new)?;
    if stream::missed(info.as_ref(), *at, "presence feed") {
        *at = reload(keys, mirror)?;
        return Ok(());
    }
    if entries.is_empty() {
        return stream::wait_after(conn, &keys.stream, *at, BLOCK).map_err(StorageError::new);
    }
    let now = unix_ms();
    for entry in entries {
        if let Some(id) = EntryId::parse(&entry.id) {
            *at = Position { id, count: at.count + 1 };
        }
        apply(mirror, entry.map, now);
    }
    Ok(())
}

/// One entry: `u` the presentity, and `s` his record, or `a` (announce him only).
fn apply(mirror: &Mirror, mut fields: std::collections::HashMap<String, Value>, now: u64) {
    let text = |v: Option<Value>| v.and_then(|v| ::redis::from_redis_value::<String>(v).ok());
    let Some(uri) = text(fields.remove("u")) else { return };
    match fields.remove("s").map(::redis::from_redis_value::<Vec<u8>>) {
        Some(Ok(bytes)) => match Presentity::decode(&bytes) {
            Ok(p) => mirror.apply(&uri, p, now, false),
            Err(e) => tracing::warn!(uri, "presence feed: a record that does not decode skipped: {e}"),
        },
        Some(Err(e)) => tracing::warn!(uri, "presence feed: a bad entry skipped: {e}"),
        None if fields.contains_key("a") => mirror.announce(&uri),
        None => {}
    }
}

/// Reads every presentity from Redis into `mirror` (announcing those that changed) and
/// returns the stream position to follow from: taken before reading, so that a change
/// made meanwhile is read again rather than missed.
pub fn reload(keys: &Keys, mirror: &Mirror) -> Result<Position, StorageError> {
    let started = std::time::Instant::now();
    let mut conn = keys.redis.dedicated(Some(Duration::from_secs(30)))?;
    let from = stream::info(&mut conn, &keys.stream).map_err(StorageError::new)?.map_or(Position::default(), |i| i.end());
    let pattern = scan::under(&keys.presentity, "*");
    let (mut cursor, mut known, now) = (0u64, HashSet::new(), unix_ms());
    loop {
        let (next, page): (u64, Vec<(String, Vec<u8>)>) = scan::page(&mut conn, &pattern, cursor, RELOAD_BATCH).map_err(StorageError::new)?;
        for (name, bytes) in page {
            let Some(uri) = name.strip_prefix(&keys.presentity) else { continue };
            match Presentity::decode(&bytes) {
                Ok(p) => {
                    known.insert(Box::<str>::from(uri));
                    mirror.apply(uri, p, now, true);
                }
                Err(e) => tracing::warn!(uri, "presence: a stored record that does not decode skipped: {e}"),
            }
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
    mirror.retain_only(&known);
    tracing::info!(presentities = known.len(), ms = started.elapsed().as_millis() as u64, "presence mirror loaded from Redis");
    Ok(from)
}

/// Wall-clock unix milliseconds (0 before the epoch).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
