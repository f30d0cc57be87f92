//! Verification state in Redis, shared by every node:
//!
//! - `v:code:<+E.164>:<device>`: the [`CodeRecord`] as JSON;
//! - `v:ref:<id>`: `<+E.164>:<device>` of the record whose current code has reference `id`;
//! - `v:win:<+E.164>`: the number's [`SendWindow`], `<sends>:<start>`;
//! - `v:dev:<+E.164>:<device>`: when `device` verified the number (Unix seconds).
//!
//! The handle's read-modify-writes of one number (a send, a check, a delivery report) are
//! serialised across nodes by the lock `lock:v:<+E.164>` ([`VerificationStore::hold`]), so
//! the per-number send limit counts the sends of every node. A sweep scans the records and
//! windows and deletes the ones that are over, each only if unchanged since it was read;
//! one node sweeps for all (`v:swept`, set for [`SWEPT_FOR`], skips the others' sweeps).

use super::conn::Redis;
use super::{key_lock, scan};
use crate::numbers::E164;
use crate::storage::held::Held;
use crate::storage::verification::{CodeRecord, SendWindow, VerificationStore};
use crate::storage::StorageError;
use std::sync::Arc;

/// Deletes KEYS[1] (and KEYS[2], its reference, if given) if KEYS[1] still holds ARGV[1].
const DELETE_IF_SAME: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
if KEYS[2] then redis.call('DEL', KEYS[2]) end
return 1
";

/// Keys asked per page of a sweep.
const SCAN_COUNT: usize = 500;
/// After a sweep by any node, how long the others skip theirs.
pub const SWEPT_FOR: std::time::Duration = std::time::Duration::from_secs(50);

pub struct RedisVerifications {
    redis: Arc<Redis>,
}

fn encode(r: &CodeRecord) -> Result<String, StorageError> {
    serde_json::to_string(r).map_err(StorageError::new)
}

fn decode_window(v: &str) -> Option<SendWindow> {
    let (sends, start) = v.split_once(':')?;
    Some(SendWindow { sends: sends.parse().ok()?, start: start.parse().ok()? })
}

impl RedisVerifications {
    pub fn open(redis: Arc<Redis>) -> RedisVerifications {
        RedisVerifications { redis }
    }

    fn code(&self, n: E164, device: &str) -> String {
        self.redis.key(&format!("v:code:{n}:{device}"))
    }

    fn reference(&self, id: &str) -> String {
        self.redis.key(&format!("v:ref:{id}"))
    }

    fn window_key(&self, n: E164) -> String {
        self.redis.key(&format!("v:win:{n}"))
    }

    fn device(&self, n: E164, device: &str) -> String {
        self.redis.key(&format!("v:dev:{n}:{device}"))
    }

    fn get(&self, key: &str) -> Result<Option<String>, StorageError> {
        self.redis.run(|c| ::redis::cmd("GET").arg(key).query(c))
    }

    fn write(&self, pipe: &::redis::Pipeline) -> Result<(), StorageError> {
        self.redis.run(|c| {
            pipe.query::<()>(c)?;
            self.redis.durable(c)
        })
    }

    /// Every key matching `glob` (under the prefix) with its value, one page at a time.
    fn scan(&self, glob: &str, each: &mut dyn FnMut(String, String) -> Result<(), StorageError>) -> Result<(), StorageError> {
        let pattern = scan::under(&self.redis.key(""), glob);
        let mut cursor: u64 = 0;
        loop {
            let (next, page): (u64, Vec<(String, String)>) = self.redis.run(|c| scan::page(c, &pattern, cursor, SCAN_COUNT))?;
            for (k, v) in page {
                each(k, v)?;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }

    fn delete_if_same(&self, key: &str, value: &str, reference: Option<&str>) -> Result<bool, StorageError> {
        let delete = ::redis::Script::new(DELETE_IF_SAME);
        let mut script = delete.prepare_invoke();
        script.key(key).arg(value);
        if let Some(r) = reference {
            script.key(r);
        }
        Ok(self.redis.run(|c| script.invoke::<i64>(c))? == 1)
    }
}

impl VerificationStore for RedisVerifications {
    fn record(&self, n: E164, device: &str) -> Result<Option<CodeRecord>, StorageError> {
        Ok(self.get(&self.code(n, device))?.and_then(|v| serde_json::from_str(&v).ok()))
    }

    fn by_reference(&self, id: &str) -> Result<Option<(E164, String)>, StorageError> {
        let Some(v) = self.get(&self.reference(id))? else { return Ok(None) };
        let Some((n, device)) = v.split_once(':') else { return Ok(None) };
        Ok(n.parse().ok().map(|n| (n, device.to_string())))
    }

    fn window(&self, n: E164) -> Result<Option<SendWindow>, StorageError> {
        Ok(self.get(&self.window_key(n))?.as_deref().and_then(decode_window))
    }

    fn save_new_code(&self, n: E164, device: &str, record: &CodeRecord, old_id: Option<&str>, window: SendWindow) -> Result<(), StorageError> {
        let mut pipe = ::redis::pipe();
        pipe.atomic();
        if let Some(old) = old_id {
            pipe.del(self.reference(old)).ignore();
        }
        pipe.set(self.window_key(n), format!("{}:{}", window.sends, window.start)).ignore();
        pipe.set(self.reference(&record.id), format!("{n}:{device}")).ignore();
        pipe.set(self.code(n, device), encode(record)?).ignore();
        self.write(&pipe)
    }

    fn save(&self, n: E164, device: &str, record: &CodeRecord) -> Result<(), StorageError> {
        let mut pipe = ::redis::pipe();
        pipe.set(self.code(n, device), encode(record)?).ignore();
        self.write(&pipe)
    }

    fn remember_device(&self, n: E164, device: &str, at: u64) -> Result<(), StorageError> {
        let mut pipe = ::redis::pipe();
        pipe.set(self.device(n, device), at).ignore();
        self.write(&pipe)
    }

    fn knows_device(&self, n: E164, device: &str) -> Result<bool, StorageError> {
        let key = self.device(n, device);
        self.redis.run(|c| ::redis::cmd("EXISTS").arg(&key).query(c))
    }

    fn sweep(&self, done: &dyn Fn(&CodeRecord) -> bool, window_over: &dyn Fn(&SendWindow) -> bool) -> Result<usize, StorageError> {
        let swept = self.redis.key("v:swept");
        let mine: Option<String> = self.redis.run(|c| ::redis::cmd("SET").arg(&swept).arg(1).arg("NX").arg("PX").arg(SWEPT_FOR.as_millis() as u64).query(c))?;
        if mine.is_none() {
            return Ok(0);
        }
        let mut removed = 0;
        self.scan("v:code:*", &mut |key, value| {
            let Ok(r) = serde_json::from_str::<CodeRecord>(&value) else { return Ok(()) };
            if done(&r) && self.delete_if_same(&key, &value, Some(&self.reference(&r.id)))? {
                removed += 1;
            }
            Ok(())
        })?;
        self.scan("v:win:*", &mut |key, value| {
            if decode_window(&value).is_none_or(|w| window_over(&w)) {
                self.delete_if_same(&key, &value, None)?;
            }
            Ok(())
        })?;
        Ok(removed)
    }

    fn hold(&self, n: E164) -> Result<Held, StorageError> {
        key_lock::hold(&self.redis, &format!("v:{n}"))
    }
}
