//! The parts of a cluster test: a real `redis-server` on a free loopback port (append-only,
//! fsync always), and nodes (the built binary, `common::process::ServerProcess`) in
//! cluster mode pointing at it. Missing `redis-server` fails the test: `scripts/test.sh`
//! installs it.
#![allow(dead_code)]

use crate::common::free_port;
use crate::common::process::ServerProcess;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A Redis server of the test's own.
pub struct RedisServer {
    pub port: u16,
    pub dir: PathBuf,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts `redis-server` on a free port with its files in `dir`, and waits until it
    /// answers PING. `extra` are more `redis-server` arguments (`--replicaof`, ...).
    pub fn start(dir: &Path, extra: &[&str]) -> RedisServer {
        std::fs::create_dir_all(dir).unwrap();
        let port = free_port();
        let mut server = RedisServer { port, dir: dir.to_path_buf(), child: None };
        server.spawn(extra);
        server
    }

    fn spawn(&mut self, extra: &[&str]) {
        let port = self.port.to_string();
        let args = ["--port", &port, "--bind", "127.0.0.1", "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--protected-mode", "no"];
        let log = std::fs::File::create(self.dir.join("redis.log")).unwrap();
        let child = Command::new("redis-server")
            .args(args)
            .args(extra)
            .current_dir(&self.dir)
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server not found: scripts/test.sh installs Debian's redis-server");
        self.child = Some(child);
        let started = Instant::now();
        while self.query(&["PING"]).as_deref() != Some("PONG") {
            assert!(started.elapsed() < Duration::from_secs(10), "redis-server did not answer on {}", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// A command's reply as text (None: no connection or an error), with `redis-cli`-free
    /// plain RESP through the redis crate.
    pub fn query(&self, args: &[&str]) -> Option<String> {
        query(&self.url(), args)
    }

    /// SIGKILL.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port and directory (its append-only file is read back).
    pub fn restart(&mut self, extra: &[&str]) {
        self.kill9();
        self.spawn(extra);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A command's reply as text from the Redis (or Sentinel) at `url` (None: no connection or
/// an error).
pub fn query(url: &str, args: &[&str]) -> Option<String> {
    let client = redis::Client::open(url).ok()?;
    let mut conn = client.get_connection_with_timeout(Duration::from_secs(1)).ok()?;
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    let value: redis::Value = cmd.query(&mut conn).ok()?;
    Some(text(&value))
}

/// A reply as text: strings as they are, integers in decimal, arrays one item a line.
pub fn text(v: &redis::Value) -> String {
    match v {
        redis::Value::Nil => String::new(),
        redis::Value::Int(i) => i.to_string(),
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        redis::Value::SimpleString(s) => s.clone(),
        redis::Value::Okay => "OK".into(),
        redis::Value::Array(items) | redis::Value::Set(items) => items.iter().map(text).collect::<Vec<_>>().join("\n"),
        other => format!("{other:?}"),
    }
}

/// A node in cluster mode, named `name`, on `redis`, with its own data directory in
/// `dir/<name>`; `extra` goes into `[cluster]` (e.g. `lease_ms = 1500`) and may add sections.
pub fn node(dir: &Path, name: &str, redis: &str, extra: &str) -> ServerProcess {
    let dir = dir.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    ServerProcess::new(&dir, &format!("\n[cluster]\nredis = \"{redis}\"\nnode = \"{name}\"\n{extra}\n"))
}
