//! Accounts in Redis, shared by every node:
//!
//! - `a:acct:<username>`: the [`StoredAccount`] as JSON;
//! - `a:num:<+E.164>`: the username the number belongs to;
//! - `a:tok:<token hash>`: the username the token was issued to;
//! - `a:set:<username>`: his [`Settings`] as JSON (absent: the defaults);
//! - `a:names`: a sorted set of every username (score 0, so in name order), for listings.
//!
//! An insert is one script (it checks the name and numbers are free and writes every entry,
//! or writes nothing); other writes are one `MULTI`. The handle's read-modify-writes are
//! serialised across nodes by the lock `lock:accounts` ([`AccountStore::hold`]).
//!
//! Settings are read for every published user a NOTIFY shows ("share my status"), so they
//! are kept [`SETTINGS_FOR`] in a bounded cache: a change made at another node is seen
//! here within that time; one made here at once. While Redis does not answer, the last
//! settings read are used, however old.

use super::conn::Redis;
use super::key_lock;
use crate::numbers::E164;
use crate::storage::accounts::{Account, AccountError, AccountStore, Settings, StoredAccount};
use crate::storage::held::Held;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const INSERT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return {'user'} end
for i = 4, #KEYS do
  local owner = redis.call('GET', KEYS[i])
  if owner then return {'number', tostring(i - 3), owner} end
end
for i = 4, #KEYS do redis.call('SET', KEYS[i], ARGV[1]) end
if ARGV[3] == '1' then redis.call('SET', KEYS[3], ARGV[1]) end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], 0, ARGV[1])
return {'ok'}
";

/// Accounts fetched per `MGET` when listing.
const PAGE: usize = 500;
/// How long settings read from Redis are used without asking again.
pub const SETTINGS_FOR: Duration = Duration::from_secs(1);
/// Most users whose settings are cached.
const CACHED: usize = 65_536;

pub struct RedisAccounts {
    redis: Arc<Redis>,
    settings: Mutex<HashMap<String, (Settings, Instant)>>,
}

fn decode(v: &[u8]) -> Result<StoredAccount, AccountError> {
    serde_json::from_slice(v).map_err(|e| AccountError::Corrupt(e.to_string()))
}

fn encode<T: serde::Serialize>(v: &T) -> Result<String, AccountError> {
    serde_json::to_string(v).map_err(|e| AccountError::Corrupt(e.to_string()))
}

impl RedisAccounts {
    pub fn open(redis: Arc<Redis>) -> RedisAccounts {
        RedisAccounts { redis, settings: Mutex::new(HashMap::new()) }
    }

    /// The cached settings of `username`, if read within `fresh_for`.
    fn cached(&self, username: &str, fresh_for: Duration) -> Option<Settings> {
        let cache = self.settings.lock();
        cache.get(username).filter(|(_, at)| at.elapsed() < fresh_for).map(|(s, _)| s.clone())
    }

    fn cache(&self, username: &str, settings: &Settings) {
        let mut cache = self.settings.lock();
        if cache.len() >= CACHED {
            cache.retain(|_, (_, at)| at.elapsed() < SETTINGS_FOR);
            if cache.len() >= CACHED {
                cache.clear();
            }
        }
        cache.insert(username.to_string(), (settings.clone(), Instant::now()));
    }

    fn acct(&self, username: &str) -> String {
        self.redis.key(&format!("a:acct:{username}"))
    }

    fn num(&self, n: E164) -> String {
        self.redis.key(&format!("a:num:{n}"))
    }

    fn tok(&self, hash: &str) -> String {
        self.redis.key(&format!("a:tok:{hash}"))
    }

    fn set(&self, username: &str) -> String {
        self.redis.key(&format!("a:set:{username}"))
    }

    fn get_string(&self, key: &str) -> Result<Option<String>, AccountError> {
        Ok(self.redis.run(|c| ::redis::cmd("GET").arg(key).query(c))?)
    }
}

impl AccountStore for RedisAccounts {
    fn get(&self, username: &str) -> Result<Option<StoredAccount>, AccountError> {
        self.get_string(&self.acct(username))?.map(|v| decode(v.as_bytes())).transpose()
    }

    fn username_by_number(&self, n: E164) -> Result<Option<String>, AccountError> {
        self.get_string(&self.num(n))
    }

    fn username_by_token(&self, token_hash: &str) -> Result<Option<String>, AccountError> {
        self.get_string(&self.tok(token_hash))
    }

    fn insert(&self, s: &StoredAccount) -> Result<(), AccountError> {
        let a = &s.account;
        let json = encode(s)?;
        let token = s.token_hash.as_deref().map(|h| self.tok(h)).unwrap_or_else(|| self.tok(""));
        let insert = ::redis::Script::new(INSERT);
        let mut script = insert.prepare_invoke();
        script.key(self.acct(&a.username)).key(self.redis.key("a:names")).key(token);
        for n in &a.numbers {
            script.key(self.num(*n));
        }
        script.arg(&a.username).arg(&json).arg(if s.token_hash.is_some() { "1" } else { "0" });
        let answer: Vec<String> = self.redis.run(|c| {
            let answer = script.invoke(c)?;
            self.redis.durable(c)?;
            Ok(answer)
        })?;
        match answer.first().map(String::as_str) {
            Some("ok") => Ok(()),
            Some("user") => Err(AccountError::UsernameTaken(a.username.clone())),
            Some("number") => {
                let i: usize = answer.get(1).and_then(|i| i.parse().ok()).unwrap_or(1);
                let number = a.numbers.get(i.saturating_sub(1)).copied().ok_or_else(|| AccountError::Corrupt("insert script answer".into()))?;
                Err(AccountError::NumberTaken { number, username: answer.get(2).cloned().unwrap_or_default() })
            }
            _ => Err(AccountError::Corrupt(format!("insert script answered {answer:?}"))),
        }
    }

    fn replace(&self, s: &StoredAccount, old_token: Option<&str>) -> Result<(), AccountError> {
        let json = encode(s)?;
        let name = &s.account.username;
        let mut pipe = ::redis::pipe();
        pipe.atomic();
        if let Some(h) = old_token {
            pipe.del(self.tok(h)).ignore();
        }
        if let Some(h) = &s.token_hash {
            pipe.set(self.tok(h), name).ignore();
        }
        pipe.set(self.acct(name), &json).ignore();
        Ok(self.redis.run(|c| {
            pipe.query::<()>(c)?;
            self.redis.durable(c)
        })?)
    }

    fn list(&self) -> Result<Vec<Account>, AccountError> {
        let names: Vec<String> = self.redis.run(|c| ::redis::cmd("ZRANGE").arg(self.redis.key("a:names")).arg(0).arg(-1).query(c))?;
        let mut out = Vec::with_capacity(names.len());
        for page in names.chunks(PAGE) {
            let keys: Vec<String> = page.iter().map(|u| self.acct(u)).collect();
            let values: Vec<Option<String>> = self.redis.run(|c| ::redis::cmd("MGET").arg(&keys).query(c))?;
            for v in values.into_iter().flatten() {
                out.push(decode(v.as_bytes())?.account);
            }
        }
        Ok(out)
    }

    fn remove(&self, username: &str) -> Result<bool, AccountError> {
        let Some(s) = self.get(username)? else { return Ok(false) };
        let mut pipe = ::redis::pipe();
        pipe.atomic().del(self.acct(username)).ignore().del(self.set(username)).ignore();
        pipe.zrem(self.redis.key("a:names"), username).ignore();
        for n in &s.account.numbers {
            pipe.del(self.num(*n)).ignore();
        }
        if let Some(h) = &s.token_hash {
            pipe.del(self.tok(h)).ignore();
        }
        self.redis.run(|c| {
            pipe.query::<()>(c)?;
            self.redis.durable(c)
        })?;
        self.settings.lock().remove(username);
        Ok(true)
    }

    fn settings(&self, username: &str) -> Result<Settings, AccountError> {
        if let Some(s) = self.cached(username, SETTINGS_FOR) {
            return Ok(s);
        }
        let settings = match self.get_string(&self.set(username)) {
            Ok(Some(v)) => serde_json::from_str(&v).map_err(|e| AccountError::Corrupt(e.to_string()))?,
            Ok(None) => Settings::default(),
            Err(e) => return self.cached(username, Duration::MAX).ok_or(e),
        };
        self.cache(username, &settings);
        Ok(settings)
    }

    fn set_settings(&self, username: &str, settings: &Settings) -> Result<(), AccountError> {
        if self.get_string(&self.acct(username))?.is_none() {
            return Err(AccountError::NotFound(username.to_string()));
        }
        let json = encode(settings)?;
        let key = self.set(username);
        self.redis.run(|c| {
            ::redis::cmd("SET").arg(&key).arg(&json).query::<()>(c)?;
            self.redis.durable(c)
        })?;
        self.cache(username, settings);
        Ok(())
    }

    fn hold(&self) -> Result<Held, AccountError> {
        Ok(key_lock::hold(&self.redis, "accounts")?)
    }
}
