//! The names of the keys cluster mode itself keeps in Redis (under the cluster's prefix),
//! in one place so that docs/cluster.md and the code agree:
//!
//! | key | type | written by | read by | expiry |
//! |---|---|---|---|---|
//! | `nodes` | hash: node name → its last [`NodeInfo`] (JSON) | each node, its own field, at every renewal; removed by a clean stop or the taker | every node (who is dead?), admin | none |
//! | `lease:<node>` | string: [`NodeInfo`] (JSON) | the node, every third of `lease_ms` | every node, admin | `lease_ms` |
//! | `subs:<node>` | hash: Call-ID NUL our tag → stored subscription (postcard) | the node's write-behind batches | the node at start, the taker | none (emptied by the taker or a clean stop) |
//! | `takeover:<node>` | string: the taker's name | the survivor that claimed it (SET NX) | survivors, the node itself at start | [`CLAIM`], renewed while taking over |
//!
//! Owns names only.

use super::Cluster;
use std::time::Duration;

pub use super::lease::NodeInfo;

/// How long a takeover claim lasts without renewal (a taker that dies lets another one go on).
pub const CLAIM: Duration = Duration::from_secs(30);

impl Cluster {
    pub fn nodes_key(&self) -> String {
        self.redis.key("nodes")
    }

    pub fn lease_key(&self, node: &str) -> String {
        self.redis.key(&format!("lease:{node}"))
    }

    pub fn subs_key(&self, node: &str) -> String {
        self.redis.key(&format!("subs:{node}"))
    }

    pub fn takeover_key(&self, node: &str) -> String {
        self.redis.key(&format!("takeover:{node}"))
    }
}
