//! Resolution: which entries of a watched list are service users, and at which SIP URI.
//!
//! Classifies each entry once (phone number, plain SIP user, or neither) and answers from
//! the binding index each time a full or partial state is built. Owns no state of its own:
//! the index is the truth. Must not know about dialogs or SIP messages.

use crate::index::{Index, IndexError};
use crate::numbers::{self, Region, UriKind, E164};
use crate::presence::{Live, PresenceStore};

/// What an entry is watched by.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Key {
    Phone(E164),
    /// A canonical `sip:user@host`: a user when some number is bound to it.
    Sip(Box<str>),
}

/// One list entry: the URI as the client wrote it (echoed byte for byte) and its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub uri: Box<str>,
    pub key: Option<Key>,
}

/// What we know of a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The SIP URI the app will call.
    pub contact: String,
    /// When the binding was made (unix seconds).
    pub since: u64,
    /// His published presence, if any since start.
    pub live: Option<Live>,
}

/// Classifies entries; national numbers use `region` (the subscriber's).
pub fn classify(uris: Vec<String>, region: Option<Region>) -> Vec<Entry> {
    uris.into_iter()
        .map(|uri| {
            let key = match numbers::from_uri(&uri, region) {
                UriKind::Phone(n) => Some(Key::Phone(n)),
                UriKind::Sip(s) => Some(Key::Sip(s.into())),
                UriKind::Invalid(_) => None,
            };
            Entry { uri: uri.into(), key }
        })
        .collect()
}

/// As [`classify`], with the region asked for only when an entry is not read without
/// one (a national number): most lists are all in E.164, and finding the region reads
/// the index.
pub fn classify_lazily(uris: Vec<String>, region: impl FnOnce() -> Option<Region>) -> Vec<Entry> {
    let mut entries = classify(uris, None);
    if entries.iter().all(|e| e.key.is_some()) {
        return entries;
    }
    let Some(region) = region() else { return entries };
    for e in entries.iter_mut().filter(|e| e.key.is_none()) {
        if let UriKind::Phone(n) = numbers::from_uri(&e.uri, Some(region)) {
            e.key = Some(Key::Phone(n));
        }
    }
    entries
}

/// The subscriber's region: the country of a number bound to his SIP URI, else `default`.
pub fn subscriber_region(index: &Index, from_uri: &str, default: Option<Region>) -> Option<Region> {
    let Ok(uri) = crate::identity::aor(from_uri) else { return default };
    match index.numbers_of(&uri) {
        Ok(nums) => nums.first().and_then(|n| n.region()).or(default),
        Err(_) => default,
    }
}

/// Whether `key` is a user now, as whom, and how present.
pub fn user_of(index: &Index, presence: &PresenceStore, key: &Key) -> Result<Option<User>, IndexError> {
    let (contact, since) = match key {
        Key::Phone(n) => match index.lookup(*n)? {
            Some(b) => (b.sip_uri, b.bound_at),
            None => return Ok(None),
        },
        Key::Sip(uri) => match index.numbers_of(uri)?.first() {
            Some(n) => (uri.to_string(), index.lookup(*n)?.map_or(0, |b| b.bound_at)),
            None => return Ok(None),
        },
    };
    Ok(Some(user(presence, contact, since)))
}

/// The user at `contact`, bound since `since`, with his presence now.
fn user(presence: &PresenceStore, contact: String, since: u64) -> User {
    User { live: presence.live(&contact), contact, since }
}

/// Resolves every key: the user behind each, in order. The phone numbers go to the index
/// in one batch (an address book's lookups overlap their cache misses).
pub fn resolve_all(index: &Index, presence: &PresenceStore, keys: impl Iterator<Item = Option<Key>>) -> Vec<Option<User>> {
    let keys: Vec<Option<Key>> = keys.collect();
    let phones: Vec<E164> = keys.iter().filter_map(|k| match k {
        Some(Key::Phone(n)) => Some(*n),
        _ => None,
    }).collect();
    let mut bound = match index.lookup_each(&phones) {
        Ok(found) => found.into_iter(),
        Err(err) => {
            tracing::warn!("index lookup failed: {}", loggable(&err));
            vec![None; phones.len()].into_iter()
        }
    };
    keys.iter()
        .map(|key| match key.as_ref()? {
            Key::Phone(_) => bound.next().flatten().map(|b| user(presence, b.sip_uri, b.bound_at)),
            key => user_of(index, presence, key).unwrap_or_else(|err| {
                tracing::warn!("index lookup failed: {}", loggable(&err));
                None
            }),
        })
        .collect()
}

/// An index error as it may be logged: storage failures in full, errors that can quote a
/// list entry (a URI or a number from a subscriber's address book) by kind only.
fn loggable(err: &IndexError) -> String {
    match err {
        IndexError::Storage(_) | IndexError::Io(_) | IndexError::Corrupt(_) | IndexError::Locked { .. } => err.to_string(),
        IndexError::InvalidUri(_) => "entry is not a SIP user URI".into(),
        IndexError::Number(_) => "entry is not a valid number".into(),
        IndexError::StrictRejected(_) => "import rejected".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logged_index_errors_never_quote_an_entry() {
        let entry = "sip:+33612345678@example.org;user=phone";
        let err = IndexError::InvalidUri(format!("{entry:?} is a phone number (+33612345678), not a SIP user"));
        assert!(err.to_string().contains("33612345678"), "the raw error would leak it");
        assert!(!loggable(&err).contains("33612345678"));
        assert!(loggable(&IndexError::Corrupt("number key".into())).contains("number key"));
    }

    #[test]
    fn the_region_is_asked_for_only_by_national_numbers() {
        let e164 = vec!["sip:+33612345678@example.org;user=phone".to_string(), "sip:alice@example.org".to_string()];
        let entries = classify_lazily(e164.clone(), || panic!("no entry needs a region"));
        assert_eq!(entries, classify(e164, None));

        let mixed = vec!["sip:0612345678@example.org;user=phone".to_string(), "sip:+14155550100@example.org;user=phone".to_string(), "tel:not-a-number".to_string()];
        let mut asked = 0;
        let entries = classify_lazily(mixed.clone(), || {
            asked += 1;
            Some(phonenumber::country::Id::FR)
        });
        assert_eq!(asked, 1);
        assert_eq!(entries, classify(mixed, Some(phonenumber::country::Id::FR)));
        assert!(matches!(entries[0].key, Some(Key::Phone(_))), "read in the subscriber's region");
    }
}
