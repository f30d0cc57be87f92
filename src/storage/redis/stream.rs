//! What every change feed (bindings, presence, books) needs of a Redis Stream: entry ids in
//! Redis's order, a reader's position, and `XINFO STREAM`'s counters, which tell an entry
//! trimmed before it was read from no entry at all (trimming does not move
//! `max-deleted-entry-id` on Redis 7.0, so the count of entries added is what is compared).
//!
//! Owns the stream's bookkeeping only: what an entry says belongs to each feed.

use ::redis::{Connection, RedisError, RedisResult, Value};

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
