//! Joining a SIP message that a client sent over UDP as two datagrams.
//!
//! liblinphone 5.1 sends a request above ~16 KB over UDP as two datagrams: the header block
//! (~800 bytes, with the Content-Length of the whole body), then the body alone. A list
//! SUBSCRIBE of more than ~2,500 contacts arrives that way. We join the two only when it is
//! safe: the same source address and port, the second datagram within `WINDOW` and exactly
//! as long as the body announced, and not itself the start of a message. Anything else
//! goes on as received (a short message then gets its 400 from validation, as before).
//!
//! Bounded: at most `MAX_PENDING` header blocks wait, each at most `MAX_HEAD` bytes, for at
//! most `WINDOW`. Owns only those bytes; it parses nothing beyond the header block's end
//! and Content-Length.

use crate::sip::framing::content_length;
use crate::sip::parse::find_header_end;
use bytes::{Bytes, BytesMut};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::time::Instant;

/// How long a header block waits for its body.
pub const WINDOW: Duration = Duration::from_millis(500);
/// Header blocks waiting at once (one per source); beyond, a new one is not held.
const MAX_PENDING: usize = 1_024;
/// Largest header block held (liblinphone's is ~800 bytes).
const MAX_HEAD: usize = 8 * 1024;

struct Pending {
    head: Bytes,
    /// Body bytes announced and not received.
    missing: usize,
    since: Instant,
}

#[derive(Default)]
pub struct Joiner {
    pending: HashMap<SocketAddr, Pending>,
}

impl Joiner {
    /// Takes one datagram from `from` and hands on, in order, the messages it completes
    /// (none when it is a header block now waiting for its body).
    pub fn push(&mut self, from: SocketAddr, data: Bytes, now: Instant, mut deliver: impl FnMut(Bytes)) {
        if let Some(p) = self.pending.remove(&from) {
            if data.len() == p.missing && now.duration_since(p.since) <= WINDOW && !starts_message(&data) {
                let mut joined = BytesMut::with_capacity(p.head.len() + data.len());
                joined.extend_from_slice(&p.head);
                joined.extend_from_slice(&data);
                tracing::debug!(%from, bytes = joined.len(), "UDP message joined from its header and body datagrams");
                return deliver(joined.freeze());
            }
            deliver(p.head);
        }
        match missing_body(&data) {
            Some(missing) if data.len() <= MAX_HEAD && self.pending.len() < MAX_PENDING => {
                self.pending.insert(from, Pending { head: data, missing, since: now });
            }
            _ => deliver(data),
        }
    }

    /// Header blocks whose body did not come within `WINDOW`: handed on as they are (they
    /// get 400 for their Content-Length), with who sent them.
    pub fn expired(&mut self, now: Instant) -> Vec<(SocketAddr, Bytes)> {
        let late: Vec<SocketAddr> = self.pending.iter().filter(|(_, p)| now.duration_since(p.since) > WINDOW).map(|(a, _)| *a).collect();
        late.into_iter()
            .filter_map(|a| {
                let p = self.pending.remove(&a)?;
                tracing::info!(from = %a, missing = p.missing, "UDP message shorter than its Content-Length, and no body datagram followed");
                Some((a, p.head))
            })
            .collect()
    }

    /// When the oldest waiting header block expires.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.pending.values().map(|p| p.since + WINDOW).min()
    }
}

/// A header block with no body bytes but a Content-Length announcing some: how many.
fn missing_body(data: &[u8]) -> Option<usize> {
    let (head_end, body_start) = find_header_end(data)?;
    if body_start != data.len() || !starts_message(data) {
        return None;
    }
    let length = content_length(&data[..head_end]).ok()?;
    (length > 0 && length <= super::udp::MAX_DATAGRAM).then_some(length)
}

/// Whether `data` begins like a SIP request or response line.
fn starts_message(data: &[u8]) -> bool {
    let line = data.split(|&b| b == b'\n').next().unwrap_or(data);
    line.starts_with(b"SIP/2.0 ") || line.windows(8).any(|w| w == b" SIP/2.0")
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Joiner {
        fn take(&mut self, from: SocketAddr, data: Bytes, now: Instant) -> Vec<Bytes> {
            let mut out = Vec::new();
            self.push(from, data, now, |m| out.push(m));
            out
        }
    }

    const HEAD: &[u8] = b"SUBSCRIBE sip:rls@example.org SIP/2.0\r\nCall-ID: a\r\nContent-Length: 4\r\n\r\n";
    const ADDR: &str = "127.0.0.1:5070";

    #[test]
    fn a_head_and_its_body_become_one_message() {
        let mut j = Joiner::default();
        let now = Instant::now();
        assert!(j.take(ADDR.parse().unwrap(), Bytes::from_static(HEAD), now).is_empty());
        let out = j.take(ADDR.parse().unwrap(), Bytes::from_static(b"body"), now);
        assert_eq!(out, [Bytes::from([HEAD, b"body"].concat())]);
        assert!(j.pending.is_empty());
    }

    #[test]
    fn anything_else_passes_as_received() {
        let mut j = Joiner::default();
        let now = Instant::now();
        let a: SocketAddr = ADDR.parse().unwrap();
        // A body of the wrong length: both go on, unjoined.
        assert!(j.take(a, Bytes::from_static(HEAD), now).is_empty());
        assert_eq!(j.take(a, Bytes::from_static(b"bod"), now).len(), 2);
        // From another port: not joined.
        assert!(j.take(a, Bytes::from_static(HEAD), now).is_empty());
        assert_eq!(j.take("127.0.0.1:5071".parse().unwrap(), Bytes::from_static(b"body"), now), [Bytes::from_static(b"body")]);
        // Too late: the head goes on alone.
        let out = j.expired(now + WINDOW + Duration::from_millis(1));
        assert_eq!(out, [(a, Bytes::from_static(HEAD))]);
        // A whole message is never held.
        let whole = Bytes::from([HEAD, b"body"].concat());
        assert_eq!(j.take(a, whole.clone(), now), [whole]);
    }

    #[test]
    fn waiting_heads_are_bounded() {
        let mut j = Joiner::default();
        let now = Instant::now();
        for port in 0..(MAX_PENDING as u16 + 10) {
            let _ = j.take(SocketAddr::from(([127, 0, 0, 1], 10_000 + port)), Bytes::from_static(HEAD), now);
        }
        assert_eq!(j.pending.len(), MAX_PENDING);
    }
}
