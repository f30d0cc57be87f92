//! Stored lists (RFC 4662 with a server-side list): a body-less SUBSCRIBE to the list URI
//! (`[address_books] list_uri`, `sip:contacts@<domain>` by default) watches the
//! subscriber's stored address book. Its entries are the book's numbers, written
//! `sip:+E164@<domain>;user=phone`, and from there on it is a list subscription like one
//! whose list came in the body. A change to the book reaches it as a `Relist` letter
//! (`live::follow_books`).
//!
//! Owns which request and which stored record is a stored-list one, whose book it reads,
//! and how the book becomes list entries; the books themselves are `address_books`'.
//! A leaf of `subscription`: it uses none of the other files.

use crate::address_books::AddressBooks;
use crate::numbers::E164;

pub struct StoredLists {
    pub books: AddressBooks,
    /// The list URI, canonical (`sip:user@host`).
    list_uri: Box<str>,
    domain: Box<str>,
}

impl StoredLists {
    /// Serves `books` at `list_uri`; an error when that is no SIP URI.
    pub fn new(books: AddressBooks, list_uri: &str, domain: &str) -> anyhow::Result<StoredLists> {
        let canonical = crate::identity::aor(list_uri).map_err(|e| anyhow::anyhow!("address_books.list_uri {list_uri:?}: {e}"))?;
        Ok(StoredLists { books, list_uri: canonical.into(), domain: domain.into() })
    }

    /// Whether a Request-URI names the stored list.
    pub fn is_list_uri(&self, uri: &str) -> bool {
        crate::identity::aor(uri).is_ok_and(|u| *u == *self.list_uri)
    }

    /// Whose book a subscriber watches: the account that proved itself, else (no digest:
    /// a trusted proxy, or `auth.mode = "none"`) the user part of a URI of our domain.
    pub fn owner(&self, account: Option<&str>, subscriber: &str) -> Option<String> {
        if let Some(a) = account {
            return Some(a.to_string());
        }
        let rest = subscriber.strip_prefix("sip:").or_else(|| subscriber.strip_prefix("sips:"))?;
        let (user, host) = rest.split_once('@')?;
        (host.eq_ignore_ascii_case(&self.domain) && !user.is_empty()).then(|| user.to_string())
    }

    /// The owner of a stored record's subscription, when it watches a stored list.
    pub fn owner_of_record(&self, list_uri: &str, subscriber: &str) -> Option<String> {
        if !self.is_list_uri(list_uri) {
            return None;
        }
        self.owner(None, subscriber)
    }

    /// The list entries of a book's numbers.
    pub fn entry_uris(&self, numbers: impl Iterator<Item = E164>) -> Vec<String> {
        numbers.map(|n| format!("sip:{n}@{};user=phone", self.domain)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_uri_and_owner() {
        let dir = tempfile::tempdir().unwrap();
        let books = AddressBooks::open(dir.path(), &[1; 32], crate::address_books::Limits { max_contacts: 10, log_versions: 4 }).unwrap();
        let lists = StoredLists::new(books, "sip:contacts@example.org", "example.org").unwrap();
        assert!(lists.is_list_uri("sip:contacts@example.org"));
        assert!(lists.is_list_uri("sip:contacts@EXAMPLE.org;transport=tcp"));
        assert!(!lists.is_list_uri("sip:rls@example.org"));
        assert_eq!(lists.owner(Some("alice"), "sip:whatever@x"), Some("alice".into()));
        assert_eq!(lists.owner(None, "sip:bob@example.org"), Some("bob".into()));
        assert_eq!(lists.owner(None, "sip:bob@elsewhere.org"), None);
        assert_eq!(lists.entry_uris(["+33612345678".parse().unwrap()].into_iter()), vec!["sip:+33612345678@example.org;user=phone"]);
    }
}
