//! The resource-list parser, plain and deflated (`body::inflate` then
//! `body::resource_lists::parse`), and what the handler does next with the entries
//! (`resolution::classify`: E.164 normalisation of attacker-written URIs). Invariants:
//! nothing panics; the entry cap holds, entries are distinct and non-empty; inflating
//! respects its limits; what we deflate inflates back.

use smart_presence::body::{deflate_zlib, inflate, resource_lists, InflateLimits};
use smart_presence::numbers::parse_region;
use smart_presence::resolution::classify;

const MAX_ENTRIES: usize = 50;

pub fn check(data: &[u8]) {
    list(data);
    // The raw input as one entry URI, with and without a region for national numbers.
    if let Ok(uri) = std::str::from_utf8(data) {
        let region = parse_region("FR").ok();
        let _ = classify(vec![uri.to_string()], region);
        let _ = classify(vec![uri.to_string()], None);
    }
    let limits = InflateLimits { max_output: 256 * 1024, max_ratio: 100, ..Default::default() };
    if let Ok(xml) = inflate(data, &limits) {
        assert!(xml.len() <= limits.max_output);
        list(&xml);
    }
    let unbounded = InflateLimits { max_output: usize::MAX, max_ratio: usize::MAX, ratio_floor: 0 };
    assert_eq!(inflate(&deflate_zlib(data), &unbounded).as_deref(), Ok(data), "deflate round trip");
}

fn list(xml: &[u8]) {
    match resource_lists::parse(xml, MAX_ENTRIES) {
        Ok(entries) => {
            assert!(entries.len() <= MAX_ENTRIES);
            let distinct: std::collections::HashSet<&String> = entries.iter().collect();
            assert_eq!(distinct.len(), entries.len(), "duplicates merged");
            assert!(entries.iter().all(|e| !e.is_empty()));
            let classified = classify(entries, parse_region("FR").ok());
            assert!(classified.len() <= MAX_ENTRIES);
        }
        Err(e) => {
            assert!(matches!(e.sip_status(), 400 | 413));
            assert!(e.reason().is_ascii() && !e.reason().contains(['\r', '\n']));
        }
    }
}
