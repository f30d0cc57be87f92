//! The stores of cluster mode, in Redis: several nodes share one record of each kind of
//! state (docs/cluster.md lists the keys). Each type here implements a trait of
//! [`crate::storage`], as `storage::sled` does for one process; the handles above cannot tell
//! them apart. All share one [`conn::Redis`].
//!
//! Must not know about SIP messages, HTTP or configuration files (the server turns
//! `[cluster]` into [`conn::Options`]).

pub mod accounts;
pub mod address_books;
mod book_feed;
mod binding_feed;
mod binding_mirror;
pub mod bindings;
mod follow;
mod budget_outage;
pub mod budgets;
pub mod conn;
pub mod key_lock;
pub mod made_once;
pub mod nonces;
mod presence;
mod presence_feed;
mod presence_mirror;
mod presence_state;
mod registrations;
mod scan;
mod stream;
pub mod verification;

pub use accounts::RedisAccounts;
pub use address_books::RedisAddressBooks;
pub use book_feed::OnChange;
pub use bindings::RedisBindings;
pub use budgets::RedisBudgets;
pub use conn::{Options, Redis};
pub use nonces::RedisNonces;
pub use presence::RedisPublications;
pub use registrations::RedisRegistrations;
pub use verification::RedisVerifications;
