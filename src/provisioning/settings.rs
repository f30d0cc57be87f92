//! The account's own settings over HTTP (`/v1/account/settings`, in
//! `docs/provisioning.openapi.yaml`): today "share my status" only.
//!
//! The setting is the account store's (`Accounts::settings`); the presence store reads it
//! at every read, and is the one to change it (`PresenceStore::set_share_status`), so that
//! each of his watchers gets a NOTIFY showing the change, within the usual per-presentity
//! rate limit. Owns the requests and answers only.

use super::api::{authenticated, json_body, ApiError};
use super::Service;
use crate::accounts::AccountError;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

type Shared = State<Arc<Service>>;

/// What a `PUT` may change (every field required: the settings as a whole).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsIn {
    share_status: bool,
}

/// `GET /v1/account/settings`.
pub async fn get(State(s): Shared, req: Request) -> Result<Response, ApiError> {
    let account = authenticated(&s, &req.into_parts().0).await?;
    let (accounts, user) = (s.accounts.clone(), account.username);
    let settings = account_call(move || accounts.settings(&user)).await?;
    Ok(Json(json!({"share_status": settings.share_status})).into_response())
}

/// `PUT /v1/account/settings`: durable before the answer; his watchers are told when
/// "share my status" changed.
pub async fn put(State(s): Shared, req: Request) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let account = authenticated(&s, &parts).await?;
    let b: SettingsIn = json_body(&parts.headers, body, s.config.max_body_bytes).await?;
    let st = s.clone();
    account_call(move || st.presence.set_share_status(&st.accounts, &account.username, b.share_status)).await?;
    Ok(Json(json!({"share_status": b.share_status})).into_response())
}

/// Runs account work off the async threads: no such account is a 404 (deleted meanwhile),
/// a store that fails a 503.
async fn account_call<T: Send + 'static>(f: impl FnOnce() -> Result<T, AccountError> + Send + 'static) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(AccountError::NotFound(u))) => Err(ApiError::new(StatusCode::NOT_FOUND, "no_account", format!("no account {u:?}"))),
        Ok(Err(e)) => {
            tracing::warn!("account settings: {e}");
            Err(ApiError::unavailable(format!("account store: {e}")))
        }
        Err(e) => Err(ApiError::internal(format!("task failed: {e}"))),
    }
}
