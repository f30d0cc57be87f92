//! The server's SIP behaviour, one module per concern, in one test binary (each test binary
//! links the whole crate: fewer of them build faster). Every test starts its own server on
//! loopback ports (`common::TestServer`) and talks to it over real sockets.

mod common;

#[path = "sip_server/auth.rs"]
mod auth;
#[path = "sip_server/identity.rs"]
mod identity;
#[path = "sip_server/publish.rs"]
mod publish;
#[path = "sip_server/request_checks.rs"]
mod request_checks;
#[path = "sip_server/single_presentity.rs"]
mod single_presentity;
#[path = "sip_server/list_subscribe.rs"]
mod list_subscribe;
#[path = "sip_server/subscription_delivery.rs"]
mod subscription_delivery;
#[path = "sip_server/discovery_budget.rs"]
mod discovery_budget;
#[path = "sip_server/client_transactions.rs"]
mod client_transactions;
#[path = "sip_server/sip_foundation.rs"]
mod sip_foundation;
#[path = "sip_server/stored_lists.rs"]
mod stored_lists;
#[path = "sip_server/rich_presence.rs"]
mod rich_presence;
