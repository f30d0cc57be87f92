//! smart-presence: a SIP presence server for "smart contacts".
//!
//! Data flows through the stages in this order, each a module that owns one concern:
//!
//! - [`transport`]: sockets (UDP, TCP, TLS), stream framing, the connection table.
//! - [`sip`]: the message type every other stage sees, its parser and writer.
//! - [`transaction`]: RFC 3261 §17 retransmission absorption and client timers.
//! - [`core`]: routes requests to handlers and answers what needs no handler.
//! - [`dialog`]: dialog identity, route set, remote target; builds our in-dialog requests.
//! - [`subscription`]: list SUBSCRIBE dialogs, their lifetimes, live updates.
//! - [`discovery`]: the subscriber's region, classifying a list, charging the budget (one
//!   service for the list SUBSCRIBE and the HTTP address-book query).
//! - [`resolution`]: which entries are users, from [`numbers`] (E.164) and [`index`] (sled).
//! - [`notification`]: NOTIFY requests from a resolved state.
//! - [`body`]: the bodies exchanged (resource lists in, RLMI/PIDF out, deflate).
//!
//! Beside the SIP path: [`provisioning`] (number verification and the account web API),
//! [`accounts`] (SIP accounts and their digest HA1s), [`budget`] (per-account discovery budget),
//! [`admin`] (the operator's HTTP routes), [`cli`] (the `bindings` and `accounts` commands).
//!
//! [`storage`] holds one trait per kind of state (bindings, presence, budgets, accounts,
//! verifications); the handles above use them, so a backend can change under them: sled in
//! one process (`storage::sled`), Redis shared by several nodes (`storage::redis`).
//! [`cluster`] is what only several nodes need: leases, the node list, taking over the
//! subscriptions of a node that died (docs/cluster.md).
//!
//! [`identity`] is the one canonical form of a SIP user's URI, [`clock`] the one wall clock.
//! [`limits`] bounds what one source or account may ask (rates, connections, subscriptions);
//! [`metrics`] counts what the stages do, for Prometheus;
//! [`http_listener`] bounds the HTTP listeners' connections; [`fd_limit`] raises the
//! open-file limit at start. [`health`] is the server's readiness and its HTTP checks;
//! [`systemd`] tells systemd our state (sd_notify).
//! [`server`] wires the parts; [`config`] holds the settings. [`replay`] is a load tool:
//! it replays SIP traces against a server.

pub mod accounts;
pub mod address_books;
pub mod admin;
pub mod auth;
pub mod body;
pub mod budget;
pub mod cli;
pub mod cluster;
pub mod clock;
pub mod config;
pub mod core;
pub mod dialog;
pub mod discovery;
pub mod fd_limit;
pub mod health;
pub mod http_listener;
pub mod identity;
pub mod index;
pub mod limits;
pub mod memory;
pub mod metrics;
pub mod notification;
pub mod presence;
pub mod private_file;
pub mod numbers;
pub mod provisioning;
pub mod registrar;
pub mod replay;
pub mod resolution;
pub mod server;
pub mod sip;
pub mod storage;
pub mod subscription;
pub mod systemd;
pub mod transaction;
pub mod transport;
