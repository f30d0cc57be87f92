//! The address-book change feed between nodes: each write or delete of a book in Redis
//! appends `{o: <writer's origin>, t: <owner key, hex>}` to the stream `ab:changes` (in the
//! write's MULTI); a thread per node follows it with a blocking read and hands each owner
//! key written by another node to a callback. Entries trimmed before this node read them
//! (a gap, told by `stream::missed`) are reported as `None`: any book may have changed.
//!
//! Owns the stream's position and connection; what a change means is the handle's.

use super::follow::{self, Follower, Pace};
use super::stream::{self, EntryId, Position};
use super::Redis;
use crate::storage::address_books::{from_hex, Tag};
use crate::storage::StorageError;
use ::redis::Connection;
use std::sync::Arc;
use std::time::Duration;

/// Longest blocking read.
const BLOCK: Duration = Duration::from_secs(1);
/// Entries read at once.
const BATCH: usize = 512;

/// Told of each change another node made: `Some(owner key)`, or `None` when changes may
/// have been missed. Returns false once nobody listens (the thread then ends).
pub type OnChange = Box<dyn Fn(Option<Tag>) -> bool + Send>;

/// Follows `stream` from its current end on a thread of its own, skipping entries of
/// `origin` (this node's own writes, already marked where they were made).
pub fn start(redis: Arc<Redis>, stream: String, origin: String, on_change: OnChange) -> std::io::Result<()> {
    let mut feed = Feed { stream, origin, on_change, at: None };
    let pace = Pace { read_timeout: Duration::from_secs(3), unreachable: super::conn::BACKOFF, failed: Duration::ZERO };
    std::thread::Builder::new().name("book-feed".into()).spawn(move || follow::run(&redis, pace, &mut feed)).map(|_| ())
}

/// The feed thread's state: the stream, where it is in it (None: not started), whom it tells.
struct Feed {
    stream: String,
    origin: String,
    on_change: OnChange,
    at: Option<Position>,
}

impl Follower for Feed {
    fn stopped(&self) -> bool {
        false
    }

    fn step(&mut self, conn: &mut Connection) -> Result<bool, StorageError> {
        step(&self.stream, &self.origin, &self.on_change, conn, &mut self.at)
    }

    fn unreachable(&mut self, e: &StorageError) {
        tracing::debug!("book feed: Redis unreachable: {e}");
    }

    fn failed(&mut self, e: &StorageError) {
        tracing::warn!("book feed: {e}; reconnecting");
    }
}

/// Reads what follows `at` with the stream's state (one MULTI) and reports it; `at` None
/// (start) begins at the stream's end. Ok(false) when nobody listens any more.
fn step(stream: &str, origin: &str, on_change: &OnChange, conn: &mut Connection, at: &mut Option<Position>) -> Result<bool, StorageError> {
    let from = at.unwrap_or_default();
    let (info, entries) = stream::read_after(conn, stream, from, BATCH).map_err(StorageError::new)?;
    let end = info.as_ref().map_or(Position::default(), |i| i.end());
    let Some(from) = *at else {
        *at = Some(end);
        return Ok(on_change(None));
    };
    if stream::missed(info.as_ref(), from, "book feed") {
        *at = Some(end);
        return Ok(on_change(None));
    }
    if entries.is_empty() {
        stream::wait_after(conn, stream, from, BLOCK).map_err(StorageError::new)?;
        return Ok(true);
    }
    let mut pos = from;
    for entry in entries {
        if let Some(id) = EntryId::parse(&entry.id) {
            pos = Position { id, count: pos.count + 1 };
        }
        let text = |k: &str| entry.map.get(k).and_then(|v| ::redis::from_redis_value::<String>(v.clone()).ok());
        if text("o").as_deref() == Some(origin) {
            continue;
        }
        if let Some(tag) = text("t").and_then(|t| from_hex::<16>(&t)) {
            if !on_change(Some(tag)) {
                return Ok(false);
            }
        }
    }
    *at = Some(pos);
    Ok(true)
}

#[cfg(test)]
mod tests {
    #[test]
    fn owner_keys_read_back_from_hex() {
        let tag = [0xab; 16];
        let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(super::from_hex::<16>(&hex), Some(tag));
        assert_eq!(super::from_hex::<16>("abc"), None);
        assert_eq!(super::from_hex::<16>(&"zz".repeat(16)), None);
    }
}
