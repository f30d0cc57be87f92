//! Cluster mode: several equal nodes sharing their state in Redis, a SIP load balancer in
//! front (docs/cluster.md). `[cluster]` turns it on; without it none of this runs and the
//! server is one process with sled.
//!
//! What lives where: the stores (`storage::redis`) keep the shared state; this module keeps
//! what only a cluster has: this node's name and lease, the list of nodes, and taking over
//! the subscribers of a node that died. The server wires it; the handlers do not know
//! whether they run in a cluster.
//!
//! `lease` (this node's lease and entry in the node list), `records` (its subscription
//! records mirrored to Redis), `watch` (the loop that renews and watches), `takeover`
//! (ending a dead node's subscriptions), `nodes` (the admin listing), `keys` (key names).

pub mod keys;
pub mod lease;
pub mod nodes;
pub mod records;
pub mod takeover;
pub mod watch;

use crate::config::ClusterConfig;
use crate::storage::redis::{Options, Redis};
use std::sync::Arc;
use std::time::Duration;

/// This node's place in the cluster.
pub struct Cluster {
    pub redis: Arc<Redis>,
    /// This node's name, unique in the cluster.
    pub node: String,
    pub lease: Duration,
    pub stream_max_len: u64,
    pub takeover_per_second: u32,
    /// What a survivor does with a dead node's subscriptions (`cluster.takeover`).
    pub takeover: crate::config::Takeover,
    /// Set by a clean stop (`Cluster::leave`): the lease is no longer renewed.
    leaving: parking_lot::Mutex<bool>,
}

impl Cluster {
    /// Connects to Redis (directly or through Sentinel); `sip_port` names the node when the
    /// config does not.
    pub fn connect(config: &ClusterConfig, sip_port: u16) -> anyhow::Result<Cluster> {
        let redis = Redis::connect(options(config)).map_err(|e| anyhow::anyhow!("cluster: cannot reach Redis ({}): {e}", where_(config)))?;
        let node = match config.node.trim() {
            "" => format!("{}-{sip_port}", host_name()),
            name => name.to_string(),
        };
        tracing::info!(node = %node, redis = %where_(config), "cluster mode");
        Ok(Cluster {
            redis: Arc::new(redis),
            node,
            lease: Duration::from_millis(config.lease_ms.max(300)),
            stream_max_len: config.stream_max_len.max(1000),
            takeover_per_second: config.takeover_per_second.max(1),
            takeover: config.takeover,
            leaving: parking_lot::Mutex::new(false),
        })
    }
}

/// The connection settings of `[cluster]`.
pub fn options(config: &ClusterConfig) -> Options {
    Options {
        url: config.redis.trim().to_string(),
        sentinels: config.sentinels.clone(),
        master_name: config.master_name.clone(),
        password: config.password.as_ref().map(|p| p.expose().to_string()),
        prefix: config.key_prefix.clone(),
        replicas: config.replicas,
        wait_timeout: Duration::from_millis(config.wait_timeout_ms),
        timeout: Duration::from_millis(config.timeout_ms.max(10)),
    }
}

/// Where Redis is, for messages.
fn where_(config: &ClusterConfig) -> String {
    if config.sentinels.is_empty() {
        config.redis.trim().to_string()
    } else {
        format!("Sentinel {} for {:?}", config.sentinels.join(","), config.master_name)
    }
}

fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that much.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "node".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}
