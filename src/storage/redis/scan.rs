//! Reading every string key under a prefix, a page at a time: one `SCAN` step (string keys
//! only) and one `MGET` of the keys it found. Used by the stores that read all their keys
//! of a kind (the presence mirror's full reload, the verification sweep).
//!
//! Owns the paging only: what the keys and values mean is each store's.

use ::redis::{Connection, FromRedisValue, RedisResult};

/// A `SCAN MATCH` pattern: `prefix` as it is (its glob characters escaped), then `glob`.
pub fn under(prefix: &str, glob: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + glob.len());
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out + glob
}

/// One page from `cursor`: about `count` keys matching `pattern`, each with its value (keys
/// gone or of another type meanwhile are left out), and the cursor of the next page (0:
/// the last page).
pub fn page<V: FromRedisValue>(conn: &mut Connection, pattern: &str, cursor: u64, count: usize) -> RedisResult<(u64, Vec<(String, V)>)> {
    let (next, names): (u64, Vec<String>) = ::redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(pattern).arg("COUNT").arg(count).arg("TYPE").arg("string").query(conn)?;
    if names.is_empty() {
        return Ok((next, Vec::new()));
    }
    let values: Vec<Option<V>> = ::redis::cmd("MGET").arg(&names).query(conn)?;
    Ok((next, names.into_iter().zip(values).filter_map(|(n, v)| Some((n, v?))).collect()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_prefix_globs_escaped() {
        assert_eq!(super::under("sp*:[a]", "*"), "sp\\*:\\[a\\]*");
        assert_eq!(super::under("sp:", "v:code:*"), "sp:v:code:*");
    }
}
