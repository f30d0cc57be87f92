//! The stores of cluster mode, in Redis: several nodes share one record of each kind of
//! state (docs/cluster.md lists the keys). Each type here implements a trait of
//! [`crate::storage`], as `storage::sled` does for one process; the handles above cannot tell
//! them apart. All share one [`conn::Redis`].
//!
//! Must not know about SIP messages, HTTP or configuration files (the server turns
//! `[cluster]` into [`conn::Options`]).

mod binding_feed;
mod binding_mirror;
pub mod bindings;
pub mod conn;

pub use bindings::RedisBindings;
pub use conn::{Options, Redis};
