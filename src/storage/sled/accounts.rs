//! Accounts in their own sled database (`data_dir/accounts`), four trees:
//!
//! - `accounts`: username → the [`StoredAccount`] as JSON;
//! - `by_number`: number (8 bytes) → username, so that one number always yields one account;
//! - `tokens`: SHA-256 of a bearer token (hex) → username;
//! - `settings`: username → his [`Settings`] as JSON (absent: the defaults).
//!
//! Each write is one sled transaction over the trees, flushed before it returns (a
//! settings write touches one tree).

use crate::numbers::E164;
use crate::storage::accounts::{Account, AccountError, AccountStore, Settings, StoredAccount};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;
use std::path::Path;

pub struct SledAccounts {
    db: sled::Db,
    accounts: sled::Tree,
    by_number: sled::Tree,
    tokens: sled::Tree,
    settings: sled::Tree,
}

impl From<sled::Error> for AccountError {
    fn from(e: sled::Error) -> AccountError {
        AccountError::Storage(e.into())
    }
}

type Tx<T> = Result<T, ConflictableTransactionError<AccountError>>;

fn abort(e: AccountError) -> ConflictableTransactionError<AccountError> {
    ConflictableTransactionError::Abort(e)
}

fn tx_err(e: TransactionError<AccountError>) -> AccountError {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => e.into(),
    }
}

fn decode(v: &[u8]) -> Result<StoredAccount, AccountError> {
    serde_json::from_slice(v).map_err(|e| AccountError::Corrupt(e.to_string()))
}

fn encode(s: &StoredAccount) -> Vec<u8> {
    serde_json::to_vec(s).unwrap_or_default()
}

impl SledAccounts {
    /// Opens (creating if needed) the store in `dir`.
    pub fn open(dir: &Path) -> Result<SledAccounts, AccountError> {
        std::fs::create_dir_all(dir)?;
        let db = super::open(&sled::Config::new().path(dir).cache_capacity(16 << 20))?;
        Ok(SledAccounts {
            accounts: db.open_tree("accounts")?,
            by_number: db.open_tree("by_number")?,
            tokens: db.open_tree("tokens")?,
            settings: db.open_tree("settings")?,
            db,
        })
    }
}

impl AccountStore for SledAccounts {
    fn get(&self, username: &str) -> Result<Option<StoredAccount>, AccountError> {
        match self.accounts.get(username.as_bytes())? {
            Some(v) => Ok(Some(decode(&v)?)),
            None => Ok(None),
        }
    }

    fn username_by_number(&self, n: E164) -> Result<Option<String>, AccountError> {
        Ok(self.by_number.get(n.as_key())?.map(|u| String::from_utf8_lossy(&u).into_owned()))
    }

    fn username_by_token(&self, token_hash: &str) -> Result<Option<String>, AccountError> {
        Ok(self.tokens.get(token_hash)?.map(|u| String::from_utf8_lossy(&u).into_owned()))
    }

    fn insert(&self, s: &StoredAccount) -> Result<(), AccountError> {
        (&self.accounts, &self.by_number, &self.tokens)
            .transaction(|(accounts, by_number, tokens)| -> Tx<()> {
                let name = s.account.username.as_bytes();
                if accounts.get(name)?.is_some() {
                    return Err(abort(AccountError::UsernameTaken(s.account.username.clone())));
                }
                for n in &s.account.numbers {
                    if let Some(owner) = by_number.get(n.as_key())? {
                        let username = String::from_utf8_lossy(&owner).into_owned();
                        return Err(abort(AccountError::NumberTaken { number: *n, username }));
                    }
                    by_number.insert(&n.as_key()[..], name)?;
                }
                if let Some(h) = &s.token_hash {
                    tokens.insert(h.as_bytes(), name)?;
                }
                accounts.insert(name, encode(s))?;
                Ok(())
            })
            .map_err(tx_err)?;
        self.db.flush()?;
        Ok(())
    }

    fn replace(&self, s: &StoredAccount, old_token: Option<&str>) -> Result<(), AccountError> {
        (&self.accounts, &self.tokens)
            .transaction(|(accounts, tokens)| -> Tx<()> {
                let name = s.account.username.as_bytes();
                if let Some(h) = old_token {
                    tokens.remove(h.as_bytes())?;
                }
                if let Some(h) = &s.token_hash {
                    tokens.insert(h.as_bytes(), name)?;
                }
                accounts.insert(name, encode(s))?;
                Ok(())
            })
            .map_err(tx_err)?;
        self.db.flush()?;
        Ok(())
    }

    fn remove(&self, username: &str) -> Result<bool, AccountError> {
        let removed = (&self.accounts, &self.by_number, &self.tokens)
            .transaction(|(accounts, by_number, tokens)| -> Tx<bool> {
                let Some(v) = accounts.remove(username.as_bytes())? else { return Ok(false) };
                let s = decode(&v).map_err(abort)?;
                for n in &s.account.numbers {
                    by_number.remove(&n.as_key()[..])?;
                }
                if let Some(h) = &s.token_hash {
                    tokens.remove(h.as_bytes())?;
                }
                Ok(true)
            })
            .map_err(tx_err)?;
        // His settings go with him: an account made later under the name starts afresh.
        self.settings.remove(username.as_bytes())?;
        self.db.flush()?;
        Ok(removed)
    }

    fn list(&self) -> Result<Vec<Account>, AccountError> {
        self.accounts.iter().values().map(|v| Ok(decode(&v?)?.account)).collect()
    }

    fn settings(&self, username: &str) -> Result<Settings, AccountError> {
        match self.settings.get(username.as_bytes())? {
            Some(v) => serde_json::from_slice(&v).map_err(|e| AccountError::Corrupt(e.to_string())),
            None => Ok(Settings::default()),
        }
    }

    fn set_settings(&self, username: &str, settings: &Settings) -> Result<(), AccountError> {
        if self.accounts.get(username.as_bytes())?.is_none() {
            return Err(AccountError::NotFound(username.to_string()));
        }
        let v = serde_json::to_vec(settings).map_err(|e| AccountError::Corrupt(e.to_string()))?;
        self.settings.insert(username.as_bytes(), v)?;
        self.db.flush()?;
        Ok(())
    }
}
