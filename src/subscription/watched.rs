//! The entries of a watched list, stored compactly: a subscription lives for an hour and
//! there may be a hundred thousand of them, so memory per entry matters.
//!
//! Clients write most entries the same way, `sip:{E.164}@{domain};user=phone`. Those are
//! kept as the number alone plus one shared prefix and suffix per list; any other entry is
//! kept verbatim. Either way the URI comes back byte for byte, as the client wrote it
//! (liblinphone ignores a resource whose URI differs). The numbers are sorted and stored as
//! the varint-coded gaps between them: an address book's numbers share their country and
//! often their operator, so a gap takes 3-5 bytes where the number takes 8. Entries are
//! numbered with the templated ones first, in number order: RLMI resources carry no order.

use crate::numbers::E164;
use crate::resolution::{Entry, Key};
use std::borrow::Cow;
use std::ops::Range;

#[derive(Clone)]
pub struct WatchedList {
    /// The prefix, the suffix, then the entries written `{prefix}{number}{suffix}` as the
    /// sorted numbers' gaps (the first from 0, LEB128 varints): one allocation, not three.
    packed: Box<[u8]>,
    /// Where the prefix ends and the suffix ends in `packed`.
    prefix_end: u32,
    suffix_end: u32,
    /// Anything else, as written, with its key if it has one; rare, so boxed twice: a
    /// thin pointer (8 bytes) in every held subscription instead of a slice's 16.
    others: Option<Box<Others>>,
}

type Others = Box<[(Box<str>, Option<Key>)]>;

/// How a list is stored (`durable.rs`): the layout of the records, unchanged by the packing.
#[derive(serde::Serialize)]
struct WireRef<'a> {
    prefix: &'a str,
    suffix: &'a str,
    gaps: &'a [u8],
    others: &'a [(Box<str>, Option<Key>)],
}

#[derive(serde::Deserialize)]
struct Wire {
    prefix: Box<str>,
    suffix: Box<str>,
    gaps: Box<[u8]>,
    others: Box<[(Box<str>, Option<Key>)]>,
}

impl serde::Serialize for WatchedList {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        WireRef { prefix: self.prefix(), suffix: self.suffix(), gaps: self.gaps(), others: self.others() }.serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for WatchedList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = Wire::deserialize(d)?;
        if !fits_offsets(&w.prefix, &w.suffix) {
            return Err(serde::de::Error::custom("watched list prefix and suffix past 4 GiB"));
        }
        Ok(WatchedList::pack(&w.prefix, &w.suffix, &w.gaps, w.others))
    }
}

/// A list with its numbers decoded, to read entries by position (one per NOTIFY).
pub struct View<'a> {
    list: &'a WatchedList,
    numbers: Vec<E164>,
    /// The list's template, read out of the packing once, not once an entry.
    prefix: &'a str,
    suffix: &'a str,
}

impl WatchedList {
    pub fn new(entries: Vec<Entry>) -> WatchedList {
        let (mut prefix, mut suffix) = entries.iter().find_map(template_of).unwrap_or_default();
        if !fits_offsets(&prefix, &suffix) {
            // Past 4 GiB (no SIP body is): every entry kept verbatim instead.
            (prefix, suffix) = Default::default();
        }
        let mut templated = Vec::new();
        let mut others = Vec::new();
        for e in entries {
            match e.key {
                Some(Key::Phone(n)) if fits(&e.uri, &prefix, &suffix, n) => templated.push(n),
                key => others.push((e.uri, key)),
            }
        }
        templated.sort_unstable();
        templated.dedup();
        WatchedList::pack(&prefix, &suffix, &encode(&templated), others.into())
    }

    /// The parts in one allocation; `prefix` and `suffix` must pass `fits_offsets`. The
    /// list is kept as long as its subscription: it is allocated among long-lived state
    /// (`crate::memory`), away from the request's buffers.
    fn pack(prefix: &str, suffix: &str, gaps: &[u8], others: Others) -> WatchedList {
        crate::memory::long_lived(|| {
            let mut packed = Vec::with_capacity(prefix.len() + suffix.len() + gaps.len());
            packed.extend_from_slice(prefix.as_bytes());
            packed.extend_from_slice(suffix.as_bytes());
            packed.extend_from_slice(gaps);
            let (prefix_end, suffix_end) = (prefix.len() as u32, (prefix.len() + suffix.len()) as u32);
            let others = (!others.is_empty()).then(|| Box::new(others));
            WatchedList { packed: packed.into(), prefix_end, suffix_end, others }
        })
    }

    fn others(&self) -> &[(Box<str>, Option<Key>)] {
        self.others.as_deref().map_or(&[], |o| &o[..])
    }

    fn prefix(&self) -> &str {
        std::str::from_utf8(&self.packed[..self.prefix_end as usize]).unwrap_or_default()
    }

    fn suffix(&self) -> &str {
        std::str::from_utf8(&self.packed[self.prefix_end as usize..self.suffix_end as usize]).unwrap_or_default()
    }

    fn gaps(&self) -> &[u8] {
        &self.packed[self.suffix_end as usize..]
    }

    /// The templated entries' numbers, in order.
    pub fn numbers(&self) -> Vec<E164> {
        decode(self.gaps())
    }

    /// How many entries, without decoding the numbers (a LEB128 varint ends at each byte
    /// whose high bit is clear).
    pub fn len(&self) -> usize {
        self.gaps().iter().filter(|b| **b & 0x80 == 0).count() + self.others().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn view(&self) -> View<'_> {
        View { list: self, numbers: self.numbers(), prefix: self.prefix(), suffix: self.suffix() }
    }

    pub fn keys(&self) -> impl Iterator<Item = Key> + '_ {
        let others = self.others().iter().filter_map(|(_, k)| k.clone());
        self.numbers().into_iter().map(Key::Phone).chain(others)
    }
}

impl View<'_> {
    pub fn len(&self) -> usize {
        self.numbers.len() + self.list.others().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The URI of entry `i`, exactly as the client wrote it.
    pub fn uri(&self, i: usize) -> Cow<'_, str> {
        match self.numbers.get(i) {
            Some(_) => {
                let mut uri = String::with_capacity(self.templated_len());
                self.push_uri(i, &mut uri);
                Cow::Owned(uri)
            }
            None => Cow::Borrowed(&self.list.others()[i - self.numbers.len()].0),
        }
    }

    /// The URIs of entries `indices` written into one string, and where each is in it: a
    /// NOTIFY names up to its whole list, so one allocation rather than one a URI.
    pub fn uris(&self, indices: impl ExactSizeIterator<Item = usize>) -> (String, Vec<Range<usize>>) {
        let mut text = String::with_capacity(indices.len() * self.templated_len());
        let mut at = Vec::with_capacity(indices.len());
        for i in indices {
            let start = text.len();
            self.push_uri(i, &mut text);
            at.push(start..text.len());
        }
        (text, at)
    }

    /// Appends the URI of entry `i`.
    fn push_uri(&self, i: usize, out: &mut String) {
        match self.numbers.get(i) {
            Some(n) => {
                out.push_str(self.prefix);
                n.push_to(out);
                out.push_str(self.suffix);
            }
            None => out.push_str(&self.list.others()[i - self.numbers.len()].0),
        }
    }

    /// About the length of a templated entry's URI (a number is at most 15 digits and `+`).
    fn templated_len(&self) -> usize {
        self.prefix.len() + 16 + self.suffix.len()
    }

    pub fn key(&self, i: usize) -> Option<Key> {
        match self.numbers.get(i) {
            Some(n) => Some(Key::Phone(*n)),
            None => self.list.others()[i - self.numbers.len()].1.clone(),
        }
    }
}

/// Sorted numbers as LEB128 varints of the gaps between them.
fn encode(sorted: &[E164]) -> Vec<u8> {
    let mut out = Vec::with_capacity(sorted.len() * 4);
    let mut last = 0u64;
    for n in sorted {
        let mut gap = n.digits() - last;
        last = n.digits();
        while gap >= 0x80 {
            out.push(gap as u8 | 0x80);
            gap >>= 7;
        }
        out.push(gap as u8);
    }
    out.shrink_to_fit();
    out
}

fn decode(gaps: &[u8]) -> Vec<E164> {
    let mut out = Vec::with_capacity(gaps.len() / 3);
    let (mut last, mut gap, mut shift) = (0u64, 0u64, 0);
    for b in gaps {
        gap |= u64::from(b & 0x7f) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            last += gap;
            // Our own encoding of checked numbers: the index's cheap plausibility check
            // suffices, not `normalize`'s rules again (this runs for every NOTIFY).
            out.extend(E164::from_key(&last.to_be_bytes()));
            (gap, shift) = (0, 0);
        }
    }
    out
}

/// The prefix and suffix around the number when `e` is written `…{E.164}…`.
fn template_of(e: &Entry) -> Option<(String, String)> {
    let Some(Key::Phone(n)) = e.key else { return None };
    let mut text = [0; 21];
    let number = n.write_to(&mut text);
    let at = e.uri.find(number)?;
    Some((e.uri[..at].to_string(), e.uri[at + number.len()..].to_string()))
}

/// Whether `prefix` and `suffix` together have 32-bit offsets (`WatchedList::pack`).
fn fits_offsets(prefix: &str, suffix: &str) -> bool {
    u32::try_from(prefix.len() + suffix.len()).is_ok()
}

fn fits(uri: &str, prefix: &str, suffix: &str, n: E164) -> bool {
    let mut text = [0; 21];
    let number = n.write_to(&mut text);
    uri.len() == prefix.len() + number.len() + suffix.len()
        && uri.starts_with(prefix)
        && uri.ends_with(suffix)
        && &uri[prefix.len()..prefix.len() + number.len()] == number
}

#[cfg(test)]
mod tests {
    #[test]
    fn len_counts_without_decoding() {
        let entries: Vec<Entry> = (0..300u64)
            .map(|i| Entry { uri: format!("sip:+336{:08}@example.org;user=phone", i * 97_713).into(), key: Some(Key::Phone(format!("+336{:08}", i * 97_713).parse().unwrap())) })
            .chain(std::iter::once(Entry { uri: "sip:bob@example.org".into(), key: None }))
            .collect();
        let list = WatchedList::new(entries);
        assert_eq!(list.len(), list.view().len());
        assert_eq!(list.len(), 301);
    }

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
        let view = list.view();
        let mut back: Vec<String> = (0..view.len()).map(|i| view.uri(i).into_owned()).collect();
        let (text, at) = view.uris((0..view.len()).rev());
        let at_once: Vec<&str> = at.iter().rev().map(|r| &text[r.clone()]).collect();
        assert_eq!(at_once, back, "one string or one each, the same URIs");
        back.sort();
        let mut want = uris.clone();
        want.sort();
        assert_eq!(back, want);
        assert_eq!(list.numbers().len(), 2, "the two +E.164 entries of example.org");
        assert_eq!(list.keys().count(), 5);
    }

    /// The shape lists had in stored records before the packing (`durable.rs`, layout 1).
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Unpacked {
        prefix: Box<str>,
        suffix: Box<str>,
        gaps: Box<[u8]>,
        others: Box<[(Box<str>, Option<Key>)]>,
    }

    #[test]
    fn stored_layout_is_unchanged() {
        let uris = vec![
            "sip:+33612345678@example.org;user=phone".to_string(),
            "sip:+33698765432@example.org;user=phone".to_string(),
            "sip:bob@example.org".to_string(),
        ];
        let list = WatchedList::new(classify(uris, None));
        let bytes = postcard::to_allocvec(&list).unwrap();
        let old: Unpacked = postcard::from_bytes(&bytes).unwrap();
        assert_eq!((&*old.prefix, &*old.suffix), ("sip:", "@example.org;user=phone"));
        assert_eq!(old.others.len(), 1);
        // A record written before the packing reads back the same.
        let back: WatchedList = postcard::from_bytes(&postcard::to_allocvec(&old).unwrap()).unwrap();
        assert_eq!(postcard::to_allocvec(&back).unwrap(), bytes);
        let view = back.view();
        let got: Vec<String> = (0..view.len()).map(|i| view.uri(i).into_owned()).collect();
        assert_eq!(got, ["sip:+33612345678@example.org;user=phone", "sip:+33698765432@example.org;user=phone", "sip:bob@example.org"]);
    }

    proptest::proptest! {
        #[test]
        fn numbers_round_trip(digits in proptest::collection::vec(1_000_000u64..999_999_999_999_999, 0..300)) {
            let mut numbers: Vec<E164> = digits.iter().filter_map(|d| E164::from_digits(*d).ok()).collect();
            numbers.sort_unstable();
            numbers.dedup();
            proptest::prop_assert_eq!(decode(&encode(&numbers)), numbers);
        }
    }
}
