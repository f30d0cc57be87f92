//! The in-memory mirror of the bindings kept in Redis, one per node: every lookup and
//! address-book resolution is answered from here, never from Redis. Compact on purpose
//! (10M bindings is a target): a number is a `u64` key to a 12-byte slot, each distinct
//! URI is stored once (shared by its numbers) with its numbers for the reverse lookup.
//!
//! Changed only by the stream consumer (`binding_feed.rs`) and, when the consumer is late,
//! by a local writer that must see its own write; it must not talk to Redis.

use crate::storage::bindings::{Binding, Source};
use crate::numbers::E164;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

/// A binding as stored: URI id, bound_at (Unix seconds), source code.
#[derive(Clone, Copy)]
struct Slot {
    uri: u32,
    at: u32,
    source: u8,
}

/// A distinct URI and its first number (most URIs have one; the others are in
/// `Mirror::more`).
struct UriSlot {
    uri: Option<Arc<str>>,
    first: u64,
}

/// A fast hasher for number keys (already well spread digits; multiply-shift mixing).
#[derive(Default)]
pub(super) struct NumberHasher(u64);

impl Hasher for NumberHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_u64(&mut self, n: u64) {
        let x = (n ^ (n >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        self.0 = x ^ (x >> 32);
    }
}

type NumberMap<V> = HashMap<u64, V, BuildHasherDefault<NumberHasher>>;

/// The bindings of the cluster, as this node last read them.
#[derive(Default)]
pub(super) struct Mirror {
    forward: NumberMap<Slot>,
    uris: Vec<UriSlot>,
    ids: HashMap<Arc<str>, u32>,
    /// The numbers after the first of URIs that have several, by URI id.
    more: HashMap<u32, Vec<u64>>,
    free: Vec<u32>,
}

/// One binding's value as kept in Redis: `uri \t bound_at \t source`.
pub(super) struct Value<'a> {
    pub uri: &'a str,
    pub at: u64,
    pub source: Source,
}

impl<'a> Value<'a> {
    pub fn parse(v: &'a str) -> Option<Value<'a>> {
        let mut parts = v.split('\t');
        let uri = parts.next().filter(|u| !u.is_empty())?;
        let at = parts.next()?.parse().ok()?;
        let source = source_of(parts.next()?);
        Some(Value { uri, at, source })
    }

    pub fn encode(uri: &str, at: u64, source: Source) -> String {
        format!("{uri}\t{at}\t{}", source_code(source))
    }
}

pub(super) fn source_code(s: Source) -> &'static str {
    match s {
        Source::Admin => "admin",
        Source::Import => "import",
        Source::Cli => "cli",
        Source::Verification => "verification",
        Source::Other => "other",
    }
}

fn source_of(s: &str) -> Source {
    match s {
        "admin" => Source::Admin,
        "import" => Source::Import,
        "cli" => Source::Cli,
        "verification" => Source::Verification,
        _ => Source::Other,
    }
}

fn source_byte(s: Source) -> u8 {
    match s {
        Source::Admin => 1,
        Source::Import => 2,
        Source::Cli => 3,
        Source::Verification => 4,
        Source::Other => 0,
    }
}

fn byte_source(b: u8) -> Source {
    match b {
        1 => Source::Admin,
        2 => Source::Import,
        3 => Source::Cli,
        4 => Source::Verification,
        _ => Source::Other,
    }
}

impl Mirror {
    pub fn with_capacity(n: usize) -> Mirror {
        Mirror {
            forward: NumberMap::with_capacity_and_hasher(n, Default::default()),
            uris: Vec::with_capacity(n),
            ids: HashMap::with_capacity(n),
            more: HashMap::new(),
            free: Vec::new(),
        }
    }

    pub fn len(&self) -> u64 {
        self.forward.len() as u64
    }

    pub fn uri_count(&self) -> u64 {
        self.ids.len() as u64
    }

    /// The URI `n` is bound to.
    pub fn uri_of(&self, n: u64) -> Option<&Arc<str>> {
        let slot = self.forward.get(&n)?;
        self.uris.get(slot.uri as usize)?.uri.as_ref()
    }

    pub fn contains(&self, n: u64) -> bool {
        self.forward.contains_key(&n)
    }

    pub fn binding(&self, n: E164) -> Option<Binding> {
        let slot = self.forward.get(&n.digits())?;
        let uri = self.uris.get(slot.uri as usize)?.uri.as_ref()?;
        Some(Binding { number: n, sip_uri: uri.to_string(), bound_at: u64::from(slot.at), source: byte_source(slot.source) })
    }

    /// The numbers bound to `uri`, sorted.
    pub fn numbers_of(&self, uri: &str) -> Vec<u64> {
        let Some(id) = self.ids.get(uri) else { return Vec::new() };
        let first = self.uris[*id as usize].first;
        let more = self.more.get(id).map(Vec::as_slice).unwrap_or_default();
        let mut all: Vec<u64> = std::iter::once(first).chain(more.iter().copied()).collect();
        all.sort_unstable();
        all
    }

    /// Binds `n` (replacing any binding); returns the old URI.
    pub fn set(&mut self, n: u64, v: &Value) -> Option<Arc<str>> {
        let old = self.remove(n);
        let uri = self.intern(v.uri, n);
        self.forward.insert(n, Slot { uri, at: v.at.min(u64::from(u32::MAX)) as u32, source: source_byte(v.source) });
        old
    }

    /// Unbinds `n`; returns the old URI.
    pub fn remove(&mut self, n: u64) -> Option<Arc<str>> {
        let id = self.forward.remove(&n)?.uri;
        let u = self.uris.get_mut(id as usize)?;
        let uri = u.uri.clone();
        let others = self.more.get_mut(&id);
        match others {
            Some(v) => {
                if u.first == n {
                    u.first = v.pop().unwrap_or(n);
                } else {
                    v.retain(|m| *m != n);
                }
                if v.is_empty() {
                    self.more.remove(&id);
                }
            }
            None => {
                if let Some(s) = u.uri.take() {
                    self.ids.remove(&s);
                }
                self.free.push(id);
            }
        }
        uri
    }

    fn intern(&mut self, uri: &str, n: u64) -> u32 {
        if let Some(id) = self.ids.get(uri) {
            self.more.entry(*id).or_default().push(n);
            return *id;
        }
        let s: Arc<str> = Arc::from(uri);
        let slot = UriSlot { uri: Some(s.clone()), first: n };
        let id = match self.free.pop() {
            Some(id) => {
                self.uris[id as usize] = slot;
                id
            }
            None => {
                self.uris.push(slot);
                (self.uris.len() - 1) as u32
            }
        };
        self.ids.insert(s, id);
        id
    }

    /// Every bound number, sorted.
    pub fn numbers(&self) -> Vec<u64> {
        let mut all: Vec<u64> = self.forward.keys().copied().collect();
        all.sort_unstable();
        all
    }

    /// Every (number, URI), in no order (for diffs).
    pub fn entries(&self) -> impl Iterator<Item = (u64, &Arc<str>)> + '_ {
        self.forward.iter().filter_map(|(n, s)| Some((*n, self.uris.get(s.uri as usize)?.uri.as_ref()?)))
    }

    /// Problems of the mirror's own invariants (forward and reverse agree).
    pub fn check(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut listed = 0usize;
        for (uri, id) in &self.ids {
            for n in self.numbers_of(uri) {
                listed += 1;
                if self.forward.get(&n).map(|s| s.uri) != Some(*id) {
                    problems.push(format!("reverse {uri} -> {n} but the number is not bound to it"));
                }
            }
        }
        if listed != self.forward.len() {
            problems.push(format!("{listed} reverse entries for {} bindings", self.forward.len()));
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_both_directions_and_reuses_uri_slots() {
        let mut m = Mirror::default();
        let v = |uri| Value { uri, at: 7, source: Source::Admin };
        assert!(m.set(1, &v("sip:a@x")).is_none());
        m.set(2, &v("sip:a@x"));
        m.set(3, &v("sip:a@x"));
        assert_eq!(m.numbers_of("sip:a@x"), vec![1, 2, 3]);
        assert_eq!(m.set(1, &v("sip:b@x")).as_deref(), Some("sip:a@x"));
        assert_eq!(m.numbers_of("sip:a@x"), vec![2, 3]);
        m.remove(2);
        m.remove(3);
        assert!(m.numbers_of("sip:a@x").is_empty());
        m.set(4, &v("sip:c@x"));
        assert_eq!(m.uris.len(), 2, "the freed URI slot is reused");
        assert_eq!(m.uri_of(4).map(|s| s.to_string()), Some("sip:c@x".into()));
        assert!(m.check().is_empty(), "{:?}", m.check());
        let p = Value::parse("sip:a@x\t12\timport").unwrap();
        assert_eq!((p.uri, p.at, p.source), ("sip:a@x", 12, Source::Import));
        assert!(Value::parse("\t1\tadmin").is_none());
    }
}
