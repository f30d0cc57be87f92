//! The admin HTTP endpoint (`[admin] listen`): the operator's routes on one listener,
//! local only and without authentication (bind it to loopback). `bindings` (the index:
//! bindings, import/export, stats; also what the `bindings` CLI talks to) and `budget`
//! (discovery budgets); `stream` carries bodies to and from the blocking index calls.
//!
//! Routes use the handles (`Index`, `Budget`) only; this module must not open a store nor
//! serve SIP or the provisioning API. Connections are accepted and capped by
//! `http_listener`.

pub mod bindings;
mod budget;
mod metrics;
mod stream;

pub(crate) use stream::ChannelBody;

use crate::budget::Budget;
use crate::config::Config;
use crate::http_listener::{self, HttpLimits};
use crate::index::Index;
use axum::Router;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::watch;

/// Every admin route (`/metrics` when `metrics` is given).
pub fn router(index: Index, budget: Budget, metrics: Option<Arc<crate::metrics::Metrics>>) -> Router {
    bindings::router(index).merge(budget::router(budget)).merge(metrics::router(metrics))
}

/// Binds the admin endpoint when `[admin] listen` is set and serves until `shutdown`
/// turns true. Returns the bound address.
pub async fn start(
    config: &Config,
    index: &Index,
    budget: &Budget,
    metrics: Option<Arc<crate::metrics::Metrics>>,
    shutdown: &watch::Receiver<bool>,
) -> anyhow::Result<Option<SocketAddr>> {
    let Some(listen) = config.admin.listen else { return Ok(None) };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot bind admin endpoint {listen}: {e}"))?;
    let addr = listener.local_addr()?;
    let a = &config.admin;
    let limits = HttpLimits::new(a.max_connections, a.max_connections_per_source, a.header_read_timeout_secs);
    let router = router(index.clone(), budget.clone(), metrics);
    tokio::spawn(http_listener::serve("admin", listener, router, limits, shutdown.clone()));
    Ok(Some(addr))
}
