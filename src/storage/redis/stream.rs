//! What every change feed (bindings, presence, books) needs of a Redis Stream: entry ids in
//! Redis's order, a reader's position, and `XINFO STREAM`'s counters, which tell an entry
//! trimmed before it was read from no entry at all (trimming does not move
//! `max-deleted-entry-id` on Redis 7.0, so the count of entries added is what is compared);
//! the read of what follows a position with the stream's state, and the blocking wait for
//! the next entry.
//!
//! Owns the stream's bookkeeping and reads only: what an entry says belongs to each feed.

use ::redis::streams::{StreamId, StreamRangeReply};
use ::redis::{Connection, RedisError, RedisResult, Value};
use std::time::Duration;

/// A stream entry id (`ms-seq`), ordered as Redis orders them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct EntryId(u64, u64);

impl EntryId {
    pub fn parse(text: &str) -> Option<EntryId> {
        let (ms, seq) = text.split_once('-')?;
        Some(EntryId(ms.parse().ok()?, seq.parse().ok()?))
    }
}

impl std::fmt::Display for EntryId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.0, self.1)
    }
}

/// How far a reader got: the last entry read and how many entries the stream had had added
/// up to it (Redis's `entries-added`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Position {
    pub id: EntryId,
    pub count: u64,
}

/// Why a reader cannot go on from its position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behind {
    /// There is no stream, though the reader had read some of it (Redis lost it).
    Gone,
    /// Redis holds fewer entries than the reader read (lost in a failover or restart).
    Lost,
    /// This many entries after the reader's position were trimmed before it read them.
    Trimmed(u64),
}

/// `XINFO STREAM`'s positions.
#[derive(Debug, Clone, Copy, Default)]
pub struct StreamInfo {
    pub last_generated: EntryId,
    /// The oldest entry held (0-0 when empty).
    pub first: EntryId,
    /// Entries ever added.
    pub entries_added: u64,
    /// Entries held now.
    pub length: u64,
}

impl StreamInfo {
    /// XINFO STREAM's reply (RESP2 pairs or RESP3 map). Redis before 7 gives no
    /// `entries-added`, without which a gap cannot be told: an error.
    pub fn read(value: Value) -> RedisResult<StreamInfo> {
        let pairs: Vec<(Value, Value)> = match value {
            Value::Map(m) => m,
            Value::Array(items) => {
                let mut it = items.into_iter();
                std::iter::from_fn(|| Some((it.next()?, it.next()?))).collect()
            }
            _ => return Err(RedisError::from((::redis::ErrorKind::Client, "XINFO STREAM: not a map"))),
        };
        let mut info = StreamInfo::default();
        let mut added = None;
        for (k, v) in pairs {
            let Ok(k) = ::redis::from_redis_value::<String>(k) else { continue };
            let id = || ::redis::from_redis_value::<String>(v.clone()).ok().and_then(|t| EntryId::parse(&t)).unwrap_or_default();
            match k.as_str() {
                "last-generated-id" => info.last_generated = id(),
                "recorded-first-entry-id" => info.first = id(),
                "entries-added" => added = ::redis::from_redis_value(v).ok(),
                "length" => info.length = ::redis::from_redis_value(v).unwrap_or(0),
                _ => {}
            }
        }
        info.entries_added = added.ok_or_else(|| RedisError::from((::redis::ErrorKind::Client, "XINFO STREAM gives no entries-added: Redis 7 or later is required")))?;
        Ok(info)
    }

    /// The position just after the last entry added.
    pub fn end(&self) -> Position {
        Position { id: self.last_generated, count: self.entries_added }
    }

    /// Why a reader at `at` cannot go on reading (None: it can).
    pub fn behind(&self, at: Position) -> Option<Behind> {
        if self.last_generated < at.id || self.entries_added < at.count {
            return Some(Behind::Lost);
        }
        let trimmed = self.entries_added - self.length;
        (self.first > at.id && trimmed > at.count).then(|| Behind::Trimmed(trimmed - at.count))
    }
}

/// Whether `e` says the stream does not exist (yet).
pub fn is_missing(e: &RedisError) -> bool {
    e.to_string().contains("no such key")
}

/// `XINFO STREAM` of `key` (None: no stream yet).
pub fn info(conn: &mut Connection, key: &str) -> RedisResult<Option<StreamInfo>> {
    match ::redis::cmd("XINFO").arg("STREAM").arg(key).query(conn) {
        Ok(v) => StreamInfo::read(v).map(Some),
        Err(e) if is_missing(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Why a reader at `at` cannot go on, given the stream's state (`info` None: no stream);
/// None: it can.
pub fn gap(info: Option<&StreamInfo>, at: Position) -> Option<Behind> {
    match info {
        Some(info) => info.behind(at),
        None => (at.id != EntryId::default()).then_some(Behind::Gone),
    }
}

/// Whether entries after `at` are gone: trimmed before they were read (the oldest entry
/// left is newer than `at`, and more were added than `at` and those left account for),
/// or the stream lost (Redis came back without it: it is behind `at`). Logged, as `feed`.
pub fn missed(info: Option<&StreamInfo>, at: Position, feed: &str) -> bool {
    match gap(info, at) {
        Some(Behind::Gone) => tracing::warn!("{feed}: the stream is gone (Redis lost it?): reloading"),
        Some(Behind::Lost) => tracing::warn!("{feed}: the stream is behind this node (Redis lost it?): reloading"),
        Some(Behind::Trimmed(missed)) => tracing::warn!(missed, "{feed}: changes trimmed before this node read them: reloading"),
        None => return false,
    }
    true
}

/// The stream's state and the entries after `at` (up to `count`), in the same instant (one
/// MULTI, so that nothing is trimmed between them); no state and no entries when there is
/// no stream.
pub fn read_after(conn: &mut Connection, stream: &str, at: Position, count: usize) -> RedisResult<(Option<StreamInfo>, Vec<StreamId>)> {
    let snapshot: RedisResult<(Value, StreamRangeReply)> = ::redis::pipe()
        .atomic()
        .cmd("XINFO")
        .arg("STREAM")
        .arg(stream)
        .cmd("XRANGE")
        .arg(stream)
        .arg(format!("({}", at.id))
        .arg("+")
        .arg("COUNT")
        .arg(count)
        .query(conn);
    match snapshot {
        Ok((info, entries)) => Ok((Some(StreamInfo::read(info)?), entries.ids)),
        Err(e) if is_missing(&e) => Ok((None, Vec::new())),
        Err(e) => Err(e),
    }
}

/// Blocks (up to `block`) until an entry follows `at` in `stream`; what it reads is for the
/// next [`read_after`] to read again, with the stream's state.
pub fn wait_after(conn: &mut Connection, stream: &str, at: Position, block: Duration) -> RedisResult<()> {
    let read: RedisResult<Value> =
        ::redis::cmd("XREAD").arg("COUNT").arg(1).arg("BLOCK").arg(block.as_millis() as u64).arg("STREAMS").arg(stream).arg(at.id.to_string()).query(conn);
    match read {
        Ok(_) => Ok(()),
        // A signal (SIGSTOP/SIGCONT) interrupted the wait: nothing lost, read on.
        Err(e) if e.to_string().contains("Interrupted") => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_compare_as_redis_does() {
        assert!(EntryId::parse("10-2").unwrap() < EntryId::parse("10-10").unwrap());
        assert!(EntryId::parse("9-99").unwrap() < EntryId::parse("10-0").unwrap());
        assert_eq!(EntryId::parse("0-0"), Some(EntryId::default()));
        assert_eq!(EntryId::parse("x"), None);
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
        assert_eq!(gap(None, at), Some(Behind::Gone));
    }
}
