//! Who a SIP URI names: the one canonical form of a SIP user's address of record (AoR).
//!
//! Every place that keys something by user uses it: the authenticated identity, the
//! per-account caps, the binding index, the presence store and the registrar. The form is
//! `sip:user@host`, built by [`crate::sip::Uri::aor`], with these rules (RFC 3261 §19.1.4
//! comparison, and the registrar's canonical form of §10.3):
//!
//! - the user part is case-sensitive (`sip:ALICE@x` is not `sip:alice@x`), compared after
//!   percent-decoding (`sip:b%6Fb@x` is `sip:bob@x`); a password after `:` is dropped;
//! - the host is case-insensitive: it is lower-cased;
//! - `sips:` folds into `sip:`. As URIs to reach, §19.1.4 keeps them apart; as an identity
//!   they are one user (sips asks for TLS on every hop, it does not name someone else), and
//!   an account's digest identity is `sip:` whatever the client writes in From;
//! - the port, the parameters (`user=phone` included, as §10.3 says) and the headers are
//!   dropped: they say how to reach the domain, not who is there.
//!
//! A user part that is an E.164 number (`sip:+4915100000001@example.org`, Linphone's
//! phone-number accounts) is still a user: such a URI is both a user and, for list entries,
//! a number ([`crate::numbers::from_uri`]). tel: URIs and URIs without a user part name no
//! user.

use crate::sip::uri::{Uri, UriError};
use crate::sip::NameAddr;

/// The canonical AoR of a URI, written bare, in `<...>`, or as a name-addr.
pub fn aor(text: &str) -> Result<String, UriError> {
    Uri::parse(addr_spec(text))?.aor()
}

/// The canonical AoR of a header value (From, To, P-Asserted-Identity).
pub fn of_header(value: &str) -> Result<String, UriError> {
    aor(&NameAddr::parse(value)?.uri_text)
}

/// The URI inside `<...>` when there is one, else the trimmed text.
pub fn addr_spec(text: &str) -> &str {
    let s = text.trim();
    match (s.find('<'), s.rfind('>')) {
        (Some(a), Some(b)) if a < b => &s[a + 1..b],
        _ => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_user_however_written() {
        for uri in [
            "sip:alice@example.org",
            "sips:alice@EXAMPLE.org:5061",
            "<sip:alice@Example.Org;transport=tcp>",
            "\"Alice\" <sip:alice:secret@example.org?subject=x>",
            "sip:%61lice@example.org;user=phone",
        ] {
            assert_eq!(aor(uri).as_deref(), Ok("sip:alice@example.org"), "{uri}");
        }
        assert_eq!(of_header("\"A\" <sips:alice@example.org>;tag=1").as_deref(), Ok("sip:alice@example.org"));
    }

    #[test]
    fn the_user_part_is_case_sensitive() {
        assert_eq!(aor("sip:ALICE@example.org").as_deref(), Ok("sip:ALICE@example.org"));
    }

    #[test]
    fn a_number_as_user_part_is_a_user() {
        let want = "sip:+4915100000001@example.org";
        assert_eq!(aor("sip:+4915100000001@Example.org").as_deref(), Ok(want));
        assert_eq!(aor("sip:+4915100000001@example.org;user=phone").as_deref(), Ok(want));
    }

    #[test]
    fn names_no_user() {
        for bad in ["tel:+4915100000001", "sip:example.org", "sip:@x.org", "sip:a%40b@x.org", "sip:a%00b@x.org", "mailto:a@b", "sip:a b@x"] {
            assert!(aor(bad).is_err(), "{bad}");
        }
    }
}
