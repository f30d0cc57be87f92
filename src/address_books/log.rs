//! The change log of a book: what each recent version added and removed, and the net
//! change since an older version (what `GET /v1/contacts/changes` answers).
//!
//! Pure: the handle seals and opens the entries; this file only says what goes in one and
//! how they add up.

use super::Contact;
use crate::numbers::E164;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// What one version changed (the plain form of a sealed `LoggedChange`).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Delta {
    /// Numbers added, as E.164 digits.
    pub added: Vec<u64>,
    /// Numbers kept whose raw form or name changed.
    pub renamed: Vec<u64>,
    /// Contacts removed, with the raw form the owner gave.
    pub removed: Vec<SealedContact>,
}

/// A contact as sealed in the book.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedContact {
    pub digits: u64,
    pub number: String,
    pub name: Option<String>,
}

impl SealedContact {
    pub fn of(c: &Contact) -> SealedContact {
        SealedContact { digits: c.e164.digits(), number: c.number.clone(), name: c.name.clone() }
    }

    /// None when the digits are no number (a corrupt record).
    pub fn contact(self) -> Option<Contact> {
        Some(Contact { e164: number_of(self.digits)?, number: self.number, name: self.name })
    }
}

/// The same, borrowed from the opened bytes: what a list needs (the numbers) without a
/// string copied.
#[derive(Deserialize)]
pub struct SealedRef<'a> {
    pub digits: u64,
    /// Read past only (the encoding is positional).
    #[serde(borrow)]
    _number: &'a str,
    #[serde(borrow)]
    _name: Option<&'a str>,
}

/// Our own encoding of a checked number: the cheap plausibility check suffices (as for
/// the index's keys), not `normalize`'s rules again.
pub fn number_of(digits: u64) -> Option<E164> {
    E164::from_key(&digits.to_be_bytes())
}

/// The delta from `old` to `new`.
pub fn diff(old: &[SealedContact], new: &[SealedContact]) -> Delta {
    let before: HashMap<u64, &SealedContact> = old.iter().map(|c| (c.digits, c)).collect();
    let after: HashMap<u64, &SealedContact> = new.iter().map(|c| (c.digits, c)).collect();
    let mut delta = Delta::default();
    for c in new {
        match before.get(&c.digits) {
            None => delta.added.push(c.digits),
            Some(o) if o.name != c.name || o.number != c.number => delta.renamed.push(c.digits),
            Some(_) => {}
        }
    }
    delta.removed = old.iter().filter(|c| !after.contains_key(&c.digits)).cloned().collect();
    delta
}

/// One number across several deltas.
struct Course {
    /// In the book at the start (its first event was no addition).
    was_there: bool,
    /// In the book at the end.
    is_there: bool,
    /// Its last removal, for the removed list.
    removed: Option<SealedContact>,
}

/// The net change of `deltas` (in version order): the numbers added or changed since
/// (present now), in the order first seen, and the contacts removed since (absent now,
/// present at the start).
pub fn net(deltas: Vec<Delta>) -> (Vec<u64>, Vec<SealedContact>) {
    let mut order: Vec<u64> = Vec::new();
    let mut course: HashMap<u64, Course> = HashMap::new();
    let mut note = |digits: u64, added: bool, there: bool, removed: Option<SealedContact>| {
        let c = course.entry(digits).or_insert_with(|| {
            order.push(digits);
            Course { was_there: !added, is_there: there, removed: None }
        });
        c.is_there = there;
        if removed.is_some() {
            c.removed = removed;
        }
    };
    for d in deltas {
        for r in d.removed {
            note(r.digits, false, false, Some(r));
        }
        for a in d.added {
            note(a, true, true, None);
        }
        for a in d.renamed {
            note(a, false, true, None);
        }
    }
    let added = order.iter().filter(|d| course.get(*d).is_some_and(|c| c.is_there)).copied().collect();
    let mut removed: Vec<SealedContact> = course.into_values().filter(|c| c.was_there && !c.is_there).filter_map(|c| c.removed).collect();
    removed.sort_by_key(|c| c.digits);
    (added, removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(d: u64, name: &str) -> SealedContact {
        SealedContact { digits: d, number: format!("+{d}"), name: Some(name.into()) }
    }

    #[test]
    fn deltas_add_up() {
        let v1 = vec![c(1, "a"), c(2, "b")];
        let v2 = vec![c(2, "b"), c(3, "c")];
        let v3 = vec![c(2, "B"), c(1, "a")];
        let (d2, d3) = (diff(&v1, &v2), diff(&v2, &v3));
        assert_eq!(d2.added, vec![3]);
        assert_eq!(d2.removed, vec![c(1, "a")]);
        assert_eq!((d3.added.clone(), d3.renamed.clone()), (vec![1], vec![2]));
        let (added, removed) = net(vec![d2, d3]);
        assert_eq!(added, vec![1, 2], "1 came back, 2 was renamed");
        assert!(removed.is_empty(), "3 came and went; 1 came back: {removed:?}");
        let (added, removed) = net(vec![diff(&v1, &v2)]);
        assert_eq!((added, removed), (vec![3], vec![c(1, "a")]));
    }
}
