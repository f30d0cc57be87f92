//! An in-memory Bloom filter of the bound numbers, so that resolving an address book
//! answers "not a user" for most numbers without touching sled. No false negatives: a number
//! is added before its binding is written; unbound numbers stay in it (a false positive only
//! costs the sled lookup that would have happened anyway). Rebuilt from the store at open,
//! and rebuilt larger when the index outgrows it. Owns the bit array only: the sled store
//! decides when to add and rebuild; it must not read the store itself.

use crate::numbers::E164;
use std::sync::atomic::{AtomicU64, Ordering};

/// The filter in use (None until the first build completes) and the one being built.
#[derive(Default)]
pub(crate) struct FilterState {
    pub(crate) active: Option<std::sync::Arc<Filter>>,
    pub(crate) building: Option<std::sync::Arc<Filter>>,
}

pub(crate) struct Filter {
    words: Box<[AtomicU64]>,
    /// Mask of a bit position (bits - 1; bits is a power of two).
    mask: u64,
}

/// Bits per expected entry; with 4 probes in one 512-bit block ("blocked" Bloom filter: one
/// cache miss per query) that is about 0.5 % false positives when full.
const BITS_PER_ENTRY: u64 = 16;
const PROBES: u32 = 4;

impl Filter {
    /// A filter sized for `expected` numbers (at least 1,024).
    pub(crate) fn with_capacity(expected: u64) -> Filter {
        let bits = (expected.max(1 << 10) * BITS_PER_ENTRY).next_power_of_two().max(512);
        let words = (0..bits / 64).map(|_| AtomicU64::new(0)).collect::<Vec<_>>().into_boxed_slice();
        Filter { words, mask: bits - 1 }
    }

    /// How many numbers it was sized for.
    pub(crate) fn capacity(&self) -> u64 {
        (self.mask + 1) / BITS_PER_ENTRY
    }

    #[inline]
    fn hashes(n: E164) -> (u64, u64) {
        // splitmix64 finaliser: numbers are dense, so mix well.
        let mut z = n.digits().wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        // A second, independent-looking word for the bits inside the block.
        let mut y = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        y = (y ^ (y >> 33)).wrapping_mul(0xFF51_AFD7_ED55_8CCD);
        y ^= y >> 33;
        (z, y)
    }

    /// The word index and bit of each probe: a block of 8 words (one cache line) chosen by
    /// one hash, 4 bits inside it by 9-bit slices of the other.
    #[inline]
    fn probes(&self, n: E164) -> [(usize, u64); PROBES as usize] {
        let (h1, h2) = Self::hashes(n);
        let blocks = (self.mask + 1) / 512;
        let block = h1 & (blocks - 1);
        let mut out = [(0usize, 0u64); PROBES as usize];
        for (i, o) in out.iter_mut().enumerate() {
            let bit = (h2 >> (i * 9)) & 511;
            *o = ((block * 8 + bit / 64) as usize, 1u64 << (bit % 64));
        }
        out
    }

    pub(crate) fn insert(&self, n: E164) {
        for (w, b) in self.probes(n) {
            self.words[w].fetch_or(b, Ordering::Release);
        }
    }

    #[inline]
    pub(crate) fn may_contain(&self, n: E164) -> bool {
        self.probes(n).iter().all(|&(w, b)| self.words[w].load(Ordering::Acquire) & b != 0)
    }

    /// `may_contain` of each number, branch-free: a big filter misses the cache on every
    /// number, and without a branch between them the processor overlaps those misses
    /// instead of waiting for each in turn (an address book is checked all at once).
    pub(crate) fn may_contain_each(&self, numbers: &[E164]) -> Vec<bool> {
        numbers
            .iter()
            .map(|n| self.probes(*n).iter().fold(true, |ok, &(w, b)| ok & (self.words[w].load(Ordering::Acquire) & b != 0)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_false_negatives_few_false_positives() {
        let f = Filter::with_capacity(100_000);
        let base = 33_600_000_000u64;
        for i in 0..100_000 {
            f.insert(E164::from_digits(base + i * 7).unwrap());
        }
        for i in 0..100_000 {
            assert!(f.may_contain(E164::from_digits(base + i * 7).unwrap()));
        }
        let all: Vec<E164> = (0..100_000).map(|i| E164::from_digits(base + i * 7).unwrap()).collect();
        assert!(f.may_contain_each(&all).iter().all(|b| *b));
        let others: Vec<E164> = (0..100_000).map(|i| E164::from_digits(base + i * 7 + 3).unwrap()).collect();
        let each = f.may_contain_each(&others);
        assert!(others.iter().zip(&each).all(|(n, b)| f.may_contain(*n) == *b));
        let fp = (0..100_000).filter(|i| f.may_contain(E164::from_digits(base + i * 7 + 3).unwrap())).count();
        eprintln!("{fp} false positives in 100000");
        assert!(fp < 1000, "{fp} false positives");
    }
}
