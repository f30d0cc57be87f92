//! Client transactions for the requests we send (NOTIFY): Timer E retransmission over UDP
//! from T1 doubling to T2, Timer F (64*T1) timeout on every transport (RFC 3261 §17.1.2).
//! Counts, when given metrics, what it sends, retransmits and what failed.

use super::Timers;
use crate::metrics::{Metrics, NotifyFailure};
use crate::sip::{new_branch, top_via, CSeq, HeaderName, Request, Response};
use crate::transport::{Protocol, SendError, Sender, Target};
use bytes::Bytes;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::oneshot;

/// How a client transaction ended.
#[derive(Debug)]
pub enum Outcome {
    /// The final response (2xx-6xx).
    Response(Response),
    /// Timer F fired with no final response.
    Timeout,
    /// The transport could not send the request at all.
    TransportError(SendError),
}

pub struct ClientTransactions {
    timers: Timers,
    sender: Arc<Sender>,
    pending: Mutex<HashMap<String, oneshot::Sender<Response>>>,
    metrics: Option<Arc<Metrics>>,
}

impl ClientTransactions {
    pub fn new(timers: Timers, sender: Arc<Sender>) -> Self {
        ClientTransactions { timers, sender, pending: Mutex::new(HashMap::new()), metrics: None }
    }

    /// Counts sends, retransmissions and failures in `metrics` (None: not counted).
    pub fn counted(self, metrics: Option<Arc<Metrics>>) -> Self {
        ClientTransactions { metrics, ..self }
    }

    /// Sends `req` with a fresh top Via (`sent_by`: our host:port as the peer reaches us)
    /// and waits for its outcome.
    pub async fn request(&self, mut req: Request, target: Target, sent_by: &str) -> Outcome {
        let branch = new_branch();
        let via = format!("SIP/2.0/{} {sent_by};branch={branch};rport", target.protocol.via_name());
        req.headers.0.insert(0, crate::sip::Header::new(HeaderName::Via, via));
        let (tx, rx) = oneshot::channel();
        self.pending.lock().insert(branch.clone(), tx);
        let outcome = self.run(req.to_bytes(), target, rx).await;
        let mut pending = self.pending.lock();
        pending.remove(&branch);
        if pending.len() * 4 < pending.capacity() && pending.capacity() > 64 {
            let keep = pending.len() * 2;
            pending.shrink_to(keep);
        }
        drop(pending);
        if let Some(m) = &self.metrics {
            count_outcome(m, &outcome);
        }
        outcome
    }

    async fn run(&self, data: Bytes, target: Target, mut rx: oneshot::Receiver<Response>) -> Outcome {
        if let Err(e) = self.sender.send(&target, data.clone()).await {
            return Outcome::TransportError(e);
        }
        self.metrics.as_deref().inspect(|m| m.notify_sent());
        let deadline = tokio::time::Instant::now() + self.timers.f();
        let mut interval = self.timers.t1;
        loop {
            let wait = if target.protocol == Protocol::Udp { interval } else { self.timers.f() };
            let next = (tokio::time::Instant::now() + wait).min(deadline);
            tokio::select! {
                r = &mut rx => return r.map_or(Outcome::Timeout, Outcome::Response),
                _ = tokio::time::sleep_until(next) => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Outcome::Timeout;
            }
            let _ = self.sender.send(&target, data.clone()).await;
            self.metrics.as_deref().inspect(|m| m.notify_retransmitted());
            interval = (interval * 2).min(self.timers.t2);
        }
    }

    /// Hands a received response to its transaction; false when none matches (a stray or
    /// late response, or a provisional one we do not act on).
    pub fn on_response(&self, resp: Response) -> bool {
        if resp.status < 200 {
            return true;
        }
        let Some(branch) = top_via(&resp.headers).ok().and_then(|v| v.branch().map(str::to_string)) else {
            return false;
        };
        let method_ok = resp
            .headers
            .get(&HeaderName::CSeq)
            .and_then(|c| CSeq::parse(&c).ok())
            .is_some();
        match self.pending.lock().remove(&branch) {
            Some(tx) if method_ok => tx.send(resp).is_ok(),
            _ => false,
        }
    }

    /// Whether `target`'s connection is still open (false for UDP: nothing to know). A
    /// NOTIFY unanswered on an open connection reached a slow phone, not a dead one.
    pub fn is_connected(&self, target: &Target) -> bool {
        target.conn.is_some_and(|id| self.sender.connections().get(id).is_some())
    }

    pub fn pending(&self) -> usize {
        self.pending.lock().len()
    }
}

/// A request that got no 2xx, counted by why.
fn count_outcome(m: &Metrics, outcome: &Outcome) {
    let failure = match outcome {
        Outcome::Response(r) if (200..300).contains(&r.status) => return,
        Outcome::Response(_) => NotifyFailure::Rejected,
        Outcome::Timeout => NotifyFailure::Timeout,
        Outcome::TransportError(SendError::TooLarge(_)) => NotifyFailure::TooLarge,
        Outcome::TransportError(_) => NotifyFailure::Transport,
    };
    m.notify_failed(failure);
}
