//! The connection to Redis every Redis store shares: where the primary is (an address, or
//! asked of Sentinel), a small pool of blocking connections, and what "unreachable" means.
//!
//! Why blocking: the store traits are synchronous (sled's are), and a command on loopback
//! or a LAN takes tens of microseconds. Every command has a timeout; after a failure the
//! connection is dropped and the command tried once more on a new one (asked of Sentinel
//! again, so a promoted replica is found); if that fails too, Redis counts as down for
//! [`BACKOFF`] and every call fails at once without waiting, so a dead Redis costs the
//! request path nothing but an error (answered 503 by the handlers).
//!
//! Owns connections only: the keys and what they mean belong to each store.

use crate::storage::StorageError;
use parking_lot::Mutex;
use ::redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use ::redis::{Client, Connection, RedisError, RedisResult};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long Redis counts as down after a failed retry.
pub const BACKOFF: Duration = Duration::from_millis(500);
/// Idle connections kept for reuse.
const POOL: usize = 16;

/// Where Redis is and how to talk to it (filled from `[cluster]` by the server).
#[derive(Debug, Clone)]
pub struct Options {
    /// `redis://host:port[/db]` of the primary, used when `sentinels` is empty.
    pub url: String,
    /// Sentinel addresses (`host:port`).
    pub sentinels: Vec<String>,
    pub master_name: String,
    pub password: Option<String>,
    /// Prefix of every key.
    pub prefix: String,
    /// Replicas that must acknowledge a durable write (`WAIT`).
    pub replicas: u32,
    pub wait_timeout: Duration,
    /// Longest wait for one command.
    pub timeout: Duration,
}

enum Source {
    Direct(Client),
    Sentinel(Mutex<SentinelClient>),
}

/// The shared connection to Redis.
pub struct Redis {
    source: Source,
    options: Options,
    idle: Mutex<Vec<Connection>>,
    /// Milliseconds since `epoch` until which Redis counts as down (0: up).
    down_until: AtomicU64,
    epoch: Instant,
}

impl Redis {
    /// Connects once to check the address (and Sentinel's answer) and says what it found.
    pub fn connect(options: Options) -> Result<Redis, StorageError> {
        let source = if options.sentinels.is_empty() {
            let info = ::redis::IntoConnectionInfo::into_connection_info(options.url.as_str()).map_err(StorageError::new)?;
            let info = match &options.password {
                Some(p) => info.clone().set_redis_settings(info.redis_settings().clone().set_password(p.clone())),
                None => info,
            };
            Source::Direct(Client::open(info).map_err(StorageError::new)?)
        } else {
            let urls: Vec<String> = options.sentinels.iter().map(|a| format!("redis://{a}")).collect();
            let mut node = SentinelNodeConnectionInfo::default();
            if let Some(p) = &options.password {
                node = node.set_redis_connection_info(::redis::RedisConnectionInfo::default().set_password(p.clone()));
            }
            let client = SentinelClient::build(urls, options.master_name.clone(), Some(node), SentinelServerType::Master).map_err(StorageError::new)?;
            Source::Sentinel(Mutex::new(client))
        };
        let redis = Redis { source, options, idle: Mutex::new(Vec::new()), down_until: AtomicU64::new(0), epoch: Instant::now() };
        redis.run(|c| ::redis::cmd("PING").query::<String>(c))?;
        Ok(redis)
    }

    pub fn options(&self) -> &Options {
        &self.options
    }

    /// The full name of a key: the cluster's prefix and `name`.
    pub fn key(&self, name: &str) -> String {
        format!("{}{}", self.options.prefix, name)
    }

    /// Whether the last command reached Redis (false during the back-off after a failure).
    pub fn reachable(&self) -> bool {
        self.down_until.load(Ordering::Relaxed) <= self.now_ms()
    }

    /// Runs `f` on a pooled connection; on a connection failure, once more on a new one.
    /// Commands should be safe to repeat (a write may have landed before the failure).
    pub fn run<T>(&self, mut f: impl FnMut(&mut Connection) -> RedisResult<T>) -> Result<T, StorageError> {
        if !self.reachable() {
            return Err(StorageError::new("Redis unreachable (retrying shortly)"));
        }
        let mut last = None;
        for _ in 0..2 {
            let mut conn = match self.take() {
                Ok(c) => c,
                Err(e) => {
                    last = Some(e);
                    continue;
                }
            };
            match f(&mut conn) {
                Ok(v) => {
                    self.give_back(conn);
                    return Ok(v);
                }
                Err(e) if is_connection_error(&e) => last = Some(e),
                Err(e) => {
                    // A call that failed between WATCH and EXEC would leave the key watched,
                    // and the next user's MULTI on this connection aborted without a word.
                    if ::redis::cmd("UNWATCH").query::<()>(&mut conn).is_ok() {
                        self.give_back(conn);
                    }
                    return Err(StorageError::new(e));
                }
            }
        }
        self.down_until.store(self.now_ms() + BACKOFF.as_millis() as u64, Ordering::Relaxed);
        let e = last.map(|e| e.to_string()).unwrap_or_default();
        tracing::warn!(error = %e, "Redis unreachable");
        Err(StorageError::new(format!("Redis unreachable: {e}")))
    }

    /// Waits until the configured number of replicas hold what this connection wrote
    /// (nothing to wait for without replicas). Call inside [`Redis::run`] after a write that
    /// is acknowledged to a user.
    pub fn durable(&self, conn: &mut Connection) -> RedisResult<()> {
        let o = &self.options;
        if o.replicas == 0 {
            return Ok(());
        }
        // WAIT answers after up to `wait_timeout`: read it with that much more patience, so
        // that a slow replica is not taken for a lost connection.
        conn.set_read_timeout(Some(o.wait_timeout + o.timeout))?;
        let acked: RedisResult<u32> = ::redis::cmd("WAIT").arg(o.replicas).arg(o.wait_timeout.as_millis() as u64).query(conn);
        conn.set_read_timeout(Some(o.timeout))?;
        let acked = acked?;
        if acked < o.replicas {
            return Err(RedisError::from((::redis::ErrorKind::Io, "fewer replicas than configured acknowledged the write")));
        }
        Ok(())
    }

    /// A connection of its own, not pooled, for a blocking read (a stream consumer): its
    /// read timeout is `read_timeout` (None: wait forever).
    pub fn dedicated(&self, read_timeout: Option<Duration>) -> Result<Connection, StorageError> {
        let conn = self.open().map_err(StorageError::new)?;
        conn.set_read_timeout(read_timeout).map_err(StorageError::new)?;
        Ok(conn)
    }

    fn take(&self) -> RedisResult<Connection> {
        if let Some(c) = self.idle.lock().pop() {
            return Ok(c);
        }
        self.open()
    }

    fn give_back(&self, conn: Connection) {
        let mut idle = self.idle.lock();
        if idle.len() < POOL {
            idle.push(conn);
        }
    }

    fn open(&self) -> RedisResult<Connection> {
        let timeout = self.options.timeout;
        let conn = match &self.source {
            Source::Direct(client) => client.get_connection_with_timeout(timeout)?,
            Source::Sentinel(s) => {
                let client = s.lock().get_client()?;
                client.get_connection_with_timeout(timeout)?
            }
        };
        conn.set_read_timeout(Some(timeout))?;
        conn.set_write_timeout(Some(timeout))?;
        Ok(conn)
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }
}

/// A failure of the connection (not of the command): worth a new connection. A primary
/// turned replica (`READONLY`) counts, so that Sentinel is asked again.
fn is_connection_error(e: &RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout() || e.to_string().contains("READONLY")
}
