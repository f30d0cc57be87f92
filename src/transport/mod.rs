//! Transports: UDP sockets, TCP and TLS listeners, and the table of open connections.
//!
//! Owns sockets and bytes only: it hands every received datagram or framed stream message,
//! with where it came from, to an [`Inbound`] sink, and sends bytes to a [`Target`]. It must
//! not parse SIP beyond framing, nor know about transactions or dialogs.

mod connections;
mod stream;
pub mod tls;
pub(crate) mod udp;
mod udp_join;

pub use connections::ConnectionTable;

use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Protocol {
    Udp,
    Tcp,
    Tls,
}

impl Protocol {
    pub fn is_reliable(self) -> bool {
        self != Protocol::Udp
    }

    /// As written in a Via (`SIP/2.0/UDP`).
    pub fn via_name(self) -> &'static str {
        match self {
            Protocol::Udp => "UDP",
            Protocol::Tcp => "TCP",
            Protocol::Tls => "TLS",
        }
    }

    /// As written in a `transport=` URI parameter.
    pub fn param_name(self) -> &'static str {
        match self {
            Protocol::Udp => "udp",
            Protocol::Tcp => "tcp",
            Protocol::Tls => "tls",
        }
    }
}

/// Identifies one TCP/TLS connection for its lifetime. Never 0, so that an
/// `Option<ConnId>` (in every dialog's target) takes 8 bytes, not 16.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId(pub std::num::NonZeroU64);

impl ConnId {
    /// The id numbered `n` (counted from 1; 0 reads as 1).
    pub fn new(n: u64) -> ConnId {
        ConnId(std::num::NonZeroU64::new(n).unwrap_or(std::num::NonZeroU64::MIN))
    }
}

/// Where a message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source {
    pub protocol: Protocol,
    pub remote: SocketAddr,
    pub local: SocketAddr,
    pub conn: Option<ConnId>,
}

/// Where to send: a connection when there is one, else an address. The connection is not
/// serialised: it does not outlive the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Target {
    pub protocol: Protocol,
    pub remote: SocketAddr,
    #[serde(skip)]
    pub conn: Option<ConnId>,
}

impl Source {
    /// Back the way it came (responses over streams, RFC 3261 §18.2.2).
    pub fn reply_target(&self) -> Target {
        Target { protocol: self.protocol, remote: self.remote, conn: self.conn }
    }
}

/// Receives what the transports read. Called on the reading task: return quickly.
pub trait Inbound: Send + Sync + 'static {
    fn receive(&self, data: Bytes, source: Source);
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("no {0:?} socket for {1}")]
    NoSocket(Protocol, SocketAddr),
    #[error("no open connection to {0} (TLS connections are only reused, never opened)")]
    NoConnection(SocketAddr),
    #[error("connection to {0} is congested")]
    Congested(SocketAddr),
    #[error("datagram of {0} bytes is too large")]
    TooLarge(usize),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Limits and timers for stream connections.
#[derive(Debug, Clone)]
pub struct StreamLimits {
    pub max_message: usize,
    pub idle_timeout: Duration,
    /// A started message must be complete within this (slow-loris clients).
    pub read_timeout: Duration,
    pub max_connections: usize,
    /// Counts connections per source address (and in all, handshakes included).
    pub sources: Arc<crate::limits::Limits>,
}

/// The bound sockets. `sender()` can send at once; `run` starts receiving.
pub struct Transports {
    tcp: Vec<TcpListener>,
    tls: Vec<TcpListener>,
    tls_acceptor: Option<tokio_rustls::TlsAcceptor>,
    sender: Arc<Sender>,
}

/// The local addresses actually bound (useful with port 0).
#[derive(Debug, Clone, Default)]
pub struct BoundAddrs {
    pub udp: Vec<SocketAddr>,
    pub tcp: Vec<SocketAddr>,
    pub tls: Vec<SocketAddr>,
}

impl Transports {
    /// Binds every listener. An address that cannot be bound is an error naming it.
    pub async fn bind(
        udp: &[SocketAddr],
        tcp: &[SocketAddr],
        tls: &[SocketAddr],
        tls_acceptor: Option<tokio_rustls::TlsAcceptor>,
        limits: StreamLimits,
        shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<Transports> {
        let mut udp_sockets = Vec::new();
        for addr in udp {
            let socket = udp::bind(*addr).map_err(|e| bind_error("UDP", addr, e))?;
            udp_sockets.push(UdpOut { v4: addr.is_ipv4(), socket: Arc::new(socket) });
        }
        let sender = Arc::new(Sender {
            udp: udp_sockets,
            connections: Arc::new(ConnectionTable::default()),
            limits,
            sink: OnceLock::new(),
            shutdown,
        });
        let mut t = Transports { tcp: Vec::new(), tls: Vec::new(), tls_acceptor, sender };
        for addr in tcp {
            t.tcp.push(stream::listen(*addr).map_err(|e| bind_error("TCP", addr, e))?);
        }
        if !tls.is_empty() && t.tls_acceptor.is_none() {
            anyhow::bail!("TLS listeners configured without a certificate");
        }
        for addr in tls {
            t.tls.push(stream::listen(*addr).map_err(|e| bind_error("TLS", addr, e))?);
        }
        Ok(t)
    }

    pub fn local_addrs(&self) -> BoundAddrs {
        let addrs = |v: &mut dyn Iterator<Item = std::io::Result<SocketAddr>>| v.filter_map(Result::ok).collect();
        BoundAddrs {
            udp: addrs(&mut self.sender.udp.iter().map(|s| s.socket.local_addr())),
            tcp: addrs(&mut self.tcp.iter().map(|s| s.local_addr())),
            tls: addrs(&mut self.tls.iter().map(|s| s.local_addr())),
        }
    }

    pub fn sender(&self) -> Arc<Sender> {
        self.sender.clone()
    }

    /// Starts the receive loops, which hand everything to `sink`; they stop when the
    /// shutdown signal given to `bind` changes.
    pub fn run(self, sink: Arc<dyn Inbound>) {
        let sender = self.sender;
        if sender.sink.set(sink.clone()).is_err() {
            tracing::error!("transports started twice");
            return;
        }
        for out in &sender.udp {
            tokio::spawn(udp::receive_loop(out.socket.clone(), sink.clone(), sender.shutdown.clone()));
        }
        for listener in self.tcp {
            tokio::spawn(stream::accept_loop(listener, None, sender.clone()));
        }
        for listener in self.tls {
            tokio::spawn(stream::accept_loop(listener, self.tls_acceptor.clone(), sender.clone()));
        }
    }
}

fn bind_error(what: &str, addr: &SocketAddr, e: std::io::Error) -> anyhow::Error {
    anyhow::anyhow!("cannot bind {what} {addr}: {e}")
}

/// A bound UDP socket and its address family (asked of the kernel once, not per send).
struct UdpOut {
    v4: bool,
    socket: Arc<UdpSocket>,
}

/// Sends bytes out; cheap to share.
pub struct Sender {
    udp: Vec<UdpOut>,
    connections: Arc<ConnectionTable>,
    limits: StreamLimits,
    sink: OnceLock<Arc<dyn Inbound>>,
    shutdown: watch::Receiver<bool>,
}

impl Sender {
    pub async fn send(self: &Arc<Self>, target: &Target, data: Bytes) -> Result<(), SendError> {
        match target.protocol {
            Protocol::Udp => self.send_udp(target.remote, &data).await,
            Protocol::Tcp | Protocol::Tls => self.send_stream(target, data).await,
        }
    }

    async fn send_udp(&self, to: SocketAddr, data: &[u8]) -> Result<(), SendError> {
        if data.len() > udp::MAX_DATAGRAM {
            return Err(SendError::TooLarge(data.len()));
        }
        let out = self.udp.iter().find(|s| s.v4 == to.is_ipv4()).ok_or(SendError::NoSocket(Protocol::Udp, to))?;
        out.socket.send_to(data, to).await?;
        Ok(())
    }

    async fn send_stream(self: &Arc<Self>, target: &Target, data: Bytes) -> Result<(), SendError> {
        if data.is_empty() {
            return Ok(()); // empty is the writer's close mark: see `close`
        }
        let existing = target
            .conn
            .and_then(|id| self.connections.get(id))
            .or_else(|| self.connections.find(target.protocol, target.remote));
        let handle = match existing {
            Some(h) => h,
            None if target.protocol == Protocol::Tcp => stream::connect(target.remote, self).await?,
            None => return Err(SendError::NoConnection(target.remote)),
        };
        handle.try_send(data).map_err(|_| SendError::Congested(target.remote))
    }

    /// Closes a TCP/TLS connection once what is queued on it is written (the stream is out
    /// of step: a message that could not be read nor answered).
    pub fn close(&self, conn: ConnId) {
        if let Some(handle) = self.connections.get(conn) {
            let _ = handle.try_send(Bytes::new());
        }
    }

    pub fn connections(&self) -> &ConnectionTable {
        &self.connections
    }
}
