//! Discovery budgets' store: per account, a token bucket and the keyed hashes of the
//! numbers it was charged for ([`Hash`], stored by [`hashes_to_bytes`]). [`crate::budget::Budget`] is the handle over it and keeps
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

/// A charged number's keyed hash: the first 4 bytes of its SHA-256 (`budget::hash`). Two
/// numbers of one account share one once in 2^32 pairs: the second is then taken for
/// already charged, which gives away one number in 2^32 / remembered (at the default
/// 20,000 remembered, one in ~215,000 asked, against a refill of 100 a day).
pub type Hash = u32;

/// The layout of [`hashes_to_bytes`]: this byte, then the 4-byte hashes big-endian; odd
/// in length, so never mistaken for the older layout (8-byte hashes, 8n bytes).
const HASHES_V2: u8 = 2;

/// An account's sorted hashes as stores keep them (both sled and Redis).
pub fn hashes_to_bytes(hashes: &[Hash]) -> Vec<u8> {
    let mut blob = Vec::with_capacity(1 + 4 * hashes.len());
    blob.push(HASHES_V2);
    blob.extend(hashes.iter().flat_map(|h| h.to_be_bytes()));
    blob
}

/// Inverse of [`hashes_to_bytes`], sorted. Also reads the older layout (the sorted 8-byte
/// hashes, whose first 4 bytes are today's hash of the same number), which the next
/// charge of a number not remembered rewrites in the new one; anything else reads as
/// nothing remembered. All nodes of a cluster must run the same layout (upgrade them
/// together): an older node reads a new record as nothing remembered.
pub fn hashes_from_bytes(blob: &[u8]) -> Vec<Hash> {
    // A hash is the first 4 bytes of each chunk, in either layout.
    let first4 = |c: &[u8]| Hash::from_be_bytes([c[0], c[1], c[2], c[3]]);
    match blob.split_first() {
        Some((&HASHES_V2, rest)) if rest.len().is_multiple_of(4) => rest.chunks_exact(4).map(first4).collect(),
        _ if blob.len().is_multiple_of(8) => {
            let mut old: Vec<Hash> = blob.chunks_exact(8).map(first4).collect();
            old.dedup();
            old
        }
        _ => Vec::new(),
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
pub type Charge<'a> = dyn FnMut(Saved, Vec<Hash>) -> Option<(TokenBucket, Vec<Hash>)> + 'a;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_round_trip_in_4_bytes_each() {
        let hashes = vec![0, 7, 0x8000_0000, u32::MAX];
        let blob = hashes_to_bytes(&hashes);
        assert_eq!(blob.len(), 1 + 4 * 4);
        assert_eq!(hashes_from_bytes(&blob), hashes);
        assert_eq!(hashes_from_bytes(&hashes_to_bytes(&[])), Vec::<Hash>::new());
    }

    #[test]
    fn the_older_8_byte_layout_reads_as_the_same_numbers() {
        // Sorted 8-byte hashes as stores wrote them before: each one's first 4 bytes are
        // the hash the budget computes today; two that share them become one.
        let old: Vec<u64> = vec![0x0000_0001_ffff_ffff, 0x0000_0002_0000_0000, 0x0000_0002_0000_0001, 0xffff_fffe_1234_5678];
        let blob: Vec<u8> = old.iter().flat_map(|h| h.to_be_bytes()).collect();
        assert_eq!(hashes_from_bytes(&blob), vec![1, 2, 0xffff_fffe]);
        assert_eq!(hashes_from_bytes(&[]), Vec::<Hash>::new(), "an empty old record");
        assert_eq!(hashes_from_bytes(&[9, 9, 9]), Vec::<Hash>::new(), "neither layout: nothing remembered");
    }
}
