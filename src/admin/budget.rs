//! The admin routes of the discovery budget: `GET /budget/{account}` shows an account's
//! budget, `DELETE /budget/{account}` resets it (full bucket, nothing remembered). They use
//! the `Budget` handle only. A store that fails answers 503 with a JSON error.

use crate::budget::{Budget, Status};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

type Failure = (StatusCode, Json<Value>);

fn unavailable(e: impl ToString) -> Failure {
    (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"error": e.to_string()})))
}

/// Runs budget work off the async threads (a Redis store waits on the network).
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, crate::budget::BudgetError> + Send + 'static) -> Result<T, Failure> {
    tokio::task::spawn_blocking(f).await.map_err(unavailable)?.map_err(unavailable)
}

pub fn router(budget: Budget) -> Router {
    Router::new().route("/budget/:account", get(show).delete(reset)).with_state(budget)
}

async fn show(State(b): State<Budget>, Path(account): Path<String>) -> Result<Json<Status>, Failure> {
    blocking(move || b.status(&account)).await.map(Json)
}

async fn reset(State(b): State<Budget>, Path(account): Path<String>) -> Result<StatusCode, Failure> {
    blocking(move || b.reset(&account)).await.map(|_| StatusCode::NO_CONTENT)
}
