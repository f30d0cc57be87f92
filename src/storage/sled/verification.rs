//! Verification state in its own sled database (`data_dir/provisioning`), four trees:
//! `pending` (number + device id → [`CodeRecord`] JSON), `refs` (code reference → pending
//! key), `numbers` (number → [`SendWindow`], 12 bytes) and `devices` (number + device id →
//! time verified, 8 bytes). Every write is flushed before it returns.

use crate::numbers::E164;
use crate::storage::verification::{CodeRecord, SendWindow, StateError, VerificationStore};
use crate::storage::StorageError;
use std::path::Path;

pub struct SledVerifications {
    db: sled::Db,
    pending: sled::Tree,
    refs: sled::Tree,
    devices: sled::Tree,
    numbers: sled::Tree,
}

impl From<sled::Error> for StateError {
    fn from(e: sled::Error) -> StateError {
        StateError::Storage(e.into())
    }
}

fn key(n: E164, device: &str) -> Vec<u8> {
    [&n.as_key()[..], device.as_bytes()].concat()
}

fn decode_window(v: &[u8]) -> Option<SendWindow> {
    let sends = u32::from_be_bytes(v.get(0..4)?.try_into().ok()?);
    let start = u64::from_be_bytes(v.get(4..12)?.try_into().ok()?);
    Some(SendWindow { sends, start })
}

fn encode_window(w: &SendWindow) -> [u8; 12] {
    let mut out = [0u8; 12];
    out[..4].copy_from_slice(&w.sends.to_be_bytes());
    out[4..].copy_from_slice(&w.start.to_be_bytes());
    out
}

impl SledVerifications {
    /// Opens (creating if needed) the store in `dir`.
    pub fn open(dir: &Path) -> Result<SledVerifications, StateError> {
        std::fs::create_dir_all(dir)?;
        let db = super::open(&sled::Config::new().path(dir).cache_capacity(16 << 20))?;
        Ok(SledVerifications {
            pending: db.open_tree("pending")?,
            refs: db.open_tree("refs")?,
            devices: db.open_tree("devices")?,
            numbers: db.open_tree("numbers")?,
            db,
        })
    }

    fn put(&self, k: &[u8], r: &CodeRecord) -> Result<(), StorageError> {
        self.pending.insert(k, serde_json::to_vec(r).unwrap_or_default())?;
        self.db.flush()?;
        Ok(())
    }
}

impl VerificationStore for SledVerifications {
    fn record(&self, n: E164, device: &str) -> Result<Option<CodeRecord>, StorageError> {
        Ok(self.pending.get(key(n, device))?.and_then(|v| serde_json::from_slice(&v).ok()))
    }

    fn by_reference(&self, id: &str) -> Result<Option<(E164, String)>, StorageError> {
        let Some(k) = self.refs.get(id.as_bytes())? else { return Ok(None) };
        let Some(n) = k.get(..8).and_then(E164::from_key) else { return Ok(None) };
        Ok(Some((n, String::from_utf8_lossy(&k[8..]).into_owned())))
    }

    fn window(&self, n: E164) -> Result<Option<SendWindow>, StorageError> {
        Ok(self.numbers.get(n.as_key())?.and_then(|v| decode_window(&v)))
    }

    fn save_new_code(
        &self,
        n: E164,
        device: &str,
        record: &CodeRecord,
        old_id: Option<&str>,
        window: SendWindow,
    ) -> Result<(), StorageError> {
        if let Some(old) = old_id {
            self.refs.remove(old.as_bytes())?;
        }
        let k = key(n, device);
        self.numbers.insert(n.as_key(), &encode_window(&window)[..])?;
        self.refs.insert(record.id.as_bytes(), k.as_slice())?;
        self.put(&k, record)
    }

    fn save(&self, n: E164, device: &str, record: &CodeRecord) -> Result<(), StorageError> {
        self.put(&key(n, device), record)
    }

    fn remember_device(&self, n: E164, device: &str, at: u64) -> Result<(), StorageError> {
        self.devices.insert(key(n, device), &at.to_be_bytes())?;
        self.db.flush()?;
        Ok(())
    }

    fn knows_device(&self, n: E164, device: &str) -> Result<bool, StorageError> {
        Ok(self.devices.contains_key(key(n, device))?)
    }

    fn sweep(&self, done: &dyn Fn(&CodeRecord) -> bool, window_over: &dyn Fn(&SendWindow) -> bool) -> Result<usize, StorageError> {
        let mut removed = 0;
        for item in self.pending.iter() {
            let (k, v) = item?;
            let Ok(r) = serde_json::from_slice::<CodeRecord>(&v) else { continue };
            if done(&r) {
                self.pending.remove(&k)?;
                self.refs.remove(r.id.as_bytes())?;
                removed += 1;
            }
        }
        for item in self.numbers.iter() {
            let (k, v) = item?;
            if decode_window(&v).is_none_or(|w| window_over(&w)) {
                self.numbers.remove(&k)?;
            }
        }
        if removed > 0 {
            self.db.flush()?;
        }
        Ok(removed)
    }
}
