//! Verification: pending one-time codes, their counters and limits, and the devices that
//! verified a number, with expiry.
//!
//! Owns the rules: per number and device a code record, per number the sends of all its
//! devices in the current window (device ids are made up by clients, so a number also has
//! its own cap), codes' references for delivery reports. The state is kept by a
//! [`VerificationStore`] (`crate::storage::verification`; today sled,
//! `data_dir/provisioning`). Every decision takes `now` (Unix seconds) so that limits are
//! testable; every write is durable before the call returns. It sends nothing and must not
//! touch accounts or the binding index.

use crate::numbers::E164;
use crate::storage::sled::SledVerifications;
use crate::storage::verification::{CodeRecord, SendWindow, VerificationStore};
use parking_lot::Mutex;
use rand::Rng;
use std::path::Path;
use std::sync::Arc;

pub use crate::storage::verification::StateError;

/// The limits a verification runs under (from the config).
#[derive(Debug, Clone)]
pub struct Limits {
    pub code_length: usize,
    pub validity_secs: u64,
    /// Per number and device.
    pub max_sends: u32,
    /// Per number, all devices together (device ids can be made up).
    pub max_sends_per_number: u32,
    pub window_secs: u64,
    pub resend_after_secs: u64,
    pub max_wrong: u32,
}

impl CodeRecord {
    fn new(now: u64) -> CodeRecord {
        CodeRecord {
            id: String::new(),
            code_hash: String::new(),
            sent_at: 0,
            expires_at: 0,
            sends: 0,
            window_start: now,
            wrong: 0,
            delivery: String::new(),
        }
    }

    /// A new code: new id, counters for it reset, one more send.
    fn renew(&mut self, code: &str, now: u64, validity_secs: u64) {
        self.id = random_id();
        self.code_hash = hash_code(&self.id, code);
        self.sent_at = now;
        self.expires_at = now.saturating_add(validity_secs);
        self.sends += 1;
        self.wrong = 0;
        self.delivery = "submitted".into();
    }
}

/// Starts a new window (count back to 0) when the old one is over; returns its start.
fn roll_window(sends: &mut u32, start: u64, now: u64, window_secs: u64) -> u64 {
    if now >= start.saturating_add(window_secs) {
        *sends = 0;
        return now;
    }
    start
}

/// What [`Verifications::start`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// Send `code`; `id` is its reference.
    Send { id: String, code: String, sends_left: u32 },
    /// The send limit is reached; the window ends in `retry_after` seconds.
    TooMany { retry_after: u64 },
    /// The previous code was sent too recently.
    TooSoon { retry_after: u64 },
}

/// What [`Verifications::check`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    Correct,
    Wrong { attempts_left: u32 },
    Locked,
    Expired,
    /// No code was sent, or it was already used.
    NoPending,
}

/// Verifications: a handle over a [`VerificationStore`]. Cheap to clone.
#[derive(Clone)]
pub struct Verifications {
    store: Arc<dyn VerificationStore>,
    limits: Limits,
    /// Serialises the read-modify-writes of a record.
    write: Arc<Mutex<()>>,
}

fn hash_code(id: &str, code: &str) -> String {
    crate::accounts::Algorithm::Sha256.hex(&format!("{id}:{code}"))
}

fn random_code(len: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..len).map(|_| char::from(b'0' + rng.gen_range(0..10u8))).collect()
}

fn random_id() -> String {
    let b: [u8; 12] = rand::random();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Verifications {
    /// Opens (creating if needed) the sled store in `dir`.
    pub fn open(dir: &Path, limits: Limits) -> Result<Verifications, StateError> {
        Ok(Verifications::with_store(Arc::new(SledVerifications::open(dir)?), limits))
    }

    /// Verifications over any store.
    pub fn with_store(store: Arc<dyn VerificationStore>, limits: Limits) -> Verifications {
        Verifications { store, limits, write: Arc::new(Mutex::new(())) }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Applies the send limits and, when a code may go out, stores a new one (durably).
    pub fn start(&self, n: E164, device: &str, now: u64) -> Result<Start, StateError> {
        let l = &self.limits;
        let _w = self.write.lock();
        let _held = self.store.hold(n)?;
        let mut r = self.store.record(n, device)?.unwrap_or_else(|| CodeRecord::new(now));
        let mut per_number = self.store.window(n)?.unwrap_or(SendWindow { sends: 0, start: now });
        r.window_start = roll_window(&mut r.sends, r.window_start, now, l.window_secs);
        per_number.start = roll_window(&mut per_number.sends, per_number.start, now, l.window_secs);
        let window_end = |start: u64| start.saturating_add(l.window_secs).saturating_sub(now).max(1);
        if r.sends >= l.max_sends {
            return Ok(Start::TooMany { retry_after: window_end(r.window_start) });
        }
        if per_number.sends >= l.max_sends_per_number {
            return Ok(Start::TooMany { retry_after: window_end(per_number.start) });
        }
        let next = r.sent_at.saturating_add(l.resend_after_secs);
        if r.sends > 0 && now < next {
            return Ok(Start::TooSoon { retry_after: next - now });
        }
        let old_id = (!r.id.is_empty()).then(|| r.id.clone());
        let code = random_code(l.code_length);
        r.renew(&code, now, l.validity_secs);
        per_number.sends += 1;
        self.store.save_new_code(n, device, &r, old_id.as_deref(), per_number)?;
        Ok(Start::Send { id: r.id, code, sends_left: l.max_sends - r.sends })
    }

    /// Checks a code; a correct one is used up (durably) so it cannot be replayed.
    pub fn check(&self, n: E164, device: &str, code: &str, now: u64) -> Result<Check, StateError> {
        let _w = self.write.lock();
        let _held = self.store.hold(n)?;
        let Some(mut r) = self.store.record(n, device)? else { return Ok(Check::NoPending) };
        if r.code_hash.is_empty() {
            return Ok(Check::NoPending);
        }
        if now >= r.expires_at {
            return Ok(Check::Expired);
        }
        if r.wrong >= self.limits.max_wrong {
            return Ok(Check::Locked);
        }
        let given = hash_code(&r.id, code.trim());
        if crate::accounts::constant_time_eq(given.as_bytes(), r.code_hash.as_bytes()) {
            r.code_hash.clear();
            self.store.save(n, device, &r)?;
            return Ok(Check::Correct);
        }
        r.wrong += 1;
        self.store.save(n, device, &r)?;
        Ok(Check::Wrong { attempts_left: self.limits.max_wrong.saturating_sub(r.wrong) })
    }

    /// Records the gateway's delivery report; false when the reference is unknown.
    pub fn set_delivery(&self, id: &str, status: &str) -> Result<bool, StateError> {
        let _w = self.write.lock();
        let Some((n, device)) = self.store.by_reference(id)? else { return Ok(false) };
        let _held = self.store.hold(n)?;
        let Some(mut r) = self.store.record(n, &device)? else { return Ok(false) };
        r.delivery = status.chars().filter(|c| !c.is_control()).take(64).collect();
        self.store.save(n, &device, &r)?;
        Ok(true)
    }

    /// The delivery state of the current code of `n` and `device`.
    pub fn delivery(&self, n: E164, device: &str) -> Result<Option<String>, StateError> {
        Ok(self.store.record(n, device)?.map(|r| r.delivery))
    }

    /// Remembers that `device` verified `n` (for re-install recovery).
    pub fn remember_device(&self, n: E164, device: &str, now: u64) -> Result<(), StateError> {
        Ok(self.store.remember_device(n, device, now)?)
    }

    pub fn knows_device(&self, n: E164, device: &str) -> Result<bool, StateError> {
        Ok(self.store.knows_device(n, device)?)
    }

    /// Removes records whose code and send window are both over; returns how many.
    pub fn sweep(&self, now: u64) -> Result<usize, StateError> {
        let _w = self.write.lock();
        let window = self.limits.window_secs;
        let done = |r: &CodeRecord| now >= r.expires_at && now >= r.window_start.saturating_add(window);
        let window_over = |w: &SendWindow| now >= w.start.saturating_add(window);
        Ok(self.store.sweep(&done, &window_over)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits { code_length: 4, validity_secs: 600, max_sends: 2, max_sends_per_number: 5, window_secs: 1000, resend_after_secs: 60, max_wrong: 3 }
    }

    fn n() -> E164 {
        "+33612345678".parse().unwrap()
    }

    #[test]
    fn send_limits_and_window() {
        let dir = tempfile::tempdir().unwrap();
        let v = Verifications::open(dir.path(), limits()).unwrap();
        assert!(matches!(v.start(n(), "d", 0).unwrap(), Start::Send { sends_left: 1, .. }));
        assert_eq!(v.start(n(), "d", 10).unwrap(), Start::TooSoon { retry_after: 50 });
        assert!(matches!(v.start(n(), "d", 60).unwrap(), Start::Send { sends_left: 0, .. }));
        assert_eq!(v.start(n(), "d", 200).unwrap(), Start::TooMany { retry_after: 800 });
        assert!(matches!(v.start(n(), "other", 200).unwrap(), Start::Send { .. }), "per device");
        assert!(matches!(v.start(n(), "d", 1000).unwrap(), Start::Send { .. }), "new window");
    }

    #[test]
    fn a_number_has_its_own_cap_across_devices() {
        let dir = tempfile::tempdir().unwrap();
        let v = Verifications::open(dir.path(), limits()).unwrap();
        for device in ["a", "b", "c", "d"] {
            assert!(matches!(v.start(n(), device, 0).unwrap(), Start::Send { .. }));
        }
        assert!(matches!(v.start(n(), "a", 60).unwrap(), Start::Send { .. }), "5th send to the number");
        assert_eq!(v.start(n(), "e", 100).unwrap(), Start::TooMany { retry_after: 900 });
        assert!(matches!(v.start("+33698765432".parse().unwrap(), "e", 100).unwrap(), Start::Send { .. }));
        assert_eq!(v.sweep(1000).unwrap(), 4, "a, b, c, d; the other number's window is not over");
        assert!(matches!(v.start(n(), "e", 1000).unwrap(), Start::Send { .. }), "swept with its window");
    }

    #[test]
    fn codes_lock_expire_and_are_single_use() {
        let dir = tempfile::tempdir().unwrap();
        let v = Verifications::open(dir.path(), limits()).unwrap();
        let Start::Send { code, .. } = v.start(n(), "d", 0).unwrap() else { panic!() };
        let wrong = if code == "0000" { "1111" } else { "0000" };
        assert_eq!(v.check(n(), "d", wrong, 1).unwrap(), Check::Wrong { attempts_left: 2 });
        assert_eq!(v.check(n(), "d", &code, 1).unwrap(), Check::Correct);
        assert_eq!(v.check(n(), "d", &code, 1).unwrap(), Check::NoPending, "used up");
        let Start::Send { code, .. } = v.start(n(), "d", 100).unwrap() else { panic!() };
        assert_eq!(v.check(n(), "d", &code, 700).unwrap(), Check::Expired);
        let Start::Send { code, .. } = v.start(n(), "e", 0).unwrap() else { panic!() };
        let wrong = if code == "0000" { "1111" } else { "0000" };
        for left in [2, 1, 0] {
            assert_eq!(v.check(n(), "e", wrong, 1).unwrap(), Check::Wrong { attempts_left: left });
        }
        assert_eq!(v.check(n(), "e", &code, 1).unwrap(), Check::Locked);
    }
}
