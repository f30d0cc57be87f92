//! Address books in Redis, shared by every node: `ab:book:<owner key, hex>` (the book,
//! postcard, as in sled) and `ab:log:<owner key, hex>` (its change log), written together
//! in one `MULTI`. The handle's read-modify-writes of one book are serialised across nodes
//! by the lock `lock:ab:<owner key, hex>` ([`AddressBookStore::hold`]). Like sled, Redis
//! sees only keyed hashes and sealed bytes, never a number or a name.

use super::conn::Redis;
use super::key_lock;
use crate::storage::address_books::{AddressBookStore, BookError, LoggedChange, StoredBook, Tag};
use crate::storage::held::Held;
use std::sync::Arc;

pub struct RedisAddressBooks {
    redis: Arc<Redis>,
}

fn hex(owner: &Tag) -> String {
    owner.iter().map(|b| format!("{b:02x}")).collect()
}

fn encode<T: serde::Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, BookError> {
    postcard::to_allocvec(value).map_err(|e| BookError::Corrupt(e.to_string()))
}

fn decode<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, BookError> {
    postcard::from_bytes(bytes).map_err(|e| BookError::Corrupt(e.to_string()))
}

impl RedisAddressBooks {
    pub fn open(redis: Arc<Redis>) -> RedisAddressBooks {
        RedisAddressBooks { redis }
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
        Ok(self.redis.run(|c| {
            pipe.query::<()>(c)?;
            self.redis.durable(c)
        })?)
    }

    fn remove(&self, owner: &Tag) -> Result<bool, BookError> {
        let (book_key, log_key) = self.keys(owner);
        let (existed,): (i64,) = self.redis.run(|c| {
            let n = ::redis::pipe().atomic().del(&book_key).del(&log_key).ignore().query(c)?;
            self.redis.durable(c)?;
            Ok(n)
        })?;
        Ok(existed > 0)
    }

    fn hold(&self, owner: &Tag) -> Result<Held, BookError> {
        Ok(key_lock::hold(&self.redis, &format!("ab:{}", hex(owner)))?)
    }
}
