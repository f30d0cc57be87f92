//! The admin routes of the binding index: how the CLI (and operators' scripts) change the
//! index while the server holds it. They use the `Index` handle only; they must not open
//! a store nor know how one keeps bindings.
//!
//! | method and path              | body                    | answer                                |
//! |------------------------------|-------------------------|---------------------------------------|
//! | `GET /health`                |                         | `{"service":"smart-presence-index"}`  |
//! | `GET /bindings/{number}`     |                         | the binding, or 404                   |
//! | `PUT /bindings/{number}`     | `{"sip_uri":"sip:..."}` | `{"outcome":"new"/"unchanged"/"rebound",...}` |
//! | `DELETE /bindings/{number}`  |                         | the removed binding, or 404           |
//! | `GET /numbers?sip_uri=...`   |                         | `{"sip_uri":..,"numbers":[..]}`       |
//! | `POST /import`               | CSV or JSON lines       | the import summary                    |
//! | `GET /export?format=csv`     |                         | every binding, streamed               |
//! | `GET /stats`                 |                         | counts                                |
//!
//! `{number}` is any form `parse_number` reads (percent-encode `+` as `%2B` or keep it);
//! `?region=FR` sets the region for national numbers (default: none, so national numbers
//! are refused). `POST /import` takes `?strict=true`, `?region=`, and the format from
//! `?format=csv|jsonl` or else the Content-Type (`text/csv`, `application/x-ndjson`).
//! Errors are `{"error":"..."}` with status 400 (bad input), 404, 422 (strict import
//! rejected), 503 (the store cannot be reached or refused the write: retry later, with
//! `Retry-After`), 500 (other failures).

use super::stream::{ChannelBody, ChannelReader, ChannelWriter};
use crate::index::{self, Format, ImportOptions, Index, IndexError, Source};
use crate::http_listener::HttpLimits;
use crate::numbers::{parse_region, Region};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use http_body_util::BodyExt;
use serde::Deserialize;
use serde_json::json;
use std::future::Future;
use std::net::SocketAddr;

/// The health answer the CLI checks to know it talks to us.
pub const SERVICE_NAME: &str = "smart-presence-index";

pub fn router(index: Index) -> Router {
    Router::new()
        .route("/health", get(|| async { Json(json!({"service": SERVICE_NAME})) }))
        .route("/bindings/:number", get(get_binding).put(put_binding).delete(delete_binding))
        .route("/numbers", get(numbers_of))
        .route("/import", axum::routing::post(import))
        .route("/export", get(export))
        .route("/stats", get(stats))
        .with_state(index)
}

/// Serves the admin API on `listen` until `shutdown` completes.
pub async fn serve(
    listen: SocketAddr,
    index: Index,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    serve_on(listener, index, shutdown).await
}

/// Same as [`serve`] on an already bound listener (tests bind `127.0.0.1:0`), with the
/// default `[admin]` connection caps and header timeout.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    index: Index,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    tracing::info!(addr = ?listener.local_addr().ok(), "admin endpoint listening");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop.send(true);
    });
    let a = crate::config::AdminConfig::default();
    let limits = HttpLimits::new(a.max_connections, a.max_connections_per_source, a.header_read_timeout_secs);
    crate::http_listener::serve("admin", listener, router(index), limits, stopped).await;
    Ok(())
}

struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.0, Json(json!({"error": self.1}))).into_response();
        if self.0 == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        r
    }
}

impl From<IndexError> for ApiError {
    fn from(e: IndexError) -> ApiError {
        let status = match &e {
            IndexError::InvalidUri(_) | IndexError::Number(_) => StatusCode::BAD_REQUEST,
            IndexError::StrictRejected(_) => StatusCode::UNPROCESSABLE_ENTITY,
            // The store is unreachable (cluster mode: Redis down): worth retrying later.
            IndexError::Storage(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, e.to_string())
    }
}

fn bad(msg: impl ToString) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.to_string())
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, IndexError> + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("task failed: {e}")))?
        .map_err(ApiError::from)
}

#[derive(Deserialize, Default)]
struct RegionQuery {
    region: Option<String>,
}

fn region_of(q: &Option<String>) -> Result<Option<Region>, ApiError> {
    match q.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(r) => parse_region(r).map(Some).map_err(bad),
    }
}

fn number_of(s: &str, region: Option<Region>) -> Result<crate::numbers::E164, ApiError> {
    index::parse_number(s, region).map_err(bad)
}

async fn get_binding(
    State(index): State<Index>,
    Path(number): Path<String>,
    Query(q): Query<RegionQuery>,
) -> Result<Response, ApiError> {
    let n = number_of(&number, region_of(&q.region)?)?;
    match index.lookup(n)? {
        Some(b) => Ok(Json(b).into_response()),
        None => Err(ApiError(StatusCode::NOT_FOUND, format!("{n} is not bound"))),
    }
}

#[derive(Deserialize)]
struct PutBody {
    sip_uri: String,
    #[serde(default)]
    source: Option<Source>,
}

async fn put_binding(
    State(index): State<Index>,
    Path(number): Path<String>,
    Query(q): Query<RegionQuery>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let n = number_of(&number, region_of(&q.region)?)?;
    let body: PutBody = serde_json::from_slice(&body).map_err(|e| bad(format!("body: {e}")))?;
    let source = body.source.unwrap_or(Source::Admin);
    let idx = index.clone();
    let outcome = blocking(move || idx.bind(n, &body.sip_uri, source)).await?;
    let binding = index.lookup(n)?;
    let mut v = serde_json::to_value(&outcome).map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    v["binding"] = serde_json::to_value(binding).unwrap_or_default();
    Ok(Json(v).into_response())
}

async fn delete_binding(
    State(index): State<Index>,
    Path(number): Path<String>,
    Query(q): Query<RegionQuery>,
) -> Result<Response, ApiError> {
    let n = number_of(&number, region_of(&q.region)?)?;
    match blocking(move || index.unbind(n)).await? {
        Some(b) => Ok(Json(b).into_response()),
        None => Err(ApiError(StatusCode::NOT_FOUND, format!("{n} is not bound"))),
    }
}

#[derive(Deserialize)]
struct NumbersQuery {
    sip_uri: String,
}

async fn numbers_of(State(index): State<Index>, Query(q): Query<NumbersQuery>) -> Result<Response, ApiError> {
    let uri = index::canonical_sip_uri(&q.sip_uri)?;
    let numbers = index.numbers_of(&uri)?;
    Ok(Json(json!({"sip_uri": uri, "numbers": numbers})).into_response())
}

#[derive(Deserialize, Default)]
struct ImportQuery {
    strict: Option<bool>,
    region: Option<String>,
    format: Option<String>,
}

async fn import(State(index): State<Index>, Query(q): Query<ImportQuery>, req: Request) -> Result<Response, ApiError> {
    let format = match q.format.as_deref() {
        Some(f) => Format::from_name(f).ok_or_else(|| bad(format!("unknown format {f:?}")))?,
        None => {
            let ct = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
            Format::from_name(ct)
                .ok_or_else(|| bad(format!("say the format: ?format=csv|jsonl or Content-Type text/csv or application/x-ndjson (got {ct:?})")))?
        }
    };
    let mut opts = ImportOptions::new(format);
    opts.strict = q.strict.unwrap_or(false);
    opts.region = region_of(&q.region)?;
    // Stream the body into the blocking importer through a small bounded channel. A body
    // that breaks off (client gone) is an error for the importer, not an end of input: a
    // truncated last line must not be imported.
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(16);
    let mut body = req.into_body();
    let feeder = tokio::spawn(async move {
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => {
                    if let Ok(data) = frame.into_data() {
                        if tx.send(Ok(data)).await.is_err() {
                            break;
                        }
                    }
                }
                Err(e) => {
                    let msg = e.to_string();
                    let _ = tx.send(Err(std::io::Error::other(msg.clone()))).await;
                    return Err(msg);
                }
            }
        }
        Ok::<(), String>(())
    });
    let reader = std::io::BufReader::with_capacity(1 << 16, ChannelReader { rx, cur: Bytes::new() });
    let summary = blocking(move || index.import(reader, &opts)).await;
    match feeder.await {
        Ok(Err(e)) => return Err(bad(format!("reading the request body: {e}"))),
        Err(e) => return Err(ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
        Ok(Ok(())) => {}
    }
    match summary {
        Ok(s) => Ok(Json(s).into_response()),
        Err(e) => Err(e),
    }
}

#[derive(Deserialize, Default)]
struct ExportQuery {
    format: Option<String>,
}

async fn export(State(index): State<Index>, Query(q): Query<ExportQuery>, headers: HeaderMap) -> Result<Response, ApiError> {
    let format = match q.format.as_deref() {
        Some(f) => Format::from_name(f).ok_or_else(|| bad(format!("unknown format {f:?}")))?,
        None => headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .and_then(Format::from_name)
            .unwrap_or(Format::Csv),
    };
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tokio::task::spawn_blocking(move || {
        let mut w = ChannelWriter { tx: tx.clone() };
        if let Err(e) = index.export(&mut w, format) {
            let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
        }
    });
    Ok(([(header::CONTENT_TYPE, format.mime())], axum::body::Body::new(ChannelBody { rx })).into_response())
}

async fn stats(State(index): State<Index>) -> Result<Response, ApiError> {
    Ok(Json(blocking(move || index.stats()).await?).into_response())
}
