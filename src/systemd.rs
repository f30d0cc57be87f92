//! The systemd service protocol (sd_notify(3)): `READY=1` once the listeners answer,
//! `WATCHDOG=1` at half of `WATCHDOG_USEC`, `STOPPING=1` when a stop begins, each a
//! datagram to the Unix socket `$NOTIFY_SOCKET` (a path, or an abstract name when it
//! starts with `@`). Everything is a no-op when the variable is unset (not under systemd).
//!
//! Owns the socket and the watchdog timer only; `main.rs` decides when to say what. It must
//! not know the server's parts.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;
use tokio::sync::watch;

/// Where systemd listens for our state.
pub struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`; None when unset (not run by systemd) or unusable (logged).
    pub fn from_env() -> Option<Notifier> {
        let path = std::env::var_os("NOTIFY_SOCKET")?;
        let path = path.to_string_lossy();
        match Notifier::new(&path) {
            Ok(n) => Some(n),
            Err(e) => {
                tracing::warn!("NOTIFY_SOCKET={path}: {e}; systemd will not be told our state");
                None
            }
        }
    }

    /// A notifier to `path` (`@name`: the abstract socket `name`).
    pub fn new(path: &str) -> std::io::Result<Notifier> {
        let addr = match path.strip_prefix('@') {
            Some(name) => abstract_addr(name)?,
            None if path.starts_with('/') => SocketAddr::from_pathname(path)?,
            None => return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "neither an absolute path nor @name")),
        };
        Ok(Notifier { socket: UnixDatagram::unbound()?, addr })
    }

    /// Sends `state` (newline-separated `KEY=value` lines); a failure is logged, never fatal.
    pub fn notify(&self, state: &str) {
        if let Err(e) = self.socket.send_to_addr(state.as_bytes(), &self.addr) {
            tracing::warn!("cannot notify systemd ({}): {e}", state.lines().next().unwrap_or(""));
        }
    }

    /// Sends `WATCHDOG=1` every `every` until `shutdown` turns true.
    pub async fn watchdog(self: std::sync::Arc<Self>, every: Duration, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.notify("WATCHDOG=1"),
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(target_os = "linux")]
fn abstract_addr(name: &str) -> std::io::Result<SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    SocketAddr::from_abstract_name(name.as_bytes())
}

#[cfg(not(target_os = "linux"))]
fn abstract_addr(_: &str) -> std::io::Result<SocketAddr> {
    Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "abstract sockets are Linux only"))
}

/// How often to ping the watchdog: half of `$WATCHDOG_USEC`, when set for this process
/// (`$WATCHDOG_PID`, when set, must be ours).
pub fn watchdog_interval() -> Option<Duration> {
    let usec = std::env::var("WATCHDOG_USEC").ok()?;
    let pid = std::env::var("WATCHDOG_PID").ok();
    interval_from(&usec, pid.as_deref(), std::process::id())
}

fn interval_from(usec: &str, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok()? != own_pid {
            return None;
        }
    }
    let usec: u64 = usec.trim().parse().ok().filter(|&u| u > 0)?;
    Some(Duration::from_micros(usec / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_at_half_the_interval_for_this_process_only() {
        assert_eq!(interval_from("30000000", None, 7), Some(Duration::from_secs(15)));
        assert_eq!(interval_from("30000000", Some("7"), 7), Some(Duration::from_secs(15)));
        assert_eq!(interval_from("30000000", Some("8"), 7), None, "another process's watchdog");
        assert_eq!(interval_from("0", None, 7), None);
        assert_eq!(interval_from("soon", None, 7), None);
    }

    #[test]
    fn notifies_an_abstract_socket() {
        let name = format!("smart-presence-test-{}", std::process::id());
        let listener = UnixDatagram::bind_addr(&abstract_addr(&name).unwrap()).unwrap();
        listener.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        Notifier::new(&format!("@{name}")).unwrap().notify("READY=1");
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }

    #[test]
    fn a_relative_path_is_refused() {
        assert!(Notifier::new("notify.sock").is_err());
    }
}
