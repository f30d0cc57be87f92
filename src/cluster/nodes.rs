//! The operators' view of the cluster (`GET /cluster/nodes` on the admin listener): every
//! listed node, alive or not, its lease time left and what its lease says. Reads only.

use super::lease::NodeInfo;
use super::Cluster;
use crate::storage::StorageError;
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct Listing {
    /// This node's name.
    pub node: String,
    pub lease_ms: u64,
    pub nodes: Vec<NodeView>,
}

#[derive(Debug, Serialize)]
pub struct NodeView {
    pub name: String,
    pub alive: bool,
    /// Lease time left (0: expired).
    pub lease_left_ms: u64,
    /// Who is taking it over, while someone is.
    pub taken_over_by: Option<String>,
    /// What its lease says (the last one seen, for a dead node).
    #[serde(flatten)]
    pub info: NodeInfo,
}

impl Cluster {
    /// Every listed node, by name: the list, then every node's lease, its time left and
    /// its claimant in one pipeline.
    pub fn list_nodes(&self) -> Result<Listing, StorageError> {
        let listed: Vec<(String, String)> = self.redis.run(|c| ::redis::cmd("HGETALL").arg(self.nodes_key()).query(c))?;
        let leases: Vec<(Option<String>, i64, Option<String>)> = self.redis.run(|c| {
            if listed.is_empty() {
                return Ok(Vec::new());
            }
            let mut pipe = ::redis::pipe();
            for (name, _) in &listed {
                pipe.cmd("GET").arg(self.lease_key(name)).cmd("PTTL").arg(self.lease_key(name)).cmd("GET").arg(self.takeover_key(name));
            }
            let flat: Vec<::redis::Value> = pipe.query(c)?;
            flat.chunks(3).map(|one| Ok(::redis::from_redis_value(::redis::Value::Array(one.to_vec()))?)).collect()
        })?;
        let mut nodes = Vec::with_capacity(listed.len());
        for ((name, last), (lease, left, taker)) in listed.into_iter().zip(leases) {
            let info = serde_json::from_str(lease.as_deref().unwrap_or(&last)).unwrap_or_default();
            nodes.push(NodeView { alive: lease.is_some(), lease_left_ms: left.max(0) as u64, taken_over_by: taker, info, name });
        }
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Listing { node: self.node.clone(), lease_ms: self.lease.as_millis() as u64, nodes })
    }
}
