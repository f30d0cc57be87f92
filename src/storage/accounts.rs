//! Accounts' store: each SIP account with its digest HA1s and bearer-token hash, findable
//! by username, by number and by token hash. [`crate::accounts::Accounts`] is the handle
//! over it and keeps the rules (usernames, HA1s, rotation); a store keeps records.
//!
//! The contract: one number belongs to one account at most, one token hash names one
//! account; each write (with its index entries) is atomic and durable before it returns.
//! A store never sees a password or a token in clear. Must not know about SIP or HTTP.
//!
//! [`Account`] and [`AccountError`] are defined here, with the trait that speaks them, and
//! re-exported by `accounts`.

use super::StorageError;
use crate::numbers::E164;
use serde::{Deserialize, Serialize};

/// A SIP account as other parts see it (no secrets).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub username: String,
    pub domain: String,
    /// The verified numbers the account was provisioned with.
    pub numbers: Vec<E164>,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds of the last credential change.
    pub updated_at: u64,
}

impl Account {
    /// `sip:username@domain`.
    pub fn sip_uri(&self) -> String {
        format!("sip:{}@{}", self.username, self.domain)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("username {0:?} is taken")]
    UsernameTaken(String),
    #[error("{number} belongs to account {username:?}")]
    NumberTaken { number: E164, username: String },
    #[error("invalid username {0:?} (1 to 64 characters: letters, digits, + - _ .)")]
    InvalidUsername(String),
    #[error("no account {0:?}")]
    NotFound(String),
    #[error("corrupt account entry: {0}")]
    Corrupt(String),
    #[error("storage error: {0}")]
    Storage(#[from] StorageError),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// An account as stored: the public [`Account`] and its secrets' hashes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredAccount {
    pub account: Account,
    pub ha1_md5: String,
    pub ha1_sha256: String,
    /// SHA-256 hex of the current bearer token, if any.
    pub token_hash: Option<String>,
}

pub trait AccountStore: Send + Sync {
    fn get(&self, username: &str) -> Result<Option<StoredAccount>, AccountError>;

    /// The username `n` belongs to.
    fn username_by_number(&self, n: E164) -> Result<Option<String>, AccountError>;

    /// The username a token (by its hash) was issued to.
    fn username_by_token(&self, token_hash: &str) -> Result<Option<String>, AccountError>;

    /// Adds a new account with its numbers and token; fails with
    /// [`AccountError::UsernameTaken`] or [`AccountError::NumberTaken`], writing nothing.
    fn insert(&self, account: &StoredAccount) -> Result<(), AccountError>;

    /// Rewrites an existing account (same username and numbers), replacing the token
    /// entry `old_token` by its own.
    fn replace(&self, account: &StoredAccount, old_token: Option<&str>) -> Result<(), AccountError>;

    /// Every account, in username order.
    fn list(&self) -> Result<Vec<Account>, AccountError>;

    /// Removes an account with its number and token entries; false when there was none.
    fn remove(&self, username: &str) -> Result<bool, AccountError>;
    /// The account's settings; [`Settings::default`] when never set.
    fn settings(&self, username: &str) -> Result<Settings, AccountError>;

    /// Replaces the settings of an existing account ([`AccountError::NotFound`] otherwise).
    fn set_settings(&self, username: &str, settings: &Settings) -> Result<(), AccountError>;

    /// Holds the accounts' writes against the other processes sharing the store, for one
    /// read-modify-write of the handle (nothing to hold for a store one process owns).
    fn hold(&self) -> Result<super::Held, AccountError> {
        Ok(super::Held::nothing())
    }
}

/// What a user chooses for his account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// "Share my status": watchers get what he publishes (activities, notes, capabilities);
    /// off, they see only that he is a user (open/closed, last seen). On by default.
    #[serde(default = "on")]
    pub share_status: bool,
}

fn on() -> bool {
    true
}

impl Default for Settings {
    fn default() -> Settings {
        Settings { share_status: true }
    }
}
