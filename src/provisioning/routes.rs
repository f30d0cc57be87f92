//! The routes of the provisioning API (the contract is `docs/provisioning.openapi.yaml`):
//!
//! | route                               | auth    | what                                      |
//! |-------------------------------------|---------|-------------------------------------------|
//! | `GET /health`                       |         | `{"service":"smart-presence-provisioning"}` |
//! | `POST /v1/verifications`            |         | send a code to a number (workflow 1)      |
//! | `POST /v1/verifications/check`      |         | check it, provision the account (2)       |
//! | `GET /v1/verifications/status`      |         | delivery state of the pending code        |
//! | `GET/POST /v1/delivery-status`      | token?  | gateway delivery report                   |
//! | `GET /v1/account`                   | account | the authenticated account                 |
//! | `POST /v1/smart-entry`              | account | bind its verified numbers to its URI (3)  |
//! | `DELETE /v1/smart-entry`            | account | remove those bindings                     |
//! | `POST /v1/address-book`             | account | which numbers are smart (4), budgeted     |
//! | `DELETE /v1/account`                | account | delete the account and its stored book    |
//! | `GET/PUT /v1/account/settings`      | account | "share my status" (`settings`)            |
//! | `PUT/PATCH/GET/DELETE /v1/contacts` | account | the stored address book (`contacts`)      |
//! | `GET /v1/contacts/version`          | account | its version and size                      |
//! | `GET /v1/contacts/smart`            | account | its users, with SIP URI and presence      |
//! | `GET /v1/contacts/changes`          | account | what changed since a version              |
//!
//! Owns request parsing and answers only; state lives in `verification`, accounts and the
//! index are changed through their APIs. Storage calls run on the blocking pool.

use crate::discovery::Found;
use super::api::{self, authenticated, blocking, index_blocking, json_body, read_limited, ApiError};
use super::sms::{render_text, Outgoing};
use super::{contacts, settings, Check, Service, Start};
use crate::clock::unix_now;
use crate::metrics::Channel as Counted;
use crate::accounts::{Account, AccountError, Provisioned};
use crate::index::{self, Source};
use crate::numbers::{self, E164};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, request::Parts, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

type Shared = State<Arc<Service>>;

pub(crate) fn router(service: Arc<Service>) -> Router {
    Router::new()
        .route("/health", get(|| async { Json(json!({"service": "smart-presence-provisioning"})) }))
        .route("/v1/verifications", post(start_verification))
        .route("/v1/verifications/check", post(check_verification))
        .route("/v1/verifications/status", get(verification_status))
        .route("/v1/delivery-status", get(delivery_status).post(delivery_status))
        .route("/v1/account", get(get_account).delete(delete_account))
        .route("/v1/account/settings", get(settings::get).put(settings::put))
        .route("/v1/smart-entry", post(add_smart_entry).delete(remove_smart_entry))
        .route("/v1/address-book", post(address_book))
        .route("/v1/contacts", put(contacts::replace).patch(contacts::apply).get(contacts::export).delete(contacts::delete))
        .route("/v1/contacts/version", get(contacts::version))
        .route("/v1/contacts/smart", get(contacts::smart))
        .route("/v1/contacts/changes", get(contacts::changes))
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed)
        .with_state(service)
}

/// A number in international format (workflow steps 1 and 2).
fn international(raw: &str) -> Result<E164, ApiError> {
    numbers::normalize(raw, None)
        .map_err(|e| ApiError::bad_request("invalid_number", format!("{raw:?} is not an international phone number: {e}")))
}

fn device_id(raw: &str) -> Result<&str, ApiError> {
    let ok = (1..=128).contains(&raw.len()) && raw.chars().all(|c| c.is_ascii_graphic());
    ok.then_some(raw).ok_or_else(|| ApiError::bad_request("invalid_device_id", "device_id: 1 to 128 printable ASCII characters"))
}

fn too_many_requests(code: &'static str, message: String, retry_after: u64) -> ApiError {
    ApiError::new(StatusCode::TOO_MANY_REQUESTS, code, message)
        .with(json!({"retry_after": retry_after}))
        .header(header::RETRY_AFTER, retry_after)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StartBody {
    number: String,
    device_id: String,
    #[serde(default)]
    channel: Option<String>,
}

async fn start_verification(State(s): Shared, req: Request) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let b: StartBody = json_body(&parts.headers, body, s.config.max_body_bytes).await?;
    let n = international(&b.number)?;
    let device = device_id(&b.device_id)?.to_string();
    let channel = Channel::parse(&s, b.channel.as_deref())?;
    if let Some(answer) = recover(&s, n, &device).await? {
        return Ok(answer);
    }
    let st = s.clone();
    let decision = blocking(move || st.state.start(n, &device, unix_now())).await?;
    let (id, code, sends_left) = match decision {
        Start::Send { id, code, sends_left } => (id, code, sends_left),
        Start::TooMany { retry_after } => {
            return Err(too_many_requests("too_many_sms", format!("too many codes sent to {n} for this device"), retry_after))
        }
        Start::TooSoon { retry_after } => {
            return Err(too_many_requests("resend_too_soon", format!("wait {retry_after} s before asking for a new code"), retry_after))
        }
    };
    deliver(&s, channel, n, &id, &code).await?;
    let l = s.state.limits();
    let answer = json!({
        "verification_id": id,
        "number": n,
        "channel": channel.name(),
        "expires_in": l.validity_secs,
        "resend_in": l.resend_after_secs,
        "sends_left": sends_left,
    });
    Ok((StatusCode::ACCEPTED, Json(answer)).into_response())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Channel {
    Sms,
    Voice,
}

impl Channel {
    /// The channel a request asks for (default SMS), if this service offers it.
    fn parse(s: &Service, asked: Option<&str>) -> Result<Channel, ApiError> {
        match asked.unwrap_or("sms") {
            "sms" => Ok(Channel::Sms),
            "voice" if s.voice.is_enabled() => Ok(Channel::Voice),
            "voice" => Err(ApiError::bad_request("channel_unavailable", "voice calls are not enabled on this service")),
            _ => Err(ApiError::bad_request("invalid_channel", "channel must be sms or voice")),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Channel::Sms => "sms",
            Channel::Voice => "voice",
        }
    }
}

/// Hands the code to the channel's gateway; a failure is recorded and answered 502 (the
/// send still counts toward the limits).
async fn deliver(s: &Arc<Service>, channel: Channel, n: E164, id: &str, code: &str) -> Result<(), ApiError> {
    let (gateway, template, counted) = match channel {
        Channel::Sms => (&s.sms, &s.config.sms_text, (Counted::Sms, s.config.sms.kind)),
        Channel::Voice => (&s.voice, &s.config.voice_text, (Counted::Voice, s.config.voice.kind)),
    };
    let msg = Outgoing {
        to: n.to_string(),
        from: s.config.sender.clone(),
        text: render_text(template, &s.config.app_name, code),
        reference: id.to_string(),
    };
    let result = gateway.send(&msg).await;
    s.metrics.as_deref().inspect(|m| m.gateway_message(counted.0, counted.1, result.is_ok()));
    let Err(e) = result else { return Ok(()) };
    tracing::warn!(number = %n, channel = channel.name(), "code delivery failed: {e}");
    let (st, rid) = (s.clone(), id.to_string());
    let _ = blocking(move || st.state.set_delivery(&rid, "failed")).await;
    Err(ApiError::new(StatusCode::BAD_GATEWAY, "delivery_failed", format!("the {} gateway failed: {e}", channel.name())))
}

#[derive(Deserialize)]
struct StatusQuery {
    number: String,
    device_id: String,
}

/// Where the last code of a number and device stands (`?number=&device_id=`).
async fn verification_status(State(s): Shared, req: Request) -> Result<Response, ApiError> {
    let query = req.uri().query().unwrap_or("");
    let q: StatusQuery = serde_urlencoded_query(query)?;
    let n = international(&q.number)?;
    let device = device_id(&q.device_id)?.to_string();
    let st = s.clone();
    match blocking(move || st.state.delivery(n, &device)).await? {
        Some(delivery) => Ok(Json(json!({"number": n, "delivery": delivery})).into_response()),
        None => Err(ApiError::new(StatusCode::NOT_FOUND, "no_verification", format!("no code was sent to {n} for this device"))),
    }
}

fn serde_urlencoded_query<T: serde::de::DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    let uri: axum::http::Uri = format!("/?{query}").parse().map_err(|_| ApiError::bad_request("malformed_query", "bad query string"))?;
    axum::extract::Query::<T>::try_from_uri(&uri)
        .map(|q| q.0)
        .map_err(|e| ApiError::bad_request("malformed_query", e.body_text()))
}

/// Re-install recovery: a device that verified `n` before gets new credentials, when enabled.
async fn recover(s: &Arc<Service>, n: E164, device: &str) -> Result<Option<Response>, ApiError> {
    if !s.config.reinstall_recovery {
        return Ok(None);
    }
    let (st, dev) = (s.clone(), device.to_string());
    let known = blocking(move || st.state.knows_device(n, &dev)).await?;
    let st = s.clone();
    if !known || blocking(move || st.accounts.by_number(n)).await?.is_none() {
        return Ok(None);
    }
    tracing::info!(number = %n, "re-install recovery: credentials rotated without a code");
    let p = provision(s, n, device).await?;
    Ok(Some(provisioned_answer(&p, true).into_response()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckBody {
    number: String,
    device_id: String,
    code: String,
}

async fn check_verification(State(s): Shared, req: Request) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let b: CheckBody = json_body(&parts.headers, body, s.config.max_body_bytes).await?;
    let n = international(&b.number)?;
    let device = device_id(&b.device_id)?.to_string();
    let (st, dev, code) = (s.clone(), device.clone(), b.code);
    match blocking(move || st.state.check(n, &dev, &code, unix_now())).await? {
        Check::Correct => {}
        Check::Wrong { attempts_left } => {
            return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "wrong_code", "wrong code")
                .with(json!({"attempts_left": attempts_left})))
        }
        Check::Locked => {
            return Err(ApiError::new(StatusCode::FORBIDDEN, "verification_locked", "too many wrong codes: ask for a new code"))
        }
        Check::Expired => return Err(ApiError::new(StatusCode::GONE, "code_expired", "the code expired: ask for a new code")),
        Check::NoPending => {
            return Err(ApiError::new(StatusCode::NOT_FOUND, "no_verification", format!("no pending code for {n} and this device")))
        }
    }
    let p = provision(&s, n, &device).await?;
    Ok(provisioned_answer(&p, false).into_response())
}

/// Creates or finds the account of `n` (new credentials) and remembers the device; durable
/// before it returns.
async fn provision(s: &Arc<Service>, n: E164, device: &str) -> Result<Provisioned, ApiError> {
    let number = n.to_string();
    let username = s.config.username_template.replace("{digits}", number.trim_start_matches('+')).replace("{number}", &number);
    let st = s.clone();
    let p = match tokio::task::spawn_blocking(move || st.accounts.provision(n, &username)).await {
        Ok(Ok(p)) => p,
        Ok(Err(e @ (AccountError::UsernameTaken(_) | AccountError::InvalidUsername(_)))) => {
            tracing::error!(number = %n, "cannot provision: {e} (check provisioning.username_template)");
            return Err(ApiError::new(StatusCode::CONFLICT, "account_conflict", e.to_string()));
        }
        Ok(Err(e)) => return Err(ApiError::unavailable(format!("storage: {e}"))),
        Err(e) => return Err(ApiError::internal(format!("task failed: {e}"))),
    };
    let (st, dev) = (s.clone(), device.to_string());
    blocking(move || st.state.remember_device(n, &dev, unix_now())).await?;
    Ok(p)
}

fn account_json(a: &Account) -> Value {
    json!({
        "username": a.username,
        "domain": a.domain,
        "sip_uri": a.sip_uri(),
        "numbers": a.numbers,
        "created_at": a.created_at,
    })
}

fn provisioned_answer(p: &Provisioned, recovered: bool) -> Json<Value> {
    Json(json!({
        "account": account_json(&p.account),
        "password": p.credentials.password,
        "token": p.credentials.token,
        "created": p.created,
        "recovered": recovered,
    }))
}

async fn get_account(State(s): Shared, req: Request) -> Result<Response, ApiError> {
    let (parts, _) = req.into_parts();
    let account = authenticated(&s, &parts).await?;
    Ok(Json(account_json(&account)).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct EntryBody {
    numbers: Option<Vec<String>>,
}

/// A JSON body that may be absent (empty body: the default).
async fn optional_json<T: serde::de::DeserializeOwned + Default>(parts: &Parts, body: Body, limit: usize) -> Result<T, ApiError> {
    let bytes = read_limited(body, limit).await?;
    if bytes.is_empty() {
        return Ok(T::default());
    }
    json_body(&parts.headers, Body::from(bytes), limit).await
}

/// The numbers of the account a request names (all of them when it names none); a number
/// the account was not provisioned with is a 403.
fn own_numbers(account: &Account, asked: Option<Vec<String>>) -> Result<Vec<E164>, ApiError> {
    let Some(asked) = asked else { return Ok(account.numbers.clone()) };
    asked
        .iter()
        .map(|raw| {
            let n = international(raw)?;
            if account.numbers.contains(&n) {
                Ok(n)
            } else {
                Err(ApiError::new(StatusCode::FORBIDDEN, "number_not_verified", format!("{n} is not a verified number of this account")))
            }
        })
        .collect()
}

async fn add_smart_entry(State(s): Shared, req: Request) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let account = authenticated(&s, &parts).await?;
    let b: EntryBody = optional_json(&parts, body, s.config.max_body_bytes).await?;
    let numbers = own_numbers(&account, b.numbers)?;
    let uri = account.sip_uri();
    let (st, target) = (s.clone(), uri.clone());
    let outcomes = index_blocking(move || {
        numbers
            .into_iter()
            .map(|n| st.index.bind(n, &target, Source::Verification).map(|o| (n, o)))
            .collect::<Result<Vec<_>, index::IndexError>>()
    })
    .await?;
    let bindings: Vec<Value> = outcomes.iter().map(|(n, o)| json!({"number": n, "result": o})).collect();
    Ok(Json(json!({"sip_uri": uri, "bindings": bindings})).into_response())
}

async fn remove_smart_entry(State(s): Shared, req: Request) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let account = authenticated(&s, &parts).await?;
    let b: EntryBody = optional_json(&parts, body, s.config.max_body_bytes).await?;
    let numbers = own_numbers(&account, b.numbers)?;
    let (st, uri) = (s.clone(), account.sip_uri());
    let removed = index_blocking(move || unbind_own(&st, &uri, numbers)).await?;
    Ok(Json(json!({"removed": removed})).into_response())
}

/// Unbinds those of `numbers` bound to `uri`; returns them.
fn unbind_own(s: &Service, uri: &str, numbers: Vec<E164>) -> Result<Vec<E164>, index::IndexError> {
    let target = index::canonical_sip_uri(uri)?;
    let mut removed = Vec::new();
    for n in numbers {
        // Only this account's own bindings: an operator may have bound the number elsewhere.
        if s.index.lookup(n)?.is_some_and(|b| b.sip_uri == target) && s.index.unbind(n)?.is_some() {
            removed.push(n);
        }
    }
    Ok(removed)
}

/// Deletes the account: its smart entries, its stored address book, then the account
/// (its credentials stop working at once).
async fn delete_account(State(s): Shared, req: Request) -> Result<Response, ApiError> {
    let account = authenticated(&s, &req.into_parts().0).await?;
    let (st, uri, numbers) = (s.clone(), account.sip_uri(), account.numbers.clone());
    blocking(move || unbind_own(&st, &uri, numbers)).await?;
    let st = s.clone();
    blocking(move || st.accounts.delete(&account.username, &st.books)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddressBook {
    numbers: Vec<String>,
    /// ISO region for national numbers (default: the account's number's region).
    #[serde(default)]
    region: Option<String>,
}

async fn address_book(State(s): Shared, req: Request) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let account = authenticated(&s, &parts).await?;
    let b: AddressBook = json_body(&parts.headers, body, s.config.max_body_bytes).await?;
    if b.numbers.len() > s.config.max_address_book {
        let msg = format!("{} numbers, at most {} per query", b.numbers.len(), s.config.max_address_book);
        return Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_many_numbers", msg));
    }
    let asked = contacts::region(b.region.as_deref())?;
    let lookup = contacts::lookup(&s, &account, b.numbers.clone(), asked).await?;
    let contacts: Vec<Value> = b
        .numbers
        .iter()
        .zip(&lookup.found)
        .map(|(raw, found)| match found {
            Found::Number(n, Some(uri)) => json!({"number": raw, "e164": n, "smart": true, "sip_uri": uri}),
            Found::Number(n, None) => json!({"number": raw, "e164": n, "smart": false}),
            Found::Invalid(e) => json!({"number": raw, "smart": false, "error": e}),
        })
        .collect();
    Ok(Json(json!({"contacts": contacts, "over_budget": lookup.over_budget})).into_response())
}

#[derive(Deserialize, Default)]
struct DeliveryReport {
    #[serde(alias = "client-ref", alias = "client_ref", alias = "reference")]
    r#ref: Option<String>,
    status: Option<String>,
    token: Option<String>,
}

/// The gateway's callback: `ref` (our verification id) and `status`, from the query string,
/// a form body or a JSON body.
async fn delivery_status(State(s): Shared, req: Request) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let query = parts.uri.query().unwrap_or("");
    let mut report = form_report(query.as_bytes());
    let bytes = read_limited(body, s.config.max_body_bytes).await?;
    if !bytes.is_empty() {
        let body_report = if bytes.first() == Some(&b'{') {
            serde_json::from_slice::<DeliveryReport>(&bytes).map_err(|e| ApiError::bad_request("malformed_json", e.to_string()))?
        } else {
            form_report(&bytes)
        };
        report.r#ref = report.r#ref.or(body_report.r#ref);
        report.status = report.status.or(body_report.status);
        report.token = report.token.or(body_report.token);
    }
    let expected = &s.config.delivery_status_token;
    if !expected.is_empty() && report.token.as_deref() != Some(expected.as_str()) {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "bad_token", "missing or wrong token"));
    }
    let (Some(id), Some(status)) = (report.r#ref, report.status) else {
        return Err(ApiError::bad_request("missing_field", "a delivery report needs ref and status"));
    };
    let st = s.clone();
    if !blocking(move || st.state.set_delivery(&id, &status)).await? {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "unknown_reference", "no verification with this ref"));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn form_report(bytes: &[u8]) -> DeliveryReport {
    let mut r = DeliveryReport::default();
    for (k, v) in form_urlencoded::parse(bytes) {
        match k.as_ref() {
            "ref" | "client-ref" | "client_ref" | "reference" => r.r#ref = Some(v.into_owned()),
            "status" => r.status = Some(v.into_owned()),
            "token" => r.token = Some(v.into_owned()),
            _ => {}
        }
    }
    r
}

#[cfg(test)]
mod tests {
    /// The OpenAPI document names every route this module serves.
    #[test]
    fn openapi_document_lists_every_route() {
        let doc = include_str!("../../docs/provisioning.openapi.yaml");
        let source = include_str!("routes.rs");
        let routes: Vec<&str> = source.lines().filter_map(|l| l.trim().strip_prefix(".route(\"")).filter_map(|l| l.split('"').next()).collect();
        assert!(routes.len() >= 8, "{routes:?}");
        for r in routes {
            assert!(doc.contains(&format!("\n  {r}:\n")), "{r} is missing from docs/provisioning.openapi.yaml");
        }
    }
}
