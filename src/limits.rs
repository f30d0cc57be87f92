//! Abuse limits (issue 8): how much one source address, and one account, may ask of us.
//!
//! Owns three bounded tables and the throttled log lines that report refusals and
//! malformed input:
//!
//! - a token bucket per source address: `requests_per_second` sustained, `request_burst` at
//!   once. Beyond it a source gets at most `rejects_per_second` error answers (503 with
//!   Retry-After, written by the core); anything more is dropped unread, so a UDP flood costs
//!   neither a task nor a parse, and spoofed floods cannot turn us into a reflector;
//! - open TCP/TLS connections (TLS handshakes included) per source address and in all, held
//!   by a [`ConnGuard`] for the connection's life;
//! - active subscriptions per account, per source address and in all, and the list entries
//!   they hold in all (the memory bound), held by a [`SubPermit`] that the subscription
//!   table drops when the subscription ends.
//!
//! A source is an IP address; IPv6 addresses count per /64 (a host usually has a whole /64,
//! so per-address counting would be free to evade). The rate table has a fixed capacity
//! (`max_sources`): buckets that have refilled (idle sources, equivalent to no entry) are
//! pruned, at most once a second, and while it is full of busy sources newcomers share one
//! overflow bucket. The connection and subscription tables hold only non-zero counts, so
//! they are bounded by the caps they enforce. A cap of 0 means unlimited.
//!
//! Must not touch: sockets, SIP parsing or responses, URIs (it is given canonical
//! identities, [`crate::identity`]), subscriptions' state, the binding index, or the
//! per-account discovery budget (`budget.rs`, a separate concern). It says yes or no (a
//! [`Verdict`], a [`Refusal`]); the core and the handlers answer. Its log lines name
//! addresses, accounts and reason phrases, never message bodies or list entries, and at
//! most one a second per kind.

use crate::config::LimitsConfig;
use parking_lot::Mutex;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Who counts as one source: an IPv4 address, or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SourceKey(IpAddr);

impl SourceKey {
    pub fn of(ip: IpAddr) -> SourceKey {
        match ip {
            IpAddr::V4(_) => SourceKey(ip),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => SourceKey(IpAddr::V4(v4)),
                None => {
                    let s = v6.segments();
                    SourceKey(IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0)))
                }
            },
        }
    }
}

impl std::fmt::Display for SourceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V4(a) => write!(f, "{a}"),
            IpAddr::V6(a) => write!(f, "{a}/64"),
        }
    }
}

/// What to do with one received message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the source's rate: serve it.
    Admit,
    /// Over the rate: answer a request 503 with this Retry-After (seconds), run no handler.
    Reject { retry_after: u32 },
    /// Far over the rate: drop it unread.
    Drop,
}

/// Why a request was refused, and when to come back: the caller answers it (503 with the
/// reason and Retry-After, see `core::refused`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub reason: &'static str,
    pub retry_after: u32,
}

/// The limits of one running server; share it as `Arc<Limits>`.
pub struct Limits {
    cfg: LimitsConfig,
    rates: Mutex<RateTable>,
    conns: Mutex<Counts<SourceKey>>,
    subs: Mutex<SubCounts>,
    /// Keys the hashes accounts are counted by ([`AccountKey`]).
    account_hasher: RandomState,
    log_drop: Throttle,
    log_refusal: Throttle,
    log_conn: Throttle,
    log_malformed: Throttle,
    trusted: Vec<IpAddr>,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits").field("cfg", &self.cfg).finish_non_exhaustive()
    }
}

impl Limits {
    pub fn new(cfg: &LimitsConfig) -> Arc<Limits> {
        Limits::with_trusted(cfg, &[])
    }

    /// Limits where `trusted` sources (the proxies of `auth.trusted_proxies`, which carry
    /// many users' traffic) are exempt from the per-source rate and subscription caps.
    pub fn with_trusted(cfg: &LimitsConfig, trusted: &[IpAddr]) -> Arc<Limits> {
        Arc::new(Limits {
            trusted: trusted.to_vec(),
            cfg: cfg.clone(),
            rates: Mutex::new(RateTable::new(cfg, Instant::now())),
            conns: Mutex::new(Counts::default()),
            subs: Mutex::new(SubCounts::default()),
            account_hasher: RandomState::new(),
            log_drop: Throttle::default(),
            log_refusal: Throttle::default(),
            log_conn: Throttle::default(),
            log_malformed: Throttle::default(),
        })
    }

    /// Limits that never refuse (tests and tools that build a core by hand).
    pub fn unlimited() -> Arc<Limits> {
        let cfg = LimitsConfig {
            requests_per_second: 0,
            max_connections_per_source: 0,
            max_subscriptions_per_account: 0,
            max_subscriptions_per_source: 0,
            max_subscriptions: 0,
            max_entries_held: 0,
            ..LimitsConfig::default()
        };
        Limits::new(&cfg)
    }

    /// Charges one received message to its source. Called for every datagram and every
    /// framed stream message, before any parsing.
    pub fn admit(&self, ip: IpAddr) -> Verdict {
        if self.trusted.contains(&ip) {
            return Verdict::Admit;
        }
        self.admit_at(SourceKey::of(ip), Instant::now())
    }

    fn admit_at(&self, key: SourceKey, now: Instant) -> Verdict {
        if self.cfg.requests_per_second == 0 {
            return Verdict::Admit;
        }
        let verdict = self.rates.lock().charge(&self.cfg, key, now);
        if verdict == Verdict::Drop {
            if let Some(suppressed) = self.log_drop.allow(now) {
                tracing::warn!(source = %key, suppressed, "rate limit: dropping messages from a flooding source");
            }
        }
        verdict
    }

    /// Source addresses the rate limiter holds state for (bounded by `max_sources`).
    pub fn tracked_sources(&self) -> usize {
        self.rates.lock().map.len()
    }

    /// Logs a refusal we answer (413, 503): the status, reason phrase and remote address.
    pub fn log_refusal(&self, remote: std::net::SocketAddr, status: u16, reason: &str) {
        if let Some(suppressed) = self.log_refusal.allow(Instant::now()) {
            tracing::warn!(%remote, status, reason, suppressed, "request refused by a limit");
        }
    }

    /// Logs a message we could not read (unparseable, or a stream we could not cut) and what
    /// was done about it: a warning on TCP/TLS, info over UDP, where stray datagrams are
    /// common. Never the message itself. `transport` names it (`UDP`, `TCP`, `TLS`).
    pub fn log_malformed(&self, remote: std::net::SocketAddr, transport: &str, problem: &str, action: &str) {
        let Some(suppressed) = self.log_malformed.allow(Instant::now()) else { return };
        if transport == "UDP" {
            tracing::info!(%remote, transport, suppressed, "malformed message ({problem}): {action}");
        } else {
            tracing::warn!(%remote, transport, suppressed, "malformed message ({problem}): {action}");
        }
    }

    /// Accounts one new TCP/TLS connection from `ip`; `max_total` caps all of them.
    /// `None` means refuse it (close at once); the guard releases the slot when dropped.
    pub fn open_connection(self: &Arc<Self>, ip: IpAddr, max_total: usize) -> Option<ConnGuard> {
        let key = SourceKey::of(ip);
        let per_source = self.cfg.max_connections_per_source;
        let refused = {
            let mut c = self.conns.lock();
            if max_total != 0 && c.total >= max_total {
                Some(format!("{max_total} connections open"))
            } else if per_source != 0 && c.get(&key) >= per_source {
                Some(format!("{per_source} connections open from this source"))
            } else {
                c.add(key);
                None
            }
        };
        match refused {
            None => Some(ConnGuard { limits: self.clone(), key }),
            Some(why) => {
                if let Some(suppressed) = self.log_conn.allow(Instant::now()) {
                    tracing::warn!(source = %key, suppressed, "connection refused: {why}");
                }
                None
            }
        }
    }

    /// TCP/TLS connections accepted and not yet closed (handshakes included).
    pub fn connections(&self) -> usize {
        self.conns.lock().total
    }

    /// Takes one active-subscription slot, holding `entries` list entries, for `account`
    /// (the canonical identity, [`crate::identity`]) and the source `ip`.
    pub fn subscribe(self: &Arc<Self>, account: &str, ip: IpAddr, entries: usize) -> Result<SubPermit, Refusal> {
        let entries = clamp_entries(entries);
        let key = self.account_key(account);
        let source = SourceKey::of(ip);
        let retry_after = self.cfg.subscription_retry_after_secs;
        let over = |n: usize, cap: usize| cap != 0 && n >= cap;
        let mut s = self.subs.lock();
        let reason = if over(s.by_account.total, self.cfg.max_subscriptions) {
            "Too Many Subscriptions"
        } else if over(s.by_account.get(&key), self.cfg.max_subscriptions_per_account) {
            "Too Many Subscriptions For This Account"
        } else if !self.trusted.contains(&ip) && over(s.by_source.get(&source), self.cfg.max_subscriptions_per_source) {
            "Too Many Subscriptions From This Address"
        } else if self.cfg.max_entries_held != 0 && s.entries.saturating_add(entries as usize) > self.cfg.max_entries_held {
            "Too Many Entries Watched"
        } else {
            s.by_account.add(key);
            s.by_source.add(source);
            s.entries += entries as usize;
            return Ok(SubPermit { limits: self.clone(), account: key, source, entries, single: false });
        };
        drop(s);
        if let Some(suppressed) = self.log_refusal.allow(Instant::now()) {
            tracing::warn!(%account, %source, suppressed, "subscription refused: {reason}");
        }
        Err(Refusal { reason, retry_after })
    }

    /// Active subscriptions counted (all accounts).
    pub fn subscriptions(&self) -> usize {
        self.subs.lock().by_account.total
    }

    /// Active single-presentity subscriptions (those of [`SubPermit::marked_single`]).
    pub fn single_subscriptions(&self) -> usize {
        self.subs.lock().single
    }

    /// List entries held by all active subscriptions.
    pub fn entries_held(&self) -> usize {
        self.subs.lock().entries
    }

    /// Active subscriptions of `account` (canonical, as given to `subscribe`).
    pub fn subscriptions_of(&self, account: &str) -> usize {
        self.subs.lock().by_account.get(&self.account_key(account))
    }

    fn account_key(&self, account: &str) -> AccountKey {
        AccountKey(self.account_hasher.hash_one(account))
    }
}

/// One open TCP/TLS connection's slot; dropping it frees the slot.
pub struct ConnGuard {
    limits: Arc<Limits>,
    key: SourceKey,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.limits.conns.lock().sub(&self.key);
    }
}

/// One active subscription's slot; dropping it frees the slot.
pub struct SubPermit {
    limits: Arc<Limits>,
    account: AccountKey,
    source: SourceKey,
    /// u32, not usize: with the source's 17 bytes it keeps the permit at 40 bytes, and
    /// every held subscription has one.
    entries: u32,
    single: bool,
}

/// A list's entries as a permit counts them (no list comes near the limit).
fn clamp_entries(entries: usize) -> u32 {
    u32::try_from(entries).unwrap_or(u32::MAX)
}

impl SubPermit {
    /// The slot of a single-presentity subscription when `single` (counted apart from
    /// lists, for the metrics; the caps count both alike).
    pub fn marked_single(mut self, single: bool) -> SubPermit {
        if single && !self.single {
            self.limits.subs.lock().single += 1;
            self.single = true;
        }
        self
    }
}

impl SubPermit {
    /// The subscription now holds `entries` (a stored list whose book changed): the count
    /// of entries held follows. Never refused: the book's own cap bounds the change.
    pub fn resize(&mut self, entries: usize) {
        let entries = clamp_entries(entries);
        let mut s = self.limits.subs.lock();
        s.entries = s.entries.saturating_sub(self.entries as usize) + entries as usize;
        self.entries = entries;
    }
}

impl Drop for SubPermit {
    fn drop(&mut self) {
        let mut s = self.limits.subs.lock();
        s.by_account.sub(&self.account);
        s.by_source.sub(&self.source);
        s.entries -= self.entries as usize;
        s.single -= usize::from(self.single);
    }
}

impl std::fmt::Debug for SubPermit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubPermit").field("account", &self.account).field("source", &self.source).finish()
    }
}

/// Counts per key, holding only non-zero ones.
struct Counts<K> {
    map: HashMap<K, usize>,
    total: usize,
}

impl<K> Default for Counts<K> {
    fn default() -> Self {
        Counts { map: HashMap::new(), total: 0 }
    }
}

impl<K: std::hash::Hash + Eq> Counts<K> {
    fn get<Q>(&self, k: &Q) -> usize
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        self.map.get(k).copied().unwrap_or(0)
    }

    fn add(&mut self, k: K) {
        *self.map.entry(k).or_insert(0) += 1;
        self.total += 1;
    }

    fn sub<Q>(&mut self, k: &Q)
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        if let Some(n) = self.map.get_mut(k) {
            *n -= 1;
            self.total -= 1;
            if *n == 0 {
                self.map.remove(k);
            }
        }
    }
}

/// Who counts as one account: a keyed 64-bit hash of its canonical name, 8 bytes in the
/// table and in each permit instead of the name twice (~60 bytes a subscription). Two
/// accounts whose hashes collide (once in 2^64 pairs; the key is secret, so not on
/// purpose) would share one per-account cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct AccountKey(u64);

#[derive(Default)]
struct SubCounts {
    by_account: Counts<AccountKey>,
    by_source: Counts<SourceKey>,
    entries: usize,
    /// Of them, single-presentity subscriptions.
    single: usize,
}

/// A token bucket with its reject allowance.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    rejects: f64,
    last: Instant,
}

impl Bucket {
    fn full(cfg: &LimitsConfig, now: Instant) -> Bucket {
        Bucket { tokens: f64::from(cfg.request_burst.max(1)), rejects: f64::from(cfg.rejects_per_second), last: now }
    }

    fn refill(&mut self, cfg: &LimitsConfig, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        let burst = f64::from(cfg.request_burst.max(1));
        self.tokens = (self.tokens + dt * f64::from(cfg.requests_per_second)).min(burst);
        let rejects = f64::from(cfg.rejects_per_second);
        self.rejects = (self.rejects + dt * rejects).min(rejects);
    }

    /// Refilled as if new: such an entry can be forgotten.
    fn is_full(&self, cfg: &LimitsConfig, now: Instant) -> bool {
        let mut b = *self;
        b.refill(cfg, now);
        b.tokens >= f64::from(cfg.request_burst.max(1)) && b.rejects >= f64::from(cfg.rejects_per_second)
    }
}

struct RateTable {
    map: HashMap<SourceKey, Bucket>,
    /// Shared by new sources while the table is full of busy ones.
    overflow: Bucket,
    last_prune: Instant,
}

impl RateTable {
    fn new(cfg: &LimitsConfig, now: Instant) -> RateTable {
        RateTable { map: HashMap::new(), overflow: Bucket::full(cfg, now), last_prune: now }
    }

    fn charge(&mut self, cfg: &LimitsConfig, key: SourceKey, now: Instant) -> Verdict {
        let max = cfg.max_sources.max(1);
        if !self.map.contains_key(&key) && self.map.len() >= max && now.saturating_duration_since(self.last_prune) >= PRUNE_EVERY {
            self.last_prune = now;
            self.map.retain(|_, b| !b.is_full(cfg, now));
        }
        let bucket = if self.map.contains_key(&key) || self.map.len() < max {
            self.map.entry(key).or_insert_with(|| Bucket::full(cfg, now))
        } else {
            &mut self.overflow
        };
        bucket.refill(cfg, now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Verdict::Admit
        } else if bucket.rejects >= 1.0 {
            bucket.rejects -= 1.0;
            let wait = (1.0 - bucket.tokens) / f64::from(cfg.requests_per_second.max(1));
            Verdict::Reject { retry_after: (wait.ceil() as u32).max(1) }
        } else {
            Verdict::Drop
        }
    }
}

const PRUNE_EVERY: Duration = Duration::from_secs(1);

/// At most one log line a second; counts the lines it suppressed in between.
#[derive(Default)]
struct Throttle(Mutex<(Option<Instant>, u64)>);

impl Throttle {
    /// `Some(suppressed since the last line)` when a line may be written now.
    fn allow(&self, now: Instant) -> Option<u64> {
        let mut g = self.0.lock();
        match g.0 {
            Some(last) if now.saturating_duration_since(last) < Duration::from_secs(1) => {
                g.1 += 1;
                None
            }
            _ => {
                let suppressed = std::mem::take(&mut g.1);
                g.0 = Some(now);
                Some(suppressed)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> LimitsConfig {
        LimitsConfig { requests_per_second: 10, request_burst: 5, rejects_per_second: 2, max_sources: 3, ..LimitsConfig::default() }
    }

    fn ip(s: &str) -> SourceKey {
        SourceKey::of(s.parse().unwrap())
    }

    #[test]
    fn bucket_admits_burst_then_rejects_then_drops_then_refills() {
        let l = Limits::new(&cfg());
        let t0 = Instant::now();
        let k = ip("192.0.2.1");
        for _ in 0..5 {
            assert_eq!(l.admit_at(k, t0), Verdict::Admit);
        }
        assert_eq!(l.admit_at(k, t0), Verdict::Reject { retry_after: 1 });
        assert_eq!(l.admit_at(k, t0), Verdict::Reject { retry_after: 1 });
        assert_eq!(l.admit_at(k, t0), Verdict::Drop);
        // Another source is not affected.
        assert_eq!(l.admit_at(ip("192.0.2.2"), t0), Verdict::Admit);
        // 10/s: one token back after 100 ms.
        assert_eq!(l.admit_at(k, t0 + Duration::from_millis(110)), Verdict::Admit);
    }

    #[test]
    fn rate_table_is_bounded_and_prunes_idle_sources() {
        let l = Limits::new(&cfg());
        let t0 = Instant::now();
        for i in 0..50 {
            let _ = l.admit_at(ip(&format!("198.51.100.{i}")), t0);
        }
        assert_eq!(l.tracked_sources(), 3, "newcomers share the overflow bucket");
        // Later, the idle buckets have refilled: they are pruned and room is made.
        let later = t0 + Duration::from_secs(5);
        assert_eq!(l.admit_at(ip("203.0.113.9"), later), Verdict::Admit);
        assert_eq!(l.tracked_sources(), 1);
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_v4_as_v4() {
        assert_eq!(ip("2001:db8:1:2::1"), ip("2001:db8:1:2:ffff::9"));
        assert_ne!(ip("2001:db8:1:2::1"), ip("2001:db8:1:3::1"));
        assert_eq!(ip("::ffff:192.0.2.1"), ip("192.0.2.1"));
    }

    #[test]
    fn subscription_caps_and_release() {
        let c = LimitsConfig { max_subscriptions_per_account: 2, max_subscriptions_per_source: 3, max_subscriptions: 4, max_entries_held: 100, ..cfg() };
        let l = Limits::new(&c);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let p1 = l.subscribe("sip:alice@x", a, 10).unwrap();
        let _p2 = l.subscribe("sip:alice@x", a, 10).unwrap();
        assert_eq!(l.subscribe("sip:alice@x", b, 1).unwrap_err().reason, "Too Many Subscriptions For This Account");
        let _p3 = l.subscribe("sip:bob@x", a, 10).unwrap();
        assert_eq!(l.subscribe("sip:carol@x", a, 1).unwrap_err().reason, "Too Many Subscriptions From This Address");
        assert_eq!(l.subscribe("sip:carol@x", b, 71).unwrap_err().reason, "Too Many Entries Watched");
        let _p4 = l.subscribe("sip:carol@x", b, 70).unwrap();
        assert_eq!(l.subscribe("sip:dave@x", b, 0).unwrap_err().reason, "Too Many Subscriptions");
        drop(p1);
        assert_eq!(l.subscriptions_of("sip:alice@x"), 1);
        assert_eq!(l.entries_held(), 90);
        let _p5 = l.subscribe("sip:alice@x", b, 10).unwrap();
        assert_eq!(l.subscriptions(), 4, "the refused ones took nothing");
        assert_eq!(l.entries_held(), 100);
    }

    #[test]
    fn single_presentity_slots_are_counted_apart_and_released() {
        let l = Limits::new(&cfg());
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let list = l.subscribe("sip:alice@x", a, 10).unwrap().marked_single(false);
        let single = l.subscribe("sip:alice@x", a, 1).unwrap().marked_single(true).marked_single(true);
        assert_eq!((l.subscriptions(), l.single_subscriptions()), (2, 1));
        drop(single);
        assert_eq!((l.subscriptions(), l.single_subscriptions()), (1, 0));
        drop(list);
        assert_eq!((l.subscriptions(), l.single_subscriptions()), (0, 0));
    }

    #[test]
    fn connection_caps_and_release() {
        let c = LimitsConfig { max_connections_per_source: 2, ..cfg() };
        let l = Limits::new(&c);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let g1 = l.open_connection(a, 3).unwrap();
        let _g2 = l.open_connection(a, 3).unwrap();
        assert!(l.open_connection(a, 3).is_none(), "per source");
        let _g3 = l.open_connection("192.0.2.2".parse().unwrap(), 3).unwrap();
        assert!(l.open_connection("192.0.2.3".parse().unwrap(), 3).is_none(), "in all");
        drop(g1);
        let _g4 = l.open_connection(a, 3).unwrap();
        assert_eq!(l.connections(), 3);
    }

    #[test]
    fn zero_means_unlimited() {
        let l = Limits::unlimited();
        let t0 = Instant::now();
        for _ in 0..10_000 {
            assert_eq!(l.admit_at(ip("192.0.2.1"), t0), Verdict::Admit);
        }
        assert_eq!(l.tracked_sources(), 0);
    }
}
