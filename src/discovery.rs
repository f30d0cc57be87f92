//! Discovery: which contacts of an account use the service. One service for the list
//! SUBSCRIBE and the HTTP address-book query, so that both read national numbers in the same
//! region, classify entries alike, and spend one discovery budget under one policy.
//!
//! Owns the region rule, the classification of entries and the charging of the budget.
//! The policy is fail-closed: a number whose charge cannot be recorded (budget store down)
//! is answered as not a user and never watched, on every path, and logged at error. Its
//! calls touch storage and may block: async callers run them with [`blocking`]. Must not
//! know about SIP messages or HTTP.

use crate::budget::Budget;
use crate::index::{Index, IndexError};
use crate::numbers::{Region, E164};
use crate::resolution::{self, Entry, Key};

/// Who is looking: the account the budget is charged to, and what tells his region.
pub struct Seeker<'a> {
    /// The discovery budget's key (the account name, else the canonical SIP URI).
    pub budget_key: &'a str,
    /// His canonical SIP URI (numbers bound to it tell his region).
    pub sip_uri: &'a str,
    /// His account's verified numbers, first first.
    pub numbers: &'a [E164],
}

/// One number of an address-book query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// Not a phone number in the region it was read in.
    Invalid(String),
    /// A number, and the SIP URI of the user behind it (None: no user, or over budget).
    Number(E164, Option<String>),
}

/// An address-book query's answer.
#[derive(Debug, Clone)]
pub struct Lookup {
    pub found: Vec<Found>,
    /// Numbers answered as not users because the budget is spent (or unavailable).
    pub over_budget: usize,
}

#[derive(Clone)]
pub struct Discovery {
    index: Index,
    budget: Budget,
    default_region: Option<Region>,
}

impl Discovery {
    pub fn new(index: Index, budget: Budget, default_region: Option<Region>) -> Discovery {
        Discovery { index, budget, default_region }
    }

    /// The region a seeker's national numbers are read in: the one he asked for, else his
    /// own number's (his account's, else one bound to his SIP URI), else the default.
    pub fn region(&self, who: &Seeker, asked: Option<Region>) -> Option<Region> {
        asked
            .or_else(|| who.numbers.first().and_then(|n| n.region()))
            .or_else(|| resolution::subscriber_region(&self.index, who.sip_uri, None))
            .or(self.default_region)
    }

    /// A list SUBSCRIBE's entries, classified, with the numbers new to the seeker charged;
    /// those over the budget lose their key: answered as not users, never watched.
    pub fn entries(&self, who: &Seeker, uris: Vec<String>) -> Vec<Entry> {
        let mut entries = resolution::classify_lazily(uris, || self.region(who, None));
        let phones: Vec<(usize, E164)> = entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| match e.key {
                Some(Key::Phone(n)) => Some((i, n)),
                _ => None,
            })
            .collect();
        let numbers: Vec<E164> = phones.iter().map(|(_, n)| *n).collect();
        let (allowed, _) = self.charge(who.budget_key, &numbers);
        for ((i, _), ok) in phones.iter().zip(allowed) {
            if !ok {
                entries[*i].key = None;
            }
        }
        entries
    }

    /// An address-book query: each raw number read in the seeker's region (or `asked`),
    /// charged, and resolved when allowed. Err only when the index cannot be read.
    pub fn lookup(&self, who: &Seeker, raw: &[String], asked: Option<Region>) -> Result<Lookup, IndexError> {
        let region = self.region(who, asked);
        let parsed: Vec<Result<E164, String>> = raw.iter().map(|r| crate::index::parse_number(r, region).map_err(|e| e.to_string())).collect();
        let valid: Vec<E164> = parsed.iter().filter_map(|p| p.as_ref().ok().copied()).collect();
        let (allowed, over_budget) = self.charge(who.budget_key, &valid);
        let permitted: Vec<E164> = valid.iter().zip(&allowed).filter(|(_, ok)| **ok).map(|(n, _)| *n).collect();
        let users: std::collections::HashMap<E164, String> = self.index.resolve(&permitted)?.into_iter().collect();
        let found = parsed
            .into_iter()
            .map(|p| match p {
                Ok(n) => Found::Number(n, users.get(&n).cloned()),
                Err(e) => Found::Invalid(e),
            })
            .collect();
        Ok(Lookup { found, over_budget })
    }

    /// Charges `numbers` to `key`: which may be revealed, and how many may not. Fail
    /// closed: without a working budget store, none may.
    fn charge(&self, key: &str, numbers: &[E164]) -> (Vec<bool>, usize) {
        if numbers.is_empty() {
            return (Vec::new(), 0);
        }
        match self.budget.charge(key, numbers) {
            Ok(a) => (a.allowed, a.over_budget),
            Err(e) => {
                tracing::error!("discovery budget unavailable, {} numbers answered as not users: {e}", numbers.len());
                (vec![false; numbers.len()], numbers.len())
            }
        }
    }
}

/// Runs storage work on the blocking pool, off the async workers; None if it panicked.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::error!("discovery task failed: {e}");
            None
        }
    }
}
