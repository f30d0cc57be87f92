//! The server as a process of its own (the built binary), for what a test server inside
//! the test cannot show: a SIGKILL, a restart on the same data directory and ports.
#![allow(dead_code)]

use super::{free_port, request, UdpClient};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Ports and directories kept across restarts.
pub struct ServerProcess {
    pub dir: PathBuf,
    pub udp: SocketAddr,
    pub tcp: SocketAddr,
    pub admin: SocketAddr,
    /// Extra TOML appended to the config (sections included, but not `[sip]`).
    pub extra: String,
    /// `sip.log_messages`: every message received is logged.
    pub log_messages: bool,
    /// Extra keys of the `[admin]` section (e.g. `token = "..."`).
    pub admin_extra: String,
    /// Extra environment variables of the server process (e.g. `NOTIFY_SOCKET`).
    pub env: Vec<(String, String)>,
    /// `auth.mode` ("none" unless a test sets "digest").
    pub auth_mode: &'static str,
    child: Option<Child>,
    log: PathBuf,
    starts: u32,
}

impl ServerProcess {
    pub fn new(dir: &Path, extra: &str) -> ServerProcess {
        let port = free_port();
        ServerProcess {
            dir: dir.to_path_buf(),
            udp: SocketAddr::from(([127, 0, 0, 1], port)),
            tcp: SocketAddr::from(([127, 0, 0, 1], port)),
            admin: SocketAddr::from(([127, 0, 0, 1], free_port())),
            extra: extra.to_string(),
            log_messages: false,
            admin_extra: String::new(),
            env: Vec::new(),
            auth_mode: "none",
            child: None,
            log: dir.join("server.log"),
            starts: 0,
        }
    }

    /// Where `write_config` writes the configuration.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("sp.toml")
    }

    /// Writes the configuration the next start uses.
    pub fn write_config(&self) {
        let text = format!(
            "domain = \"example.org\"\ndata_dir = \"{}\"\n{}\n[sip]\nlog_messages = {}\nudp = [\"{}\"]\ntcp = [\"{}\"]\ntls = []\n[admin]\nlisten = \"{}\"\n{}\n[auth]\nmode = \"{}\"\n",
            self.dir.join("data").display(),
            self.extra_top(),
            self.log_messages,
            self.udp,
            self.tcp,
            self.admin,
            self.admin_extra,
            self.auth_mode
        );
        std::fs::write(self.config_path(), format!("{text}{}", self.extra_sections())).unwrap();
    }

    /// Writes the configuration and starts the binary, without waiting for it.
    pub fn spawn(&mut self) {
        self.write_config();
        self.starts += 1;
        let log = std::fs::File::create(self.dir.join(format!("server-{}.log", self.starts))).unwrap();
        self.log = self.dir.join(format!("server-{}.log", self.starts));
        let child = Command::new(env!("CARGO_BIN_EXE_smart-presence"))
            .args(["serve", "--config"])
            .arg(self.config_path())
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts the binary and waits until it answers OPTIONS over UDP.
    pub async fn start(&mut self) {
        self.spawn();
        let c = UdpClient::new(self.udp).await;
        for i in 0..100 {
            c.send(request("OPTIONS", "UDP", c.local(), &format!("up{}-{i}", self.starts), "", "").as_bytes()).await;
            if c.recv_within(Duration::from_millis(100)).await.is_some() {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("the server exited: {status:?}\n{}", self.log());
            }
        }
        panic!("the server did not answer OPTIONS\n{}", self.log());
    }

    /// Starts the binary and expects it to exit at once; returns its exit code and log.
    pub fn start_failing(&mut self) -> (Option<i32>, String) {
        let config = self.dir.join("sp.toml");
        let out = Command::new(env!("CARGO_BIN_EXE_smart-presence")).args(["serve", "--config"]).arg(&config).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    }

    /// `extra` before its first `[section]` (top-level keys).
    fn extra_top(&self) -> &str {
        self.extra.split("\n[").next().unwrap_or("")
    }

    fn extra_sections(&self) -> String {
        match self.extra.find("\n[") {
            Some(i) => self.extra[i..].to_string(),
            None => String::new(),
        }
    }

    /// SIGKILL: nothing is written back.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM, and waits (15 s at most) for a clean exit.
    pub fn stop(&mut self) {
        let mut child = self.child.take().expect("running");
        assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "clean exit: {status:?}\n{}", self.log());
                return;
            }
            assert!(started.elapsed() < Duration::from_secs(15), "still running 15 s after SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What the current (or last) run logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log once it contains `text` (the stored subscriptions are read back while the
    /// server already answers); fails after 30 s.
    pub async fn logged(&self, text: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let log = self.log();
            if log.contains(text) {
                return log;
            }
            assert!(std::time::Instant::now() < deadline, "never logged {text:?}:\n{log}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// What store `store` (a directory of the data directory) holds on disk now.
    pub fn store_stamp(&self, store: &str) -> Stamp {
        stamp(&self.dir.join("data").join(store))
    }

    /// Waits until the server wrote `store` back to disk since `before` was taken (sled
    /// writes back every 500 ms, later on a loaded machine), and one interval more: a
    /// write-back that had begun before may have missed the last write.
    pub async fn written_back(&self, store: &str, before: Stamp) {
        let started = Instant::now();
        while self.store_stamp(store) == before {
            assert!(started.elapsed() < Duration::from_secs(15), "{store} never written back");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
    }

    /// Binds `number` to `sip_uri` through the admin endpoint.
    pub async fn bind(&self, number: &str, sip_uri: &str) {
        let body = format!("{{\"sip_uri\":\"{sip_uri}\"}}");
        let req = format!(
            "PUT /bindings/{number} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let mut s = tokio::net::TcpStream::connect(self.admin).await.unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Each file of a directory tree with its size and time of change.
pub type Stamp = Vec<(PathBuf, u64, Option<std::time::SystemTime>)>;

fn stamp(dir: &Path) -> Stamp {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                dirs.push(e.path());
            } else {
                files.push((e.path(), meta.len(), meta.modified().ok()));
            }
        }
    }
    files.sort();
    files
}
