//! SIP accounts: who may register and authenticate, and which verified numbers each has.
//!
//! Owns the rules of accounts; the records (an account with its HA1s and token hash,
//! findable by username, number and token) are kept by an [`AccountStore`]
//! (`crate::storage::accounts`, which also defines [`Account`] and [`AccountError`]; today
//! sled, `data_dir/accounts`).
//!
//! Passwords are never stored: only the digest HA1s, `H(username:realm:password)` for MD5 and
//! SHA-256 (RFC 2617, RFC 8760), realm = the config `domain`. So credentials are not
//! retrievable: each verified provisioning *rotates* the password and the bearer token and
//! returns the new ones; the previous ones stop working (one number, one active device).
//!
//! Every write goes through one writer lock (reads and the write of a change agree; across
//! the nodes of a cluster, the store's [`AccountStore::hold`] too) and is
//! atomic and durable in the store before the call returns. Deleting an account deletes its
//! stored address book (`address_books`) too. It must not touch the binding
//! index: linking a number to a SIP URI is the caller's decision (see `provisioning`).

use crate::address_books::AddressBooks;
use crate::clock::unix_now;
use crate::numbers::E164;
use md5::Md5;
use parking_lot::Mutex;
use rand::Rng;
use sha2::{Digest, Sha256};
use crate::storage::accounts::{AccountStore, StoredAccount};
use crate::storage::sled::SledAccounts;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use crate::storage::accounts::{Account, AccountError, Settings};

/// The directory of the account store inside the data directory.
pub fn dir_in(data_dir: &Path) -> PathBuf {
    data_dir.join("accounts")
}

/// Digest algorithms we keep an HA1 for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Md5,
    Sha256,
}

impl Algorithm {
    /// From a Digest `algorithm=` value (`MD5`, `SHA-256`, with or without `-sess`: no).
    pub fn from_name(name: &str) -> Option<Algorithm> {
        match name.to_ascii_uppercase().as_str() {
            "MD5" => Some(Algorithm::Md5),
            "SHA-256" => Some(Algorithm::Sha256),
            _ => None,
        }
    }

    /// Lowercase hex of the hash of `data`.
    pub fn hex(self, data: &str) -> String {
        match self {
            Algorithm::Md5 => format!("{:x}", Md5::digest(data.as_bytes())),
            Algorithm::Sha256 => format!("{:x}", Sha256::digest(data.as_bytes())),
        }
    }
}

/// New credentials, given out once.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub password: String,
    pub token: String,
}

/// What [`Accounts::provision`] did.
#[derive(Debug, Clone)]
pub struct Provisioned {
    pub account: Account,
    pub credentials: Credentials,
    /// True when the account did not exist.
    pub created: bool,
}

/// The account store: a handle over an [`AccountStore`]. Cheap to clone.
#[derive(Clone)]
pub struct Accounts {
    store: Arc<dyn AccountStore>,
    realm: Arc<str>,
    write: Arc<Mutex<()>>,
}

impl std::fmt::Debug for Accounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accounts").field("realm", &self.realm).finish()
    }
}

/// A random password for SIP digest: 20 letters and digits (about 119 bits).
pub fn random_password() -> String {
    rand::thread_rng().sample_iter(&rand::distributions::Alphanumeric).take(20).map(char::from).collect()
}

fn random_token() -> String {
    let bytes: [u8; 32] = rand::thread_rng().gen();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn token_hash(token: &str) -> String {
    Algorithm::Sha256.hex(token)
}

/// Usernames we accept: safe in a SIP URI user part without escaping. An E.164 username
/// (`+4915100000001`, Linphone's phone-number accounts) is a SIP user like any other.
pub fn valid_username(u: &str) -> bool {
    (1..=64).contains(&u.len())
        && u.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-_.".contains(&b))
}

impl Accounts {
    /// Opens (creating if needed) the sled store in `dir`; `realm` is the digest realm (the
    /// domain).
    pub fn open(dir: &Path, realm: &str) -> Result<Accounts, AccountError> {
        Ok(Accounts::with_store(Arc::new(SledAccounts::open(dir)?), realm))
    }

    /// Accounts over any store.
    pub fn with_store(store: Arc<dyn AccountStore>, realm: &str) -> Accounts {
        Accounts { store, realm: realm.into(), write: Arc::new(Mutex::new(())) }
    }

    /// The digest realm (the service domain).
    pub fn realm(&self) -> &str {
        &self.realm
    }

    pub fn get(&self, username: &str) -> Result<Option<Account>, AccountError> {
        Ok(self.stored(username)?.map(|s| s.account))
    }

    /// The account `n` was provisioned for, if any.
    pub fn by_number(&self, n: E164) -> Result<Option<Account>, AccountError> {
        match self.store.username_by_number(n)? {
            Some(u) => self.get(&u),
            None => Ok(None),
        }
    }

    /// The account a bearer token was issued to.
    pub fn by_token(&self, token: &str) -> Result<Option<Account>, AccountError> {
        match self.store.username_by_token(&token_hash(token))? {
            Some(u) => self.get(&u),
            None => Ok(None),
        }
    }

    /// The stored HA1 (`H(username:realm:password)`, lowercase hex) for digest checks.
    pub fn ha1(&self, username: &str, algorithm: Algorithm) -> Option<String> {
        self.digest_ha1(username, algorithm).ok().flatten()
    }

    /// [`Accounts::ha1`] for a digest check, telling "no such user" (None, also for an
    /// unreadable record, logged) from a store that did not answer (the error).
    pub fn digest_ha1(&self, username: &str, algorithm: Algorithm) -> Result<Option<String>, crate::storage::StorageError> {
        let s = match self.stored(username) {
            Ok(s) => s,
            Err(AccountError::Storage(e)) => return Err(e),
            Err(e) => {
                tracing::warn!(username, "account unreadable: {e}");
                None
            }
        };
        Ok(s.map(|s| match algorithm {
            Algorithm::Md5 => s.ha1_md5,
            Algorithm::Sha256 => s.ha1_sha256,
        }))
    }

    /// True when `password` is the account's password (for HTTP Basic).
    pub fn check_password(&self, username: &str, password: &str) -> bool {
        self.password_matches(username, password).unwrap_or(false)
    }

    /// [`Accounts::check_password`], telling a store that did not answer (the error).
    pub fn password_matches(&self, username: &str, password: &str) -> Result<bool, crate::storage::StorageError> {
        let Some(stored) = self.digest_ha1(username, Algorithm::Sha256)? else { return Ok(false) };
        let computed = Algorithm::Sha256.hex(&format!("{username}:{}:{password}", self.realm));
        Ok(constant_time_eq(stored.as_bytes(), computed.as_bytes()))
    }

    /// Creates an account with a given password and numbers (the CLI and tests use this).
    /// Fails if the username exists or a number already belongs to an account.
    pub fn create(&self, username: &str, password: &str, numbers: &[E164]) -> Result<Account, AccountError> {
        if !valid_username(username) {
            return Err(AccountError::InvalidUsername(username.to_string()));
        }
        let _w = self.write.lock();
        let _held = self.store.hold()?;
        let now = unix_now();
        let account = Account {
            username: username.to_string(),
            domain: self.realm.to_string(),
            numbers: numbers.to_vec(),
            created_at: now,
            updated_at: now,
        };
        let stored = self.with_password(account, password, None);
        self.store.insert(&stored)?;
        Ok(stored.account)
    }

    /// Idempotent provisioning by number: returns the account `n` belongs to, or creates one
    /// named `username`; either way with a new password and bearer token (rotated).
    pub fn provision(&self, n: E164, username: &str) -> Result<Provisioned, AccountError> {
        if !valid_username(username) {
            return Err(AccountError::InvalidUsername(username.to_string()));
        }
        let _w = self.write.lock();
        let _held = self.store.hold()?;
        let credentials = Credentials { password: random_password(), token: random_token() };
        let (stored, created) = match self.store.username_by_number(n)? {
            Some(u) => {
                let old = self.stored(&u)?.ok_or_else(|| AccountError::Corrupt(format!("{n} points to missing {u:?}")))?;
                let mut account = old.account;
                account.updated_at = unix_now();
                let stored = self.with_password(account, &credentials.password, Some(&credentials.token));
                self.store.replace(&stored, old.token_hash.as_deref())?;
                (stored, false)
            }
            None => {
                let now = unix_now();
                let account = Account {
                    username: username.to_string(),
                    domain: self.realm.to_string(),
                    numbers: vec![n],
                    created_at: now,
                    updated_at: now,
                };
                let stored = self.with_password(account, &credentials.password, Some(&credentials.token));
                self.store.insert(&stored)?;
                (stored, true)
            }
        };
        Ok(Provisioned { account: stored.account, credentials, created })
    }

    /// Sets a new password (keeps the token).
    pub fn set_password(&self, username: &str, password: &str) -> Result<(), AccountError> {
        let _w = self.write.lock();
        let _held = self.store.hold()?;
        let old = self.stored(username)?.ok_or_else(|| AccountError::NotFound(username.to_string()))?;
        let mut stored = self.with_password(old.account, password, None);
        stored.token_hash = old.token_hash.clone();
        self.store.replace(&stored, old.token_hash.as_deref())?;
        Ok(())
    }

    /// Deletes an account and, first, its stored address book (so no book outlives its
    /// owner). False when there was no such account. Its bindings are the caller's.
    pub fn delete(&self, username: &str, books: &AddressBooks) -> Result<bool, AccountError> {
        let _w = self.write.lock();
        let _held = self.store.hold()?;
        books.delete(username).map_err(|e| AccountError::Storage(crate::storage::StorageError::new(e.to_string())))?;
        self.store.remove(username)
    }

    /// Whether the user at `uri` (`sip:username@domain`) shares his status ("share my
    /// status"): true for a URI that names no account of this domain (the default), and
    /// false when the store cannot tell (it fails closed, logged).
    pub fn shares_status(&self, uri: &str) -> bool {
        let Some((user, host)) = uri.strip_prefix("sip:").and_then(|r| r.split_once('@')) else { return true };
        if !host.eq_ignore_ascii_case(&self.realm) {
            return true;
        }
        match self.store.settings(user) {
            Ok(s) => s.share_status,
            Err(e) => {
                tracing::warn!("account settings unreadable, status not shared: {e}");
                false
            }
        }
    }

    /// The settings of `username` ([`AccountError::NotFound`] when there is no such account).
    pub fn settings(&self, username: &str) -> Result<Settings, AccountError> {
        if self.stored(username)?.is_none() {
            return Err(AccountError::NotFound(username.to_string()));
        }
        self.store.settings(username)
    }

    /// Sets "share my status" for `username` (an existing account); true when it changed.
    /// Watchers learn of it only through whoever calls this (`PresenceStore::announce`).
    pub fn set_share_status(&self, username: &str, share: bool) -> Result<bool, AccountError> {
        let _w = self.write.lock();
        let _held = self.store.hold()?;
        let mut s = self.store.settings(username)?;
        let changed = s.share_status != share;
        s.share_status = share;
        self.store.set_settings(username, &s)?;
        Ok(changed)
    }

    /// Every account, in username order.
    pub fn list(&self) -> Result<Vec<Account>, AccountError> {
        self.store.list()
    }

    fn stored(&self, username: &str) -> Result<Option<StoredAccount>, AccountError> {
        self.store.get(username)
    }

    fn with_password(&self, account: Account, password: &str, token: Option<&str>) -> StoredAccount {
        let a1 = format!("{}:{}:{password}", account.username, self.realm);
        StoredAccount {
            ha1_md5: Algorithm::Md5.hex(&a1),
            ha1_sha256: Algorithm::Sha256.hex(&a1),
            token_hash: token.map(token_hash),
            account,
        }
    }
}

/// Compares without an early exit (for secrets).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> E164 {
        s.parse().unwrap()
    }

    #[test]
    fn provisioning_is_idempotent_and_rotates_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let a = Accounts::open(dir.path(), "example.org").unwrap();
        let first = a.provision(n("+33612345678"), "33612345678").unwrap();
        assert!(first.created);
        let second = a.provision(n("+33612345678"), "ignored").unwrap();
        assert!(!second.created);
        assert_eq!(second.account.username, "33612345678");
        assert_eq!(second.account.numbers, vec![n("+33612345678")]);
        assert_ne!(first.credentials.password, second.credentials.password);
        assert!(a.check_password("33612345678", &second.credentials.password));
        assert!(!a.check_password("33612345678", &first.credentials.password));
        assert!(a.by_token(&first.credentials.token).unwrap().is_none());
        assert_eq!(a.by_token(&second.credentials.token).unwrap().unwrap().username, "33612345678");
    }

    #[test]
    fn ha1_matches_rfc_definition_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let a = Accounts::open(dir.path(), "example.org").unwrap();
            a.create("alice", "secret", &[n("+33698765432")]).unwrap();
            assert!(matches!(a.create("alice", "x", &[]), Err(AccountError::UsernameTaken(_))));
            assert!(matches!(a.create("bob", "x", &[n("+33698765432")]), Err(AccountError::NumberTaken { .. })));
            assert!(a.get("bob").unwrap().is_none(), "a failed create writes nothing");
        }
        let a = Accounts::open(dir.path(), "example.org").unwrap();
        assert_eq!(a.ha1("alice", Algorithm::Md5).unwrap(), format!("{:x}", Md5::digest(b"alice:example.org:secret")));
        assert_eq!(a.ha1("alice", Algorithm::Sha256).unwrap(), format!("{:x}", Sha256::digest(b"alice:example.org:secret")));
        assert_eq!(a.by_number(n("+33698765432")).unwrap().unwrap().username, "alice");
        assert!(a.ha1("nobody", Algorithm::Md5).is_none());
        assert!(matches!(a.create("bad name", "x", &[]), Err(AccountError::InvalidUsername(_))));
        assert_eq!(a.create("+4915100000001", "x", &[]).unwrap().sip_uri(), "sip:+4915100000001@example.org");
    }
}
