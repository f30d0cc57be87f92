//! XML helpers shared by the body parsers and writers.
//!
//! Reading: one hardened `NsReader` setup and one screen for the events no body of ours may
//! carry (DOCTYPE, processing instructions, unknown entities, non-UTF-8 encodings).
//! Writing: escaping straight into a `Vec<u8>`, copying untouched runs in one go.

use quick_xml::escape::resolve_xml_entity;
use quick_xml::events::attributes::Attribute;
use quick_xml::events::{BytesStart, BytesText, Event};
use quick_xml::name::{QName, ResolveResult};
use quick_xml::NsReader;

/// Deepest element nesting accepted in any body.
pub(crate) const MAX_DEPTH: usize = 32;

pub(crate) fn reader(xml: &[u8]) -> NsReader<&[u8]> {
    let mut r = NsReader::from_reader(xml);
    let c = r.config_mut();
    c.check_end_names = true;
    c.check_comments = true;
    c.expand_empty_elements = false;
    c.trim_text(true);
    r
}

/// Rejects what a presence body never needs and an attacker might use.
/// Text is checked for entity references (only the 5 predefined and char refs pass).
pub(crate) fn screen(event: &Event, seen_first: bool) -> Result<(), &'static str> {
    match event {
        Event::DocType(_) => Err("DOCTYPE not allowed"),
        Event::PI(_) => Err("processing instruction not allowed"),
        Event::Decl(_) if seen_first => Err("misplaced XML declaration"),
        Event::Decl(d) => match d.encoding() {
            None => Ok(()),
            Some(Ok(enc)) if enc.eq_ignore_ascii_case(b"utf-8") => Ok(()),
            Some(_) => Err("encoding must be UTF-8"),
        },
        Event::Text(t) => {
            let s = t
                .unescape_with(resolve_xml_entity)
                .map_err(|_| BAD_ENTITY)?;
            check_chars(&s)
        }
        _ => Ok(()),
    }
}

const BAD_ENTITY: &str = "unknown or bad entity reference";

/// Unescaped text content; unknown entities and bad char refs are errors.
pub(crate) fn text(t: &BytesText) -> Result<String, &'static str> {
    let s = t
        .unescape_with(resolve_xml_entity)
        .map_err(|_| BAD_ENTITY)?;
    check_chars(&s)?;
    Ok(s.into_owned())
}

/// Checks that every attribute parses and unescapes (even those we ignore) and returns the
/// unescaped value of the unprefixed attribute `name`, if asked and present.
pub(crate) fn attrs(e: &BytesStart, name: Option<&[u8]>) -> Result<Option<String>, &'static str> {
    if let Some(found) = plain_attrs(e.attributes_raw(), name) {
        return Ok(found.map(str::to_string));
    }
    let mut found = None;
    // Repeated names are checked here for the first few attributes (quick-xml's own check
    // allocates a list per element: one allocation per list entry); past them, by quick-xml.
    let mut seen: [&[u8]; FEW_ATTRS] = [&[]; FEW_ATTRS];
    let mut count = 0;
    for a in e.attributes().with_checks(false) {
        let a: Attribute = a.map_err(|_| "malformed attribute")?;
        if count < FEW_ATTRS {
            if seen[..count].contains(&a.key.0) {
                return Err("malformed attribute");
            }
            seen[count] = a.key.0;
        }
        count += 1;
        let v = a
            .unescape_value_with(resolve_xml_entity)
            .map_err(|_| BAD_ENTITY)?;
        check_chars(&v)?;
        if found.is_none() && name.is_some_and(|n| a.key == QName(n)) {
            found = Some(v.into_owned());
        }
    }
    if count > FEW_ATTRS && e.attributes().any(|a| a.is_err()) {
        return Err("malformed attribute");
    }
    Ok(found)
}

/// Attributes whose names are checked for repeats without allocating.
const FEW_ATTRS: usize = 8;

/// [`attrs`] for the common case, read straight from the tag's bytes: at most
/// [`FEW_ATTRS`] attributes `name="value"` whose values need no unescaping and are clean
/// UTF-8. Some(value of `name`) when the attributes are all of that kind and valid; None
/// for anything else (an entity, a repeat, a control character, a syntax error), which
/// the full check then reads and judges. quick-xml's attribute iterator was a tenth of
/// a 100-number list SUBSCRIBE.
fn plain_attrs<'a>(raw: &'a [u8], name: Option<&[u8]>) -> Option<Option<&'a str>> {
    let mut seen: [&[u8]; FEW_ATTRS] = [&[]; FEW_ATTRS];
    let mut count = 0;
    let mut found = None;
    let mut rest = raw;
    loop {
        rest = trim_start(rest);
        if rest.is_empty() {
            return Some(found);
        }
        let key_end = rest.iter().position(|&b| b == b'=' || is_space(b))?;
        let key = &rest[..key_end];
        rest = trim_start(&rest[key_end..]).strip_prefix(b"=")?;
        rest = trim_start(rest);
        let quote = *rest.first().filter(|q| matches!(q, b'"' | b'\''))?;
        let len = memchr::memchr(quote, &rest[1..])?;
        let value = &rest[1..1 + len];
        rest = &rest[len + 2..];
        if key.is_empty() || count == FEW_ATTRS || seen[..count].contains(&key) {
            return None;
        }
        seen[count] = key;
        count += 1;
        if value.iter().any(|&b| b == b'&' || (b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r'))) {
            return None;
        }
        let value = std::str::from_utf8(value).ok()?;
        if found.is_none() && name == Some(key) {
            found = Some(value);
        }
    }
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

fn trim_start(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| !is_space(b)).unwrap_or(s.len());
    &s[start..]
}

/// XML 1.0 forbids C0 controls other than TAB, LF, CR (char refs could smuggle them in).
fn check_chars(s: &str) -> Result<(), &'static str> {
    if s.bytes()
        .any(|b| b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r'))
    {
        return Err("control character in XML");
    }
    Ok(())
}

/// True when the element resolved to namespace `ns`.
pub(crate) fn in_ns(res: &ResolveResult, ns: &[u8]) -> bool {
    matches!(res, ResolveResult::Bound(n) if n.0 == ns)
}

/// Appends `s` escaped for a double-quoted attribute value.
/// TAB/LF/CR become char refs so attribute-value normalisation cannot alter them.
pub fn escape_attr(out: &mut Vec<u8>, s: &str) {
    escape(out, s, true)
}

/// Appends `s` escaped for element content.
pub fn escape_text(out: &mut Vec<u8>, s: &str) {
    escape(out, s, false)
}

/// Whether `b` may need replacing (text mode lets TAB and LF through in the slow path).
#[inline]
fn special(b: u8, attr: bool) -> bool {
    b < 0x20 || b == b'&' || b == b'<' || b == b'>' || (attr && b == b'"')
}

fn escape(out: &mut Vec<u8>, s: &str, attr: bool) {
    let bytes = s.as_bytes();
    // Nearly every string we write (URIs, numbers) needs nothing: one branch-free scan the
    // compiler vectorises, then one copy. The byte-by-byte loop below was 18% of a list cycle.
    if !bytes.iter().fold(false, |any, &b| any | special(b, attr)) {
        out.extend_from_slice(bytes);
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let rep: &[u8] = match b {
            b'&' => b"&amp;",
            b'<' => b"&lt;",
            b'>' => b"&gt;",
            b'"' if attr => b"&quot;",
            b'\t' if attr => b"&#9;",
            b'\n' if attr => b"&#10;",
            b'\r' => b"&#13;",
            // Not representable in XML 1.0: write U+FFFD rather than an ill-formed document.
            0..=0x1f if !matches!(b, b'\t' | b'\n') => "\u{FFFD}".as_bytes(),
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(rep);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn esc_attr(s: &str) -> String {
        let mut v = Vec::new();
        escape_attr(&mut v, s);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn escapes_attr_specials_only() {
        assert_eq!(
            esc_attr("sip:+331@x.org;user=phone"),
            "sip:+331@x.org;user=phone"
        );
        assert_eq!(esc_attr("a&b<c>\"d'"), "a&amp;b&lt;c&gt;&quot;d'");
        assert_eq!(esc_attr("a\tb\nc\rd\u{1}"), "a&#9;b&#10;c&#13;d\u{FFFD}");
    }

    fn first_attrs(xml: &str) -> Result<Option<String>, &'static str> {
        let mut r = reader(xml.as_bytes());
        loop {
            match r.read_event() {
                Ok(Event::Start(e) | Event::Empty(e)) => return attrs(&e, Some(b"uri")),
                Ok(Event::Eof) | Err(_) => panic!("no element in {xml}"),
                Ok(_) => {}
            }
        }
    }

    #[test]
    fn repeated_attribute_names_refused_however_many() {
        assert_eq!(first_attrs(r#"<e uri="a" x="1"/>"#), Ok(Some("a".into())));
        assert!(first_attrs(r#"<e uri="a" uri="b"/>"#).is_err());
        let many: String = (0..20).map(|i| format!(" a{i}=\"v\"")).collect();
        assert_eq!(first_attrs(&format!("<e{many} uri=\"u\"/>")), Ok(Some("u".into())));
        assert!(first_attrs(&format!("<e{many} a3=\"again\"/>")).is_err());
        assert!(first_attrs(&format!("<e{many} a15=\"again\"/>")).is_err());
    }

    #[test]
    fn plain_attributes_read_alike_on_both_paths() {
        let cases = [
            r#"<e uri="sip:+336@x.org;user=phone"/>"#,
            r#"<e  uri = 'a'  x="1" />"#,
            "<e\n\turi=\"a\"\r\nx='b'/>",
            r#"<e x="1" uri="" />"#,
            r#"<e x="1"/>"#,
            r#"<e uri="a"x="b"/>"#,
            r#"<e uri="a&amp;b"/>"#,
            r#"<e uri="a" uri="b"/>"#,
            r#"<e uri="&#1;"/>"#,
            "<e uri=\"a\u{1}\"/>",
            r#"<e uri=a/>"#,
            r#"<e uri/>"#,
            r#"<e ="a"/>"#,
        ];
        for (i, xml) in cases.into_iter().enumerate() {
            let mut r = reader(xml.as_bytes());
            let e = loop {
                match r.read_event() {
                    Ok(Event::Start(e) | Event::Empty(e)) => break e,
                    Ok(Event::Eof) | Err(_) => panic!("no element in {xml}"),
                    Ok(_) => {}
                }
            };
            let fast = plain_attrs(e.attributes_raw(), Some(b"uri"));
            let full = attrs_in_full(&e, Some(b"uri"));
            assert_eq!(fast.is_some(), i < 6, "only plain attributes take the short path: {xml}");
            if let Some(fast) = fast {
                assert_eq!(Ok(fast.map(str::to_string)), full, "{xml}");
            }
            assert_eq!(attrs(&e, Some(b"uri")), full, "{xml}");
        }
    }

    /// The full check alone, as `attrs` ran before its fast path.
    fn attrs_in_full(e: &BytesStart, name: Option<&[u8]>) -> Result<Option<String>, &'static str> {
        let mut found = None;
        let mut seen = Vec::new();
        for a in e.attributes().with_checks(false) {
            let a: Attribute = a.map_err(|_| "malformed attribute")?;
            if seen.contains(&a.key.0) {
                return Err("malformed attribute");
            }
            seen.push(a.key.0);
            let v = a.unescape_value_with(resolve_xml_entity).map_err(|_| BAD_ENTITY)?;
            check_chars(&v)?;
            if found.is_none() && name.is_some_and(|n| a.key == QName(n)) {
                found = Some(v.into_owned());
            }
        }
        Ok(found)
    }

    #[test]
    fn escapes_text() {
        let mut v = Vec::new();
        escape_text(&mut v, "a&b<c>\"\n");
        assert_eq!(v, b"a&amp;b&lt;c&gt;\"\n");
    }
}
