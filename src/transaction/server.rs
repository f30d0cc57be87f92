//! Server transactions, keyed per RFC 3261 §17.2.3 (branch, sent-by, method).

use crate::sip::{top_via, HeaderName, Method, Request};
use crate::transport::Target;
use bytes::Bytes;
use parking_lot::Mutex;
use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerKey {
    branch: String,
    sent_by: String,
    method: Method,
}

impl ServerKey {
    /// The key of a request; an ACK matches the INVITE it acknowledges. Without an RFC 3261
    /// branch, Call-ID and CSeq stand in (RFC 2543 peers).
    pub fn of(req: &Request) -> Option<ServerKey> {
        let via = top_via(&req.headers).ok()?;
        let method = if req.method == Method::Ack { Method::Invite } else { req.method.clone() };
        let branch = match via.branch() {
            Some(b) if b.starts_with("z9hG4bK") => b.to_string(),
            _ => {
                let call_id = req.headers.get(&HeaderName::CallId)?;
                let cseq = req.headers.get(&HeaderName::CSeq)?;
                format!("{call_id}|{cseq}")
            }
        };
        Some(ServerKey { branch, sent_by: via.sent_by(), method })
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Begin {
    /// First time seen: run the handler.
    New,
    /// A retransmission while the handler works: drop it.
    InProgress,
    /// A retransmission after the final response: send this again.
    Answered(Bytes, Target),
}

enum Entry {
    Proceeding,
    Completed(Bytes, Target),
}

/// Transactions over UDP only: on TCP/TLS the peer does not retransmit (Timer J = 0).
///
/// A burst of requests leaves as many transactions for 32 s, so each is kept small: by a
/// keyed 64-bit hash of its key rather than the key's strings (two live transactions
/// collide once in 2^64 pairs, and the key is secret), with its response copied to size.
pub struct ServerTransactions {
    lifetime: Duration,
    hasher: RandomState,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    entries: HashMap<u64, Entry>,
    /// Insertion order = expiry order, since every entry lives `lifetime`.
    expiry: VecDeque<(Instant, u64)>,
}

impl ServerTransactions {
    /// `lifetime` is Timer J (64*T1).
    pub fn new(lifetime: Duration) -> Self {
        ServerTransactions { lifetime, hasher: RandomState::new(), state: Mutex::new(State::default()) }
    }

    pub fn begin(&self, key: &ServerKey) -> Begin {
        let key = self.hasher.hash_one(key);
        let now = Instant::now();
        let mut state = self.state.lock();
        state.expire(now);
        match state.entries.get(&key) {
            Some(Entry::Proceeding) => Begin::InProgress,
            Some(Entry::Completed(bytes, target)) => Begin::Answered(bytes.clone(), *target),
            None => {
                state.entries.insert(key, Entry::Proceeding);
                state.expiry.push_back((now + self.lifetime, key));
                Begin::New
            }
        }
    }

    /// Records the final response so retransmissions get it again.
    pub fn complete(&self, key: &ServerKey, response: &[u8], target: Target) {
        let key = self.hasher.hash_one(key);
        let stored = Entry::Completed(Bytes::copy_from_slice(response), target);
        if let Some(entry) = self.state.lock().entries.get_mut(&key) {
            *entry = stored;
        }
    }

    /// Forgets the transactions past Timer J, and the room a burst of them left: called
    /// every second, so that a quiet server does not keep its last burst's responses.
    pub fn sweep(&self) {
        let mut state = self.state.lock();
        state.expire(Instant::now());
        let len = state.entries.len();
        if len * 4 < state.entries.capacity() {
            state.entries.shrink_to(len * 2);
            state.expiry.shrink_to(len * 2);
        }
    }

    pub fn len(&self) -> usize {
        self.state.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl State {
    fn expire(&mut self, now: Instant) {
        while let Some((deadline, _)) = self.expiry.front() {
            if *deadline > now {
                break;
            }
            if let Some((_, key)) = self.expiry.pop_front() {
                self.entries.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::{parse_message, Message};
    use crate::transport::Protocol;

    fn request(branch: &str, method: &str) -> Request {
        let raw = format!("{method} sip:x SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch={branch}\r\nCall-ID: c\r\nCSeq: 1 {method}\r\n\r\n");
        match parse_message(Bytes::from(raw)) {
            Ok(Message::Request(r)) => r,
            _ => panic!(),
        }
    }

    #[test]
    fn retransmission_gets_the_stored_response() {
        let tx = ServerTransactions::new(Duration::from_secs(32));
        let key = ServerKey::of(&request("z9hG4bKa", "OPTIONS")).unwrap();
        assert_eq!(tx.begin(&key), Begin::New);
        assert_eq!(tx.begin(&key), Begin::InProgress);
        let target = Target { protocol: Protocol::Udp, remote: "10.0.0.1:5060".parse().unwrap(), conn: None };
        tx.complete(&key, b"resp", target);
        assert_eq!(tx.begin(&key), Begin::Answered(Bytes::from_static(b"resp"), target));
        let other = ServerKey::of(&request("z9hG4bKb", "OPTIONS")).unwrap();
        assert_eq!(tx.begin(&other), Begin::New);
    }

    #[test]
    fn entries_expire_after_timer_j() {
        let tx = ServerTransactions::new(Duration::from_millis(0));
        let key = ServerKey::of(&request("z9hG4bKa", "OPTIONS")).unwrap();
        assert_eq!(tx.begin(&key), Begin::New);
        let other = ServerKey::of(&request("z9hG4bKb", "OPTIONS")).unwrap();
        tx.begin(&other);
        assert_eq!(tx.len(), 1, "the first entry expired when the second began");
        tx.sweep();
        assert!(tx.is_empty(), "and the second by the sweep");
    }

    #[test]
    fn ack_matches_invite() {
        let invite = ServerKey::of(&request("z9hG4bKa", "INVITE")).unwrap();
        let ack = ServerKey::of(&request("z9hG4bKa", "ACK")).unwrap();
        assert_eq!(invite, ack);
    }
}
