//! Taking over a dead node: the survivor that claims it (`SET takeover:<node> NX`, so one
//! survivor only) reads its subscription records from `subs:<node>` and sends each
//! subscriber the last NOTIFY, `terminated;reason=deactivated`, from the stored dialog
//! (its route set leads back through the load balancer; its CSeq starts above the dead
//! node's reservation), paced at `takeover_per_second`, removing each record as it goes.
//! The phone re-subscribes at once, through the load balancer, to a live node. With
//! `cluster.takeover = "adopt"` the survivor instead goes on with each subscription as its
//! own (a full state in the same dialog), for phones that do not re-subscribe on
//! `deactivated` (liblinphone 5.1). Owns the claim and that pass; the NOTIFYs are the
//! subscription layer's (`subscription::resume::deactivate_stored`, `adopt`).

use super::keys::CLAIM;
use super::Cluster;
use crate::config::Takeover;
use crate::storage::StorageError;
use crate::subscription::{self, Shared};
use std::sync::Arc;
use std::time::Duration;

/// Records as (key, encoded record).
type Records = Vec<(Vec<u8>, Vec<u8>)>;

/// What a takeover needs of this node.
pub struct Taker {
    pub cluster: Arc<Cluster>,
    pub shared: Arc<Shared>,
    /// Our Via sent-by and Contact host:port in the NOTIFYs (answers must reach us).
    pub sent_by: String,
}

/// Takes `dead` over unless another survivor has, or it came back. Returns the subscribers
/// told (None: not ours to take over).
pub async fn take_over(taker: Arc<Taker>, dead: String) -> Result<Option<usize>, StorageError> {
    let (t, d) = (taker.clone(), dead.clone());
    if !tokio::task::spawn_blocking(move || t.cluster.claim(&d)).await.map_err(StorageError::new)?? {
        return Ok(None);
    }
    tracing::warn!(node = %dead, "node's lease expired: taking its subscribers over");
    let per_second = taker.cluster.takeover_per_second.max(1) as usize;
    let per_tick = (per_second / 100).max(1);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let (mut cursor, mut told) = (0u64, 0usize);
    loop {
        let (t, d) = (taker.clone(), dead.clone());
        let (next, records) = tokio::task::spawn_blocking(move || t.cluster.scan_records(&d, cursor, per_second)).await.map_err(StorageError::new)??;
        let keys: Vec<Vec<u8>> = records.iter().map(|(k, _)| k.clone()).collect();
        for batch in records.chunks(per_tick) {
            tick.tick().await;
            for (_, bytes) in batch {
                told += usize::from(tell(&taker, bytes));
            }
        }
        let (t, d) = (taker.clone(), dead.clone());
        tokio::task::spawn_blocking(move || t.cluster.forget_records(&d, &keys)).await.map_err(StorageError::new)??;
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    let (t, d) = (taker.clone(), dead.clone());
    tokio::task::spawn_blocking(move || t.cluster.finish(&d)).await.map_err(StorageError::new)??;
    tracing::warn!(node = %dead, told, how = %taker.cluster.takeover, "dead node taken over");
    Ok(Some(told))
}

/// Adopts one record, or starts its last NOTIFY (`deactivated`, also when it cannot be
/// adopted); false when there is nothing to send (expired or unreadable).
fn tell(taker: &Arc<Taker>, bytes: &[u8]) -> bool {
    let Some(stored) = subscription::durable::decode(bytes) else {
        tracing::warn!(bytes = bytes.len(), "a taken-over subscription record does not decode: skipped");
        return false;
    };
    if stored.expires_at <= crate::clock::unix_now() {
        return false;
    }
    let stored = if taker.cluster.takeover == Takeover::Adopt {
        match subscription::resume::adopt(&taker.shared, stored, &taker.sent_by) {
            Ok(()) => return true,
            // Not adopted (over this node's caps, say): the phone is told to go elsewhere.
            Err(stored) => stored,
        }
    } else {
        stored
    };
    let taker = taker.clone();
    tokio::spawn(async move {
        subscription::resume::deactivate_stored(&taker.shared, stored, &taker.sent_by).await;
    });
    true
}

impl Cluster {
    /// Claims `dead` (one survivor only), then checks its lease is still gone (a node that
    /// restarts sets its lease first, then looks for a claim: one of the two sees the other).
    fn claim(&self, dead: &str) -> Result<bool, StorageError> {
        self.redis.run(|c| {
            let key = self.takeover_key(dead);
            let set: Option<String> = ::redis::cmd("SET").arg(&key).arg(&self.node).arg("NX").arg("PX").arg(CLAIM.as_millis() as u64).query(c)?;
            if set.is_none() {
                return Ok(false);
            }
            let back: bool = ::redis::cmd("EXISTS").arg(self.lease_key(dead)).query(c)?;
            if back {
                ::redis::cmd("DEL").arg(&key).query::<()>(c)?;
                return Ok(false);
            }
            Ok(true)
        })
    }

    /// Up to about `count` records of `dead` from `cursor`, and the cursor after them
    /// (0: done).
    fn scan_records(&self, dead: &str, cursor: u64, count: usize) -> Result<(u64, Records), StorageError> {
        let (next, flat): (u64, Vec<Vec<u8>>) = self.redis.run(|c| ::redis::cmd("HSCAN").arg(self.subs_key(dead)).arg(cursor).arg("COUNT").arg(count).query(c))?;
        let mut pairs = Vec::with_capacity(flat.len() / 2);
        let mut items = flat.into_iter();
        while let (Some(k), Some(v)) = (items.next(), items.next()) {
            pairs.push((k, v));
        }
        Ok((next, pairs))
    }

    /// Removes the records handled, and keeps the claim alive.
    fn forget_records(&self, dead: &str, keys: &[Vec<u8>]) -> Result<(), StorageError> {
        self.redis.run(|c| {
            let mut pipe = ::redis::pipe();
            if !keys.is_empty() {
                pipe.cmd("HDEL").arg(self.subs_key(dead)).arg(keys).ignore();
            }
            pipe.cmd("PEXPIRE").arg(self.takeover_key(dead)).arg(CLAIM.as_millis() as u64).ignore();
            pipe.query::<()>(c)
        })
    }

    /// The dead node leaves the list (unless it came back meanwhile) and the claim ends.
    fn finish(&self, dead: &str) -> Result<(), StorageError> {
        self.redis.run(|c| {
            let back: bool = ::redis::cmd("EXISTS").arg(self.lease_key(dead)).query(c)?;
            if !back {
                ::redis::cmd("HDEL").arg(self.nodes_key()).arg(dead).query::<()>(c)?;
            }
            ::redis::cmd("DEL").arg(self.takeover_key(dead)).query::<()>(c)
        })
    }
}
