//! The admin HTTP endpoint (`[admin] listen`): the operator's routes on one listener,
//! documented in `docs/admin.openapi.yaml`. `bindings` (the index: bindings,
//! import/export, stats; also what the `bindings` CLI talks to) and `budget` (discovery
//! budgets), `accounts` (an account's settings: "share my status", what the `accounts
//! share-status` CLI talks to); `stream` carries bodies to and from the blocking index
//! calls; `auth` is the bearer token (`[admin] token`) every route but the health checks
//! requires when set.
//!
//! The listener is bound first thing at start, so that `/health/ready` answers (503) while
//! the stores open; the other routes answer 503 until [`Admin::serve`] hands them the
//! handles. Routes use the handles (`Index`, `Budget`, `Accounts`, `PresenceStore`) only;
//! this module must not open a store nor serve SIP or the provisioning API. Connections are accepted and capped by
//! `http_listener`.

mod accounts;
pub mod auth;
pub mod bindings;
mod budget;
mod cluster;
mod metrics;
mod stream;

pub(crate) use stream::ChannelBody;

use crate::budget::Budget;
use crate::config::Config;
use crate::health::Health;
use crate::http_listener::{self, HttpLimits};
use crate::index::Index;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use tokio::sync::watch;

/// Every admin route that needs the token (`/metrics` when `metrics` is given, open when
/// `metrics_open`).
pub fn router(index: Index, budget: Budget, metrics: Option<Arc<crate::metrics::Metrics>>) -> Router {
    bindings::router(index).merge(budget::router(budget)).merge(metrics::router(metrics))
}

/// A bound admin endpoint, serving the health checks; its other routes wait for `serve`.
pub struct Admin {
    addr: SocketAddr,
    routes: Arc<OnceLock<Router>>,
}

impl Admin {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Starts serving every route, over the now open stores.
    pub fn serve(&self, index: Index, budget: Budget, metrics: Option<Arc<crate::metrics::Metrics>>) {
        let _ = self.routes.set(router(index, budget, metrics));
    }

    /// The same with the account routes (the server's: its accounts and the presence store
    /// that reads their settings).
    pub fn serve_with_accounts(&self, index: Index, budget: Budget, metrics: Option<Arc<crate::metrics::Metrics>>, accounts: crate::accounts::Accounts, presence: Arc<crate::presence::PresenceStore>) {
        self.serve_server(index, budget, metrics, accounts, presence, None);
    }

    /// The server's routes, with the cluster's node list (`/cluster/nodes`, 404 outside
    /// cluster mode).
    pub fn serve_server(
        &self,
        index: Index,
        budget: Budget,
        metrics: Option<Arc<crate::metrics::Metrics>>,
        accounts: crate::accounts::Accounts,
        presence: Arc<crate::presence::PresenceStore>,
        cluster: Option<Arc<crate::cluster::Cluster>>,
    ) {
        let _ = self.routes.set(router(index, budget, metrics).merge(accounts::router(accounts, presence)).merge(cluster::router(cluster)));
    }
}

/// What a guarded request goes through: the token, then the routes once they are served.
#[derive(Clone)]
struct Guarded {
    token: Option<auth::Token>,
    metrics_open: bool,
    routes: Arc<OnceLock<Router>>,
}

/// Binds the admin endpoint when `[admin] listen` is set and serves until `shutdown`
/// turns true. Refuses an address off loopback without a token, naming the keys.
pub async fn bind(config: &Config, health: &Health, shutdown: &watch::Receiver<bool>) -> anyhow::Result<Option<Admin>> {
    let a = &config.admin;
    let Some(listen) = a.listen else { return Ok(None) };
    let token = auth::configured_token(a)?;
    auth::check_exposure(a, token.as_deref())?;
    if token.is_none() {
        tracing::info!(%listen, "admin endpoint without a token (admin.token): open to every local user");
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot bind admin endpoint {listen}: {e}"))?;
    let addr = listener.local_addr()?;
    let routes = Arc::new(OnceLock::new());
    let guarded = Guarded { token: token.as_deref().map(auth::Token::new), metrics_open: a.metrics_open, routes: routes.clone() };
    let limits = HttpLimits::new(a.max_connections, a.max_connections_per_source, a.header_read_timeout_secs);
    tokio::spawn(http_listener::serve("admin", listener, app(health.clone(), guarded), limits, shutdown.clone()));
    Ok(Some(Admin { addr, routes }))
}

/// The health checks, open; everything else through the token check.
fn app(health: Health, guarded: Guarded) -> Router {
    Router::new()
        .route("/health", get(|| async { Json(json!({"service": bindings::SERVICE_NAME})) }))
        .merge(crate::health::router(health))
        .merge(Router::new().fallback(guard).with_state(guarded))
}

async fn guard(State(g): State<Guarded>, req: Request) -> Response {
    let open = g.metrics_open && req.uri().path() == "/metrics";
    if let (Some(token), false) = (&g.token, open) {
        if let Err(refusal) = token.allows(req.headers()) {
            return refusal.into_response();
        }
    }
    let Some(routes) = g.routes.get() else {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"error": "the server is starting"}))).into_response();
    };
    match tower_service::Service::call(&mut routes.clone(), req).await {
        Ok(r) => r,
        Err(never) => match never {},
    }
}
