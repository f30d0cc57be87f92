//! Migration of a store written in layout 1 (one sled key per binding and per reverse
//! entry) to the bucket layout, at open. It must not run beside writers: `open` calls it
//! before the store is shared.

use super::encoding::{decode_number, decode_value, OLD_NUM, OLD_REV};
use super::sled_store::SledBindings;
use super::writer::Writer;
use super::IndexError;
use std::sync::atomic::Ordering;

impl SledBindings {
    /// Rewrites a store of layout 1 (one key per binding) into buckets, a chunk at a time:
    /// each chunk adds the buckets and removes the old keys in one batch, so a crash in the
    /// middle leaves every binding in exactly one of the two layouts.
    pub(super) fn migrate_layout_1(&self) -> Result<(), IndexError> {
        const CHUNK: usize = 20_000;
        let mut moved = 0u64;
        loop {
            let mut old_keys = Vec::with_capacity(CHUNK * 2);
            let mut w = Writer::new(self);
            for r in self.tree.scan_prefix([OLD_NUM]).take(CHUNK) {
                let (k, v) = r?;
                let n = decode_number(&k[1..])?;
                // Layout 1 value: [version 1][bound_at u64][source u8][uri].
                let b = decode_value(n, v.get(1..).unwrap_or_default())?;
                w.bind(n, &b.sip_uri, b.bound_at, b.source)?;
                let mut rk = vec![OLD_REV];
                rk.extend_from_slice(b.sip_uri.as_bytes());
                rk.push(0);
                rk.extend_from_slice(&n.as_key());
                old_keys.push(k.to_vec());
                old_keys.push(rk);
            }
            if old_keys.is_empty() {
                break;
            }
            moved += old_keys.len() as u64 / 2;
            w.commit(self.count.load(Ordering::Relaxed), |batch| {
                for k in old_keys {
                    batch.remove(k);
                }
            })?;
        }
        // Reverse keys of layout 1 whose number key was already gone (none in a consistent store).
        let stray: Vec<sled::IVec> = self.tree.scan_prefix([OLD_REV]).keys().collect::<Result<_, _>>()?;
        for k in stray {
            self.tree.remove(k)?;
        }
        self.db.flush()?;
        if moved > 0 {
            tracing::info!(bindings = moved, "index migrated to the bucket layout");
        }
        Ok(())
    }
}
