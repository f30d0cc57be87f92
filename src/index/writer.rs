//! One atomic change of the sled store: edits of the forward and reverse buckets made
//! under the writer lock, read back as they go, and committed as one sled batch (with the
//! count), then mirrored and flushed. It must not publish changes nor take the lock: the
//! store's write paths do both around it.

use super::encoding::{decode_numbers, decode_value, encode_value, value_uri, FWD, META_COUNT, REV};
use super::packed::{self, Edit, InTree};
use super::sled_store::SledBindings;
use super::{BindOutcome, Binding, IndexError, Source};
use crate::numbers::E164;
use std::collections::BTreeMap;

/// One atomic change of both directions, built under the writer lock and committed as one
/// sled batch.
pub(super) struct Writer<'a> {
    inner: &'a SledBindings,
    fwd: Edit,
    rev: Edit,
    /// The reverse lists this change touched, decoded, and whether each changed: written
    /// once at commit (a 20,000-line import to one PBX URI re-encoded its list per line).
    lists: BTreeMap<String, (Vec<E164>, bool)>,
}

impl<'a> Writer<'a> {
    pub(super) fn new(inner: &'a SledBindings) -> Writer<'a> {
        Writer { inner, fwd: Edit::default(), rev: Edit::default(), lists: BTreeMap::new() }
    }

    fn rev_tree(&self) -> InTree<'a> {
        InTree { tree: &self.inner.tree, prefix: REV }
    }

    /// The binding of `n` as this change leaves it so far.
    fn binding(&mut self, n: E164) -> Result<Option<Binding>, IndexError> {
        match self.fwd.get(&self.inner.forward, &n.as_key())? {
            Some(v) => Ok(Some(decode_value(n, v)?)),
            None => Ok(None),
        }
    }

    pub(super) fn bind(&mut self, n: E164, uri: &str, bound_at: u64, source: Source) -> Result<BindOutcome, IndexError> {
        let key = n.as_key();
        let old = match self.fwd.get(&self.inner.forward, &key)? {
            Some(v) => Some(value_uri(v)?.to_string()),
            None => None,
        };
        if old.as_deref() == Some(uri) {
            return Ok(BindOutcome::Unchanged);
        }
        self.fwd.set(&self.inner.forward, &key, Some(encode_value(uri, bound_at, source)))?;
        if let Some(o) = &old {
            self.reverse(o, n, false)?;
        }
        self.reverse(uri, n, true)?;
        Ok(match old {
            Some(old_uri) => BindOutcome::Rebound { old_uri },
            None => BindOutcome::New,
        })
    }

    pub(super) fn unbind(&mut self, n: E164) -> Result<Option<Binding>, IndexError> {
        let Some(b) = self.binding(n)? else { return Ok(None) };
        self.fwd.set(&self.inner.forward, &n.as_key(), None)?;
        self.reverse(&b.sip_uri, n, false)?;
        Ok(Some(b))
    }

    /// Adds `n` to (or removes it from) `uri`'s numbers.
    fn reverse(&mut self, uri: &str, n: E164, add: bool) -> Result<(), IndexError> {
        if !self.lists.contains_key(uri) {
            let current = match self.rev.get(&self.rev_tree(), uri.as_bytes())? {
                Some(v) => decode_numbers(v)?,
                None => Vec::new(),
            };
            self.lists.insert(uri.to_string(), (current, false));
        }
        let Some((numbers, changed)) = self.lists.get_mut(uri) else { return Ok(()) };
        match (numbers.binary_search(&n), add) {
            (Err(at), true) => numbers.insert(at, n),
            (Ok(at), false) => {
                numbers.remove(at);
            }
            _ => return Ok(()),
        }
        *changed = true;
        Ok(())
    }

    /// Writes the change and `count` in one batch, updates the mirror, flushes.
    pub(super) fn commit(mut self, count: u64, extra: impl FnOnce(&mut sled::Batch)) -> Result<(), IndexError> {
        let tree = self.rev_tree();
        for (uri, (numbers, changed)) in std::mem::take(&mut self.lists) {
            if changed {
                let value = (!numbers.is_empty()).then(|| numbers.iter().flat_map(|x| x.as_key()).collect());
                self.rev.set(&tree, uri.as_bytes(), value)?;
            }
        }
        let fwd = self.fwd.finish();
        let rev = self.rev.finish();
        let mut batch = sled::Batch::default();
        packed::add_to_batch(&mut batch, FWD, &fwd);
        packed::add_to_batch(&mut batch, REV, &rev);
        batch.insert(META_COUNT, &count.to_be_bytes());
        extra(&mut batch);
        self.inner.tree.apply_batch(batch)?;
        self.inner.forward.write().apply(&fwd);
        self.inner.db.flush()?;
        Ok(())
    }
}
