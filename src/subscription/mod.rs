//! Resource-list subscriptions (RFC 5367 lists in, RFC 4662 NOTIFYs out), from the SUBSCRIBE
//! to the last NOTIFY.
//!
//! Owns dialogs, subscription lifetimes and the reverse index that turns binding changes
//! into NOTIFYs. It asks `resolution` who is a user and `notification` how to write it,
//! and sends through the client transactions. It must not parse bodies itself (that is
//! `body`'s) nor touch sockets.

pub mod actor;
pub mod handler;
pub mod live;
pub mod mailbox;
pub mod phones;
pub mod request;
pub mod table;
pub mod watched;

pub use actor::Shared;
pub use handler::SubscribeHandler;
pub use table::Subscriptions;
