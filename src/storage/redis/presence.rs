//! The [`PublicationStore`] of cluster mode: presence shared by every node through Redis.
//!
//! Each presentity is one Redis string (`presence:<uri>`, a [`Presentity`]: his
//! publications with entity-tags and expiry, his combined state, a version). A write
//! (PUBLISH, refresh, modify, remove, expiry) is one optimistic transaction on that key
//! (WATCH, read, change, MULTI/EXEC): so a publication made at one node is refreshed,
//! modified or removed at another with its entity-tag. The same transaction sets his
//! earliest expiry in the sorted set `presence-expiry` and appends his new record to the
//! stream `presence-changes`, which every node follows (`presence_feed`) into its mirror
//! (`presence_mirror`), from which reads are served without Redis and from which each node
//! announces changes to its own watchers.
//!
//! Expiry needs no particular node alive: every node drops expired publications from its
//! mirror at their time, and sweeps Redis of expired ones each second (any node's sweep
//! does it; a transaction makes the others' no-ops); writes drop expired ones too.
//! Redis unreachable: writes fail ([`PublishError::Storage`]: 503), reads go on from the
//! mirror. Must not know about subscriptions or SIP messages.
//!
//! Keys (under the cluster's prefix; the registrar's are `registrations`'):
//!
//! | key | type | written by | read by | expiry |
//! |---|---|---|---|---|
//! | `presence:<uri>` | string: [`Presentity`] (postcard) | any node's write or sweep (WATCH/MULTI) | writers; every node at start and on a gap | none (his last state: "last seen", kept capabilities) |
//! | `presence-expiry` | sorted set: uri, score = his earliest expiry (unix ms) | the same transactions | every node's sweep, each second | members removed when he has no publication |
//! | `presence-changes` | stream: `u` uri + `s` his record, or `u` + `a` (announce) | the same transactions; `announce` | every node's feed thread | trimmed to about `stream_max_len` entries |

use super::presence_feed::{self, unix_ms, Keys};
use super::presence_mirror::Mirror;
use super::presence_state::Presentity;
use super::Redis;
use crate::storage::presence::{Live, PublicationStore, PublishError, Published};
use crate::storage::StorageError;
use ::redis::{Connection, RedisResult, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Tries of one write against concurrent writers of the same presentity.
const TRIES: usize = 16;

/// Before try `tried` (from 1) of a write that lost to a concurrent one: a random pause of
/// up to 2^tried ms (at most 8), so that forty writers of one presentity at once (phones
/// publishing through every node) do not keep aborting one another in lockstep (the
/// cluster test of that lost all sixteen tries in one of four runs here). It blocks its
/// caller as the Redis calls around it do, and only under such contention.
fn back_off(tried: usize) {
    let most = 1u64 << tried.min(3);
    std::thread::sleep(std::time::Duration::from_millis(rand::random::<u64>() % (most + 1)));
}
/// Presentities swept of expired publications per node and second at most.
const SWEEP: usize = 256;

pub struct RedisPublications {
    redis: Arc<Redis>,
    mirror: Arc<Mirror>,
    /// Prefix of a presentity's key.
    presentity: String,
    expiry: String,
    stream: String,
    stream_max_len: u64,
}

/// What a write does to a presentity: Ok(value) to store him, or an error (nothing stored
/// but the expiry of his expired publications).
type Change<'a, T> = &'a mut dyn FnMut(&mut Presentity) -> Result<T, PublishError>;

impl RedisPublications {
    /// The store on `redis`, its mirror filled from Redis and kept current by a feed thread;
    /// returns it with the receiving end of its change channel. The stream is trimmed to
    /// about `stream_max_len` entries.
    pub fn open(redis: Arc<Redis>, stream_max_len: u64) -> Result<(RedisPublications, mpsc::UnboundedReceiver<Box<str>>), StorageError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let store = RedisPublications {
            presentity: redis.key("presence:"),
            expiry: redis.key("presence-expiry"),
            stream: redis.key("presence-changes"),
            mirror: Arc::new(Mirror::new(tx)),
            stream_max_len,
            redis,
        };
        let keys = Keys { redis: store.redis.clone(), stream: store.stream.clone(), presentity: store.presentity.clone() };
        presence_feed::start(keys, &store.mirror)?;
        Ok((store, rx))
    }

    /// Runs `change` on `uri`'s record in one transaction and stores the result (after
    /// dropping his expired publications); the mirror takes it at once.
    fn write<T>(&self, uri: &str, change: Change<'_, T>) -> Result<T, PublishError> {
        self.write_as(uri, Refused::Nothing, change)
    }

    /// [`Self::write`], with what a refused change that found nothing expired does.
    fn write_as<T>(&self, uri: &str, refused: Refused, change: Change<'_, T>) -> Result<T, PublishError> {
        let key = format!("{}{uri}", self.presentity);
        let now = unix_ms();
        let (out, stored) = self.redis.run(|conn| self.transaction(conn, &key, uri, now, refused, &mut *change))??;
        if let Some(p) = stored {
            self.mirror.apply(uri, p, now, false);
        }
        out
    }

    /// One optimistic transaction (retried on a concurrent write): the outcome, and his new
    /// record if one was stored.
    #[allow(clippy::type_complexity)]
    fn transaction<T>(&self, conn: &mut Connection, key: &str, uri: &str, now: u64, refused: Refused, change: Change<'_, T>) -> RedisResult<Result<(Result<T, PublishError>, Option<Presentity>), PublishError>> {
        for tried in 0..TRIES {
            if tried > 0 {
                back_off(tried);
            }
            ::redis::cmd("WATCH").arg(key).exec(conn)?;
            let raw: Option<Vec<u8>> = ::redis::cmd("GET").arg(key).query(conn)?;
            let mut p = match raw.map(|b| Presentity::decode(&b)) {
                Some(Ok(p)) => p,
                Some(Err(e)) => {
                    tracing::warn!(uri, "presence: a stored record that does not decode is replaced: {e}");
                    // Its version unknown: one from the clock, above any a mirror holds.
                    Presentity { version: now, ..Presentity::default() }
                }
                None => Presentity::default(),
            };
            let expired = p.expire(now);
            let out = change(&mut p);
            if out.is_err() && !expired {
                match refused {
                    Refused::Nothing => ::redis::cmd("UNWATCH").exec(conn)?,
                    // Nothing of his was due: his entry in the expiry set was stale. Set
                    // right in this transaction (a concurrent write, which sets it itself,
                    // aborts it).
                    Refused::FixExpiry => {
                        let mut pipe = ::redis::pipe();
                        pipe.atomic();
                        self.expiry_of(&mut pipe, uri, &p);
                        pipe.query::<Value>(conn)?;
                    }
                }
                return Ok(Ok((out, None)));
            }
            if out.is_ok() {
                p.settle(now / 1000);
            }
            p.version += 1;
            let bytes = p.encode().map_err(|e| ::redis::RedisError::from((::redis::ErrorKind::Client, "encode", e.to_string())))?;
            let mut pipe = ::redis::pipe();
            pipe.atomic().cmd("SET").arg(key).arg(&bytes).ignore();
            self.expiry_of(&mut pipe, uri, &p);
            pipe.cmd("XADD").arg(&self.stream).arg("MAXLEN").arg("~").arg(self.stream_max_len).arg("*").arg("u").arg(uri).arg("s").arg(&bytes).ignore();
            if pipe.query::<Value>(conn)? != Value::Nil {
                self.redis.durable(conn)?;
                return Ok(Ok((out, Some(p))));
            }
        }
        Ok(Err(PublishError::Storage(StorageError::new(format!("presence: {uri} written concurrently {TRIES} times over")))))
    }

    /// Sets (or clears) `uri`'s earliest expiry in the expiry set.
    fn expiry_of(&self, pipe: &mut ::redis::Pipeline, uri: &str, p: &Presentity) {
        match p.earliest() {
            Some(t) => pipe.cmd("ZADD").arg(&self.expiry).arg(t).arg(uri).ignore(),
            None => pipe.cmd("ZREM").arg(&self.expiry).arg(uri).ignore(),
        };
    }

    /// Drops the expired publications of (at most [`SWEEP`]) presentities from Redis, and
    /// corrects the expiry set's stale entries (one transaction each); returns how many
    /// presentities were due.
    fn sweep(&self, now: u64) -> Result<usize, StorageError> {
        let due: Vec<String> = self.redis.run(|c| ::redis::cmd("ZRANGEBYSCORE").arg(&self.expiry).arg("-inf").arg(now).arg("LIMIT").arg(0).arg(SWEEP).query(c))?;
        for uri in &due {
            // Nothing to change: the expiry drop (or the stale entry's correction) is all
            // the write does.
            match self.write_as(uri, Refused::FixExpiry, &mut |_| Err(PublishError::UnknownEtag)) {
                Err(PublishError::Storage(e)) => return Err(e),
                Err(PublishError::UnknownEtag) | Ok(()) => {}
            }
        }
        Ok(due.len())
    }
}

/// What a transaction whose change was refused, and that found nothing of his expired,
/// writes.
#[derive(Clone, Copy)]
enum Refused {
    /// Nothing (a refused PUBLISH).
    Nothing,
    /// His entry in the expiry set, from his record (the sweep).
    FixExpiry,
}

impl PublicationStore for RedisPublications {
    fn publish(&self, uri: &str, state: Published, expires: Duration) -> Result<String, PublishError> {
        let etag = new_etag();
        let until = unix_ms() + expires.as_millis() as u64;
        self.write(uri, &mut |p| {
            // Repeated after a lost connection: the first try may have landed.
            if p.publications.iter().all(|q| q.etag != etag) {
                p.publish(etag.clone(), state.clone(), until);
            }
            Ok(())
        })?;
        Ok(etag)
    }

    fn update(&self, uri: &str, etag: &str, state: Option<Published>, expires: Duration) -> Result<String, PublishError> {
        let new = new_etag();
        let until = unix_ms() + expires.as_millis() as u64;
        self.write(uri, &mut |p| {
            if p.publications.iter().any(|q| q.etag == new) {
                return Ok(());
            }
            p.update(etag, new.clone(), state.clone(), until)
        })?;
        Ok(new)
    }

    fn remove(&self, uri: &str, etag: &str) -> Result<(), PublishError> {
        // Tried again after a lost connection, the first try may have removed it.
        let mut found = false;
        self.write(uri, &mut |p| match p.remove(etag) {
            Err(PublishError::UnknownEtag) if found => Ok(()),
            done => {
                found = done.is_ok();
                done
            }
        })
    }

    fn live(&self, uri: &str) -> Option<Live> {
        self.mirror.live(uri)
    }

    fn expire(&self, now: Instant) -> usize {
        let now_ms = unix_ms() + now.saturating_duration_since(Instant::now()).as_millis() as u64;
        let dropped = self.mirror.expire(now_ms);
        if let Err(e) = self.sweep(now_ms) {
            tracing::debug!("presence: expired publications not swept from Redis (the mirror dropped them): {e}");
        }
        dropped
    }

    fn publications(&self) -> usize {
        self.mirror.publications()
    }

    /// Announced on every node (through the stream); on this node alone if Redis is away.
    fn announce(&self, uri: &str) {
        let sent = self.redis.run(|c| {
            ::redis::cmd("XADD").arg(&self.stream).arg("MAXLEN").arg("~").arg(self.stream_max_len).arg("*").arg("u").arg(uri).arg("a").arg(1).exec(c)
        });
        if let Err(e) = sent {
            tracing::warn!(uri, "presence: a change announced on this node only: {e}");
            self.mirror.announce(uri);
        }
    }
}

fn new_etag() -> String {
    crate::sip::new_tag() + &crate::sip::new_tag()
}
