//! Resource-list subscriptions (RFC 5367 lists in, or a stored list named by its URI;
//! RFC 4662 NOTIFYs out), from the SUBSCRIBE to the last NOTIFY.
//!
//! Owns dialogs, subscription lifetimes and the reverse index that turns binding changes
//! into NOTIFYs. It asks `resolution` who is a user and `notification` how to write it,
//! and sends through the client transactions. It must not parse bodies itself (that is
//! `body`'s) nor touch sockets.

pub mod actor;
pub mod books;
pub mod durable;
pub mod handler;
pub mod live;
pub mod loading;
pub mod mailbox;
pub mod phones;
pub mod record;
pub mod request;
pub mod resume;
pub mod table;
pub mod watched;

pub use actor::Shared;

/// Starts what every subscription relies on, until `shutdown`: following the binding
/// index's change feed and the presence announcements (`live`), and waking subscriptions
/// whose time is up (`actor::expire`). `presence_interval` is the least time between two
/// announcements of one presentity.
pub fn start(
    shared: std::sync::Arc<Shared>,
    presence_changes: tokio::sync::mpsc::UnboundedReceiver<Box<str>>,
    presence_interval: std::time::Duration,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    tokio::spawn(live::follow(shared.clone(), shutdown.clone()));
    tokio::spawn(live::follow_presence(presence_changes, shared.clone(), presence_interval, shutdown.clone()));
    tokio::spawn(live::follow_books(shared.clone(), shutdown.clone()));
    tokio::spawn(actor::expire(shared, shutdown));
}
pub use handler::SubscribeHandler;
pub use table::Subscriptions;
