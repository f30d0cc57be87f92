//! Reading RFC 3863 PIDF documents (PUBLISH bodies): the entity and, per tuple, its id, basic
//! status and contact. Everything else (notes, extensions, person/device elements) is skipped.
//! Same hardening as the resource-list parser: no DOCTYPE, no processing instructions, only the
//! predefined entities, UTF-8 only, bounded nesting, at most [`MAX_TUPLES`] tuples.

use super::xml;
use quick_xml::events::{BytesStart, Event};

/// The RFC 3863 namespace.
pub const NS: &[u8] = b"urn:ietf:params:xml:ns:pidf";

/// Most tuples accepted in one document.
pub const MAX_TUPLES: usize = 64;

/// `<basic>` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Basic {
    Open,
    Closed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tuple {
    pub id: String,
    /// `None` when the tuple has no `<basic>`.
    pub basic: Option<Basic>,
    /// The `<contact>` URI, trimmed; `None` when absent.
    pub contact: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presence {
    pub entity: String,
    pub tuples: Vec<Tuple>,
}

/// Why a PIDF document was refused: the text is a short ASCII reason phrase (SIP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PidfError(pub &'static str);

impl PidfError {
    pub fn sip_status(&self) -> u16 {
        400
    }
}

/// Where we are in the document, for deciding what text means.
#[derive(Clone, Copy, PartialEq)]
enum Ctx {
    Presence,
    Tuple,
    Status,
    Basic,
    Contact,
    Other,
}

/// Parses a PIDF document.
pub fn parse(input: &[u8]) -> Result<Presence, PidfError> {
    let mut r = xml::reader(input);
    let mut stack: Vec<Ctx> = Vec::new();
    let mut pres: Option<Presence> = None;
    let mut done = false;
    let mut first = true;
    loop {
        let (ns, ev) = r
            .read_resolved_event()
            .map_err(|_| PidfError("malformed XML"))?;
        xml::screen(&ev, !first).map_err(PidfError)?;
        first = false;
        match ev {
            Event::Start(ref e) | Event::Empty(ref e) => {
                if done {
                    return Err(PidfError("content after root element"));
                }
                let ctx = open(&mut pres, stack.last().copied(), xml::in_ns(&ns, NS), e)?;
                if matches!(ev, Event::Start(_)) {
                    if stack.len() >= xml::MAX_DEPTH {
                        return Err(PidfError("XML nested too deeply"));
                    }
                    stack.push(ctx);
                } else {
                    done |= stack.is_empty();
                }
            }
            Event::End(_) => {
                stack.pop();
                done |= stack.is_empty();
            }
            Event::Text(ref t) => {
                let s = xml::text(t).map_err(PidfError)?;
                text(&mut pres, stack.last().copied(), s.trim())?;
            }
            Event::CData(_) if stack.is_empty() => {
                return Err(PidfError("text outside root element"))
            }
            Event::Eof if !stack.is_empty() => return Err(PidfError("truncated XML")),
            Event::Eof => return pres.ok_or(PidfError("empty document")),
            _ => {}
        }
    }
}

fn open(
    pres: &mut Option<Presence>,
    parent: Option<Ctx>,
    ours: bool,
    e: &BytesStart,
) -> Result<Ctx, PidfError> {
    let name = e.local_name();
    let want: Option<&[u8]> = match (parent, ours, name.as_ref()) {
        (None, true, b"presence") => Some(b"entity"),
        (Some(Ctx::Presence), true, b"tuple") => Some(b"id"),
        _ => None,
    };
    let value = xml::attrs(e, want).map_err(PidfError)?;
    let Some(parent) = parent else {
        return match (name.as_ref(), ours) {
            (b"presence", true) => {
                let entity = value.ok_or(PidfError("presence without entity"))?;
                *pres = Some(Presence {
                    entity,
                    tuples: Vec::new(),
                });
                Ok(Ctx::Presence)
            }
            (b"presence", false) => Err(PidfError("presence not in PIDF namespace")),
            _ => Err(PidfError("root element is not presence")),
        };
    };
    let p = pres.as_mut().ok_or(PidfError("element outside presence"))?;
    Ok(match (parent, ours, name.as_ref()) {
        (Ctx::Presence, true, b"tuple") => {
            if p.tuples.len() >= MAX_TUPLES {
                return Err(PidfError("too many tuples"));
            }
            let id = value.ok_or(PidfError("tuple without id"))?;
            p.tuples.push(Tuple {
                id,
                basic: None,
                contact: None,
            });
            Ctx::Tuple
        }
        (Ctx::Tuple, true, b"status") => Ctx::Status,
        (Ctx::Status, true, b"basic") => Ctx::Basic,
        (Ctx::Tuple, true, b"contact") => Ctx::Contact,
        _ => Ctx::Other,
    })
}

fn text(pres: &mut Option<Presence>, at: Option<Ctx>, s: &str) -> Result<(), PidfError> {
    let tuple = pres.as_mut().and_then(|p| p.tuples.last_mut());
    match at {
        None if !s.is_empty() => Err(PidfError("text outside root element")),
        Some(Ctx::Basic) => {
            let b = match s {
                "open" => Basic::Open,
                "closed" => Basic::Closed,
                _ => return Err(PidfError("basic must be open or closed")),
            };
            if let Some(t) = tuple {
                t.basic = Some(b);
            }
            Ok(())
        }
        Some(Ctx::Contact) => {
            if let Some(t) = tuple {
                t.contact = (!s.is_empty()).then(|| s.to_owned());
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::{build_pidf, UserPresence};

    #[test]
    fn parses_what_we_write() {
        let u = UserPresence {
            contact: "sip:b&o@x",
            basic_open: true,
            away: true,
            timestamp: Some(5),
            doc: None,
        };
        let p = parse(&build_pidf("sip:+33@x;user=phone", &u)).unwrap();
        assert_eq!(p.entity, "sip:+33@x;user=phone");
        assert_eq!(
            p.tuples,
            [Tuple {
                id: "t1".into(),
                basic: Some(Basic::Open),
                contact: Some("sip:b&o@x".into())
            }]
        );
    }

    #[test]
    fn parses_a_linphone_style_publish() {
        let doc = r#"<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity="sip:alice@example.org">
  <tuple id="qmvmsw">
    <status><basic>open</basic></status>
    <contact> sip:alice@example.org </contact>
    <timestamp>2026-11-23T11:49:39Z</timestamp>
  </tuple>
  <tuple id="x2"><status><basic>closed</basic></status></tuple>
  <dm:person id="p1"><rpid:activities><rpid:away/></rpid:activities><dm:note>gone</dm:note></dm:person>
</presence>"#;
        let p = parse(doc.as_bytes()).unwrap();
        assert_eq!(p.entity, "sip:alice@example.org");
        assert_eq!(p.tuples.len(), 2);
        let blank = parse(doc.replace(" sip:alice@example.org ", "\u{a0}").as_bytes()).unwrap();
        assert_eq!(blank.tuples[0].contact, None, "a contact of white space only is no contact");
        assert_eq!(
            p.tuples[0].contact.as_deref(),
            Some("sip:alice@example.org")
        );
        assert_eq!(
            p.tuples[1],
            Tuple {
                id: "x2".into(),
                basic: Some(Basic::Closed),
                contact: None
            }
        );
    }

    #[test]
    fn refusals() {
        let cases: &[(&str, &str)] = &[
            ("<!DOCTYPE p [<!ENTITY a \"b\">]><presence/>", "DOCTYPE not allowed"),
            ("<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"&a;\"/>", "unknown or bad entity reference"),
            ("<presence entity=\"x\"/>", "presence not in PIDF namespace"),
            ("<list xmlns=\"urn:ietf:params:xml:ns:pidf\"/>", "root element is not presence"),
            ("<presence xmlns=\"urn:ietf:params:xml:ns:pidf\"/>", "presence without entity"),
            ("<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"x\"><tuple/></presence>", "tuple without id"),
            (
                "<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"x\"><tuple id=\"a\"><status><basic>maybe</basic></status></tuple></presence>",
                "basic must be open or closed",
            ),
            ("<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"x\"><?pi x?></presence>", "processing instruction not allowed"),
            ("<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"x\">", "truncated XML"),
            ("", "empty document"),
        ];
        for (doc, why) in cases {
            assert_eq!(parse(doc.as_bytes()), Err(PidfError(why)), "{doc}");
        }
        let many = format!(
            "<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"x\">{}</presence>",
            "<tuple id=\"a\"><status/></tuple>".repeat(MAX_TUPLES + 1)
        );
        assert_eq!(parse(many.as_bytes()), Err(PidfError("too many tuples")));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = parse(&data);
        }

        #[test]
        fn mutated_documents_never_panic(cut in 0usize..400, at in 0usize..400, byte in proptest::prelude::any::<u8>()) {
            let u = UserPresence { contact: "sip:b@x", basic_open: true, away: true, timestamp: Some(5), doc: None };
            let mut v = build_pidf("sip:e@x", &u);
            let at = at % v.len();
            v[at] = byte;
            v.truncate(cut.max(1).min(v.len()));
            let _ = parse(&v);
        }
    }
}
