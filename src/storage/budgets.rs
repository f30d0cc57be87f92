//! Discovery budgets' store: per account, a token bucket and the keyed hashes of the
//! numbers it was charged for. [`crate::budget::Budget`] is the handle over it and keeps
//! the rules (refill, what costs a token, hashing); a store only keeps and returns.
//!
//! The contract: a charge is a read-modify-write of one account, atomic with respect to
//! other charges and resets of that account (several nodes may charge one account); the
//! salt is made once and never changes, or every remembered number would be forgotten.
//! Must not know about numbers in clear, SIP or HTTP. [`BudgetError`] is re-exported by
//! `budget`.

use super::StorageError;

/// A failure of the budget's store, or of opening it.
#[derive(Debug, thiserror::Error)]
pub enum BudgetError {
    #[error("storage error: {0}")]
    Storage(#[from] StorageError),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// An account's token bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenBucket {
    pub tokens: f64,
    /// Unix seconds of the last refill.
    pub updated_at: u64,
    /// Numbers remembered as already charged.
    pub remembered: u32,
}

impl TokenBucket {
    /// The bucket as stores keep it: tokens (f64), updated_at (u64), remembered (u32),
    /// big-endian, 20 bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        [&self.tokens.to_be_bytes()[..], &self.updated_at.to_be_bytes(), &self.remembered.to_be_bytes()].concat()
    }

    /// Inverse of [`TokenBucket::to_bytes`]; None for anything else.
    pub fn from_bytes(v: &[u8]) -> Option<TokenBucket> {
        let tokens = f64::from_be_bytes(v.get(0..8)?.try_into().ok()?);
        let updated_at = u64::from_be_bytes(v.get(8..16)?.try_into().ok()?);
        let remembered = u32::from_be_bytes(v.get(16..20)?.try_into().ok()?);
        Some(TokenBucket { tokens, updated_at, remembered })
    }
}

/// What the store holds as an account's bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Saved {
    /// Never charged, or reset.
    Missing,
    /// Something the store cannot read (the budget then treats it as empty).
    Unreadable,
    Found(TokenBucket),
}

/// Given the account's bucket and the sorted hashes remembered for it, what to store
/// instead (None: nothing changes). May be called more than once for one charge.
pub type Charge<'a> = dyn FnMut(Saved, Vec<u64>) -> Option<(TokenBucket, Vec<u64>)> + 'a;

pub trait BudgetStore: Send + Sync {
    /// The key numbers are hashed with before they are remembered.
    fn salt(&self) -> [u8; 16];

    /// The account's bucket as stored.
    fn bucket(&self, account: &str) -> Result<Saved, StorageError>;

    /// Runs `charge` on the account's bucket and remembered hashes, and stores what it
    /// returns, atomically. Need not be durable at once: losing the last instant of
    /// charges in a crash errs towards the user.
    fn charge(&self, account: &str, charge: &mut Charge<'_>) -> Result<(), StorageError>;

    /// Forgets the account's bucket and hashes; durable before it returns.
    fn reset(&self, account: &str) -> Result<(), StorageError>;
}
