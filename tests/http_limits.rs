//! The HTTP listeners under a flood of idle and half-sent connections (issue 19): beyond
//! their caps, connections are closed at once; a header that does not complete in time
//! closes its connection; meanwhile SIP over TCP and the admin endpoint still answer.
//!
//! The server runs as the real binary with a low open-file limit (soft and hard), as a
//! systemd unit's 1,024 but smaller, so a listener without caps runs it out of descriptors
//! with a few hundred connections.

mod common;

use common::*;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const FD_LIMIT: u64 = 200;
/// Half-sent requests from one address: more than the server has descriptors.
const FLOOD: usize = 230;
const PER_SOURCE: usize = 20;
const TOTAL: usize = 30;
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

const HALF_SENT: &[u8] = b"POST /v1/verifications HTTP/1.1\r\nHost: test\r\nContent-Type: appl";

/// The server process; killed if the test fails before stopping it.
struct ServerProcess {
    child: Child,
    log: std::path::PathBuf,
    sip: SocketAddr,
    admin: SocketAddr,
    provisioning: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server() -> ServerProcess {
    let dir = tempfile::tempdir().unwrap();
    let at = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    let (sip, admin, provisioning) = (at(free_port()), at(free_port()), at(free_port()));
    let config = dir.path().join("sp.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\ndomain = \"example.org\"\n\
             [sip]\nudp = []\ntcp = [\"{sip}\"]\ntls = []\n\
             [auth]\nmode = \"none\"\n\
             [admin]\nlisten = \"{admin}\"\n\
             [provisioning]\nlisten = \"{provisioning}\"\nmax_connections = {TOTAL}\n\
             max_connections_per_source = {PER_SOURCE}\nheader_read_timeout_secs = {}\n",
            dir.path().join("data").display(),
            HEADER_TIMEOUT.as_secs()
        ),
    )
    .unwrap();
    let log = dir.path().join("server.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_smart-presence"));
    cmd.args(["serve", "--config"]).arg(&config).env_remove("RUST_LOG");
    cmd.stderr(Stdio::from(std::fs::File::create(&log).unwrap()));
    // SAFETY: only setrlimit, async-signal-safe, between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit { rlim_cur: FD_LIMIT as libc::rlim_t, rlim_max: FD_LIMIT as libc::rlim_t };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().unwrap();
    ServerProcess { child, log, sip, admin, provisioning, _dir: dir }
}

/// A complete GET with `Connection: close`; the status line and body, or None.
async fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let exchange = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.ok()?;
        Some(String::from_utf8_lossy(&out).into_owned())
    };
    tokio::time::timeout(WAIT, exchange).await.ok().flatten()
}

/// A connection from `from` (a loopback address) that sends `data`, possibly nothing.
async fn connect_from(from: IpAddr, to: SocketAddr, data: &[u8]) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    let mut s = socket.connect(to).await.expect("connect (the kernel completes it)");
    // The server may have closed it already; that is what some of these are for.
    let _ = s.write_all(data).await;
    s
}

/// Whether the server closed `s` (end of stream, reset, or an answer) within 20 ms.
async fn closed(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(Duration::from_millis(20), s.read(&mut buf)).await.is_ok()
}

/// Drops connections as the server closes them until `open` are left (or `within`
/// passes); returns how many are left open.
async fn close_until(conns: &mut Vec<TcpStream>, open: usize, within: Duration) -> usize {
    let deadline = Instant::now() + within;
    loop {
        let mut left = Vec::with_capacity(conns.len());
        for mut s in conns.drain(..) {
            if !closed(&mut s).await {
                left.push(s);
            }
        }
        *conns = left;
        if conns.len() <= open || Instant::now() >= deadline {
            return conns.len();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn sip_options_over_tcp(addr: SocketAddr, branch: &str) -> Option<String> {
    let mut s = tokio::time::timeout(WAIT, TcpStream::connect(addr)).await.ok()?.ok()?;
    let local = s.local_addr().ok()?;
    s.write_all(request("OPTIONS", "TCP", local, branch, "", "").as_bytes()).await.ok()?;
    read_message(&mut s, &mut Vec::new()).await
}

#[tokio::test]
async fn half_sent_requests_are_capped_and_timed_out_while_sip_and_admin_answer() {
    let server = start_server();
    let mut ready = false;
    for _ in 0..100 {
        if http_get(server.provisioning, "/health").await.is_some() {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "the provisioning endpoint answers");
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();

    // One connection that sends nothing, then a flood of half-sent requests from one address.
    let started = Instant::now();
    let mut held = vec![connect_from(ip("127.0.0.4"), server.provisioning, b"").await];
    let mut flood = Vec::new();
    for _ in 0..FLOOD {
        flood.push(connect_from(ip("127.0.0.1"), server.provisioning, HALF_SENT).await);
    }
    let open = close_until(&mut flood, PER_SOURCE, Duration::from_secs(3)).await;
    assert_eq!(open, PER_SOURCE, "beyond its per-source cap a source's connections are closed at once");
    // From another address, up to the cap in all.
    let mut second = Vec::new();
    for _ in 0..PER_SOURCE {
        second.push(connect_from(ip("127.0.0.2"), server.provisioning, HALF_SENT).await);
    }
    let room = TOTAL - PER_SOURCE - 1;
    assert_eq!(close_until(&mut second, room, Duration::from_secs(2)).await, room, "the total cap holds");
    assert!(started.elapsed() < HEADER_TIMEOUT, "the caps were checked before any header timed out");
    held.append(&mut flood);
    held.append(&mut second);
    assert_eq!(close_until(&mut held, TOTAL, Duration::ZERO).await, TOTAL, "the admitted ones are still open");

    // Meanwhile the server still answers SIP over TCP and the admin endpoint.
    let answer = sip_options_over_tcp(server.sip, "limits1").await.expect("SIP over TCP answers");
    assert_eq!(status(&answer), "SIP/2.0 200 OK");
    let health = http_get(server.admin, "/health").await.expect("the admin endpoint answers");
    assert!(health.starts_with("HTTP/1.1 200") && health.contains("smart-presence-index"), "{health}");

    // Late headers: every admitted connection, the silent one too, is closed after the timeout.
    let left = close_until(&mut held, 0, HEADER_TIMEOUT + Duration::from_secs(3)).await;
    assert_eq!(left, 0, "half-sent and idle connections are closed after the header timeout");
    assert!(started.elapsed() >= HEADER_TIMEOUT - Duration::from_millis(500), "not before it");
    let health = http_get(server.provisioning, "/health").await.expect("room again for a new connection");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");

    let log = std::fs::read_to_string(&server.log).unwrap();
    assert!(log.contains(&format!("open-file limit (RLIMIT_NOFILE): {FD_LIMIT}")), "{log}");
    assert!(!log.contains("Too many open files"), "{log}");
}
