//! `GET /cluster/nodes`: the cluster's nodes, their leases and counts (`cluster::nodes`).
//! Outside cluster mode the route answers 404 saying so. Reads only.

use crate::cluster::Cluster;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use std::sync::Arc;

pub fn router(cluster: Option<Arc<Cluster>>) -> Router {
    Router::new().route("/cluster/nodes", get(move || nodes(cluster.clone())))
}

async fn nodes(cluster: Option<Arc<Cluster>>) -> Response {
    let Some(cluster) = cluster else {
        return (StatusCode::NOT_FOUND, Json(json!({"error": "not in cluster mode: [cluster] is not set"}))).into_response();
    };
    match tokio::task::spawn_blocking(move || cluster.list_nodes()).await {
        Ok(Ok(listing)) => Json(listing).into_response(),
        Ok(Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, [("retry-after", "1")], Json(json!({"error": format!("the node list is unavailable: {e}")}))).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({"error": e.to_string()}))).into_response(),
    }
}
