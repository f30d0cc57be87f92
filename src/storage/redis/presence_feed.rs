//! The presence change feed, read by each node: a thread of its own follows the Redis
//! Stream of changed presentities from the last id it read and applies each record to the
//! node's [`Mirror`] (which announces changes to this node's watchers). Nothing is lost
//! silently: at start, and whenever entries may have been missed (the stream was trimmed
//! past the last id read, or Redis came back without it), the node reloads every
//! presentity from Redis and announces those that changed.
//!
//! Owns the feed's position and its connection; the keys' meaning is `presence`'s.

use super::stream::{self, Behind, EntryId, Position, StreamInfo};
use super::presence_mirror::Mirror;
use super::presence_state::Presentity;
use super::Redis;
use crate::storage::StorageError;
use ::redis::streams::StreamRangeReply;
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
    let weak = Arc::downgrade(mirror);
    std::thread::Builder::new().name("presence-feed".into()).spawn(move || follow(keys, weak, at)).map_err(StorageError::new)?;
    Ok(())
}

fn follow(keys: Keys, mirror: Weak<Mirror>, mut at: Position) {
    let mut conn: Option<Connection> = None;
    loop {
        let Some(m) = mirror.upgrade().filter(|m| !m.closed()) else { return };
        let mut c = match conn.take().map(Ok).unwrap_or_else(|| keys.redis.dedicated(Some(BLOCK * 3))) {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!("presence feed: Redis unreachable: {e}");
                drop(m);
                std::thread::sleep(super::conn::BACKOFF);
                continue;
            }
        };
        match step(&keys, &m, &mut c, &mut at) {
            Ok(()) => conn = Some(c),
            Err(e) => tracing::warn!("presence feed: {e}; reconnecting"),
        }
    }
}

/// Reads what follows `at`, with the stream's state in the same instant (one MULTI), and
/// applies it; reloads in full if entries after `at` are gone; waits (a blocking read)
/// when there is nothing new.
fn step(keys: &Keys, mirror: &Mirror, conn: &mut Connection, at: &mut Position) -> Result<(), StorageError> {
    let (info, entries) = read_after(conn, &keys.stream, *at)?;
    if missed(info.as_ref(), *at, "presence feed") {
        *at = reload(keys, mirror)?;
        return Ok(());
    }
    if entries.is_empty() {
        return wait(keys, conn, *at);
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

/// The stream's state and the entries after `at` (up to [`BATCH`]), in the same instant
/// (one MULTI); no state and no entries when there is no stream.
pub(super) fn read_after(conn: &mut Connection, stream: &str, at: Position) -> Result<(Option<StreamInfo>, Vec<::redis::streams::StreamId>), StorageError> {
    let snapshot: Result<(Value, StreamRangeReply), _> = ::redis::pipe()
        .atomic()
        .cmd("XINFO")
        .arg("STREAM")
        .arg(stream)
        .cmd("XRANGE")
        .arg(stream)
        .arg(format!("({}", at.id.to_string()))
        .arg("+")
        .arg("COUNT")
        .arg(BATCH)
        .query(conn);
    match snapshot {
        Ok((info, entries)) => Ok((Some(StreamInfo::read(info).map_err(StorageError::new)?), entries.ids)),
        Err(e) if stream::is_missing(&e) => Ok((None, Vec::new())),
        Err(e) => Err(StorageError::new(e)),
    }
}

/// Blocks (up to [`BLOCK`]) until an entry follows `at`; what it reads is read again by
/// the next step, with the stream's state.
fn wait(keys: &Keys, conn: &mut Connection, at: Position) -> Result<(), StorageError> {
    wait_after(&keys.stream, conn, at)
}

/// Blocks (up to [`BLOCK`]) until an entry follows `at` in `stream`.
pub(super) fn wait_after(stream: &str, conn: &mut Connection, at: Position) -> Result<(), StorageError> {
    let read: Result<Value, _> =
        ::redis::cmd("XREAD").arg("COUNT").arg(1).arg("BLOCK").arg(BLOCK.as_millis() as u64).arg("STREAMS").arg(stream).arg(at.id.to_string()).query(conn);
    match read {
        Ok(_) => Ok(()),
        // A signal (SIGSTOP/SIGCONT) interrupted the wait: nothing lost, read on.
        Err(e) if e.to_string().contains("Interrupted") => Ok(()),
        Err(e) => Err(StorageError::new(e)),
    }
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

/// Whether entries after `at` are gone: trimmed before they were read (the oldest entry
/// left is newer than `at`, and more were added than `at` and those left account for),
/// or the stream lost (Redis came back without it: it is behind `at`).
pub(super) fn missed(info: Option<&StreamInfo>, at: Position, feed: &str) -> bool {
    let Some(info) = info else {
        if at.id != EntryId::default() {
            tracing::warn!("{feed}: the stream is gone (Redis lost it?): reloading");
        }
        return at.id != EntryId::default();
    };
    match info.behind(at) {
        Some(Behind::Lost) => tracing::warn!("{feed}: the stream is behind this node (Redis lost it?): reloading"),
        Some(Behind::Trimmed(missed)) => tracing::warn!(missed, "{feed}: changes trimmed before this node read them: reloading"),
        None => return false,
    }
    true
}



/// Reads every presentity from Redis into `mirror` (announcing those that changed) and
/// returns the stream position to follow from: taken before reading, so that a change
/// made meanwhile is read again rather than missed.
pub fn reload(keys: &Keys, mirror: &Mirror) -> Result<Position, StorageError> {
    let started = std::time::Instant::now();
    let mut conn = keys.redis.dedicated(Some(Duration::from_secs(30)))?;
    let from = stream::info(&mut conn, &keys.stream).map_err(StorageError::new)?.map_or(Position::default(), |i| i.end());
    let pattern = format!("{}*", glob_escape(&keys.presentity));
    let (mut cursor, mut known, now) = (0u64, HashSet::new(), unix_ms());
    loop {
        let (next, names): (u64, Vec<String>) =
            ::redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(RELOAD_BATCH).arg("TYPE").arg("string").query(&mut conn).map_err(StorageError::new)?;
        if !names.is_empty() {
            let values: Vec<Option<Vec<u8>>> = ::redis::cmd("MGET").arg(&names).query(&mut conn).map_err(StorageError::new)?;
            for (name, value) in names.iter().zip(values) {
                let (Some(uri), Some(bytes)) = (name.strip_prefix(&keys.presentity), value) else { continue };
                match Presentity::decode(&bytes) {
                    Ok(p) => {
                        known.insert(Box::<str>::from(uri));
                        mirror.apply(uri, p, now, true);
                    }
                    Err(e) => tracing::warn!(uri, "presence: a stored record that does not decode skipped: {e}"),
                }
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

/// `text` with Redis's glob characters escaped (a key prefix in a SCAN pattern).
pub(super) fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Wall-clock unix milliseconds (0 before the epoch).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_compare_as_redis_does_and_globs_are_escaped() {
        assert!(EntryId::parse("10-2").unwrap() < EntryId::parse("10-10").unwrap());
        assert!(EntryId::parse("9-99").unwrap() < EntryId::parse("10-0").unwrap());
        assert_eq!(EntryId::parse("0-0"), Some(EntryId::default()));
        assert_eq!(EntryId::parse("x"), None);
        assert_eq!(glob_escape("sp*:[a]"), "sp\\*:\\[a\\]");
    }

    fn info(first: &str, added: u64, length: u64) -> StreamInfo {
        StreamInfo { last_generated: EntryId::parse("100-0").unwrap(), first: EntryId::parse(first).unwrap(), entries_added: added, length }
    }

    #[test]
    fn a_trimmed_entry_is_told_from_no_entry() {
        let at = Position { id: EntryId::parse("50-0").unwrap(), count: 10 };
        assert!(!missed(Some(&info("40-0", 30, 25)), at, "t"), "ours is still there");
        assert!(!missed(Some(&info("60-0", 30, 20)), at, "t"), "trimmed up to ours exactly");
        assert!(missed(Some(&info("60-0", 30, 19)), at, "t"), "one after ours trimmed");
        assert!(missed(Some(&info("60-0", 9, 9)), at, "t"), "fewer added than we read: a new stream");
        assert!(missed(None, at, "t") && !missed(None, Position::default(), "t"));
    }
}
