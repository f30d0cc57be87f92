//! The address books' secrets: the keyed hash (HMAC-SHA256) that replaces each number and
//! each account name in the store, and the sealing (ChaCha20-Poly1305) of the raw forms
//! that must be echoed back to the account owner. Both keys derive from one 32-byte master
//! key: `[address_books] key` (hex), else `key_file`, else `data_dir/address-books.key`,
//! generated on first start (mode 0600), like the TLS certificate.
//!
//! Owns the key material and the primitives (ring, already the TLS provider); must not
//! know what a book is.

use super::{BookError, Tag};
use crate::storage::address_books::hex;
use crate::config::AddressBooksConfig;
use anyhow::Context;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::hmac;
use std::path::Path;

/// The file the master key is generated into when the config names none.
pub const KEY_FILE: &str = "address-books.key";

pub struct Keys {
    mac: hmac::Key,
    seal: LessSafeKey,
}

impl Keys {
    /// The two working keys, each an HMAC of a fixed label under `master`.
    pub fn new(master: &[u8; 32]) -> Result<Keys, BookError> {
        let root = hmac::Key::new(hmac::HMAC_SHA256, master);
        let mac = hmac::sign(&root, b"smart-presence address-book tags v1");
        let seal = hmac::sign(&root, b"smart-presence address-book sealing v1");
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, seal.as_ref()).map_err(|_| BookError::Corrupt("sealing key".into()))?;
        Ok(Keys { mac: hmac::Key::new(hmac::HMAC_SHA256, mac.as_ref()), seal: LessSafeKey::new(unbound) })
    }

    /// The keyed hash of `kind` and `text` (first 128 bits: collisions need 2^64 entries).
    pub fn tag(&self, kind: &[u8], text: &[u8]) -> Tag {
        let mut ctx = hmac::Context::with_key(&self.mac);
        ctx.update(kind);
        ctx.update(b"\0");
        ctx.update(text);
        let mut out = [0u8; 16];
        out.copy_from_slice(&ctx.sign().as_ref()[..16]);
        out
    }

    /// `plain` encrypted and authenticated, bound to `owner`: a random nonce, then the
    /// ciphertext and its tag.
    pub fn seal(&self, owner: &Tag, plain: &[u8]) -> Result<Vec<u8>, BookError> {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let mut out = Vec::with_capacity(NONCE_LEN + plain.len() + 16);
        out.extend_from_slice(&nonce);
        let mut body = plain.to_vec();
        self.seal
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(owner), &mut body)
            .map_err(|_| BookError::Corrupt("cannot seal".into()))?;
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// What `seal` sealed for `owner`; an error when it was altered or sealed for another.
    pub fn open(&self, owner: &Tag, sealed: &[u8]) -> Result<Vec<u8>, BookError> {
        if sealed.len() < NONCE_LEN {
            return Err(BookError::Corrupt("sealed contacts too short".into()));
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| BookError::Corrupt("nonce".into()))?;
        let mut body = body.to_vec();
        let plain = self
            .seal
            .open_in_place(nonce, Aad::from(owner), &mut body)
            .map_err(|_| BookError::Corrupt("sealed contacts do not open (another key, or altered)".into()))?;
        let len = plain.len();
        body.truncate(len);
        Ok(body)
    }
}

/// The master key the config names, or the one generated in `data_dir`.
pub fn master_key(cfg: &AddressBooksConfig, data_dir: &Path) -> anyhow::Result<[u8; 32]> {
    if !cfg.key.is_empty() {
        return from_hex(&cfg.key).context("address_books.key: 64 hex digits (32 bytes) expected");
    }
    if let Some(file) = &cfg.key_file {
        let text = std::fs::read_to_string(file).with_context(|| format!("address_books.key_file: cannot read {}", file.display()))?;
        return from_hex(&text).with_context(|| format!("address_books.key_file {}: 64 hex digits (32 bytes) expected", file.display()));
    }
    let path = data_dir.join(KEY_FILE);
    if path.exists() {
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        return from_hex(&text).with_context(|| format!("{}: 64 hex digits expected (move it away to generate a new key: stored books are then lost)", path.display()));
    }
    let key: [u8; 32] = rand::random();
    crate::private_file::write(&path, hex(&key).as_bytes(), crate::private_file::Existing::Refuse)?;
    tracing::info!(path = %path.display(), "address-book key generated");
    Ok(key)
}

fn from_hex(text: &str) -> anyhow::Result<[u8; 32]> {
    let t = text.trim();
    anyhow::ensure!(t.len() == 64 && t.is_ascii(), "{} characters", t.len());
    crate::storage::address_books::from_hex(t).context("not hex")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_data_opens_only_for_its_owner_and_key() {
        let keys = Keys::new(&[7; 32]).unwrap();
        let (alice, bob) = (keys.tag(b"account", b"alice"), keys.tag(b"account", b"bob"));
        let sealed = keys.seal(&alice, b"+33612345678").unwrap();
        assert!(!sealed.windows(12).any(|w| w == b"+33612345678"));
        assert_eq!(keys.open(&alice, &sealed).unwrap(), b"+33612345678");
        assert!(keys.open(&bob, &sealed).is_err(), "bound to its owner");
        assert!(Keys::new(&[8; 32]).unwrap().open(&alice, &sealed).is_err(), "another key");
        assert_ne!(keys.tag(b"n", b"1"), Keys::new(&[8; 32]).unwrap().tag(b"n", b"1"));
    }

    #[test]
    fn a_generated_key_is_kept_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = AddressBooksConfig::default();
        let first = master_key(&cfg, dir.path()).unwrap();
        assert_eq!(master_key(&cfg, dir.path()).unwrap(), first);
        let bad = AddressBooksConfig { key: "12".into(), ..AddressBooksConfig::default() };
        assert!(format!("{:#}", master_key(&bad, dir.path()).unwrap_err()).contains("address_books.key"));
    }
}
