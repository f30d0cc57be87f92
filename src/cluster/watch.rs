//! What a node does all along in cluster mode: at start, joins (lease, node list) and
//! keeps only the stored subscriptions still its own; then, every third of the lease,
//! renews its lease and looks for nodes whose lease is gone, and takes them over
//! (`takeover`). A dead node is noticed within the lease time and a third of it.
//!
//! After Redis was unreachable, every lease may have run out meanwhile: a node that gets
//! through again waits one lease before it looks for dead nodes, so that the live ones
//! renew first. A node that finds it was taken over while it could not renew (its entry
//! gone) ends its own subscriptions: with `deactivated` too when their phones were told to
//! move, silently when a survivor adopted them (it speaks in those dialogs now).
//! Owns that loop; must not touch the subscriptions other than through the table.

use super::lease::NodeInfo;
use super::records::RedisRecords;
use super::takeover::{self, Taker};
use super::Cluster;
use crate::config::Takeover;
use crate::limits::Limits;
use crate::storage::StorageError;
use crate::subscription::{self, Shared};
use parking_lot::Mutex;
use std::collections::HashSet;
use std::sync::Arc;
use tokio::sync::watch;

/// Where this node listens, for its lease.
pub struct Listening {
    pub sip: Vec<String>,
    pub admin: Option<String>,
    /// Our Via sent-by and Contact host:port in a taken-over NOTIFY.
    pub sent_by: String,
}

/// Joins the cluster before the stored subscriptions are resumed, then keeps the lease
/// and watches the others until `shutdown`.
pub async fn start(cluster: Arc<Cluster>, shared: Arc<Shared>, limits: Arc<Limits>, at: Listening, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let started = crate::clock::unix_now();
    let (sip, admin) = (at.sip, at.admin);
    let info = move || NodeInfo {
        sip: sip.clone(),
        admin: admin.clone(),
        started,
        subscriptions: limits.subscriptions() as u64,
        entries: limits.entries_held() as u64,
    };
    let (c, first) = (cluster.clone(), info());
    let joined = tokio::task::spawn_blocking(move || c.join(&first)).await??;
    shared.store.retain(|k| !joined.taken_over && joined.records.contains(k));
    shared.store.mirror_to(Arc::new(RedisRecords::new(cluster.clone())));
    let taker = Arc::new(Taker { cluster, shared, sent_by: at.sent_by });
    tokio::spawn(keep(taker, Box::new(info), shutdown));
    Ok(())
}

/// Renews the lease and takes over dead nodes, every third of the lease.
async fn keep(taker: Arc<Taker>, info: Box<dyn Fn() -> NodeInfo + Send + Sync>, mut shutdown: watch::Receiver<bool>) {
    let info: Arc<dyn Fn() -> NodeInfo + Send + Sync> = Arc::from(info);
    let taking = Arc::new(Mutex::new(HashSet::<String>::new()));
    let mut tick = tokio::time::interval(taker.cluster.lease / 3);
    let mut failing = false;
    let mut quiet_until = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let (c, i) = (taker.cluster.clone(), info.clone());
        let look = tokio::time::Instant::now() >= quiet_until;
        let renewed = tokio::task::spawn_blocking(move || {
            let lost = c.renew(&i())?;
            Ok::<_, StorageError>((lost, if look { c.dead_nodes()? } else { Vec::new() }))
        });
        let dead = match renewed.await {
            Ok(Ok((lost, dead))) => {
                if lost {
                    let woken = if taker.cluster.takeover == Takeover::Adopt {
                        tracing::error!("this node was taken over while it could not renew its lease: a survivor adopted its subscriptions; dropping them here without a NOTIFY");
                        taker.shared.table.hand_over_all()
                    } else {
                        tracing::error!("this node was taken over while it could not renew its lease: its subscribers were told to move; ending its subscriptions");
                        taker.shared.table.deactivate_all()
                    };
                    subscription::actor::resume(woken, &taker.shared);
                }
                dead
            }
            Ok(Err(e)) => {
                // Looks again one lease after it gets through (the first tick then is quiet).
                quiet_until = tokio::time::Instant::now() + taker.cluster.lease + taker.cluster.lease / 3;
                if !failing {
                    tracing::error!("cluster: lease not renewed ({e}); other nodes take this one over if it lasts past the lease");
                }
                failing = true;
                continue;
            }
            Err(_) => continue,
        };
        if failing {
            tracing::info!("cluster: lease renewed again; looking for dead nodes after one lease");
            failing = false;
        }
        for node in dead {
            if taking.lock().insert(node.clone()) {
                tokio::spawn(take(taker.clone(), node, taking.clone()));
            }
        }
    }
}

async fn take(taker: Arc<Taker>, node: String, taking: Arc<Mutex<HashSet<String>>>) {
    if let Err(e) = takeover::take_over(taker, node.clone()).await {
        tracing::error!(%node, "takeover interrupted ({e}); it is claimed again once the claim expires");
    }
    taking.lock().remove(&node);
}

impl Cluster {
    /// The listed nodes, other than this one, whose lease is gone.
    fn dead_nodes(&self) -> Result<Vec<String>, StorageError> {
        self.redis.run(|c| {
            let names: Vec<String> = ::redis::cmd("HKEYS").arg(self.nodes_key()).query(c)?;
            let others: Vec<String> = names.into_iter().filter(|n| *n != self.node).collect();
            if others.is_empty() {
                return Ok(Vec::new());
            }
            let mut pipe = ::redis::pipe();
            for n in &others {
                pipe.cmd("EXISTS").arg(self.lease_key(n));
            }
            let alive: Vec<bool> = pipe.query(c)?;
            Ok(others.into_iter().zip(alive).filter(|(_, a)| !a).map(|(n, _)| n).collect())
        })
    }
}
