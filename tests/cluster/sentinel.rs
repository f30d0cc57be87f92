//! A Redis primary, its replica and a real `redis-sentinel` (quorum 1, short
//! down-after-milliseconds) on free loopback ports, for failover tests. Missing
//! `redis-sentinel` fails the test: `scripts/test.sh` installs it.
#![allow(dead_code)]

use crate::common::free_port;
use crate::harness::{query, RedisServer};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The name the Sentinel monitors the primary under.
pub const MASTER: &str = "sp-test";

/// Primary + replica + Sentinel.
pub struct Failover {
    pub primary: RedisServer,
    pub replica: RedisServer,
    pub sentinel_port: u16,
    sentinel: Option<Child>,
}

impl Failover {
    /// Starts the three and waits until the replica is in sync and the Sentinel knows it.
    pub fn start(dir: &Path) -> Failover {
        let primary = RedisServer::start(&dir.join("primary"), &[]);
        let port = primary.port.to_string();
        let replica = RedisServer::start(&dir.join("replica"), &["--replicaof", "127.0.0.1", &port]);
        let sentinel_port = free_port();
        let sdir = dir.join("sentinel");
        std::fs::create_dir_all(&sdir).unwrap();
        let conf = sdir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {sentinel_port}\nbind 127.0.0.1\nprotected-mode no\ndir {}\n\
                 sentinel monitor {MASTER} 127.0.0.1 {} 1\n\
                 sentinel down-after-milliseconds {MASTER} 500\n\
                 sentinel failover-timeout {MASTER} 3000\n\
                 sentinel parallel-syncs {MASTER} 1\n",
                sdir.display(),
                primary.port
            ),
        )
        .unwrap();
        let log = std::fs::File::create(sdir.join("sentinel.log")).unwrap();
        let child = Command::new("redis-sentinel")
            .arg(&conf)
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-sentinel not found: scripts/test.sh installs Debian's redis-sentinel");
        let f = Failover { primary, replica, sentinel_port, sentinel: Some(child) };
        f.wait("the replica in sync", || f.primary.query(&["INFO", "replication"]).is_some_and(|i| i.contains("connected_slaves:1")));
        f.wait("the Sentinel knowing the replica", || f.sentinel(&["SENTINEL", "replicas", MASTER]).is_some_and(|r| r.contains(&f.replica.port.to_string())));
        f
    }

    /// `host:port` of the Sentinel, for `[cluster] sentinels`.
    pub fn sentinel_addr(&self) -> String {
        format!("127.0.0.1:{}", self.sentinel_port)
    }

    /// A command to the Sentinel, its reply as text.
    pub fn sentinel(&self, args: &[&str]) -> Option<String> {
        query(&format!("redis://127.0.0.1:{}", self.sentinel_port), args)
    }

    /// The port of the primary the Sentinel names now.
    pub fn primary_port(&self) -> Option<u16> {
        self.sentinel(&["SENTINEL", "get-master-addr-by-name", MASTER])?.lines().nth(1)?.parse().ok()
    }

    /// Waits (20 s at most) until `ok`.
    pub fn wait(&self, what: &str, ok: impl Fn() -> bool) {
        let started = Instant::now();
        while !ok() {
            assert!(started.elapsed() < Duration::from_secs(20), "gave up waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Failover {
    fn drop(&mut self) {
        if let Some(mut c) = self.sentinel.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
