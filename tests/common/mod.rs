//! Shared test harness: starts a real server on loopback ports and talks to it over real
//! sockets. Each test gets its own data directory.
#![allow(dead_code)]

pub mod http;
pub mod linphone;
pub mod peer;
pub mod process;

use smart_presence::config::Config;
use smart_presence::server::Server;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

pub const WAIT: Duration = Duration::from_secs(5);

pub struct TestServer {
    pub server: Server,
    pub dir: tempfile::TempDir,
    pub config: Config,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tune: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config::default();
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        config.sip.udp = vec![any];
        config.sip.tcp = vec![any];
        config.sip.tls = vec![any];
        config.admin.listen = None;
        config.data_dir = dir.path().to_path_buf();
        config.domain = "example.org".into();
        // Authentication has its own tests (tests/auth.rs); elsewhere the From URI is believed.
        config.auth.mode = smart_presence::config::AuthMode::None;
        tune(&mut config);
        let server = Server::start(&config).await.expect("server starts");
        TestServer { server, dir, config }
    }

    pub fn udp(&self) -> SocketAddr {
        self.server.addrs().udp[0]
    }

    pub fn tcp(&self) -> SocketAddr {
        self.server.addrs().tcp[0]
    }

    pub fn tls(&self) -> SocketAddr {
        self.server.addrs().tls[0]
    }
}

/// A request with every mandatory header, from `local` over `proto` (UDP, TCP, TLS).
pub fn request(method: &str, proto: &str, local: SocketAddr, branch: &str, extra: &str, body: &str) -> String {
    format!(
        "{method} sip:rls@example.org SIP/2.0\r\n\
         Via: SIP/2.0/{proto} {local};branch=z9hG4bK{branch};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@example.org>;tag=from{branch}\r\n\
         To: <sip:rls@example.org>\r\n\
         Call-ID: call-{branch}\r\n\
         CSeq: 1 {method}\r\n\
         {extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// A plain list SUBSCRIBE as an RFC client writes it.
pub fn list_subscribe(proto: &str, local: SocketAddr, branch: &str, extra: &str, body: &str) -> String {
    String::from_utf8(list_subscribe_raw(proto, local, branch, extra, body.as_bytes())).expect("a text body")
}

/// The same with any body bytes (deflated, padded...).
pub fn list_subscribe_raw(proto: &str, local: SocketAddr, branch: &str, extra: &str, body: &[u8]) -> Vec<u8> {
    let head = request(
        "SUBSCRIBE",
        proto,
        local,
        branch,
        &format!(
            "Contact: <sip:alice@{local};transport={}>\r\nEvent: presence\r\nSupported: eventlist\r\n\
             Require: recipient-list-subscribe\r\nContent-Type: application/resource-lists+xml\r\n\
             Content-Disposition: recipient-list\r\n{extra}",
            proto.to_ascii_lowercase()
        ),
        "",
    )
    .replace("Content-Length: 0\r\n", &format!("Content-Length: {}\r\n", body.len()));
    [head.as_bytes(), body].concat()
}

/// The in-dialog SUBSCRIBE (refresh) of the dialog that `list_subscribe(.., branch, ..)`
/// opened, sent from `local` over `proto`, with our `tag`.
pub fn refresh(proto: &str, local: std::net::SocketAddr, branch: &str, tag: &str, cseq: u32) -> String {
    let fresh = format!("{branch}r{cseq}");
    list_subscribe(proto, local, &fresh, "Expires: 600\r\n", "")
        .replace(&format!("call-{fresh}"), &format!("call-{branch}"))
        .replace(&format!("from{fresh}"), &format!("from{branch}"))
        .replace("To: <sip:rls@example.org>", &format!("To: <sip:rls@example.org>;tag={tag}"))
        .replace("CSeq: 1 SUBSCRIBE", &format!("CSeq: {cseq} SUBSCRIBE"))
}

/// A body-less SUBSCRIBE from alice to the stored list `sip:contacts@example.org`, as a
/// BLF phone sends it (issue 17); `extra` headers (`Supported: eventlist`) as given.
pub fn stored_list_subscribe(proto: &str, local: SocketAddr, branch: &str, extra: &str) -> String {
    let contact = format!("Contact: <sip:alice@{local};transport={}>\r\n", proto.to_ascii_lowercase());
    request("SUBSCRIBE", proto, local, branch, &format!("{contact}Event: presence\r\nAccept: multipart/related, application/rlmi+xml, application/pidf+xml\r\n{extra}"), "")
        .replacen("SUBSCRIBE sip:rls@example.org", "SUBSCRIBE sip:contacts@example.org", 1)
        .replace("To: <sip:rls@example.org>", "To: <sip:contacts@example.org>")
}

/// A PUBLISH of `body` (PIDF) by `user`@example.org for himself.
pub fn publish_as(user: &str, local: SocketAddr, branch: &str, extra: &str, body: &str) -> String {
    let ct = if body.is_empty() { "" } else { "Content-Type: application/pidf+xml\r\n" };
    request("PUBLISH", "UDP", local, branch, &format!("Event: presence\r\n{ct}{extra}"), body)
        .replace("PUBLISH sip:rls@example.org", &format!("PUBLISH sip:{user}@example.org"))
        .replace("<sip:alice@example.org>", &format!("<sip:{user}@example.org>"))
}

/// A REGISTER of `user`@example.org's contact at `local` for `expires` seconds.
pub fn register_as(user: &str, local: SocketAddr, branch: &str, expires: u32) -> String {
    request("REGISTER", "UDP", local, branch, &format!("Contact: <sip:{user}@{local}>\r\nExpires: {expires}\r\n"), "")
        .replace("REGISTER sip:rls@example.org", "REGISTER sip:example.org")
        .replace("<sip:alice@example.org>", &format!("<sip:{user}@example.org>"))
        .replace("To: <sip:rls@example.org>", &format!("To: <sip:{user}@example.org>"))
}

/// A single-presentity SUBSCRIBE (RFC 3856) for `target`.
pub fn presentity_subscribe(target: &str, local: SocketAddr, branch: &str, extra: &str) -> String {
    request("SUBSCRIBE", "UDP", local, branch, &format!("Contact: <sip:w@{local}>\r\nEvent: presence\r\nAccept: application/pidf+xml\r\n{extra}"), "")
        .replacen("SUBSCRIBE sip:rls@example.org", &format!("SUBSCRIBE {target}"), 1)
        .replace("To: <sip:rls@example.org>", &format!("To: <{target}>"))
}

pub fn resource_list(uris: &[String]) -> String {
    let entries: String = uris.iter().map(|u| format!("<entry uri=\"{u}\"/>")).collect();
    format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><resource-lists xmlns=\"urn:ietf:params:xml:ns:resource-lists\"><list>{entries}</list></resource-lists>")
}

/// A list SUBSCRIBE with a zlib-deflated body (as liblinphone sends big lists).
pub fn deflated_list_subscribe(proto: &str, local: SocketAddr, branch: &str, extra: &str, uris: &[String]) -> Vec<u8> {
    let body = smart_presence::body::deflate_zlib(resource_list(uris).as_bytes());
    list_subscribe_raw(proto, local, branch, &format!("Content-Encoding: deflate\r\n{extra}"), &body)
}

pub struct UdpClient {
    pub socket: UdpSocket,
    pub server: SocketAddr,
}

impl UdpClient {
    pub async fn new(server: SocketAddr) -> UdpClient {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        UdpClient { socket, server }
    }

    pub fn local(&self) -> SocketAddr {
        self.socket.local_addr().unwrap()
    }

    pub async fn send(&self, data: &[u8]) {
        self.socket.send_to(data, self.server).await.unwrap();
    }

    /// The next datagram, or None after `wait`.
    pub async fn recv_within(&self, wait: Duration) -> Option<String> {
        let mut buf = vec![0u8; 65_535];
        match tokio::time::timeout(wait, self.socket.recv_from(&mut buf)).await {
            Ok(Ok((n, _))) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
            _ => None,
        }
    }

    pub async fn recv(&self) -> String {
        self.recv_within(WAIT).await.expect("a datagram from the server")
    }
}

/// Reads one Content-Length-framed message from a stream.
pub async fn read_message<S: AsyncReadExt + Unpin>(stream: &mut S, pending: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(end) = find(pending, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&pending[..end]).into_owned();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length:").map(|v| v.trim().parse::<usize>().unwrap()))
                .unwrap_or(0);
            if pending.len() >= end + 4 + len {
                let msg: Vec<u8> = pending.drain(..end + 4 + len).collect();
                return Some(String::from_utf8_lossy(&msg).into_owned());
            }
        }
        let mut buf = [0u8; 8192];
        let n = match tokio::time::timeout(WAIT, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => return None,
        };
        pending.extend_from_slice(&buf[..n]);
    }
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

pub async fn tcp_connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.expect("tcp connect")
}

pub async fn write_all<S: AsyncWriteExt + Unpin>(s: &mut S, data: &[u8]) {
    s.write_all(data).await.unwrap();
}

/// The status line of a response.
pub fn status(msg: &str) -> &str {
    msg.lines().next().unwrap_or("")
}

/// The value of the first header `name` (case-insensitive).
pub fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    let head = msg.split("\r\n\r\n").next()?;
    head.lines().skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// A TLS client connection that trusts the server's generated certificate.
pub async fn tls_connect(server: &TestServer) -> tokio_rustls::client::TlsStream<TcpStream> {
    use rustls::pki_types::ServerName;
    let pem = std::fs::read(server.dir.path().join("tls/cert.pem")).expect("generated cert");
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tcp_connect(server.tls()).await;
    connector.connect(ServerName::try_from("localhost").unwrap(), tcp).await.expect("TLS handshake")
}

/// Validates an XML document against a schema of `presence-schemas/` with xmllint (Debian
/// `libxml2-utils`); fails, never skips, when xmllint is missing.
pub fn xmllint(schema: &str, doc: &[u8]) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("presence-schemas").join(schema);
    let mut child = Command::new("xmllint")
        .args(["--noout", "--nonet", "--schema"])
        .arg(&path)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run xmllint ({e}): install libxml2-utils (scripts/test.sh does)"));
    child.stdin.take().unwrap().write_all(doc).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{schema} rejects:\n{}\n---\n{}",
        String::from_utf8_lossy(doc),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A loopback port free for both UDP and TCP (for a server that must come back on the same
/// port after a restart, or SIPp's, Kamailio's or Redis's own socket).
///
/// It is taken below the kernel's ephemeral range (32768-60999 by default), so no outgoing
/// connection can be given it while its server is down between a kill and a restart, and it
/// is never handed out twice while this process lives: a lock file per port, held until the
/// process ends, keeps other test processes off it too.
pub fn free_port() -> u16 {
    use std::sync::Mutex;
    const FIRST: u16 = 10_000;
    let count = ephemeral_start().saturating_sub(u32::from(FIRST)).clamp(1_000, 22_000);
    static HELD: Mutex<Vec<std::fs::File>> = Mutex::new(Vec::new());
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let dir = std::env::temp_dir().join("smart-presence-test-ports");
    std::fs::create_dir_all(&dir).unwrap();
    let start = std::process::id().wrapping_mul(7_919);
    for _ in 0..count {
        let step = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = FIRST + ((start.wrapping_add(step)) % count) as u16;
        let Ok(file) = std::fs::File::create(dir.join(port.to_string())) else { continue };
        if file.try_lock().is_err() {
            continue; // another test process holds it
        }
        let udp = std::net::UdpSocket::bind(("127.0.0.1", port));
        let tcp = std::net::TcpListener::bind(("127.0.0.1", port));
        if udp.is_ok() && tcp.is_ok() {
            HELD.lock().unwrap().push(file);
            return port;
        }
    }
    panic!("no free loopback port in {FIRST}..{}", u32::from(FIRST) + count);
}

/// Where the kernel's ephemeral ports begin (32768 when it cannot be read).
fn ephemeral_start() -> u32 {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    range.split_whitespace().next().and_then(|p| p.parse().ok()).unwrap_or(32_768)
}

/// Log lines written to memory, to read what the server logged (a `tracing` writer).
#[derive(Clone, Default)]
pub struct Capture(pub std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;

    fn make_writer(&'a self) -> Capture {
        self.clone()
    }
}
