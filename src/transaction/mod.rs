//! RFC 3261 §17 non-INVITE transactions.
//!
//! The server side absorbs retransmitted requests: the handler runs once, and a
//! retransmission gets the stored final response again (or nothing while the handler is
//! still working). The client side sends our requests (NOTIFY), retransmits them over UDP
//! (Timer E) and gives up at Timer F. Owns matching and timers only: it must not decide
//! what to answer, and it does not parse bodies.

mod client;
mod server;

pub use client::{ClientTransactions, Outcome};
pub use server::{Begin, ServerKey, ServerTransactions};

use std::time::Duration;

/// RFC 3261 timer values (T1, T2) from which E, F and J derive.
#[derive(Debug, Clone, Copy)]
pub struct Timers {
    pub t1: Duration,
    pub t2: Duration,
}

impl Timers {
    /// Timer F and J: 64*T1.
    pub fn f(&self) -> Duration {
        self.t1 * 64
    }
}

impl Default for Timers {
    fn default() -> Self {
        Timers { t1: Duration::from_millis(500), t2: Duration::from_secs(4) }
    }
}
