//! Phone-number verification and provisioning web service (issue 6): an HTTP JSON API on
//! its own listener, documented in `docs/provisioning.openapi.yaml`.
//!
//! The workflow: a code is sent by SMS (or voice call) to a number; the right code
//! provisions the SIP account of that number (created on first use); the account, once
//! authenticated, makes its verified numbers smart entries (bindings in the index, so list
//! watchers are notified), queries address books (charged to the discovery budget) and
//! keeps a stored copy of its address book (Contact Sync, `contacts`) and sets its own
//! "share my status" (`settings`).
//!
//! Parts, one concept per file: `routes` (handlers), `verification` (codes and limits,
//! kept by a `storage::VerificationStore`), `sms` and `http_client` (delivery gateways), `auth` (Bearer, Digest, Basic),
//! `api` (error body, JSON input). This module owns its own sled database
//! (`data_dir/provisioning`) and the listener; it uses the server's `Index`, `Accounts` and
//! `Budget` through their public APIs only and never opens them itself. Connections are
//! accepted and capped by `http_listener`.

mod api;
mod auth;
mod contacts;
mod http_client;
mod routes;
mod settings;
pub mod sms;
mod verification;

use crate::clock::unix_now;
use crate::accounts::Accounts;
use crate::budget::Budget;
use crate::config::Config;
use crate::http_listener::{self, HttpLimits};
use crate::index::Index;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

pub use verification::{Check, Limits, Start, StateError, Verifications};

/// The directory of the service's own state inside the data directory.
pub fn dir_in(data_dir: &Path) -> PathBuf {
    data_dir.join("provisioning")
}

/// What the handlers share.
pub(crate) struct Service {
    config: crate::config::ProvisioningConfig,
    /// Which numbers of an address book are users (shared with the list SUBSCRIBE).
    discovery: crate::discovery::Discovery,
    index: Index,
    accounts: Accounts,
    state: Verifications,
    sms: sms::Gateway,
    voice: sms::Gateway,
    auth: auth::Auth,
    /// Counts what the gateways deliver (None: metrics off).
    metrics: Option<Arc<crate::metrics::Metrics>>,
    /// Stored address books (Contact Sync, `contacts`), and presence: for their smart
    /// contacts, and to announce a user whose "share my status" changed (`settings`).
    books: crate::address_books::AddressBooks,
    books_config: crate::config::AddressBooksConfig,
    presence: Arc<crate::presence::PresenceStore>,
}

/// Binds the listener when `[provisioning] listen` is set and serves until `shutdown`
/// turns true. Returns the bound address.
pub async fn start(
    config: &Config,
    index: Index,
    accounts: Accounts,
    budget: Budget,
    health: crate::health::Health,
    metrics: Option<Arc<crate::metrics::Metrics>>,
    books: Books,
    cluster: Option<Arc<crate::storage::redis::Redis>>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<Option<SocketAddr>> {
    let Some(listen) = config.provisioning.listen else { return Ok(None) };
    let service = Arc::new(Service { metrics, ..service(config, index, accounts, budget, books, listen, cluster)? });
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot bind provisioning endpoint {listen}: {e}"))?;
    let addr = listener.local_addr()?;
    tokio::spawn(sweep(service.clone(), shutdown.clone()));
    let p = &config.provisioning;
    let limits = HttpLimits::new(p.max_connections, p.max_connections_per_source, p.header_read_timeout_secs);
    tracing::info!(%addr, "provisioning endpoint listening");
    tokio::spawn(http_listener::serve("provisioning", listener, routes::router(service).merge(crate::health::router(health)), limits, shutdown));
    Ok(Some(addr))
}

/// What the Contact Sync routes serve: the book store, and the presence of its users.
pub struct Books {
    pub books: crate::address_books::AddressBooks,
    pub presence: Arc<crate::presence::PresenceStore>,
}

fn service(config: &Config, index: Index, accounts: Accounts, budget: Budget, books: Books, listen: SocketAddr, cluster: Option<Arc<crate::storage::redis::Redis>>) -> anyhow::Result<Service> {
    let p = &config.provisioning;
    if !(1..=12).contains(&p.code_length) {
        anyhow::bail!("provisioning.code_length must be 1 to 12");
    }
    let limits = Limits {
        code_length: p.code_length,
        validity_secs: p.code_validity_secs,
        max_sends: p.max_sends,
        max_sends_per_number: p.max_sends_per_number,
        window_secs: p.send_window_secs,
        resend_after_secs: p.resend_after_secs,
        max_wrong: p.max_wrong_codes,
    };
    let loopback = listen.ip().is_loopback();
    let (state, auth) = match cluster {
        Some(redis) => {
            let nonces = Arc::new(crate::storage::redis::RedisNonces::open(redis.clone(), "http")?);
            let store = Arc::new(crate::storage::redis::RedisVerifications::open(redis));
            (Verifications::with_store(store, limits), auth::Auth::with_nonces(accounts.clone(), p.digest_nonce_secs, loopback, nonces))
        }
        None => (Verifications::open(&dir_in(&config.data_dir), limits)?, auth::Auth::new(accounts.clone(), p.digest_nonce_secs, loopback)),
    };
    let sms = sms::Gateway::from_config(&p.sms, &config.data_dir)?;
    let voice = sms::Gateway::from_config(&p.voice, &config.data_dir)?;
    if !listen.ip().is_loopback() {
        tracing::warn!(%listen, "provisioning endpoint is not on loopback and serves plain HTTP: HTTP Basic is refused; put a TLS proxy in front");
    }
    Ok(Service {
        config: p.clone(),
        discovery: crate::discovery::Discovery::new(index.clone(), budget, config.numbers.default_region),
        index,
        accounts,
        state,
        sms,
        voice,
        auth,
        metrics: None,
        books: books.books,
        books_config: config.address_books.clone(),
        presence: books.presence,
    })
}

/// Removes finished verifications once a minute.
async fn sweep(service: Arc<Service>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(Duration::from_secs(60)) => {}
        }
        let s = service.clone();
        let swept = tokio::task::spawn_blocking(move || s.state.sweep(unix_now())).await;
        if let Ok(Err(e)) = swept {
            tracing::warn!("provisioning sweep: {e}");
        }
    }
}

