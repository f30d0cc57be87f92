//! This node's lease: `lease:<node>` in Redis, set for `lease_ms` and renewed every third
//! of it, saying where the node listens and what it holds; and its entry in `nodes`, so the
//! others notice when the lease is gone (`takeover`). Owns joining (start), renewing and
//! leaving (clean stop); must not send SIP.

use super::Cluster;
use crate::storage::StorageError;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// What a node tells the others in its lease (and leaves in `nodes` when it dies).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeInfo {
    /// SIP listeners, `udp:127.0.0.1:5060` style.
    pub sip: Vec<String>,
    /// The admin listener, when there is one.
    pub admin: Option<String>,
    /// When it started, Unix seconds.
    pub started: u64,
    /// Subscriptions it holds, and the entries of their lists.
    pub subscriptions: u64,
    pub entries: u64,
}

/// What a start finds of this node's former life.
pub struct Joined {
    /// A survivor claimed this node's name: none of its stored subscriptions is ours now.
    pub taken_over: bool,
    /// The records still in `subs:<node>` (the ones a restart may resume).
    pub records: HashSet<Vec<u8>>,
}

impl Cluster {
    /// Takes the lease and the entry in `nodes`, then looks for a takeover of this name
    /// (in that order: a survivor that claims us after our lease is back sees it and stops).
    pub fn join(&self, info: &NodeInfo) -> Result<Joined, StorageError> {
        self.renew(info)?;
        self.redis.run(|c| {
            let taker: Option<String> = ::redis::cmd("GET").arg(self.takeover_key(&self.node)).query(c)?;
            let records: HashSet<Vec<u8>> = ::redis::cmd("HKEYS").arg(self.subs_key(&self.node)).query(c)?;
            if let Some(taker) = &taker {
                tracing::warn!(node = %self.node, %taker, "this node's subscriptions were taken over by a survivor: none is resumed");
            }
            Ok(Joined { taken_over: taker.is_some(), records })
        })
    }

    /// Sets the lease for another `lease` and the entry in `nodes`; nothing once leaving.
    /// Returns whether the entry was missing (after a start: a survivor took this node over
    /// while it could not renew).
    pub fn renew(&self, info: &NodeInfo) -> Result<bool, StorageError> {
        let leaving = self.leaving.lock();
        if *leaving {
            return Ok(false);
        }
        let value = serde_json::to_string(info).map_err(StorageError::new)?;
        let ms = self.lease.as_millis() as u64;
        self.redis.run(|c| {
            ::redis::pipe()
                .cmd("SET")
                .arg(self.lease_key(&self.node))
                .arg(&value)
                .arg("PX")
                .arg(ms)
                .ignore()
                .cmd("HSET")
                .arg(self.nodes_key())
                .arg(&self.node)
                .arg(&value)
                .query::<(u64,)>(c)
                .map(|(added,)| added == 1)
        })
    }

    /// A clean stop, once its subscribers were told (or, adopting, once its records are
    /// written): gives the lease up. When records are left (to adopt, or subscribers not
    /// told within the grace time), the node stays listed so that a survivor takes them
    /// over at its next check; else it leaves the list.
    pub fn leave(&self) -> Result<(), StorageError> {
        *self.leaving.lock() = true;
        let left: u64 = self.redis.run(|c| {
            ::redis::cmd("DEL").arg(self.lease_key(&self.node)).query::<()>(c)?;
            ::redis::cmd("HLEN").arg(self.subs_key(&self.node)).query(c)
        })?;
        if left > 0 {
            tracing::info!(left, "subscriptions left to a survivor, which takes them over at its next check");
            return Ok(());
        }
        self.redis.run(|c| ::redis::cmd("HDEL").arg(self.nodes_key()).arg(&self.node).query::<()>(c))?;
        tracing::info!(node = %self.node, "left the cluster");
        Ok(())
    }
}
