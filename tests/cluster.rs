//! Cluster mode (issue 14, docs/cluster.md): several nodes of the built binary sharing a
//! real Redis (and Sentinel, and a real Kamailio dispatcher in front), on loopback, each
//! test bounded in time. One test binary; one module per concern.

mod common;

#[path = "cluster/harness.rs"]
mod harness;
#[path = "cluster/start.rs"]
mod start;
#[path = "cluster/dispatcher.rs"]
mod dispatcher;
#[path = "cluster/failover.rs"]
mod failover;
#[path = "cluster/presence.rs"]
mod presence;
#[path = "cluster/shared_state.rs"]
mod shared_state;
#[path = "cluster/redis_stores.rs"]
mod redis_stores;
#[path = "cluster/stored_books.rs"]
mod stored_books;
#[path = "cluster/bindings.rs"]
mod bindings;
#[path = "cluster/sentinel.rs"]
mod sentinel;
