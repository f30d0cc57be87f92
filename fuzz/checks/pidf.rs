//! The PIDF parser (`body::pidf::parse`). Invariants: nothing panics, the tuple cap holds,
//! reason phrases are one ASCII line, and a document we write parses back to its entity
//! and contact.

use smart_presence::body::{build_pidf, pidf, UserPresence};

pub fn check(data: &[u8]) {
    match pidf::parse(data) {
        Ok(p) => assert!(p.tuples.len() <= pidf::MAX_TUPLES),
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
