//! A second [`BindingStore`], in memory, for tests: shows that the index's contract and
//! the resolution path hold through the trait whatever the backend, as a Redis store must.
//! Test-only: it keeps nothing across restarts.

use super::bindings::{BindOutcome, Binding, BindingStore, Bindings, ChunkCounts, IndexError, Source, Stats};
use super::feed::{Change, ChangeFeed, ChangeReceiver};
use crate::clock::unix_now;
use crate::numbers::E164;
use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Default)]
pub struct MemoryBindings {
    state: Mutex<State>,
    feed: ChangeFeed,
}

#[derive(Default)]
struct State {
    forward: BTreeMap<E164, Binding>,
    reverse: BTreeMap<String, BTreeSet<E164>>,
}

impl State {
    fn bind(&mut self, n: E164, uri: &str, source: Source, now: u64) -> BindOutcome {
        let old = self.forward.get(&n).map(|b| b.sip_uri.clone());
        if old.as_deref() == Some(uri) {
            return BindOutcome::Unchanged;
        }
        if let Some(o) = &old {
            self.unlist(o, n);
        }
        self.forward.insert(n, Binding { number: n, sip_uri: uri.to_string(), bound_at: now, source });
        self.reverse.entry(uri.to_string()).or_default().insert(n);
        match old {
            Some(old_uri) => BindOutcome::Rebound { old_uri },
            None => BindOutcome::New,
        }
    }

    fn unlist(&mut self, uri: &str, n: E164) {
        if let Some(set) = self.reverse.get_mut(uri) {
            set.remove(&n);
            if set.is_empty() {
                self.reverse.remove(uri);
            }
        }
    }
}

fn change(n: E164, outcome: &BindOutcome, uri: &str) -> Change {
    let old = match outcome {
        BindOutcome::Rebound { old_uri } => Some(old_uri.clone()),
        _ => None,
    };
    Change { number: n, old, new: Some(uri.to_string()) }
}

impl BindingStore for MemoryBindings {
    fn bind(&self, n: E164, uri: &str, source: Source) -> Result<BindOutcome, IndexError> {
        let mut st = self.state.lock();
        let outcome = st.bind(n, uri, source, unix_now());
        if outcome != BindOutcome::Unchanged {
            self.feed.publish(change(n, &outcome, uri));
        }
        Ok(outcome)
    }

    fn unbind(&self, n: E164) -> Result<Option<Binding>, IndexError> {
        let mut st = self.state.lock();
        let Some(b) = st.forward.remove(&n) else { return Ok(None) };
        st.unlist(&b.sip_uri, n);
        self.feed.publish(Change { number: n, old: Some(b.sip_uri.clone()), new: None });
        Ok(Some(b))
    }

    fn lookup(&self, n: E164) -> Result<Option<Binding>, IndexError> {
        Ok(self.state.lock().forward.get(&n).cloned())
    }

    fn is_bound(&self, n: E164) -> Result<bool, IndexError> {
        Ok(self.state.lock().forward.contains_key(&n))
    }

    fn resolve(&self, numbers: &[E164]) -> Result<Vec<(E164, String)>, IndexError> {
        let st = self.state.lock();
        let mut seen = BTreeSet::new();
        Ok(numbers
            .iter()
            .filter(|n| seen.insert(**n))
            .filter_map(|n| st.forward.get(n).map(|b| (*n, b.sip_uri.clone())))
            .collect())
    }

    fn numbers_of(&self, uri: &str) -> Result<Vec<E164>, IndexError> {
        Ok(self.state.lock().reverse.get(uri).map(|s| s.iter().copied().collect()).unwrap_or_default())
    }

    fn apply_chunk(&self, rows: &[(E164, String)], source: Source) -> Result<ChunkCounts, IndexError> {
        let mut order: Vec<&(E164, String)> = rows.iter().collect();
        order.sort_by_key(|(n, _)| *n);
        let mut st = self.state.lock();
        let (mut counts, now, mut events) = (ChunkCounts::default(), unix_now(), Vec::new());
        for (n, uri) in order {
            let outcome = st.bind(*n, uri, source, now);
            match outcome {
                BindOutcome::Unchanged => counts.unchanged += 1,
                BindOutcome::New => counts.new += 1,
                BindOutcome::Rebound { .. } => counts.replaced += 1,
            }
            if outcome != BindOutcome::Unchanged {
                events.push(change(*n, &outcome, uri));
            }
        }
        events.into_iter().for_each(|e| self.feed.publish(e));
        Ok(counts)
    }

    fn bindings(&self) -> Bindings {
        let all: Vec<_> = self.state.lock().forward.values().cloned().map(Ok).collect();
        Box::new(all.into_iter())
    }

    fn changes(&self) -> ChangeReceiver {
        self.feed.subscribe()
    }

    fn len(&self) -> u64 {
        self.state.lock().forward.len() as u64
    }

    fn stats(&self) -> Result<Stats, IndexError> {
        let st = self.state.lock();
        let numbers = st.forward.len() as u64;
        Ok(Stats { numbers, sip_uris: st.reverse.len() as u64, size_on_disk: 0, path: Default::default() })
    }

    fn check_consistency(&self) -> Result<Vec<String>, IndexError> {
        let st = self.state.lock();
        let listed: usize = st.reverse.values().map(BTreeSet::len).sum();
        let mut problems: Vec<String> = st
            .forward
            .values()
            .filter(|b| !st.reverse.get(&b.sip_uri).is_some_and(|s| s.contains(&b.number)))
            .map(|b| format!("{} -> {} has no reverse entry", b.number, b.sip_uri))
            .collect();
        if listed != st.forward.len() {
            problems.push(format!("{listed} reverse entries for {} bindings", st.forward.len()));
        }
        Ok(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::{Format, ImportOptions, Index};
    use crate::presence::{PresenceStore, Published};
    use crate::resolution::{self, Key};
    use std::sync::Arc;
    use std::time::Duration;

    fn n(s: &str) -> E164 {
        s.parse().unwrap()
    }

    /// What every store must do, checked through the `Index` handle.
    fn keeps_the_contract(idx: &Index) {
        let (a, b) = (n("+33612345678"), n("+33612345679"));
        let mut feed = idx.changes();
        assert_eq!(idx.bind(a, "sip:bob@Example.COM", Source::Admin).unwrap(), BindOutcome::New);
        assert_eq!(idx.bind(a, "sip:bob@example.com", Source::Admin).unwrap(), BindOutcome::Unchanged, "canonical");
        let rebound = idx.bind(a, "sip:carol@example.com", Source::Admin).unwrap();
        assert_eq!(rebound, BindOutcome::Rebound { old_uri: "sip:bob@example.com".into() });
        assert!(idx.numbers_of("sip:bob@example.com").unwrap().is_empty(), "one binding per number");
        assert!(matches!(idx.bind(b, "tel:+33612345670", Source::Admin), Err(IndexError::InvalidUri(_))));
        let csv = format!("{b},sip:carol@example.com\n{a},sip:carol@example.com\n");
        let summary = idx.import(csv.as_bytes(), &ImportOptions::new(Format::Csv)).unwrap();
        assert_eq!((summary.imported, summary.unchanged), (1, 1));
        assert_eq!(idx.numbers_of("sip:carol@example.com").unwrap(), vec![a, b]);
        assert_eq!(idx.resolve(&[b, n("+33600000000"), a, b]).unwrap().iter().map(|(x, _)| *x).collect::<Vec<_>>(), vec![b, a]);
        assert_eq!(idx.unbind(a).unwrap().map(|x| x.sip_uri), Some("sip:carol@example.com".into()));
        assert_eq!((idx.len(), idx.is_bound(a).unwrap(), idx.iter().count()), (1, false, 1));
        let news: Vec<_> = std::iter::from_fn(|| feed.try_recv().ok()).map(|c| (c.old, c.new)).collect();
        let (bob, carol) = (Some("sip:bob@example.com".to_string()), Some("sip:carol@example.com".to_string()));
        assert_eq!(news, vec![(None, bob.clone()), (bob, carol.clone()), (None, carol.clone()), (carol, None)], "in commit order");
        assert!(idx.check_consistency().unwrap().is_empty());
    }

    #[test]
    fn sled_and_memory_stores_keep_the_same_contract() {
        let dir = tempfile::tempdir().unwrap();
        keeps_the_contract(&Index::open(dir.path()).unwrap());
        keeps_the_contract(&Index::with_store(Arc::new(MemoryBindings::default())));
    }

    #[test]
    fn resolution_reads_any_store() {
        let idx = Index::with_store(Arc::new(MemoryBindings::default()));
        let (presence, _changes) = PresenceStore::new();
        let num = n("+33612345678");
        idx.bind(num, "sip:bob@example.com", Source::Admin).unwrap();
        presence.publish("sip:bob@example.com", Published::basic(true), Duration::from_secs(60)).unwrap();
        let by_number = resolution::user_of(&idx, &presence, &Key::Phone(num)).unwrap().unwrap();
        assert_eq!(by_number.contact, "sip:bob@example.com");
        assert!(by_number.live.as_ref().is_some_and(|l| l.online));
        let by_uri = resolution::user_of(&idx, &presence, &Key::Sip("sip:bob@example.com".into())).unwrap().unwrap();
        assert_eq!(by_uri, by_number);
        let keys = [Some(Key::Phone(n("+33600000000"))), None, Some(Key::Phone(num))];
        let users = resolution::resolve_all(&idx, &presence, keys.into_iter());
        assert_eq!(users.iter().map(Option::is_some).collect::<Vec<_>>(), vec![false, false, true]);
        assert_eq!(resolution::subscriber_region(&idx, "sip:bob@example.com", None), num.region());
    }
}
