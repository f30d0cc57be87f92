//! `GET /metrics`: the Prometheus exposition of [`crate::metrics::Metrics`] (text format
//! 0.0.4). Served only when metrics are on; it renders, it never counts.

use crate::metrics::Metrics;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::sync::Arc;

/// The route, or none when metrics are off.
pub fn router(metrics: Option<Arc<Metrics>>) -> Router {
    match metrics {
        Some(m) => Router::new().route("/metrics", get(scrape)).with_state(m),
        None => Router::new(),
    }
}

async fn scrape(State(metrics): State<Arc<Metrics>>) -> Response {
    match tokio::task::spawn_blocking(move || metrics.render()).await {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response(),
        Err(e) => {
            tracing::error!("metrics not rendered: {e}");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
