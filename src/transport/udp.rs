//! UDP: one message per datagram, up to 65,535 bytes (RFC 3261 §18), except a message a
//! client split into a header and a body datagram, joined by `udp_join`.

use super::udp_join::Joiner;
use super::{Inbound, Protocol, Source};
use bytes::Bytes;
use socket2::{Domain, Socket, Type};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::UdpSocket;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

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
    let mut joiner = Joiner::default();
    loop {
        let deadline = joiner.next_deadline();
        let received = tokio::select! {
            r = socket.recv_from(&mut buf) => r,
            _ = sleep_until_some(deadline) => {
                for (remote, data) in joiner.expired(Instant::now()) {
                    sink.receive(data, Source { protocol: Protocol::Udp, remote, local, conn: None });
                }
                continue;
            }
            _ = shutdown.changed() => return,
        };
        match received {
            Ok((n, remote)) => {
                let source = Source { protocol: Protocol::Udp, remote, local, conn: None };
                joiner.push(remote, Bytes::copy_from_slice(&buf[..n]), Instant::now(), |m| sink.receive(m, source));
            }
            // ICMP port unreachable from an earlier send shows up here on Linux: not fatal.
            Err(e) => tracing::debug!(%local, "udp receive: {e}"),
        }
    }
}

async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at + Duration::from_millis(1)).await,
        None => std::future::pending().await,
    }
}
