//! The HTTP listeners' accept loop (admin endpoint, provisioning service): caps on open
//! connections per source address and in all, and a header-read timeout, so idle or
//! half-sent requests cannot take the file descriptors the SIP transports need.
//!
//! Owns accepting, counting and closing HTTP connections and serving each one with hyper's
//! HTTP/1 server. Not: routes (the services build their axum `Router`), SIP connections
//! (`transport/`, with their own caps in `limits.rs`). A connection over a cap is accepted
//! and closed at once, which frees its descriptor; refusals are logged at most once per
//! `REFUSAL_LOG_EVERY`.

use crate::limits::SourceKey;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// How much one listener may hold. A cap of 0 means unlimited.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    pub max_connections: usize,
    pub max_connections_per_source: usize,
    /// Time for a request's whole header, from the connection's start or its last response.
    pub header_read_timeout: Duration,
}

impl HttpLimits {
    /// From the config keys; the timeout is at least one second.
    pub fn new(max_connections: usize, max_connections_per_source: usize, header_read_timeout_secs: u64) -> HttpLimits {
        HttpLimits {
            max_connections,
            max_connections_per_source,
            header_read_timeout: Duration::from_secs(header_read_timeout_secs.max(1)),
        }
    }
}

/// Serves `router` on `listener` until `shutdown` turns true (or its sender is gone): then
/// stops accepting and lets open connections finish their current request.
pub async fn serve(
    name: &'static str,
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    shutdown: watch::Receiver<bool>,
) {
    let table = Arc::new(Table::new(limits));
    let mut stop = shutdown.clone();
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stopped(&mut stop) => return,
        };
        let (tcp, remote) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors, say: wait for some to be released instead of spinning.
                table.log_throttled(|| tracing::warn!("{name} endpoint accept: {e}"));
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(slot) = table.open(remote.ip()) else {
            drop(tcp);
            table.log_throttled(
                || tracing::warn!(%remote, "{name} endpoint: connection refused, over its connection caps"),
            );
            continue;
        };
        tokio::spawn(serve_connection(tcp, router.clone(), limits.header_read_timeout, shutdown.clone(), slot));
    }
}

/// One connection: HTTP/1 with keep-alive, closed by hyper when a header is late.
async fn serve_connection(
    tcp: TcpStream,
    router: Router,
    header_timeout: Duration,
    mut shutdown: watch::Receiver<bool>,
    slot: Slot,
) {
    let _slot = slot;
    let _ = tcp.set_nodelay(true);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(header_timeout);
    let conn = builder.serve_connection(TokioIo::new(tcp), TowerToHyperService::new(router));
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = stopped(&mut shutdown) => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!("HTTP connection closed: {e}");
    }
}

/// Completes when `shutdown` turns true or its sender is gone.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

/// Open connections per source and in all.
struct Table {
    limits: HttpLimits,
    open: Mutex<Counts>,
    last_log: Mutex<Option<Instant>>,
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_source: HashMap<SourceKey, usize>,
}

impl Table {
    fn new(limits: HttpLimits) -> Table {
        Table { limits, open: Mutex::new(Counts::default()), last_log: Mutex::new(None) }
    }

    /// A slot for a connection from `ip`, or `None` when a cap is reached.
    fn open(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let key = SourceKey::of(ip);
        let mut counts = self.open.lock();
        let from_source = counts.per_source.get(&key).copied().unwrap_or(0);
        let (total_cap, source_cap) = (self.limits.max_connections, self.limits.max_connections_per_source);
        if (total_cap > 0 && counts.total >= total_cap) || (source_cap > 0 && from_source >= source_cap) {
            return None;
        }
        counts.total += 1;
        counts.per_source.insert(key, from_source + 1);
        Some(Slot { table: self.clone(), key })
    }

    fn close(&self, key: SourceKey) {
        let mut counts = self.open.lock();
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_source.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                counts.per_source.remove(&key);
            }
        }
    }

    /// Runs `log` unless it ran less than `REFUSAL_LOG_EVERY` ago (floods log one line).
    fn log_throttled(&self, log: impl FnOnce()) {
        let now = Instant::now();
        let mut last = self.last_log.lock();
        if last.is_none_or(|t| now.duration_since(t) >= REFUSAL_LOG_EVERY) {
            *last = Some(now);
            log();
        }
    }
}

/// Holds one connection's place in the counts; released on drop.
struct Slot {
    table: Arc<Table>,
    key: SourceKey,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.table.close(self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(total: usize, per_source: usize) -> Arc<Table> {
        Arc::new(Table::new(HttpLimits::new(total, per_source, 10)))
    }

    #[test]
    fn caps_per_source_and_in_all_and_release() {
        let t = table(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let c: IpAddr = "10.0.0.3".parse().unwrap();
        let a1 = t.open(a).unwrap();
        let _a2 = t.open(a).unwrap();
        assert!(t.open(a).is_none(), "per-source cap");
        let _b1 = t.open(b).unwrap();
        assert!(t.open(c).is_none(), "total cap");
        drop(a1);
        assert!(t.open(c).is_some(), "a closed connection frees its place");
    }

    #[test]
    fn zero_means_unlimited_and_ipv6_counts_per_64() {
        let t = table(0, 1);
        let _x = t.open("2001:db8::1".parse().unwrap()).unwrap();
        assert!(t.open("2001:db8::2".parse().unwrap()).is_none(), "same /64");
        assert!(t.open("2001:db8:0:1::1".parse().unwrap()).is_some());
        let t = table(0, 0);
        let held: Vec<_> = (0..100).map(|_| t.open("10.0.0.1".parse().unwrap()).unwrap()).collect();
        assert_eq!(held.len(), 100);
        drop(held);
        assert_eq!(t.open.lock().per_source.len(), 0, "empty entries are removed");
    }
}
