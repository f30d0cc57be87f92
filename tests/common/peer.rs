//! A SIP peer for tests over UDP, TCP or TLS that keeps bodies as bytes (NOTIFY bodies
//! are deflated) and answers the server's requests.
#![allow(dead_code)]

use super::{find, WAIT};
use std::io::Read;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UdpSocket;

/// One received message: head as text, body as bytes (inflated when deflated).
#[derive(Debug, Clone)]
pub struct Msg {
    pub head: String,
    pub raw_body: Vec<u8>,
}

impl Msg {
    pub fn parse(data: &[u8]) -> Msg {
        let end = find(data, b"\r\n\r\n").expect("a header block");
        Msg { head: String::from_utf8_lossy(&data[..end]).into_owned(), raw_body: data[end + 4..].to_vec() }
    }

    pub fn start_line(&self) -> &str {
        self.head.lines().next().unwrap_or("")
    }

    pub fn is_request(&self, method: &str) -> bool {
        self.start_line().starts_with(&format!("{method} "))
    }

    pub fn status(&self) -> Option<u16> {
        self.start_line().strip_prefix("SIP/2.0 ")?.get(..3)?.parse().ok()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    pub fn headers(&self, name: &str) -> Vec<&str> {
        self.head
            .lines()
            .skip(1)
            .filter_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
            })
            .collect()
    }

    /// The body, inflated when Content-Encoding says deflate (zlib framing, as sent).
    pub fn body(&self) -> String {
        if self.header("Content-Encoding") == Some("deflate") {
            assert_eq!(&self.raw_body[..1], &[0x78], "zlib framing (RFC 1950)");
            let mut out = String::new();
            flate2::read::ZlibDecoder::new(&self.raw_body[..]).read_to_string(&mut out).expect("valid zlib");
            out
        } else {
            String::from_utf8_lossy(&self.raw_body).into_owned()
        }
    }

    /// A tag parameter of a header (From/To).
    pub fn tag(&self, name: &str) -> Option<String> {
        let v = self.header(name)?;
        let i = v.find(";tag=")? + 5;
        Some(v[i..].split(';').next()?.to_string())
    }

    /// The response a UA sends to this request.
    pub fn response(&self, status: u16, reason: &str) -> Vec<u8> {
        let mut out = format!("SIP/2.0 {status} {reason}\r\n");
        for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
            for v in self.headers(name) {
                out.push_str(&format!("{name}: {v}\r\n"));
            }
        }
        out.push_str("Content-Length: 0\r\n\r\n");
        out.into_bytes()
    }
}

/// Either transport, with the same interface.
pub enum Peer {
    Udp { socket: UdpSocket, server: SocketAddr },
    Stream { stream: Box<dyn Duplex>, pending: Vec<u8>, local: SocketAddr },
}

pub trait Duplex: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Duplex for T {}

impl Peer {
    pub async fn udp(server: SocketAddr) -> Peer {
        Peer::Udp { socket: UdpSocket::bind("127.0.0.1:0").await.unwrap(), server }
    }

    pub async fn tcp(server: SocketAddr) -> Peer {
        let tcp = tokio::net::TcpStream::connect(server).await.unwrap();
        let local = tcp.local_addr().unwrap();
        Peer::Stream { stream: Box::new(tcp), pending: Vec::new(), local }
    }

    pub fn stream(stream: impl Duplex + 'static, local: SocketAddr) -> Peer {
        Peer::Stream { stream: Box::new(stream), pending: Vec::new(), local }
    }

    pub fn local(&self) -> SocketAddr {
        match self {
            Peer::Udp { socket, .. } => socket.local_addr().unwrap(),
            Peer::Stream { local, .. } => *local,
        }
    }

    pub async fn send(&mut self, data: &[u8]) {
        match self {
            Peer::Udp { socket, server } => {
                socket.send_to(data, *server).await.unwrap();
            }
            Peer::Stream { stream, .. } => stream.write_all(data).await.unwrap(),
        }
    }

    pub async fn recv_within(&mut self, wait: Duration) -> Option<Msg> {
        match self {
            Peer::Udp { socket, .. } => {
                let mut buf = vec![0u8; 65_535];
                let (n, _) = tokio::time::timeout(wait, socket.recv_from(&mut buf)).await.ok()?.ok()?;
                Some(Msg::parse(&buf[..n]))
            }
            Peer::Stream { stream, pending, .. } => tokio::time::timeout(wait, read_frame(stream, pending)).await.ok()?,
        }
    }

    pub async fn recv(&mut self) -> Msg {
        self.recv_within(WAIT).await.expect("a message from the server")
    }

    /// The next response (NOTIFYs that arrive first are answered 200 and kept).
    pub async fn response(&mut self, notifies: &mut Vec<Msg>) -> Msg {
        loop {
            let m = self.recv().await;
            if m.status().is_some() {
                return m;
            }
            self.send(&m.response(200, "OK")).await;
            notifies.push(m);
        }
    }

    /// After a SUBSCRIBE: its response, and (when it is a 200) the first NOTIFY, whichever
    /// order they come in; the NOTIFY is answered 200.
    pub async fn accepted(&mut self) -> (Msg, Option<Msg>) {
        let mut early = Vec::new();
        let resp = self.response(&mut early).await;
        if resp.status() != Some(200) {
            return (resp, None);
        }
        let first = match early.pop() {
            Some(n) => n,
            None => self.notify(200).await,
        };
        (resp, Some(first))
    }

    /// Users reported across every NOTIFY of one fetch (`Expires: 0`): sends `request`,
    /// expects a 200, counts the `<instance`s until the terminating NOTIFY.
    pub async fn users_seen(&mut self, request: &[u8]) -> usize {
        self.send(request).await;
        let mut notifies = Vec::new();
        let resp = self.response(&mut notifies).await;
        assert_eq!(resp.status(), Some(200), "{}", resp.start_line());
        let mut users = 0;
        loop {
            let n = match notifies.pop() {
                Some(n) => n,
                None => self.notify(200).await,
            };
            users += n.body().matches("<instance ").count();
            if n.header("Subscription-State").is_some_and(|s| s.starts_with("terminated")) {
                return users;
            }
        }
    }

    /// The next NOTIFY, answered with `status`.
    pub async fn notify(&mut self, status: u16) -> Msg {
        let m = self.recv().await;
        assert!(m.is_request("NOTIFY"), "expected a NOTIFY, got {}", m.start_line());
        self.send(&m.response(status, if status == 200 { "OK" } else { "Rejected" })).await;
        m
    }
}

async fn read_frame(stream: &mut Box<dyn Duplex>, pending: &mut Vec<u8>) -> Option<Msg> {
    loop {
        if let Some(end) = find(pending, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&pending[..end]).into_owned();
            let len = head
                .lines()
                .find_map(|l| {
                    let (n, v) = l.split_once(':')?;
                    (n.trim().eq_ignore_ascii_case("content-length") || n.trim() == "l").then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if pending.len() >= end + 4 + len {
                let msg: Vec<u8> = pending.drain(..end + 4 + len).collect();
                return Some(Msg::parse(&msg));
            }
        }
        let mut buf = [0u8; 16384];
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        pending.extend_from_slice(&buf[..n]);
    }
}
