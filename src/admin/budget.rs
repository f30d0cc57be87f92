//! The admin routes of the discovery budget: `GET /budget/{account}` shows an account's
//! budget, `DELETE /budget/{account}` resets it (full bucket, nothing remembered). They use
//! the `Budget` handle only.

use crate::budget::{Budget, Status};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};

pub fn router(budget: Budget) -> Router {
    Router::new().route("/budget/:account", get(show).delete(reset)).with_state(budget)
}

async fn show(State(b): State<Budget>, Path(account): Path<String>) -> Result<Json<Status>, (StatusCode, String)> {
    b.status(&account).map(Json).map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

async fn reset(State(b): State<Budget>, Path(account): Path<String>) -> Result<StatusCode, (StatusCode, String)> {
    b.reset(&account).map(|_| StatusCode::NO_CONTENT).map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}
