//! RFC 4826 `resource-lists` documents, as carried in an RFC 5367 list SUBSCRIBE.
//!
//! [`parse`] returns the `<entry uri>` values of every `<list>` (nested lists flattened, in
//! document order, duplicates merged keeping the first). The values are exactly as written,
//! after XML unescaping: the NOTIFY must echo them byte for byte. `<entry-ref>`, `<external>`,
//! `<display-name>` and foreign-namespace elements are ignored (RFC 5367 §4). Entries with an
//! empty `uri` are skipped. URIs are not validated here (a `tel:` URI comes back as written):
//! normalisation belongs to the numbers module.
//!
//! Hardening: no DOCTYPE (so no internal entities or external references), no processing
//! instructions, only the 5 predefined entities and character references, UTF-8 only, no
//! control characters, nesting at most 32 deep. Error messages are short static ASCII, fit
//! for a SIP reason phrase.

use super::xml;
use quick_xml::events::Event;

/// The RFC 4826 namespace.
pub const NS: &[u8] = b"urn:ietf:params:xml:ns:resource-lists";

/// Why a resource list was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListError {
    /// More distinct entries than allowed: answer 413.
    #[error("too many entries (max {max})")]
    TooManyEntries { max: usize },
    /// Not a valid resource-lists document: answer 400 with this text as reason phrase.
    #[error("{0}")]
    Invalid(&'static str),
}

impl ListError {
    pub fn sip_status(&self) -> u16 {
        match self {
            ListError::TooManyEntries { .. } => 413,
            ListError::Invalid(_) => 400,
        }
    }

    /// A short ASCII reason phrase (no CR/LF).
    pub fn reason(&self) -> &'static str {
        match self {
            ListError::TooManyEntries { .. } => "Too many entries in resource list",
            ListError::Invalid(why) => why,
        }
    }
}

/// What an open element is, for deciding what its children mean.
#[derive(Clone, Copy, PartialEq)]
enum Ctx {
    Root,
    List,
    Other,
}

/// Parses a resource-lists document into its distinct entry URIs, in document order.
pub fn parse(xml: &[u8], max_entries: usize) -> Result<Vec<String>, ListError> {
    let guess = max_entries.min(xml.len() / 32 + 1);
    let mut p = Parser { entries: Vec::with_capacity(guess), max_entries };
    p.run(xml)?;
    let mut entries = p.entries;
    dedup_keep_first(&mut entries);
    if entries.len() > max_entries {
        return Err(ListError::TooManyEntries { max: max_entries });
    }
    Ok(entries)
}

/// Drops repeated entries, keeping each first one in place: a sort of indices, cheaper than
/// hashing and copying every URI into a set as it is read.
fn dedup_keep_first(entries: &mut Vec<String>) {
    if entries.len() < 2 {
        return;
    }
    let mut order: Vec<u32> = (0..entries.len() as u32).collect();
    order.sort_unstable_by(|a, b| entries[*a as usize].cmp(&entries[*b as usize]).then(a.cmp(b)));
    let mut keep = vec![true; entries.len()];
    for pair in order.windows(2) {
        if entries[pair[0] as usize] == entries[pair[1] as usize] {
            keep[pair[1] as usize] = false;
        }
    }
    let mut i = 0;
    entries.retain(|_| {
        i += 1;
        keep[i - 1]
    });
}

struct Parser {
    /// Entries as read, repeats included (at most twice `max_entries`).
    entries: Vec<String>,
    max_entries: usize,
}

impl Parser {
    fn run(&mut self, input: &[u8]) -> Result<(), ListError> {
        let mut r = xml::reader(input);
        let mut stack: Vec<Ctx> = Vec::new();
        let mut root_done = false;
        let mut first = true;
        loop {
            let (ns, ev) = r
                .read_resolved_event()
                .map_err(|_| invalid("malformed XML"))?;
            xml::screen(&ev, !first).map_err(invalid)?;
            first = false;
            match ev {
                Event::Start(ref e) | Event::Empty(ref e) => {
                    if root_done {
                        return Err(invalid("content after root element"));
                    }
                    let ctx = self.element(&stack, xml::in_ns(&ns, NS), e)?;
                    if matches!(ev, Event::Start(_)) {
                        if stack.len() >= xml::MAX_DEPTH {
                            return Err(invalid("XML nested too deeply"));
                        }
                        stack.push(ctx);
                    } else if stack.is_empty() {
                        root_done = true;
                    }
                }
                Event::End(_) => {
                    stack.pop();
                    root_done |= stack.is_empty();
                }
                Event::Text(_) | Event::CData(_) if stack.is_empty() => {
                    return Err(invalid("text outside root element"));
                }
                Event::Eof if !stack.is_empty() => return Err(invalid("truncated XML")),
                Event::Eof if !root_done => return Err(invalid("empty document")),
                Event::Eof => return Ok(()),
                _ => {}
            }
        }
    }

    /// Handles an opening tag; returns what it opens.
    fn element(
        &mut self,
        stack: &[Ctx],
        ours: bool,
        e: &quick_xml::events::BytesStart,
    ) -> Result<Ctx, ListError> {
        let name = e.local_name();
        let is_entry = ours && name.as_ref() == b"entry" && stack.last() == Some(&Ctx::List);
        let uri = xml::attrs(e, is_entry.then_some(b"uri".as_slice())).map_err(invalid)?;
        let Some(parent) = stack.last() else {
            return match (name.as_ref(), ours) {
                (b"resource-lists", true) => Ok(Ctx::Root),
                (b"resource-lists", false) => {
                    Err(invalid("resource-lists not in RFC 4826 namespace"))
                }
                _ => Err(invalid("root element is not resource-lists")),
            };
        };
        match (parent, ours, name.as_ref()) {
            (Ctx::Root | Ctx::List, true, b"list") => Ok(Ctx::List),
            (Ctx::List, true, b"entry") => {
                self.add(uri.ok_or(invalid("entry without uri"))?)?;
                Ok(Ctx::Other)
            }
            _ => Ok(Ctx::Other),
        }
    }

    fn add(&mut self, uri: String) -> Result<(), ListError> {
        if uri.is_empty() {
            return Ok(());
        }
        if self.entries.len() >= self.max_entries.saturating_mul(2) {
            return Err(ListError::TooManyEntries {
                max: self.max_entries,
            });
        }
        self.entries.push(uri);
        Ok(())
    }
}

fn invalid(why: &'static str) -> ListError {
    ListError::Invalid(why)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<resource-lists xmlns="urn:ietf:params:xml:ns:resource-lists" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">"#;

    fn doc(inner: &str) -> String {
        format!("{HEAD}{inner}</resource-lists>")
    }

    fn ok(s: &str) -> Vec<String> {
        parse(s.as_bytes(), 100).unwrap()
    }

    fn err(s: &str) -> ListError {
        parse(s.as_bytes(), 100).unwrap_err()
    }

    #[test]
    fn fixture_inflates_and_parses_in_order() {
        let body = crate::body::deflate::tests::fixture_body();
        let xml = crate::body::inflate(body, &Default::default()).unwrap();
        assert_eq!(
            parse(&xml, 10).unwrap(),
            [
                "sip:+14155550100@example.org;user=phone",
                "sip:+33612345678@example.org;user=phone",
                "sip:+33698765432@example.org;user=phone",
                "sip:+33711223344@example.org;user=phone",
            ]
        );
    }

    #[test]
    fn uncompressed_fixture_parses() {
        let raw: &[u8] = include_bytes!(
            "../../fixtures/liblinphone-5.1/02-subscribe-initial-tcp-1number-uncompressed.raw"
        );
        let at = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert_eq!(
            parse(&raw[at..], 10).unwrap(),
            ["sip:+33612345678@example.org;user=phone"]
        );
    }

    #[test]
    fn nested_lists_flattened_and_dups_merged() {
        let d = doc(
            r#"<list name="a"><entry uri="sip:1@x"/><list><entry uri="sip:2@x">
            <display-name>Two</display-name></entry><list><entry uri="sip:1@x"/></list></list>
            <entry uri="sip:3@x"/></list><list><entry uri="sip:2@x"/><entry uri="sip:4@x"/></list>"#,
        );
        assert_eq!(ok(&d), ["sip:1@x", "sip:2@x", "sip:3@x", "sip:4@x"]);
    }

    #[test]
    fn unescapes_and_keeps_uri_as_written() {
        let d =
            doc(r#"<list><entry uri="sip:a&amp;b@x;user=phone?h=&#65;&#x42;&lt;&quot;"/></list>"#);
        assert_eq!(ok(&d), ["sip:a&b@x;user=phone?h=AB<\""]);
        let d = doc(r#"<list><entry uri="  sip:Case@X.org "/></list>"#);
        assert_eq!(ok(&d), ["  sip:Case@X.org "]);
    }

    #[test]
    fn ignores_refs_externals_and_foreign_elements() {
        let d = doc(
            r#"<list><entry-ref ref="a/b"/><external anchor="http://x/y"/>
            <foo:entry xmlns:foo="urn:other" uri="sip:no@x"/><entry uri="sip:yes@x"><foo:bar xmlns:foo="urn:o"><entry uri="sip:deep@x"/></foo:bar></entry>
            <entry uri=""/></list>"#,
        );
        assert_eq!(ok(&d), ["sip:yes@x"]);
    }

    #[test]
    fn prefixed_namespace_works() {
        let d = r#"<rl:resource-lists xmlns:rl="urn:ietf:params:xml:ns:resource-lists"><rl:list><rl:entry uri="sip:p@x"/></rl:list></rl:resource-lists>"#;
        assert_eq!(ok(d), ["sip:p@x"]);
    }

    #[test]
    fn refuses_doctype_and_entities() {
        let bomb = r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]>
<resource-lists xmlns="urn:ietf:params:xml:ns:resource-lists"><list><entry uri="&lol2;"/></list></resource-lists>"#;
        assert_eq!(err(bomb), ListError::Invalid("DOCTYPE not allowed"));
        let ext = doc(r#"<list><entry uri="&xxe;"/></list>"#);
        assert_eq!(
            err(&ext),
            ListError::Invalid("unknown or bad entity reference")
        );
        let in_text =
            doc(r#"<list><entry uri="sip:a@x"><display-name>&nbsp;</display-name></entry></list>"#);
        assert_eq!(
            err(&in_text),
            ListError::Invalid("unknown or bad entity reference")
        );
        let nul = doc(r#"<list><entry uri="sip:a@x&#0;"/></list>"#);
        assert_eq!(
            err(&nul),
            ListError::Invalid("unknown or bad entity reference")
        );
        let ctl = doc(r#"<list><entry uri="sip:a@x&#1;"/></list>"#);
        assert_eq!(err(&ctl), ListError::Invalid("control character in XML"));
    }

    #[test]
    fn refuses_processing_instructions() {
        let d = doc(r#"<?xml-stylesheet href="http://evil/x.xsl"?><list/>"#);
        assert_eq!(
            err(&d),
            ListError::Invalid("processing instruction not allowed")
        );
        let d = format!("{}<?xml version=\"1.0\"?>", doc("<list/>"));
        assert!(matches!(err(&d), ListError::Invalid(_)));
    }

    #[test]
    fn refuses_wrong_root_namespace_and_encoding() {
        assert_eq!(
            err(r#"<resource-lists xmlns="urn:wrong"><list/></resource-lists>"#),
            ListError::Invalid("resource-lists not in RFC 4826 namespace")
        );
        assert_eq!(
            err(r#"<resource-lists><list/></resource-lists>"#),
            ListError::Invalid("resource-lists not in RFC 4826 namespace")
        );
        assert_eq!(
            err(r#"<rls-services xmlns="urn:ietf:params:xml:ns:rls-services"/>"#),
            ListError::Invalid("root element is not resource-lists")
        );
        assert_eq!(
            err(r#"<?xml version="1.0" encoding="ISO-8859-1"?><resource-lists/>"#),
            ListError::Invalid("encoding must be UTF-8")
        );
        assert_eq!(err(""), ListError::Invalid("empty document"));
        assert_eq!(
            err(&format!("{HEAD}<list>")),
            ListError::Invalid("truncated XML")
        );
        assert_eq!(
            err(&format!("{}<x/>", doc("<list/>"))),
            ListError::Invalid("content after root element")
        );
        assert_eq!(
            err(&doc("<list><entry/></list>")),
            ListError::Invalid("entry without uri")
        );
    }

    #[test]
    fn utf8_bom_and_non_ascii_uris() {
        let d = format!(
            "\u{FEFF}{}",
            doc(r#"<list><entry uri="sip:jörg@x.org"/></list>"#)
        );
        assert_eq!(ok(&d), ["sip:jörg@x.org"]);
    }

    #[test]
    fn too_many_entries_counts_distinct() {
        let d = doc(
            r#"<list><entry uri="sip:1@x"/><entry uri="sip:1@x"/><entry uri="sip:2@x"/></list>"#,
        );
        assert_eq!(parse(d.as_bytes(), 2).unwrap().len(), 2);
        let e = parse(d.as_bytes(), 1).unwrap_err();
        assert_eq!(e, ListError::TooManyEntries { max: 1 });
        assert_eq!(e.sip_status(), 413);
        let repeats = doc(&r#"<entry uri="sip:1@x"/>"#.repeat(7).replace("<entry", "<list><entry").replace("/>", "/></list>"));
        assert_eq!(parse(repeats.as_bytes(), 10).unwrap(), ["sip:1@x"]);
        assert_eq!(parse(repeats.as_bytes(), 3).unwrap_err(), ListError::TooManyEntries { max: 3 }, "repeats are bounded too");
    }

    #[test]
    fn deep_nesting_refused() {
        let d = doc(&format!("{}{}", "<list>".repeat(40), "</list>".repeat(40)));
        assert_eq!(err(&d), ListError::Invalid("XML nested too deeply"));
    }

    #[test]
    fn reasons_are_short_ascii() {
        for e in [
            ListError::Invalid("malformed XML"),
            ListError::TooManyEntries { max: 3 },
        ] {
            let r = e.reason();
            assert!(r.is_ascii() && !r.contains(['\r', '\n']) && r.len() < 64);
        }
    }

    /// Mutations of a valid document never panic, whatever they return.
    #[test]
    fn mutated_inputs_never_panic() {
        use rand::{Rng, SeedableRng};
        let base = doc(
            r#"<list name="x"><entry uri="sip:+331@x;user=phone"><display-name>A &amp; B</display-name></entry><list><entry uri="sip:2@x"/></list><![CDATA[x]]><!-- c --></list>"#,
        );
        let base = base.as_bytes();
        let mut rng = rand::rngs::StdRng::seed_from_u64(4826);
        let alphabet = b"<>/=\"'&;#x!?[]-: \r\n\0\xff\xc3abc";
        for _ in 0..20_000 {
            let mut v = base.to_vec();
            for _ in 0..rng.gen_range(1..6) {
                let i = rng.gen_range(0..v.len());
                match rng.gen_range(0..4) {
                    0 => v[i] = alphabet[rng.gen_range(0..alphabet.len())],
                    1 => {
                        v.remove(i);
                    }
                    2 => v.insert(i, alphabet[rng.gen_range(0..alphabet.len())]),
                    _ => v.truncate(i),
                }
                if v.is_empty() {
                    break;
                }
            }
            let _ = parse(&v, 10);
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = parse(&data, 10);
        }

        #[test]
        fn generated_lists_round_trip(uris in proptest::collection::vec("[ -~]{1,30}", 0..20)) {
            let mut body = String::from(HEAD);
            body.push_str("<list>");
            for u in &uris {
                let mut esc = Vec::new();
                xml::escape_attr(&mut esc, u);
                body.push_str(&format!("<entry uri=\"{}\"/>", String::from_utf8(esc).unwrap()));
            }
            body.push_str("</list></resource-lists>");
            let mut want: Vec<String> = Vec::new();
            for u in uris {
                if !want.contains(&u) { want.push(u); }
            }
            proptest::prop_assert_eq!(parse(body.as_bytes(), 100).unwrap(), want);
        }
    }
}
