//! Cluster mode (issue 14, docs/cluster.md): several nodes of the built binary sharing a
//! real Redis (and Sentinel, and a real Kamailio dispatcher in front), on loopback, each
//! test bounded in time. One test binary; one module per concern.

mod common;

#[path = "cluster/harness.rs"]
mod harness;
#[path = "cluster/start.rs"]
mod start;
#[path = "cluster/bindings.rs"]
mod bindings;
#[path = "cluster/sentinel.rs"]
mod sentinel;
