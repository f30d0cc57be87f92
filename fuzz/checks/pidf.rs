//! The PIDF parser (`body::pidf::parse`) and the rich-presence reader (`body::rich::read`).
//! Invariants: nothing panics, the tuple cap holds, reason phrases are one ASCII line, what
//! the rich reader keeps is bounded and written back parses, and a document we write parses
//! back to its entity and contact.

use smart_presence::body::{build_pidf, pidf, UserPresence};

pub fn check(data: &[u8]) {
    match pidf::parse(data) {
        Ok(p) => {
            assert!(p.tuples.len() <= pidf::MAX_TUPLES);
            check_rich(data);
        }
        Err(e) => assert!(e.0.is_ascii() && !e.0.contains(['\r', '\n'])),
    }
    let Ok(text) = std::str::from_utf8(data) else { return };
    if text.is_empty() || text.len() > 512 || text.chars().any(char::is_control) || text.trim() != text {
        return;
    }
    let presence = UserPresence { contact: text, basic_open: true, away: data.len().is_multiple_of(2), timestamp: Some(data.len() as u64), doc: None };
    let doc = build_pidf(text, &presence);
    let back = pidf::parse(&doc).unwrap_or_else(|e| panic!("our PIDF for {text:?} does not parse: {e}"));
    assert_eq!(back.entity, text);
    assert_eq!(back.tuples.len(), 1);
    assert_eq!(back.tuples[0].contact.as_deref(), Some(text));
}

/// A document PUBLISH accepts: its rich part, written back, parses as PIDF.
fn check_rich(data: &[u8]) {
    let Ok(doc) = smart_presence::body::rich::read(data) else { return };
    assert!(doc.notes.iter().all(|n| n.text.len() <= smart_presence::body::rich::MAX_NOTE));
    let presence = UserPresence { contact: "sip:bob@example.org", basic_open: true, away: true, timestamp: Some(0), doc: Some(&doc) };
    let out = build_pidf("sip:bob@example.org", &presence);
    pidf::parse(&out).unwrap_or_else(|e| panic!("our rich PIDF does not parse: {e}\n{}", String::from_utf8_lossy(&out)));
}
