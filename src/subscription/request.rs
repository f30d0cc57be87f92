//! Reading a list SUBSCRIBE (RFC 5367 + RFC 4662): either the accepted request, or the
//! exact error response the checklist asks for. Pure: no state, no I/O.

use crate::body::{self, InflateLimits};
use crate::config::SubscriptionConfig;
use crate::sip::{Capabilities, ExpiryPolicy, HeaderName, Method, Request, Response};

/// The list body type (RFC 4826), the only SUBSCRIBE body we read.
const RESOURCE_LISTS: &str = "application/resource-lists+xml";

/// What the SUBSCRIBE handler serves: presence (RFC 3856), for a list in the body
/// (RFC 5367, possibly deflated) answered as one event list (RFC 4662).
pub const CAPABILITIES: Capabilities = Capabilities {
    methods: &[Method::Subscribe],
    events: &["presence"],
    accept: &[RESOURCE_LISTS],
    accept_encoding: &["deflate"],
    supported: &["eventlist", "recipient-list-subscribe"],
};

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
    /// A stored list: the account whose book it is, and the books' change generation
    /// before it was read (`address_books::Feed::generation`).
    pub book: Option<(String, u64)>,
}

/// The subscriptions' expiry policy.
pub fn expiry(cfg: &SubscriptionConfig) -> ExpiryPolicy {
    ExpiryPolicy { default: cfg.default_expires, min: cfg.min_expires, max: cfg.max_expires }
}

/// The Event package served and the Expires granted; errors are the response to send.
pub fn check_common(req: &Request, cfg: &SubscriptionConfig) -> Result<u32, Response> {
    CAPABILITIES.check_event(req)?;
    expiry(cfg).grant(req)
}

/// Unknown option tags in `Require` get 420 naming them.
pub fn check_require(req: &Request) -> Result<(), Response> {
    CAPABILITIES.check_require(req)
}

/// Whether the SUBSCRIBE carries a list (RFC 5367) rather than naming one presentity.
/// Any sign of a list counts (the option tag, the disposition, the type) and so does any
/// body at all: we understand no other SUBSCRIBE body (no event filters), so a list under
/// a wrong Content-Type must get 415 from `check_list`, never become a subscription to the
/// Request-URI with the list thrown away.
pub fn is_list_subscribe(req: &Request) -> bool {
    req.headers.has_token(&HeaderName::Require, "recipient-list-subscribe")
        || disposition(req).is_some_and(|d| d == "recipient-list")
        || req.headers.content_type().is_some_and(|t| t.is(RESOURCE_LISTS))
        || !req.body.is_empty()
}

fn disposition(req: &Request) -> Option<String> {
    let value = req.headers.get(&HeaderName::ContentDisposition)?;
    Some(value.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
}

/// Checks an initial list SUBSCRIBE and reads its list.
pub fn check_list(req: &Request, expires: u32, cfg: &SubscriptionConfig) -> Result<ListRequest, Response> {
    CAPABILITIES.check_content_type(req)?;
    if !req.headers.has_token(&HeaderName::Supported, "eventlist") {
        return Err(Response::to(req, 421).header(HeaderName::Require, "eventlist"));
    }
    let compressed = CAPABILITIES.check_encoding(req)?;
    if req.body.len() > cfg.max_body_bytes {
        return Err(Response::to(req, 413));
    }
    let xml = if compressed { inflate(req, cfg)? } else { req.body.to_vec() };
    let entries = body::resource_lists::parse(&xml, cfg.max_entries)
        .map_err(|e| Response::with_reason(req, e.sip_status(), e.reason()))?;
    Ok(ListRequest { entries, expires, accepts_deflate: accepts_deflate(req), single: false, book: None })
}

/// A body-less SUBSCRIBE to the stored list's URI must support event lists (RFC 4662 §5:
/// 421 with `Require: eventlist` otherwise).
pub fn check_stored(req: &Request) -> Result<(), Response> {
    if req.headers.has_token(&HeaderName::Supported, "eventlist") {
        Ok(())
    } else {
        Err(Response::to(req, 421).header(HeaderName::Require, "eventlist"))
    }
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
