//! The entries of a watched list, stored compactly: a subscription lives for an hour and
//! there may be a hundred thousand of them, so memory per entry matters.
//!
//! Clients write most entries the same way, `sip:{E.164}@{domain};user=phone`. Those are
//! kept as the number alone (8 bytes) plus one shared prefix and suffix per list; any
//! other entry is kept verbatim. Either way the URI comes back byte for byte, as the client
//! wrote it (liblinphone ignores a resource whose URI differs).

use crate::numbers::E164;
use crate::resolution::{Entry, Key};
use std::borrow::Cow;

enum Item {
    /// `{prefix}{number}{suffix}`, watched by its number.
    Templated(E164),
    /// Anything else, as written, with its key if it has one.
    Other(Box<(Box<str>, Option<Key>)>),
}

pub struct WatchedList {
    prefix: Box<str>,
    suffix: Box<str>,
    items: Vec<Item>,
}

impl WatchedList {
    pub fn new(entries: Vec<Entry>) -> WatchedList {
        let (prefix, suffix) = entries.iter().find_map(template_of).unwrap_or_default();
        let items = entries
            .into_iter()
            .map(|e| match e.key {
                Some(Key::Phone(n)) if fits(&e.uri, &prefix, &suffix, n) => Item::Templated(n),
                key => Item::Other(Box::new((e.uri, key))),
            })
            .collect();
        WatchedList { prefix: prefix.into(), suffix: suffix.into(), items }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The URI of entry `i`, exactly as the client wrote it.
    pub fn uri(&self, i: usize) -> Cow<'_, str> {
        match &self.items[i] {
            Item::Templated(n) => Cow::Owned(format!("{}{n}{}", self.prefix, self.suffix)),
            Item::Other(b) => Cow::Borrowed(&b.0),
        }
    }

    pub fn key(&self, i: usize) -> Option<Key> {
        match &self.items[i] {
            Item::Templated(n) => Some(Key::Phone(*n)),
            Item::Other(b) => b.1.clone(),
        }
    }

    pub fn keys(&self) -> impl Iterator<Item = Key> + '_ {
        (0..self.items.len()).filter_map(|i| self.key(i))
    }
}

/// The prefix and suffix around the number when `e` is written `…{E.164}…`.
fn template_of(e: &Entry) -> Option<(String, String)> {
    let Some(Key::Phone(n)) = e.key else { return None };
    let number = n.to_string();
    let at = e.uri.find(&number)?;
    Some((e.uri[..at].to_string(), e.uri[at + number.len()..].to_string()))
}

fn fits(uri: &str, prefix: &str, suffix: &str, n: E164) -> bool {
    let number = n.to_string();
    uri.len() == prefix.len() + number.len() + suffix.len()
        && uri.starts_with(prefix)
        && uri.ends_with(suffix)
        && &uri[prefix.len()..prefix.len() + number.len()] == number
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolution::classify;

    #[test]
    fn uris_come_back_byte_for_byte() {
        let uris = vec![
            "sip:+33612345678@example.org;user=phone".to_string(),
            "sip:0698765432@example.org;user=phone".to_string(),
            "sip:+14155550100@example.org;user=phone".to_string(),
            "sip:bob@example.org".to_string(),
            "sip:+4930123456@other.example;user=phone".to_string(),
            "not a uri".to_string(),
        ];
        let region = crate::numbers::parse_region("FR").ok();
        let list = WatchedList::new(classify(uris.clone(), region));
        for (i, u) in uris.iter().enumerate() {
            assert_eq!(list.uri(i), u.as_str());
        }
        assert!(matches!(list.items[0], Item::Templated(_)) && matches!(list.items[2], Item::Templated(_)));
        assert!(matches!(list.items[1], Item::Other(_)), "national numbers stay verbatim");
        assert_eq!(list.keys().count(), 5);
    }
}
