//! The admin routes of an account's settings: `GET /accounts/{username}/settings` shows
//! them, `PUT` sets "share my status" on the running server (what the `accounts
//! share-status` CLI talks to). The change goes through `PresenceStore::set_share_status`,
//! so the user's watchers are told at once, as when he sets it himself over the
//! provisioning API. Uses the `Accounts` and `PresenceStore` handles only.

use crate::accounts::{AccountError, Accounts};
use crate::presence::PresenceStore;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

#[derive(Clone)]
struct Handles {
    accounts: Accounts,
    presence: Arc<PresenceStore>,
}

pub fn router(accounts: Accounts, presence: Arc<PresenceStore>) -> Router {
    Router::new().route("/accounts/:username/settings", get(show).put(set)).with_state(Handles { accounts, presence })
}

/// The settings a `PUT` gives (every field required).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsIn {
    share_status: bool,
}

type Answer = Result<Json<Value>, (StatusCode, Json<Value>)>;

async fn show(State(h): State<Handles>, Path(username): Path<String>) -> Answer {
    let settings = blocking(move || h.accounts.settings(&username)).await?;
    Ok(Json(json!({"share_status": settings.share_status})))
}

async fn set(State(h): State<Handles>, Path(username): Path<String>, body: Result<Json<SettingsIn>, axum::extract::rejection::JsonRejection>) -> Answer {
    let Json(b) = body.map_err(|e| (StatusCode::BAD_REQUEST, Json(json!({"error": e.body_text()}))))?;
    let changed = blocking(move || h.presence.set_share_status(&h.accounts, &username, b.share_status)).await?;
    Ok(Json(json!({"share_status": b.share_status, "changed": changed})))
}

/// Runs account work off the async threads: no such account is a 404, a failing store 503.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, AccountError> + Send + 'static) -> Result<T, (StatusCode, Json<Value>)> {
    let fail = |status: StatusCode, e: String| (status, Json(json!({"error": e})));
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e @ AccountError::NotFound(_))) => Err(fail(StatusCode::NOT_FOUND, e.to_string())),
        Ok(Err(e)) => Err(fail(StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
        Err(e) => Err(fail(StatusCode::INTERNAL_SERVER_ERROR, format!("task failed: {e}"))),
    }
}
