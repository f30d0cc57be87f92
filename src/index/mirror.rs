//! The in-memory mirror of the forward buckets: every lookup is answered from here (about
//! 0.2 µs, against 2 µs from sled). Byte for byte what sled holds; changed only by the
//! sled store's writers, right after each batch, under the writer lock. It must not be
//! written by anyone else, nor read sled.

use super::encoding::key_u64;
use super::packed::{Bucket, Locate, Located, Write as BucketWrite};
use super::IndexError;
use crate::numbers::E164;
use parking_lot::RwLock;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

/// The forward buckets mirrored in memory, by their first number.
#[derive(Default)]
pub(super) struct Forward(pub(super) BTreeMap<u64, Arc<[u8]>>);

impl Forward {
    /// The stored value of `n`'s binding.
    pub(super) fn get(&self, n: E164) -> Result<Option<&[u8]>, IndexError> {
        let key = n.as_key();
        let Some((_, bytes)) = self.0.range(..=u64::from_be_bytes(key)).next_back() else { return Ok(None) };
        Ok(Bucket::trusted(bytes)?.get(&key))
    }

    pub(super) fn apply(&mut self, writes: &[BucketWrite]) {
        for w in writes {
            match w {
                BucketWrite::Put(k, v) => {
                    if let Some(k) = key_u64(k) {
                        self.0.insert(k, v.clone());
                    }
                }
                BucketWrite::Remove(k) => {
                    if let Some(k) = key_u64(k) {
                        self.0.remove(&k);
                    }
                }
            }
        }
    }
}

impl Locate for RwLock<Forward> {
    fn locate(&self, key: &[u8]) -> Result<Located, IndexError> {
        let k = key_u64(key).ok_or_else(|| IndexError::Corrupt(format!("number key of {} bytes", key.len())))?;
        let map = &self.read().0;
        let bucket = map.range(..=k).next_back().map(|(s, b)| (s.to_be_bytes().to_vec(), b.clone()));
        let next = map.range((Bound::Excluded(k), Bound::Unbounded)).next().map(|(s, _)| s.to_be_bytes().to_vec());
        Ok(Located { bucket, next })
    }
}
