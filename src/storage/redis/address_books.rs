//! Address books in Redis, shared by every node: `ab:book:<owner key, hex>` (the book,
//! postcard, as in sled) and `ab:log:<owner key, hex>` (its change log), written together
//! in one `MULTI`. The handle's read-modify-writes of one book are serialised across nodes
//! by the lock `lock:ab:<owner key, hex>` ([`AddressBookStore::hold`]). Like sled, Redis
//! sees only keyed hashes and sealed bytes, never a number or a name.
//! Each write and delete also appends the owner key to the stream `ab:changes` (same
//! `MULTI`, trimmed to about `stream_max_len`), which every node follows ([`book_feed`]).

use super::book_feed::{self, OnChange};
use super::conn::Redis;
use super::key_lock;
use crate::storage::address_books::{hex, AddressBookStore, BookError, LoggedChange, StoredBook, Tag};
use crate::storage::held::Held;
use std::sync::Arc;

pub struct RedisAddressBooks {
    redis: Arc<Redis>,
    /// This process's mark on its own stream entries.
    origin: String,
    stream_max_len: u64,
}

/// Entries kept in `ab:changes` unless told otherwise.
const STREAM_MAX_LEN: u64 = 100_000;

fn encode<T: serde::Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, BookError> {
    postcard::to_allocvec(value).map_err(|e| BookError::Corrupt(e.to_string()))
}

fn decode<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, BookError> {
    postcard::from_bytes(bytes).map_err(|e| BookError::Corrupt(e.to_string()))
}

impl RedisAddressBooks {
    pub fn open(redis: Arc<Redis>) -> RedisAddressBooks {
        let origin = format!("{:016x}", rand::random::<u64>());
        RedisAddressBooks { redis, origin, stream_max_len: STREAM_MAX_LEN }
    }

    /// Keeps about `n` entries in the change stream.
    pub fn stream_max_len(mut self, n: u64) -> RedisAddressBooks {
        self.stream_max_len = n.max(1);
        self
    }

    /// Follows the other nodes' changes on a thread: `on_change` gets each owner key they
    /// wrote, or None when changes may have been missed.
    pub fn follow_changes(&self, on_change: OnChange) -> std::io::Result<()> {
        book_feed::start(self.redis.clone(), self.redis.key("ab:changes"), self.origin.clone(), on_change)
    }

    /// Appends `owner`'s change to the stream, inside `pipe`'s MULTI.
    fn announce(&self, pipe: &mut ::redis::Pipeline, owner: &Tag) {
        let (max, stream) = (self.stream_max_len, self.redis.key("ab:changes"));
        pipe.cmd("XADD").arg(stream).arg("MAXLEN").arg("~").arg(max).arg("*").arg("o").arg(&self.origin).arg("t").arg(hex(owner)).ignore();
    }

    fn keys(&self, owner: &Tag) -> (String, String) {
        let h = hex(owner);
        (self.redis.key(&format!("ab:book:{h}")), self.redis.key(&format!("ab:log:{h}")))
    }

    fn get_bytes(&self, key: &str) -> Result<Option<Vec<u8>>, BookError> {
        Ok(self.redis.run(|c| ::redis::cmd("GET").arg(key).query(c))?)
    }
}

/// The books' master key every node shares when the config names none: made by the first
/// node (`SET NX ab:key`), read by the others. Redis then holds the key beside the books.
pub fn shared_key(redis: &Redis) -> Result<[u8; 32], crate::storage::StorageError> {
    super::made_once::made_once(redis, "ab:key")
}

impl AddressBookStore for RedisAddressBooks {
    fn get(&self, owner: &Tag) -> Result<Option<StoredBook>, BookError> {
        self.get_bytes(&self.keys(owner).0)?.map(|v| decode(&v)).transpose()
    }

    fn log(&self, owner: &Tag) -> Result<Vec<LoggedChange>, BookError> {
        Ok(self.get_bytes(&self.keys(owner).1)?.map(|v| decode(&v)).transpose()?.unwrap_or_default())
    }

    fn put(&self, owner: &Tag, book: &StoredBook, log: &[LoggedChange]) -> Result<(), BookError> {
        let (book_key, log_key) = self.keys(owner);
        let mut pipe = ::redis::pipe();
        pipe.atomic().set(&book_key, encode(book)?).ignore().set(&log_key, encode(log)?).ignore();
        self.announce(&mut pipe, owner);
        Ok(self.redis.run(|c| {
            pipe.query::<()>(c)?;
            self.redis.durable(c)
        })?)
    }

    fn remove(&self, owner: &Tag) -> Result<bool, BookError> {
        let (book_key, log_key) = self.keys(owner);
        let (existed,): (i64,) = self.redis.run(|c| {
            let mut pipe = ::redis::pipe();
            pipe.atomic().del(&book_key).del(&log_key).ignore();
            self.announce(&mut pipe, owner);
            let n = pipe.query(c)?;
            self.redis.durable(c)?;
            Ok(n)
        })?;
        Ok(existed > 0)
    }

    fn hold(&self, owner: &Tag) -> Result<Held, BookError> {
        Ok(key_lock::hold(&self.redis, &format!("ab:{}", hex(owner)))?)
    }
}
