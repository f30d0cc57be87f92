//! The presence change feed, read by each node: a thread of its own follows the Redis
//! Stream of changed presentities from the last id it read and applies each record to the
//! node's [`Mirror`] (which announces changes to this node's watchers). Nothing is lost
//! silently: at start, and whenever entries may have been missed (the stream was trimmed
//! past the last id read, or Redis came back without it), the node reloads every
//! presentity from Redis and announces those that changed.
//!
//! Owns the feed's position and its connection; the keys' meaning is `presence`'s.

use super::presence_mirror::Mirror;
use super::presence_state::Presentity;
use super::Redis;
use crate::storage::StorageError;
use ::redis::streams::StreamReadReply;
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

/// A stream entry id, compared as Redis does (milliseconds, then sequence).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct EntryId(u64, u64);

impl EntryId {
    fn parse(text: &str) -> Option<EntryId> {
        let (ms, seq) = text.split_once('-')?;
        Some(EntryId(ms.parse().ok()?, seq.parse().ok()?))
    }

    fn text(self) -> String {
        format!("{}-{}", self.0, self.1)
    }
}

/// Fills `mirror` from Redis, then follows the stream on a thread until `mirror` is dropped
/// or its channel closed.
pub fn start(keys: Keys, mirror: &Arc<Mirror>) -> Result<(), StorageError> {
    let last = reload(&keys, mirror)?;
    let weak = Arc::downgrade(mirror);
    std::thread::Builder::new().name("presence-feed".into()).spawn(move || follow(keys, weak, last)).map_err(StorageError::new)?;
    Ok(())
}

fn follow(keys: Keys, mirror: Weak<Mirror>, mut last: EntryId) {
    let mut conn: Option<Connection> = None;
    let mut check = false;
    loop {
        let Some(m) = mirror.upgrade().filter(|m| !m.closed()) else { return };
        let c = match conn.take().map(Ok).unwrap_or_else(|| keys.redis.dedicated(Some(BLOCK * 3))) {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!("presence feed: Redis unreachable: {e}");
                drop(m);
                std::thread::sleep(super::conn::BACKOFF);
                check = true;
                continue;
            }
        };
        let mut c = c;
        match step(&keys, &m, &mut c, &mut last, check) {
            Ok(()) => {
                check = false;
                conn = Some(c);
            }
            Err(e) => {
                tracing::warn!("presence feed: {e}; reconnecting");
                check = true;
            }
        }
    }
}

/// One blocking read and what it brought; `check`: after a reconnection, make sure first
/// that the stream still holds everything after `last`.
fn step(keys: &Keys, mirror: &Mirror, conn: &mut Connection, last: &mut EntryId, check: bool) -> Result<(), StorageError> {
    if check && missed(keys, conn, *last, None)? {
        *last = reload(keys, mirror)?;
    }
    let reply: Option<StreamReadReply> = ::redis::cmd("XREAD")
        .arg("COUNT")
        .arg(BATCH)
        .arg("BLOCK")
        .arg(BLOCK.as_millis() as u64)
        .arg("STREAMS")
        .arg(&keys.stream)
        .arg(last.text())
        .query(conn)
        .map_err(StorageError::new)?;
    let entries = reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids).collect::<Vec<_>>();
    let first = entries.first().and_then(|e| EntryId::parse(&e.id));
    if missed(keys, conn, *last, first)? {
        *last = reload(keys, mirror)?;
        return Ok(());
    }
    let now = unix_ms();
    for entry in entries {
        if let Some(id) = EntryId::parse(&entry.id) {
            *last = id;
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

/// Whether entries after `last` and before `first` (the first one read, if any) are gone:
/// trimmed (Redis's `max-deleted-entry-id`), or the stream lost (Redis came back without
/// it: its last id is behind ours).
fn missed(keys: &Keys, conn: &mut Connection, last: EntryId, first: Option<EntryId>) -> Result<bool, StorageError> {
    let Some(info) = stream_info(keys, conn)? else { return Ok(last != EntryId::default()) };
    if info.last_generated < last {
        tracing::warn!("presence feed: the stream is behind this node (Redis lost it?): reloading");
        return Ok(true);
    }
    let gap = info.max_deleted > last && first.is_none_or(|f| info.max_deleted < f);
    if gap {
        tracing::warn!("presence feed: changes trimmed before this node read them: reloading");
    }
    Ok(gap)
}

struct StreamInfo {
    last_generated: EntryId,
    max_deleted: EntryId,
}

/// XINFO STREAM's ids (None: no stream yet).
fn stream_info(keys: &Keys, conn: &mut Connection) -> Result<Option<StreamInfo>, StorageError> {
    let reply: Result<Value, _> = ::redis::cmd("XINFO").arg("STREAM").arg(&keys.stream).query(conn);
    let value = match reply {
        Ok(v) => v,
        Err(e) if e.to_string().contains("no such key") => return Ok(None),
        Err(e) => return Err(StorageError::new(e)),
    };
    let pairs: Vec<(Value, Value)> = match value {
        Value::Map(m) => m,
        Value::Array(items) => {
            let mut it = items.into_iter();
            std::iter::from_fn(|| Some((it.next()?, it.next()?))).collect()
        }
        _ => Vec::new(),
    };
    let mut info = StreamInfo { last_generated: EntryId::default(), max_deleted: EntryId::default() };
    for (k, v) in pairs {
        let (Ok(k), Ok(v)) = (::redis::from_redis_value::<String>(k), ::redis::from_redis_value::<String>(v)) else { continue };
        match k.as_str() {
            "last-generated-id" => info.last_generated = EntryId::parse(&v).unwrap_or_default(),
            "max-deleted-entry-id" => info.max_deleted = EntryId::parse(&v).unwrap_or_default(),
            _ => {}
        }
    }
    Ok(Some(info))
}

/// Reads every presentity from Redis into `mirror` (announcing those that changed) and
/// returns the stream position to follow from: taken before reading, so that a change
/// made meanwhile is read again rather than missed.
pub fn reload(keys: &Keys, mirror: &Mirror) -> Result<EntryId, StorageError> {
    let started = std::time::Instant::now();
    let mut conn = keys.redis.dedicated(Some(Duration::from_secs(30)))?;
    let from = stream_info(keys, &mut conn)?.map(|i| i.last_generated).unwrap_or_default();
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
}
