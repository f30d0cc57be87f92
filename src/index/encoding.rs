//! How the sled store lays bindings out: the key prefixes of the `bindings` tree, and the
//! byte forms of a forward value, a reverse list and a number key. Pure functions: it must
//! not read or write the store; only the sled store's files use it.

use super::{Binding, IndexError, Source};
use crate::numbers::E164;

/// Forward buckets: number (8 bytes BE) → `[bound_at u64 BE][source u8][canonical URI]`.
pub(super) const FWD: u8 = b'F';
/// Reverse buckets: canonical URI → its numbers (8 bytes BE each, sorted).
pub(super) const REV: u8 = b'R';
/// Layout 1 (one sled key per binding and per reverse entry), migrated at open.
pub(super) const OLD_NUM: u8 = b'n';
pub(super) const OLD_REV: u8 = b'u';
pub(super) const META_COUNT: &[u8] = b"mcount";

impl Source {
    fn code(self) -> u8 {
        match self {
            Source::Admin => 1,
            Source::Import => 2,
            Source::Cli => 3,
            Source::Verification => 4,
            Source::Other => 255,
        }
    }
    fn from_code(c: u8) -> Source {
        match c {
            1 => Source::Admin,
            2 => Source::Import,
            3 => Source::Cli,
            4 => Source::Verification,
            _ => Source::Other,
        }
    }
}

pub(super) fn key_u64(k: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(k.try_into().ok()?))
}

pub(super) fn encode_value(uri: &str, bound_at: u64, source: Source) -> Vec<u8> {
    let mut v = Vec::with_capacity(9 + uri.len());
    v.extend_from_slice(&bound_at.to_be_bytes());
    v.push(source.code());
    v.extend_from_slice(uri.as_bytes());
    v
}

pub(super) fn value_uri(v: &[u8]) -> Result<&str, IndexError> {
    if v.len() < 9 {
        return Err(IndexError::Corrupt(format!("binding value of {} bytes", v.len())));
    }
    std::str::from_utf8(&v[9..]).map_err(|_| IndexError::Corrupt("binding URI is not UTF-8".into()))
}

pub(super) fn decode_value(n: E164, v: &[u8]) -> Result<Binding, IndexError> {
    let uri = value_uri(v)?;
    let bound_at = u64::from_be_bytes(v[..8].try_into().expect("length checked"));
    Ok(Binding { number: n, sip_uri: uri.to_string(), bound_at, source: Source::from_code(v[8]) })
}

pub(super) fn decode_numbers(v: &[u8]) -> Result<Vec<E164>, IndexError> {
    if !v.len().is_multiple_of(8) {
        return Err(IndexError::Corrupt(format!("reverse value of {} bytes", v.len())));
    }
    v.chunks_exact(8).map(|c| E164::from_key(c).ok_or_else(|| IndexError::Corrupt("number in reverse value".into()))).collect()
}

pub(super) fn decode_number(k: &[u8]) -> Result<E164, IndexError> {
    E164::from_key(k).ok_or_else(|| IndexError::Corrupt(format!("number key of {} bytes", k.len())))
}
