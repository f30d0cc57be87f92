//! The [`BindingStore`] of cluster mode: Redis is the record, every node answers lookups
//! from its own mirror (`binding_mirror.rs`), kept current from a Redis Stream of changes
//! (`binding_feed.rs`).
//!
//! Each write is one Lua script: it changes the forward HASH and the reverse SETs together
//! and appends each change to the stream (trimmed to about `stream_max_len` entries), so the
//! record, the reverse mapping and the feed never disagree. A write is acknowledged after
//! `Redis::durable` (AOF on the server, `WAIT` for replicas when configured) and once this
//! node's consumer has applied it: a lookup on this node then sees it, and its change has
//! been published on the feed (exactly once, by the consumer). Redis unreachable: lookups go
//! on from the mirror, writes fail with [`IndexError::Storage`].
//!
//! Must not know about SIP, HTTP or configuration; keys are in `docs/cluster.md`.

use super::binding_feed::{self, Keys, Shared};
use super::stream::EntryId;
use super::binding_mirror::Value;
use super::conn::Redis;
use crate::clock::unix_now;
use crate::numbers::E164;
use crate::storage::bindings::{BindOutcome, Binding, BindingStore, Bindings, ChunkCounts, IndexError, Source, Stats};
use crate::storage::feed::ChangeReceiver;
use crate::storage::StorageError;
use ::redis::Script;
use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// KEYS: fwd, stream. ARGV: rev prefix, max len, number, uri, value.
/// Returns {changed (0/1), old uri or "", stream id or ""}.
const BIND: &str = r#"
local old = redis.call('HGET', KEYS[1], ARGV[3])
local olduri = ''
if old then olduri = string.match(old, '^[^\t]*') end
if old and olduri == ARGV[4] then return {0, olduri, ''} end
if old then redis.call('SREM', ARGV[1] .. olduri, ARGV[3]) end
redis.call('HSET', KEYS[1], ARGV[3], ARGV[5])
redis.call('SADD', ARGV[1] .. ARGV[4], ARGV[3])
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'n', ARGV[3], 'o', olduri, 'v', ARGV[5])
return {1, olduri, id}
"#;

/// KEYS: fwd, stream. ARGV: rev prefix, max len, number. Returns {removed, old value, id}.
const UNBIND: &str = r#"
local old = redis.call('HGET', KEYS[1], ARGV[3])
if not old then return {0, '', ''} end
local olduri = string.match(old, '^[^\t]*')
redis.call('HDEL', KEYS[1], ARGV[3])
redis.call('SREM', ARGV[1] .. olduri, ARGV[3])
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'n', ARGV[3], 'o', olduri, 'v', '')
return {1, old, id}
"#;

/// KEYS: fwd, stream. ARGV: rev prefix, max len, then (number, uri, value) triples in the
/// order to apply. Returns {new, replaced, unchanged, last stream id or ""}.
const CHUNK: &str = r#"
local new, replaced, unchanged, id = 0, 0, 0, ''
for i = 3, #ARGV, 3 do
  local n, uri, v = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local old = redis.call('HGET', KEYS[1], n)
  local olduri = ''
  if old then olduri = string.match(old, '^[^\t]*') end
  if old and olduri == uri then
    unchanged = unchanged + 1
  else
    if old then
      redis.call('SREM', ARGV[1] .. olduri, n)
      replaced = replaced + 1
    else
      new = new + 1
    end
    redis.call('HSET', KEYS[1], n, v)
    redis.call('SADD', ARGV[1] .. uri, n)
    id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'n', n, 'o', olduri, 'v', v)
  end
end
return {new, replaced, unchanged, id}
"#;

/// The bindings in Redis, with this node's mirror.
pub struct RedisBindings {
    shared: Arc<Shared>,
    max_len: u64,
    bind: Script,
    unbind: Script,
    chunk: Script,
}

impl Drop for RedisBindings {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
    }
}

impl RedisBindings {
    /// Loads every binding into the mirror (in pages), then starts following the stream.
    /// `stream_max_len`: about how many changes the stream keeps for nodes that are behind.
    pub fn open(redis: Arc<Redis>, stream_max_len: u64) -> Result<RedisBindings, StorageError> {
        let keys = Keys { fwd: redis.key("b:fwd"), rev: redis.key("b:rev:"), stream: redis.key("b:changes") };
        let shared = Arc::new(Shared::new(redis, keys));
        let started = std::time::Instant::now();
        shared.load_initial()?;
        tracing::info!(bindings = shared.mirror.read().len(), ms = started.elapsed().as_millis() as u64, "bindings loaded from Redis");
        binding_feed::spawn(shared.clone()).map_err(StorageError::new)?;
        Ok(RedisBindings { shared, max_len: stream_max_len.max(1), bind: Script::new(BIND), unbind: Script::new(UNBIND), chunk: Script::new(CHUNK) })
    }

    fn redis(&self) -> &Redis {
        &self.shared.redis
    }

    /// Runs a write script (with its durable wait) and returns its reply.
    fn write<T: ::redis::FromRedisValue>(&self, script: &Script, args: &[&str]) -> Result<T, IndexError> {
        let keys = &self.shared.keys;
        let max_len = self.max_len.to_string();
        let reply = self.redis().run(|c| {
            let mut inv = script.key(&keys.fwd);
            inv.key(&keys.stream).arg(&keys.rev).arg(&max_len);
            for a in args {
                inv.arg(*a);
            }
            let reply: T = inv.invoke(c)?;
            self.redis().durable(c)?;
            Ok(reply)
        })?;
        Ok(reply)
    }

    fn stream_id(id: &str) -> Option<EntryId> {
        EntryId::parse(id)
    }
}

impl BindingStore for RedisBindings {
    fn bind(&self, n: E164, uri: &str, source: Source) -> Result<BindOutcome, IndexError> {
        let value = Value::encode(uri, unix_now(), source);
        let digits = n.digits().to_string();
        let (changed, old, id): (u8, String, String) = self.write(&self.bind, &[&digits, uri, &value])?;
        if changed == 0 {
            return Ok(BindOutcome::Unchanged);
        }
        if let Some(id) = Self::stream_id(&id) {
            self.shared.wait_applied(id, |m| {
                if let Some(v) = Value::parse(&value) {
                    m.set(n.digits(), &v);
                }
            });
        }
        Ok(if old.is_empty() { BindOutcome::New } else { BindOutcome::Rebound { old_uri: old } })
    }

    fn unbind(&self, n: E164) -> Result<Option<Binding>, IndexError> {
        let digits = n.digits().to_string();
        let (removed, old, id): (u8, String, String) = self.write(&self.unbind, &[&digits])?;
        if removed == 0 {
            return Ok(None);
        }
        if let Some(id) = Self::stream_id(&id) {
            self.shared.wait_applied(id, |m| {
                m.remove(n.digits());
            });
        }
        let v = Value::parse(&old).ok_or_else(|| IndexError::Corrupt(format!("binding of {n} in Redis: {old:?}")))?;
        Ok(Some(Binding { number: n, sip_uri: v.uri.to_string(), bound_at: v.at, source: v.source }))
    }

    /// From the mirror: no Redis round trip.
    fn lookup(&self, n: E164) -> Result<Option<Binding>, IndexError> {
        Ok(self.shared.mirror.read().binding(n))
    }

    fn is_bound(&self, n: E164) -> Result<bool, IndexError> {
        Ok(self.shared.mirror.read().contains(n.digits()))
    }

    /// From the mirror, under one read lock.
    fn resolve(&self, numbers: &[E164]) -> Result<Vec<(E164, String)>, IndexError> {
        let mirror = self.shared.mirror.read();
        let mut seen = BTreeSet::new();
        Ok(numbers
            .iter()
            .filter(|n| seen.insert(**n))
            .filter_map(|n| mirror.uri_of(n.digits()).map(|u| (*n, u.to_string())))
            .collect())
    }

    fn numbers_of(&self, uri: &str) -> Result<Vec<E164>, IndexError> {
        let digits = self.shared.mirror.read().numbers_of(uri);
        Ok(digits.into_iter().filter_map(|d| E164::from_digits(d).ok()).collect())
    }

    fn apply_chunk(&self, rows: &[(E164, String)], source: Source) -> Result<ChunkCounts, IndexError> {
        let mut order: Vec<&(E164, String)> = rows.iter().collect();
        order.sort_by_key(|(n, _)| *n);
        let now = unix_now();
        let triples: Vec<(String, &str, String)> =
            order.iter().map(|(n, uri)| (n.digits().to_string(), uri.as_str(), Value::encode(uri, now, source))).collect();
        let args: Vec<&str> = triples.iter().flat_map(|(n, u, v)| [n.as_str(), *u, v.as_str()]).collect();
        let (new, replaced, unchanged, id): (u64, u64, u64, String) = self.write(&self.chunk, &args)?;
        if let Some(id) = Self::stream_id(&id) {
            self.shared.wait_applied(id, |m| {
                for (n, _, v) in &triples {
                    if let (Ok(n), Some(v)) = (n.parse(), Value::parse(v)) {
                        m.set(n, &v);
                    }
                }
            });
        }
        Ok(ChunkCounts { new, replaced, unchanged })
    }

    /// In numeric order, from the mirror (the numbers are taken at the call; not a snapshot).
    fn bindings(&self) -> Bindings {
        let numbers = self.shared.mirror.read().numbers();
        let shared = self.shared.clone();
        Box::new(numbers.into_iter().filter_map(move |d| {
            let n = E164::from_digits(d).ok()?;
            shared.mirror.read().binding(n).map(Ok)
        }))
    }

    fn changes(&self) -> ChangeReceiver {
        self.shared.feed.subscribe()
    }

    fn len(&self) -> u64 {
        self.shared.mirror.read().len()
    }

    fn stats(&self) -> Result<Stats, IndexError> {
        let m = self.shared.mirror.read();
        Ok(Stats { numbers: m.len(), sip_uris: m.uri_count(), size_on_disk: 0, path: format!("redis:{}", self.shared.keys.fwd).into() })
    }

    /// The mirror's own invariants, and that it holds as many bindings as Redis (a write in
    /// flight can make that differ for a moment).
    fn check_consistency(&self) -> Result<Vec<String>, IndexError> {
        let mut problems = self.shared.mirror.read().check();
        let fwd = &self.shared.keys.fwd;
        let stored: u64 = self.redis().run(|c| ::redis::cmd("HLEN").arg(fwd).query(c))?;
        let held = self.len();
        if stored != held {
            problems.push(format!("Redis holds {stored} bindings, this node's mirror {held}"));
        }
        Ok(problems)
    }
}
