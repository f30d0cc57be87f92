//! Discovery budgets while Redis does not answer: each node charges in its own memory, so
//! that new subscriptions are still served from the nodes' mirrors (the issue's "keep
//! answering") without leaving budgets unenforced. An account starts there from a full
//! bucket (what Redis held cannot be read), so an outage can give an account at most one
//! more burst per node; its charges are forgotten when Redis answers again. Bounded: beyond
//! [`ACCOUNTS`] accounts, charges fail (the budget then fails closed).

use crate::storage::budgets::{Charge, Hash, Saved};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

/// Most accounts charged in memory during one outage.
pub const ACCOUNTS: usize = 100_000;

#[derive(Default)]
pub struct Outage {
    /// Set by the first charge made in memory, cleared by the first made in Redis again.
    active: AtomicBool,
    charges: Mutex<HashMap<String, (Saved, Vec<Hash>)>>,
}

impl Outage {
    /// Charges `account` in memory; false when no room is left for it.
    pub fn charge(&self, account: &str, charge: &mut Charge<'_>) -> bool {
        if !self.active.swap(true, Ordering::Relaxed) {
            tracing::warn!("Redis unreachable: discovery budgets are charged in this node's memory until it answers");
        }
        let mut charges = self.charges.lock();
        if charges.len() >= ACCOUNTS && !charges.contains_key(account) {
            return false;
        }
        let (saved, known) = charges.get(account).cloned().unwrap_or((Saved::Missing, Vec::new()));
        if let Some((bucket, hashes)) = charge(saved, known) {
            charges.insert(account.to_string(), (Saved::Found(bucket), hashes));
        }
        true
    }

    /// Redis answers again: what was charged in memory is forgotten.
    pub fn over(&self) {
        if self.active.swap(false, Ordering::Relaxed) {
            self.charges.lock().clear();
            tracing::info!("Redis answers again: discovery budgets are charged there");
        }
    }
}
