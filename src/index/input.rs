//! The forms a binding's two sides come in from outside: a SIP user URI made canonical
//! (and refused when it is a phone number or too long), and a number as a client or
//! operator writes it. No storage.

use super::IndexError;
use crate::numbers::{self, Region, UriKind, E164};

/// Longest SIP URI a binding may have.
pub const MAX_URI_BYTES: usize = 1024;

/// Canonical form of a SIP user URI ([`crate::identity`]), or an error if the string is not
/// one. A phone-number URI (`tel:`, `;user=phone`) names a number, which is bound, not bound
/// to; a SIP user whose user part is a number (`sip:+4915100000001@example.org`) is a user.
pub fn canonical_sip_uri(uri: &str) -> Result<String, IndexError> {
    // The reverse map keys buckets by URI with a 16-bit length; no real SIP user needs more
    // than this, and a longer one (the admin API takes 2 MB bodies) must not reach a bucket.
    if uri.len() > MAX_URI_BYTES {
        return Err(IndexError::InvalidUri(format!("a SIP URI of {} bytes (at most {MAX_URI_BYTES})", uri.len())));
    }
    let invalid = |e: crate::sip::uri::UriError| IndexError::InvalidUri(format!("{e} in {uri:?}"));
    let parsed = crate::sip::Uri::parse(crate::identity::addr_spec(uri)).map_err(invalid)?;
    if parsed.scheme == crate::sip::uri::Scheme::Tel || parsed.is_user_phone() {
        return Err(IndexError::InvalidUri(format!("{uri:?} is a phone number, not a SIP user")));
    }
    parsed.aor().map_err(invalid)
}

/// Reads a number as a client or operator would give it: E.164, human text (national with
/// `region`), or a tel:/sip: URI.
pub fn parse_number(s: &str, region: Option<Region>) -> Result<E164, numbers::NumberError> {
    let t = s.trim();
    let lower = t.get(..4).map(|p| p.to_ascii_lowercase());
    if matches!(lower.as_deref(), Some("tel:") | Some("sip:") | Some("sips")) {
        return match numbers::from_uri(t, region) {
            UriKind::Phone(n) => Ok(n),
            _ => Err(numbers::NumberError::Unparseable(t.to_string())),
        };
    }
    numbers::normalize(t, region)
}
