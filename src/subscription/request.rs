//! Reading a list SUBSCRIBE (RFC 5367 + RFC 4662): either the accepted request, or the
//! exact error response the checklist asks for. Pure: no state, no I/O.

use crate::body::{self, InflateLimits};
use crate::config::SubscriptionConfig;
use crate::sip::validate::is_deflated;
use crate::sip::{HeaderName, Request, Response};

/// The option tags we support in `Require`.
const KNOWN_REQUIRE: &[&str] = &["recipient-list-subscribe", "eventlist"];

/// What an acceptable initial list SUBSCRIBE asks for.
#[derive(Debug)]
pub struct ListRequest {
    /// Entry URIs exactly as written, duplicates merged.
    pub entries: Vec<String>,
    /// Expires granted (0: a one-shot fetch).
    pub expires: u32,
    /// The client accepts deflate-compressed NOTIFYs.
    pub accepts_deflate: bool,
    /// No list: the Request-URI is the one presentity (RFC 3856).
    pub single: bool,
}

/// The Event package, checked byte for byte (RFC 6665 §8.2.1), and the Expires asked,
/// capped; errors are the response to send.
pub fn check_common(req: &Request, cfg: &SubscriptionConfig) -> Result<u32, Response> {
    let event = req.headers.get(&HeaderName::Event);
    let package = event.as_deref().map(|e| e.split(';').next().unwrap_or("").trim());
    if package != Some("presence") {
        return Err(Response::to(req, 489).header(HeaderName::AllowEvents, "presence"));
    }
    let asked = match req.headers.get(&HeaderName::Expires) {
        None => cfg.default_expires,
        Some(v) => v.trim().parse::<u32>().map_err(|_| Response::with_reason(req, 400, "Bad Expires"))?,
    };
    if asked != 0 && asked < cfg.min_expires {
        return Err(Response::to(req, 423).header(HeaderName::MinExpires, cfg.min_expires.to_string()));
    }
    Ok(asked.min(cfg.max_expires))
}

/// Unknown option tags in `Require` get 420 naming them (RFC 3261 §8.2.2.3).
pub fn check_require(req: &Request) -> Result<(), Response> {
    let unknown: Vec<String> = req
        .headers
        .list(&HeaderName::Require)
        .filter(|t| !KNOWN_REQUIRE.iter().any(|k| k.eq_ignore_ascii_case(t)))
        .map(|t| t.into_owned())
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    Err(Response::to(req, 420).header(HeaderName::Unsupported, unknown.join(", ")))
}

/// Whether the SUBSCRIBE carries a list (RFC 5367) rather than naming one presentity.
/// Any sign of a list counts (the option tag, the disposition, the type) and so does any
/// body at all: we understand no other SUBSCRIBE body (no event filters), so a list under
/// a wrong Content-Type must get 415 from `check_list`, never become a subscription to the
/// Request-URI with the list thrown away.
pub fn is_list_subscribe(req: &Request) -> bool {
    req.headers.has_token(&HeaderName::Require, "recipient-list-subscribe")
        || disposition(req).is_some_and(|d| d == "recipient-list")
        || content_type(req).is_some_and(|t| t == "application/resource-lists+xml")
        || !req.body.is_empty()
}

fn disposition(req: &Request) -> Option<String> {
    let value = req.headers.get(&HeaderName::ContentDisposition)?;
    Some(value.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
}

fn content_type(req: &Request) -> Option<String> {
    let value = req.headers.get(&HeaderName::ContentType)?;
    Some(value.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
}

/// Checks an initial list SUBSCRIBE and reads its list.
pub fn check_list(req: &Request, expires: u32, cfg: &SubscriptionConfig) -> Result<ListRequest, Response> {
    if content_type(req).as_deref() != Some("application/resource-lists+xml") {
        return Err(Response::to(req, 415).header(HeaderName::Accept, "application/resource-lists+xml"));
    }
    if !req.headers.has_token(&HeaderName::Supported, "eventlist") {
        return Err(Response::to(req, 421).header(HeaderName::Require, "eventlist"));
    }
    let compressed = is_deflated(&req.headers)
        .map_err(|_| Response::to(req, 415).header(HeaderName::AcceptEncoding, "deflate"))?;
    if req.body.len() > cfg.max_body_bytes {
        return Err(Response::to(req, 413));
    }
    let xml = if compressed { inflate(req, cfg)? } else { req.body.to_vec() };
    let entries = body::resource_lists::parse(&xml, cfg.max_entries)
        .map_err(|e| Response::with_reason(req, e.sip_status(), e.reason()))?;
    Ok(ListRequest { entries, expires, accepts_deflate: accepts_deflate(req), single: false })
}

fn inflate(req: &Request, cfg: &SubscriptionConfig) -> Result<Vec<u8>, Response> {
    let limits = InflateLimits { max_output: cfg.max_body_bytes, max_ratio: cfg.max_compression_ratio, ..Default::default() };
    body::inflate(&req.body, &limits).map_err(|e| match e.sip_status() {
        413 => Response::to(req, 413),
        status => Response::with_reason(req, status, "Bad Deflate Body"),
    })
}

/// The client lists deflate in Accept-Encoding.
pub fn accepts_deflate(req: &Request) -> bool {
    req.headers.has_token(&HeaderName::AcceptEncoding, "deflate")
}
