//! Contact Sync: the account's stored address book over HTTP (`/v1/contacts...`, in
//! `docs/provisioning.openapi.yaml`): upload (replace), delta since a version, export,
//! version, delete, the smart contacts of the book and the change list since a version.
//!
//! Every number given is read in the account's region and charged to its discovery
//! budget like an address-book query (`discovery`); numbers that are no phone number are
//! answered as rejected and not stored. The book itself is `address_books`'; this file
//! owns the requests and answers only. A change reaches the account's stored-list
//! subscriptions through the books' feed, not through here.

use super::api::{authenticated, blocking, json_body, ApiError};
use super::Service;
use crate::accounts::Account;
use crate::address_books::{BookError, Contact};
use crate::discovery::{Found, Lookup, Seeker};
use crate::numbers::{self, Region, E164};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

type Shared = State<Arc<Service>>;

/// A contact as the phone sends it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContactIn {
    number: String,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Upload {
    contacts: Vec<ContactIn>,
    #[serde(default)]
    region: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Delta {
    /// The version the phone last saw: the delta applies to it only (409 otherwise).
    base_version: u64,
    #[serde(default)]
    add: Vec<ContactIn>,
    #[serde(default)]
    remove: Vec<String>,
    #[serde(default)]
    region: Option<String>,
}

/// `PUT /v1/contacts`: the whole book, replacing the stored one.
pub async fn replace(State(s): Shared, req: Request) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let account = authenticated(&s, &parts).await?;
    let b: Upload = json_body(&parts.headers, body, s.books_config.max_body_bytes).await?;
    within_cap(&s, b.contacts.len())?;
    let asked = region(b.region.as_deref())?;
    let (contacts, rejected, over_budget) = classify(&s, &account, b.contacts, asked).await?;
    let stored = contacts.len();
    let (books, owner) = (s.books.clone(), account.username.clone());
    let version = book_call(move || books.replace(&owner, contacts)).await?;
    Ok(Json(json!({"version": version, "stored": stored, "rejected": rejected, "over_budget": over_budget})).into_response())
}

/// `PATCH /v1/contacts`: add and remove entries since `base_version`.
pub async fn apply(State(s): Shared, req: Request) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let account = authenticated(&s, &parts).await?;
    let b: Delta = json_body(&parts.headers, body, s.books_config.max_body_bytes).await?;
    within_cap(&s, b.add.len())?;
    let asked = region(b.region.as_deref())?;
    let (add, mut rejected, over_budget) = classify(&s, &account, b.add, asked).await?;
    let (remove, bad) = parse_removals(&s, &account, b.remove, asked).await?;
    rejected.extend(bad);
    let (added, removed) = (add.len(), remove.len());
    let (books, owner, base) = (s.books.clone(), account.username.clone(), b.base_version);
    let version = book_call(move || books.apply(&owner, base, add, &remove)).await?;
    Ok(Json(json!({"version": version, "added": added, "removed": removed, "rejected": rejected, "over_budget": over_budget})).into_response())
}

/// `GET /v1/contacts`: the book as stored, for its owner (export).
pub async fn export(State(s): Shared, req: Request) -> Result<Response, ApiError> {
    let account = authenticated(&s, &req.into_parts().0).await?;
    let (books, owner) = (s.books.clone(), account.username);
    let book = book_call(move || books.get(&owner)?.ok_or(BookError::NotFound)).await?;
    let contacts: Vec<Value> = book.contacts.iter().map(contact_json).collect();
    Ok(Json(json!({"version": book.version, "updated_at": book.updated_at, "contacts": contacts})).into_response())
}

/// `DELETE /v1/contacts`: the book is deleted; its stored-list subscriptions end.
pub async fn delete(State(s): Shared, req: Request) -> Result<Response, ApiError> {
    let account = authenticated(&s, &req.into_parts().0).await?;
    let (books, owner) = (s.books.clone(), account.username);
    if !book_call(move || books.delete(&owner)).await? {
        return Err(book_error(BookError::NotFound));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /v1/contacts/version`: the version and size, without the contacts.
pub async fn version(State(s): Shared, req: Request) -> Result<Response, ApiError> {
    let account = authenticated(&s, &req.into_parts().0).await?;
    let (books, owner) = (s.books.clone(), account.username);
    let (version, count) = book_call(move || books.version(&owner)?.ok_or(BookError::NotFound)).await?;
    Ok(Json(json!({"version": version, "count": count})).into_response())
}

/// `GET /v1/contacts/smart`: the contacts of the book that are users, each with his SIP
/// URI and presence (charged like an address-book query).
pub async fn smart(State(s): Shared, req: Request) -> Result<Response, ApiError> {
    let account = authenticated(&s, &req.into_parts().0).await?;
    let (books, owner) = (s.books.clone(), account.username.clone());
    let book = book_call(move || books.get(&owner)?.ok_or(BookError::NotFound)).await?;
    let lookup = resolve(&s, &account, &book.contacts).await?;
    let contacts: Vec<Value> = book.contacts.iter().zip(&lookup.found).filter_map(|(c, f)| smart_json(&s, c, f)).collect();
    Ok(Json(json!({"version": book.version, "contacts": contacts, "over_budget": lookup.over_budget})).into_response())
}

/// `GET /v1/contacts/changes?since=V`: what was added and removed since version V, the
/// added ones with their smart state; `complete: false` when V is older than the log.
pub async fn changes(State(s): Shared, req: Request) -> Result<Response, ApiError> {
    let parts = req.into_parts().0;
    let account = authenticated(&s, &parts).await?;
    let since = since_of(parts.uri.query().unwrap_or(""))?;
    let (books, owner) = (s.books.clone(), account.username.clone());
    let ch = book_call(move || books.changes_since(&owner, since)?.ok_or(BookError::NotFound)).await?;
    let lookup = resolve(&s, &account, &ch.added).await?;
    let added: Vec<Value> = ch.added.iter().zip(&lookup.found).map(|(c, f)| smart_json(&s, c, f).unwrap_or_else(|| contact_json(c))).collect();
    let removed: Vec<Value> = ch.removed.iter().map(contact_json).collect();
    Ok(Json(json!({"version": ch.version, "complete": ch.complete, "added": added, "removed": removed, "over_budget": lookup.over_budget})).into_response())
}

/// A region asked for (ISO 3166), if any.
pub fn region(raw: Option<&str>) -> Result<Option<Region>, ApiError> {
    match raw.map(str::trim) {
        Some(r) if !r.is_empty() => numbers::parse_region(r).map(Some).map_err(|e| ApiError::bad_request("invalid_region", e.to_string())),
        _ => Ok(None),
    }
}

/// `raw` looked up for `account` (read in his region or `asked`, charged to his budget).
pub async fn lookup(s: &Arc<Service>, account: &Account, raw: Vec<String>, asked: Option<Region>) -> Result<Lookup, ApiError> {
    let (discovery, account) = (s.discovery.clone(), account.clone());
    blocking(move || {
        let sip_uri = account.sip_uri();
        let who = Seeker { budget_key: &account.username, sip_uri: &sip_uri, numbers: &account.numbers };
        discovery.lookup(&who, &raw, asked)
    })
    .await
}

fn within_cap(s: &Service, count: usize) -> Result<(), ApiError> {
    if count > s.books.limits().max_contacts {
        return Err(book_error(BookError::TooLarge { count, max: s.books.limits().max_contacts }));
    }
    Ok(())
}

/// The contacts given, read and charged: the numbers, those that are none (with why), and
/// how many were over the budget.
async fn classify(s: &Arc<Service>, account: &Account, given: Vec<ContactIn>, asked: Option<Region>) -> Result<(Vec<Contact>, Vec<Value>, usize), ApiError> {
    let raw: Vec<String> = given.iter().map(|c| c.number.clone()).collect();
    let found = lookup(s, account, raw, asked).await?;
    let mut contacts = Vec::with_capacity(given.len());
    let mut rejected = Vec::new();
    for (c, f) in given.into_iter().zip(found.found) {
        match f {
            Found::Number(e164, _) => contacts.push(Contact { e164, number: c.number, name: c.name }),
            Found::Invalid(error) => rejected.push(json!({"number": c.number, "error": error})),
        }
    }
    Ok((contacts, rejected, found.over_budget))
}

/// Numbers to remove, read in the account's region (not charged: nothing is revealed).
async fn parse_removals(s: &Arc<Service>, account: &Account, raw: Vec<String>, asked: Option<Region>) -> Result<(Vec<E164>, Vec<Value>), ApiError> {
    let (discovery, account) = (s.discovery.clone(), account.clone());
    blocking(move || -> Result<_, std::convert::Infallible> {
        let sip_uri = account.sip_uri();
        let who = Seeker { budget_key: &account.username, sip_uri: &sip_uri, numbers: &account.numbers };
        let region = discovery.region(&who, asked);
        let (mut ok, mut bad) = (Vec::new(), Vec::new());
        for r in raw {
            match crate::index::parse_number(&r, region) {
                Ok(n) => ok.push(n),
                Err(e) => bad.push(json!({"number": r, "error": e.to_string()})),
            }
        }
        Ok((ok, bad))
    })
    .await
}

/// Who the contacts are now (charged).
async fn resolve(s: &Arc<Service>, account: &Account, contacts: &[Contact]) -> Result<Lookup, ApiError> {
    lookup(s, account, contacts.iter().map(|c| c.e164.to_string()).collect(), None).await
}

fn contact_json(c: &Contact) -> Value {
    json!({"number": c.number, "name": c.name, "e164": c.e164})
}

/// A contact that is a user, with his SIP URI and presence; None when he is not one.
fn smart_json(s: &Service, c: &Contact, found: &Found) -> Option<Value> {
    let Found::Number(_, Some(uri)) = found else { return None };
    let presence = match s.presence.live(uri) {
        Some(live) => json!({"online": live.online, "updated_at": live.updated}),
        None => json!({"online": false}),
    };
    Some(json!({"number": c.number, "name": c.name, "e164": c.e164, "smart": true, "sip_uri": uri, "presence": presence}))
}

fn since_of(query: &str) -> Result<u64, ApiError> {
    let raw = form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "since").map(|(_, v)| v.into_owned());
    let raw = raw.ok_or_else(|| ApiError::bad_request("missing_field", "since: the version the change list starts from"))?;
    raw.parse().map_err(|_| ApiError::bad_request("malformed_query", format!("since: {raw:?} is not a version")))
}

/// Runs book work off the async threads, its errors answered as they mean.
async fn book_call<T: Send + 'static>(f: impl FnOnce() -> Result<T, BookError> + Send + 'static) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(book_error),
        Err(e) => Err(ApiError::internal(format!("task failed: {e}"))),
    }
}

fn book_error(e: BookError) -> ApiError {
    match e {
        BookError::NotFound => ApiError::new(StatusCode::NOT_FOUND, "no_address_book", "this account has no stored address book"),
        BookError::Conflict { current, .. } => {
            ApiError::new(StatusCode::CONFLICT, "version_conflict", e.to_string()).with(json!({"version": current}))
        }
        BookError::TooLarge { .. } => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_many_contacts", e.to_string()),
        BookError::Invalid(m) => ApiError::bad_request("invalid_contact", m),
        other => ApiError::unavailable(format!("storage: {other}")),
    }
}
