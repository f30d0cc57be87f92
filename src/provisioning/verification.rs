//! Verification state: pending one-time codes, their counters and limits, and the devices
//! that verified a number, in sled (`data_dir/provisioning`), with expiry.
//!
//! Owns the trees `pending` (number + device id → [`Record`] JSON), `refs` (verification id →
//! pending key, for delivery reports), `numbers` (number → sends of all devices in the
//! current window: device ids are made up by clients, so a number also has its own cap) and
//! `devices` (number + device id → time verified).
//! Every decision takes `now` (Unix seconds) so that limits are testable; every write is
//! flushed before the call returns. It sends nothing and must not touch accounts or the
//! binding index.

use crate::numbers::E164;
use parking_lot::Mutex;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::path::Path;

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

/// One number and device's verification.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    /// Id of the current code (random hex); given to the gateway as the reference.
    id: String,
    /// SHA-256 of `id:code`; empty once used.
    code_hash: String,
    sent_at: u64,
    expires_at: u64,
    /// Codes sent since `window_start`.
    sends: u32,
    window_start: u64,
    /// Wrong codes entered for the current code.
    wrong: u32,
    /// `submitted` (to the gateway), `failed` (the gateway refused it), or what the gateway's
    /// delivery report said (`delivered`, ...).
    delivery: String,
}

impl Record {
    fn new(now: u64) -> Record {
        Record {
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

/// Codes sent to one number, all devices together, since `start`.
#[derive(Debug, Clone, Copy)]
struct Window {
    sends: u32,
    start: u64,
}

impl Window {
    fn decode(v: &[u8]) -> Option<Window> {
        let sends = u32::from_be_bytes(v.get(0..4)?.try_into().ok()?);
        let start = u64::from_be_bytes(v.get(4..12)?.try_into().ok()?);
        Some(Window { sends, start })
    }

    fn encode(&self) -> [u8; 12] {
        let mut out = [0u8; 12];
        out[..4].copy_from_slice(&self.sends.to_be_bytes());
        out[4..].copy_from_slice(&self.start.to_be_bytes());
        out
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

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("storage error: {0}")]
    Sled(#[from] sled::Error),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

pub struct Verifications {
    db: sled::Db,
    pending: sled::Tree,
    refs: sled::Tree,
    devices: sled::Tree,
    numbers: sled::Tree,
    limits: Limits,
    write: Mutex<()>,
}

fn key(n: E164, device: &str) -> Vec<u8> {
    [&n.as_key()[..], device.as_bytes()].concat()
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
    pub fn open(dir: &Path, limits: Limits) -> Result<Verifications, StateError> {
        std::fs::create_dir_all(dir)?;
        let db = sled::Config::new().path(dir).cache_capacity(16 << 20).open()?;
        Ok(Verifications {
            pending: db.open_tree("pending")?,
            refs: db.open_tree("refs")?,
            devices: db.open_tree("devices")?,
            numbers: db.open_tree("numbers")?,
            db,
            limits,
            write: Mutex::new(()),
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Applies the send limits and, when a code may go out, stores a new one (durably).
    pub fn start(&self, n: E164, device: &str, now: u64) -> Result<Start, StateError> {
        let l = &self.limits;
        let _w = self.write.lock();
        let k = key(n, device);
        let mut r = self.record(&k)?.unwrap_or_else(|| Record::new(now));
        let mut per_number = self.number_window(n)?.unwrap_or(Window { sends: 0, start: now });
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
        if !r.id.is_empty() {
            self.refs.remove(r.id.as_bytes())?;
        }
        let code = random_code(l.code_length);
        r.renew(&code, now, l.validity_secs);
        per_number.sends += 1;
        self.numbers.insert(n.as_key(), &per_number.encode()[..])?;
        self.refs.insert(r.id.as_bytes(), k.as_slice())?;
        self.save(&k, &r)?;
        Ok(Start::Send { id: r.id, code, sends_left: l.max_sends - r.sends })
    }

    fn number_window(&self, n: E164) -> Result<Option<Window>, StateError> {
        Ok(self.numbers.get(n.as_key())?.and_then(|v| Window::decode(&v)))
    }

    /// Checks a code; a correct one is used up (durably) so it cannot be replayed.
    pub fn check(&self, n: E164, device: &str, code: &str, now: u64) -> Result<Check, StateError> {
        let _w = self.write.lock();
        let k = key(n, device);
        let Some(mut r) = self.record(&k)? else { return Ok(Check::NoPending) };
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
            self.save(&k, &r)?;
            return Ok(Check::Correct);
        }
        r.wrong += 1;
        self.save(&k, &r)?;
        Ok(Check::Wrong { attempts_left: self.limits.max_wrong.saturating_sub(r.wrong) })
    }

    /// Records the gateway's delivery report; false when the reference is unknown.
    pub fn set_delivery(&self, id: &str, status: &str) -> Result<bool, StateError> {
        let _w = self.write.lock();
        let Some(k) = self.refs.get(id.as_bytes())? else { return Ok(false) };
        let Some(mut r) = self.record(&k)? else { return Ok(false) };
        r.delivery = status.chars().filter(|c| !c.is_control()).take(64).collect();
        self.save(&k, &r)?;
        Ok(true)
    }

    /// The delivery state of the current code of `n` and `device`.
    pub fn delivery(&self, n: E164, device: &str) -> Result<Option<String>, StateError> {
        Ok(self.record(&key(n, device))?.map(|r| r.delivery))
    }

    /// Remembers that `device` verified `n` (for re-install recovery).
    pub fn remember_device(&self, n: E164, device: &str, now: u64) -> Result<(), StateError> {
        self.devices.insert(key(n, device), &now.to_be_bytes())?;
        self.db.flush()?;
        Ok(())
    }

    pub fn knows_device(&self, n: E164, device: &str) -> Result<bool, StateError> {
        Ok(self.devices.contains_key(key(n, device))?)
    }

    /// Removes records whose code and send window are both over; returns how many.
    pub fn sweep(&self, now: u64) -> Result<usize, StateError> {
        let _w = self.write.lock();
        let mut removed = 0;
        for item in self.pending.iter() {
            let (k, v) = item?;
            let Ok(r) = serde_json::from_slice::<Record>(&v) else { continue };
            if now >= r.expires_at && now >= r.window_start.saturating_add(self.limits.window_secs) {
                self.pending.remove(&k)?;
                self.refs.remove(r.id.as_bytes())?;
                removed += 1;
            }
        }
        for item in self.numbers.iter() {
            let (k, v) = item?;
            if Window::decode(&v).is_none_or(|w| now >= w.start.saturating_add(self.limits.window_secs)) {
                self.numbers.remove(&k)?;
            }
        }
        if removed > 0 {
            self.db.flush()?;
        }
        Ok(removed)
    }

    fn record(&self, k: &[u8]) -> Result<Option<Record>, StateError> {
        Ok(self.pending.get(k)?.and_then(|v| serde_json::from_slice(&v).ok()))
    }

    fn save(&self, k: &[u8], r: &Record) -> Result<(), StateError> {
        self.pending.insert(k, serde_json::to_vec(r).unwrap_or_default())?;
        self.db.flush()?;
        Ok(())
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
