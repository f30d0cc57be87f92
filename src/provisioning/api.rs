//! The HTTP edges of the API: the JSON error body and the checked JSON request body.
//!
//! Every error answer is `{"error": "<code>", "message": "<text>"}` plus, for some codes,
//! extra fields (`attempts_left`, `retry_after`). Also the two steps every account route
//! takes: authenticating the request and running storage work off the async threads.
//! Owns no state.

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use super::auth::AuthError;
use super::Service;
use crate::accounts::Account;
use axum::http::request::Parts;
use std::sync::Arc;

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub extra: Option<Value>,
    pub headers: Vec<(header::HeaderName, String)>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), extra: None, headers: Vec::new() }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn internal(message: impl ToString) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message.to_string())
    }

    /// 503 with `Retry-After`: a store did not answer (Redis down, in a cluster); nothing
    /// was changed that the client must know of, it may retry.
    pub fn unavailable(message: impl ToString) -> ApiError {
        let retry = crate::auth::RETRY_AFTER_SECS;
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message.to_string()).with(json!({"retry_after": retry})).header(header::RETRY_AFTER, retry)
    }

    pub fn with(mut self, extra: Value) -> ApiError {
        self.extra = Some(extra);
        self
    }

    pub fn header(mut self, name: header::HeaderName, value: impl ToString) -> ApiError {
        self.headers.push((name, value.to_string()));
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"error": self.code, "message": self.message});
        if let (Some(Value::Object(extra)), Some(obj)) = (self.extra, body.as_object_mut()) {
            obj.extend(extra);
        }
        let mut response = (self.status, Json(body)).into_response();
        for (name, value) in self.headers {
            if let Ok(v) = HeaderValue::from_str(&value) {
                response.headers_mut().append(name, v);
            }
        }
        response
    }
}

/// Reads a JSON body: the Content-Type must be `application/json` (415), the body at most
/// `limit` bytes (413) and valid JSON of the expected shape (400).
pub async fn json_body<T: DeserializeOwned>(headers: &HeaderMap, body: Body, limit: usize) -> Result<T, ApiError> {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim();
    if !mime.eq_ignore_ascii_case("application/json") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("Content-Type must be application/json (got {ct:?})"),
        ));
    }
    let bytes = read_limited(body, limit).await?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::bad_request("malformed_json", format!("request body: {e}")))
}

/// The whole body, at most `limit` bytes (413 beyond).
pub async fn read_limited(body: Body, limit: usize) -> Result<bytes::Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", format!("request body over {limit} bytes"))
    })
}

/// For unknown paths.
pub async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route (see docs/provisioning.openapi.yaml)")
}

/// For a known path with another method.
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this route does not take that method")
}

/// Runs storage work off the async threads; a store's failure is a 503 (try again).
pub async fn blocking<T: Send + 'static, E: std::fmt::Display + Send + 'static>(f: impl FnOnce() -> Result<T, E> + Send + 'static) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(ApiError::unavailable(format!("storage: {e}"))),
        Err(e) => Err(ApiError::internal(format!("task failed: {e}"))),
    }
}

/// The account the request authenticates, or a 401 with challenges.
pub async fn authenticated(s: &Arc<Service>, parts: &Parts) -> Result<Account, ApiError> {
    let authz = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_string);
    let uri = parts.uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| parts.uri.path().to_string());
    let method = parts.method.to_string();
    let st = s.clone();
    let result = tokio::task::spawn_blocking(move || st.auth.authenticate(authz.as_deref(), &method, &uri))
        .await
        .map_err(|e| ApiError::internal(format!("task failed: {e}")))?;
    let (code, message, stale) = match result {
        Ok(a) => return Ok(a),
        Err(AuthError::Storage(e)) => return Err(ApiError::unavailable(format!("storage: {e}"))),
        Err(AuthError::Missing) => ("unauthorized", "authentication required: Digest, Bearer token".to_string(), false),
        Err(AuthError::Invalid(m)) => ("unauthorized", m, false),
        Err(AuthError::Stale) => ("unauthorized", "stale nonce: retry with the new one".to_string(), true),
        Err(AuthError::BasicRefused) => (
            "basic_refused",
            "HTTP Basic is only accepted on a loopback listener (this service does not serve TLS): use Digest or the bearer token".to_string(),
            false,
        ),
    };
    let mut err = ApiError::new(StatusCode::UNAUTHORIZED, code, message);
    for c in s.auth.challenges(stale) {
        err = err.header(header::WWW_AUTHENTICATE, c);
    }
    Err(err)
}

/// [`blocking`] for index writes: a store that cannot be reached (cluster mode: Redis
/// down) answers 503 with `Retry-After`, not 500.
pub async fn index_blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, crate::index::IndexError> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e @ crate::index::IndexError::Storage(_))) => {
            Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", format!("binding index: {e}")).header(header::RETRY_AFTER, 1))
        }
        Ok(Err(e)) => Err(ApiError::internal(format!("storage: {e}"))),
        Err(e) => Err(ApiError::internal(format!("task failed: {e}"))),
    }
}
