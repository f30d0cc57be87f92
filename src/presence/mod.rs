//! Presence state: who is reachable now, from PUBLISH (RFC 3903) and registrars that
//! publish for their users.
//!
//! Owns publications and their expiry, and announces each presentity whose combined state
//! changes. It must not know about subscriptions: the subscription layer listens to the
//! announcements and decides whom to notify.

pub mod publish;
pub mod store;

pub use publish::PublishHandler;
pub use store::{spawn_expiry, Live, PresenceStore, Published};
