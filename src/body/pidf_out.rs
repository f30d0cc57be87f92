//! Writing RFC 3863 PIDF documents: our tuple (basic status, the user's contact, last change)
//! and, from the composed rich presence ([`Doc`]), capabilities, notes, the RFC 4479 person
//! with its RFC 4480 activities and mood, and devices; the `away` activity when asked.

use super::rich::{self, Doc};
use super::xml::{escape_attr, escape_text};

/// What we publish about one service user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserPresence<'a> {
    /// The user's bound SIP URI: the `<contact>` the app will call. liblinphone 5.1 aborts on
    /// a tuple without `<contact>`, so it is always written.
    pub contact: &'a str,
    /// `<basic>open</basic>` when true, `closed` otherwise.
    pub basic_open: bool,
    /// Adds an RPID `away` activity (Flexisip-style long-term presence of an offline user).
    pub away: bool,
    /// `<timestamp>`, in Unix seconds (UTC); omitted when `None`.
    pub timestamp: Option<u64>,
    /// What the user published beyond open/closed, composed (see `body::rich`).
    pub doc: Option<&'a Doc>,
}

/// A standalone PIDF document (for a non-list presence subscription), with XML declaration.
pub fn build_pidf(entity: &str, p: &UserPresence) -> Vec<u8> {
    let mut out = Vec::with_capacity(400);
    build_pidf_into(entity, p, &mut out);
    out
}

/// Like [`build_pidf`], appending to a reused buffer.
pub fn build_pidf_into(entity: &str, p: &UserPresence, out: &mut Vec<u8>) {
    out.extend_from_slice(b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n");
    write_pidf(out, entity, p);
}

/// The `<presence>` element alone (multipart parts carry their charset in Content-Type).
pub(crate) fn write_pidf(out: &mut Vec<u8>, entity: &str, p: &UserPresence) {
    out.extend_from_slice(b"<presence xmlns=\"urn:ietf:params:xml:ns:pidf\"");
    rich::write_namespaces(out, p.doc, p.away);
    out.extend_from_slice(b" entity=\"");
    escape_attr(out, entity);
    out.extend_from_slice(b"\">\r\n<tuple id=\"t1\"><status><basic>");
    out.extend_from_slice(if p.basic_open { b"open" } else { b"closed" });
    out.extend_from_slice(b"</basic></status>");
    if let Some(d) = p.doc {
        rich::write_capabilities(out, d);
    }
    out.extend_from_slice(b"<contact priority=\"1\">");
    escape_text(out, p.contact);
    out.extend_from_slice(b"</contact>");
    if let Some(d) = p.doc {
        rich::write_notes(out, &d.notes, b"note");
    }
    if let Some(t) = p.timestamp {
        out.extend_from_slice(b"<timestamp>");
        write_rfc3339(out, t);
        out.extend_from_slice(b"</timestamp>");
    }
    out.extend_from_slice(b"</tuple>\r\n");
    // PIDF puts extensions after the tuples (RFC 3863 §4.4); person per RFC 4479 §3.1.
    rich::write_person(out, p.doc, p.away);
    out.extend_from_slice(b"</presence>");
}

/// `YYYY-MM-DDThh:mm:ssZ` for Unix seconds.
pub(crate) fn write_rfc3339(out: &mut Vec<u8>, unix: u64) {
    let days = unix / 86_400;
    let secs = unix % 86_400;
    let (y, m, d) = civil_from_days(days);
    push_num(out, y, 4);
    out.push(b'-');
    push_num(out, m, 2);
    out.push(b'-');
    push_num(out, d, 2);
    out.push(b'T');
    push_num(out, secs / 3600, 2);
    out.push(b':');
    push_num(out, secs / 60 % 60, 2);
    out.push(b':');
    push_num(out, secs % 60, 2);
    out.push(b'Z');
}

/// Gregorian date of a day count since 1970-01-01 (the usual era-based conversion).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// Decimal `n`, left-padded with zeros to `width`.
pub(crate) fn push_num(out: &mut Vec<u8>, n: u64, width: usize) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut n = n;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for _ in (buf.len() - i)..width {
        out.push(b'0');
    }
    out.extend_from_slice(&buf[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(unix: u64) -> String {
        let mut v = Vec::new();
        write_rfc3339(&mut v, unix);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(ts(0), "1970-01-01T00:00:00Z");
        assert_eq!(ts(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(ts(1_795_438_605), "2026-11-23T12:56:45Z");
        assert_eq!(ts(4_102_444_799), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn standalone_pidf_exact() {
        let p = UserPresence {
            contact: "sip:bob@example.org",
            basic_open: true,
            away: false,
            timestamp: Some(0),
            doc: None,
        };
        let got = String::from_utf8(build_pidf("sip:+336@example.org;user=phone", &p)).unwrap();
        assert_eq!(
            got,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n\
             <presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"sip:+336@example.org;user=phone\">\r\n\
             <tuple id=\"t1\"><status><basic>open</basic></status><contact priority=\"1\">sip:bob@example.org</contact>\
             <timestamp>1970-01-01T00:00:00Z</timestamp></tuple>\r\n</presence>"
        );
    }

    #[test]
    fn away_adds_person_after_tuple() {
        let p = UserPresence {
            contact: "sip:a&b@x",
            basic_open: false,
            away: true,
            timestamp: None,
            doc: None,
        };
        let got = String::from_utf8(build_pidf("sip:e\"@x", &p)).unwrap();
        assert!(got.contains("xmlns:dm=\"urn:ietf:params:xml:ns:pidf:data-model\""));
        assert!(got.contains("entity=\"sip:e&quot;@x\""));
        assert!(got.contains("<basic>closed</basic>"));
        assert!(got.contains("<contact priority=\"1\">sip:a&amp;b@x</contact></tuple>"));
        assert!(got.ends_with(
            "</tuple>\r\n<dm:person id=\"p1\"><rpid:activities><rpid:away/></rpid:activities></dm:person>\r\n</presence>"
        ));
    }
}
