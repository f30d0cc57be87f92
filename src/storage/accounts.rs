//! Accounts' store: each SIP account with its digest HA1s and bearer-token hash, findable
//! by username, by number and by token hash. [`crate::accounts::Accounts`] is the handle
//! over it and keeps the rules (usernames, HA1s, rotation); a store keeps records.
//!
//! The contract: one number belongs to one account at most, one token hash names one
//! account; each write (with its index entries) is atomic and durable before it returns.
//! A store never sees a password or a token in clear. Must not know about SIP or HTTP.

use crate::accounts::{Account, AccountError};
use crate::numbers::E164;
use serde::{Deserialize, Serialize};

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
}
