//! The entries of a watched list, stored compactly: a subscription lives for an hour and
//! there may be a hundred thousand of them, so memory per entry matters.
//!
//! Clients write most entries the same way, `sip:{E.164}@{domain};user=phone`. Those are
//! kept as the number alone (8 bytes) plus one shared prefix and suffix per list; any
//! other entry is kept verbatim. Either way the URI comes back byte for byte, as the client
//! wrote it (liblinphone ignores a resource whose URI differs). Entries are numbered with
//! the templated ones first: RLMI resources carry no order.

use crate::numbers::E164;
use crate::resolution::{Entry, Key};
use std::borrow::Cow;

pub struct WatchedList {
    prefix: Box<str>,
    suffix: Box<str>,
    /// Entries written `{prefix}{number}{suffix}`, watched by their number.
    templated: Box<[E164]>,
    /// Anything else, as written, with its key if it has one.
    others: Box<[(Box<str>, Option<Key>)]>,
}

impl WatchedList {
    pub fn new(entries: Vec<Entry>) -> WatchedList {
        let (prefix, suffix) = entries.iter().find_map(template_of).unwrap_or_default();
        let mut templated = Vec::new();
        let mut others = Vec::new();
        for e in entries {
            match e.key {
                Some(Key::Phone(n)) if fits(&e.uri, &prefix, &suffix, n) => templated.push(n),
                key => others.push((e.uri, key)),
            }
        }
        WatchedList { prefix: prefix.into(), suffix: suffix.into(), templated: templated.into(), others: others.into() }
    }

    pub fn len(&self) -> usize {
        self.templated.len() + self.others.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The URI of entry `i`, exactly as the client wrote it.
    pub fn uri(&self, i: usize) -> Cow<'_, str> {
        match self.templated.get(i) {
            Some(n) => Cow::Owned(format!("{}{n}{}", self.prefix, self.suffix)),
            None => Cow::Borrowed(&self.others[i - self.templated.len()].0),
        }
    }

    pub fn key(&self, i: usize) -> Option<Key> {
        match self.templated.get(i) {
            Some(n) => Some(Key::Phone(*n)),
            None => self.others[i - self.templated.len()].1.clone(),
        }
    }

    pub fn keys(&self) -> impl Iterator<Item = Key> + '_ {
        (0..self.len()).filter_map(|i| self.key(i))
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
        let mut back: Vec<String> = (0..list.len()).map(|i| list.uri(i).into_owned()).collect();
        back.sort();
        let mut want = uris.clone();
        want.sort();
        assert_eq!(back, want);
        assert_eq!(list.templated.len(), 2, "the two +E.164 entries of example.org");
        assert_eq!(list.keys().count(), 5);
    }
}
