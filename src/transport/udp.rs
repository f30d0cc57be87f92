//! UDP: one message per datagram, up to 65,535 bytes (RFC 3261 §18).

use super::{Inbound, Protocol, Source};
use bytes::Bytes;
use socket2::{Domain, Socket, Type};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::UdpSocket;
use tokio::sync::watch;

pub const MAX_DATAGRAM: usize = 65_535;

/// Binds with IPV6_V6ONLY on IPv6 (so `0.0.0.0:5060` and `[::]:5060` can coexist) and a
/// large receive buffer, to ride out bursts.
pub fn bind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, None)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    let _ = socket.set_recv_buffer_size(8 << 20);
    let _ = socket.set_send_buffer_size(8 << 20);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

pub async fn receive_loop(socket: Arc<UdpSocket>, sink: Arc<dyn Inbound>, mut shutdown: watch::Receiver<bool>) {
    let Ok(local) = socket.local_addr() else { return };
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let received = tokio::select! {
            r = socket.recv_from(&mut buf) => r,
            _ = shutdown.changed() => return,
        };
        match received {
            Ok((n, remote)) => {
                let source = Source { protocol: Protocol::Udp, remote, local, conn: None };
                sink.receive(Bytes::copy_from_slice(&buf[..n]), source);
            }
            // ICMP port unreachable from an earlier send shows up here on Linux: not fatal.
            Err(e) => tracing::debug!(%local, "udp receive: {e}"),
        }
    }
}
