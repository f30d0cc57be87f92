//! The PUBLISH handler (RFC 3903): initial, refresh, modify and remove, for Event presence
//! with PIDF bodies. Registrars integrate through it too (Kamailio's `pua_usrloc`).

use super::store::{PresenceStore, PublishError, Published};
use crate::body::{self, InflateLimits};
use crate::config::PresenceConfig;
use crate::core::{Handler, HandlerFuture, ServerTx};
use crate::index::Index;
use crate::numbers::{self, UriKind};
use crate::sip::{Capabilities, ExpiryPolicy, HeaderName, Method, Request, Response};
use std::sync::Arc;
use std::time::Duration;

/// What the PUBLISH handler serves: presence documents (PIDF), possibly deflated.
pub const CAPABILITIES: Capabilities = Capabilities {
    methods: &[Method::Publish],
    events: &["presence"],
    accept: &["application/pidf+xml"],
    accept_encoding: &["deflate"],
    ..Capabilities::NONE
};

pub struct PublishHandler {
    pub auth: Arc<crate::auth::Authenticator>,
    pub store: Arc<PresenceStore>,
    pub index: Index,
    pub config: PresenceConfig,
}

impl Handler for PublishHandler {
    fn handle(&self, req: Request, tx: ServerTx) -> HandlerFuture {
        let resp = self.serve(&req, tx.source()).unwrap_or_else(|r| r);
        Box::pin(tx.respond(resp))
    }

    fn capabilities(&self) -> Capabilities {
        CAPABILITIES
    }
}

impl PublishHandler {
    fn serve(&self, req: &Request, source: &crate::transport::Source) -> Result<Response, Response> {
        CAPABILITIES.check_event(req)?;
        let identity = self.auth.identify(req, source)?;
        let expires = self.expiry().grant(req)?;
        let uri = self.presentity(req, &identity)?;
        if !identity.trusted && identity.uri != uri {
            return Err(Response::with_reason(req, 403, "Not Your Presence"));
        }
        let etag = req.headers.get(&HeaderName::SipIfMatch).map(|e| e.trim().to_string());
        let state = if req.body.is_empty() { None } else { Some(read_pidf(req)?) };
        let life = Duration::from_secs(expires.into());
        let result = match (etag, state, expires) {
            (None, None, _) => return Err(Response::with_reason(req, 400, "Missing Body And SIP-If-Match")),
            (None, Some(_), 0) => return Err(Response::with_reason(req, 400, "Expires 0 Without SIP-If-Match")),
            (None, Some(s), _) => self.store.publish(&uri, s, life).map(Some),
            (Some(e), _, 0) => self.store.remove(&uri, &e).map(|_| None),
            (Some(e), state, _) => self.store.update(&uri, &e, state, life).map(Some),
        };
        match result {
            Ok(new_etag) => {
                let mut resp = Response::to(req, 200).header(HeaderName::Expires, expires.to_string());
                if let Some(tag) = new_etag {
                    resp = resp.header(HeaderName::SipETag, tag);
                }
                Ok(resp)
            }
            Err(PublishError::UnknownEtag) => Err(Response::to(req, 412)),
            Err(PublishError::Storage(e)) => {
                tracing::warn!("presence store: {e}");
                Err(unavailable(req))
            }
        }
    }

    /// The publications' expiry policy.
    fn expiry(&self) -> ExpiryPolicy {
        ExpiryPolicy { default: self.config.default_expires, min: self.config.min_expires, max: self.config.max_expires }
    }

    /// The presentity: a SIP user, or the user a phone number is bound to. A SIP user whose
    /// user part is a number is himself when he publishes for himself (Kamailio's
    /// `pua_usrloc` publishes to the AoR), else the number's user if it is bound, else himself.
    fn presentity(&self, req: &Request, identity: &crate::auth::Identity) -> Result<String, Response> {
        let user = crate::identity::aor(&req.uri).ok().filter(|_| !is_phone_only(&req.uri));
        match numbers::from_uri(&req.uri, None) {
            UriKind::Sip(uri) => Ok(uri),
            UriKind::Phone(_) if user.as_deref() == Some(identity.uri.as_str()) => Ok(identity.uri.clone()),
            UriKind::Phone(n) => match (self.index.lookup(n), user) {
                (Ok(Some(b)), _) => Ok(b.sip_uri),
                (Ok(None), Some(user)) => Ok(user),
                _ => Err(Response::to(req, 404)),
            },
            UriKind::Invalid(_) => Err(Response::to(req, 416)),
        }
    }
}

/// Retry-After (seconds) of a PUBLISH or REGISTER refused because the store is out of reach.
pub const STORE_RETRY_AFTER: u32 = 5;

/// 503 with Retry-After: the store (Redis, in a cluster) is out of reach for now; the
/// publisher tries again (RFC 3261 §21.5.4), rather than taking a 500 as final.
pub fn unavailable(req: &Request) -> Response {
    Response::with_reason(req, 503, "Presence Store Unavailable").header(HeaderName::RetryAfter, STORE_RETRY_AFTER.to_string())
}

/// A tel: URI or a SIP URI with `user=phone`: a number and nothing else.
fn is_phone_only(uri: &str) -> bool {
    crate::sip::Uri::parse(uri).map_or(true, |u| u.scheme == crate::sip::Scheme::Tel || u.is_user_phone())
}

/// Largest PIDF document accepted (after inflating): liblinphone's are under 1 KiB.
pub const MAX_PIDF_BYTES: usize = 16 * 1024;

/// The published state: open when any tuple is open, and the rich presence it carries
/// (`body::rich`: what is kept and what is dropped). 415 for other bodies, 413 for a
/// document over [`MAX_PIDF_BYTES`], 400 for bad PIDF.
fn read_pidf(req: &Request) -> Result<Published, Response> {
    CAPABILITIES.check_content_type(req)?;
    let deflated = CAPABILITIES.check_encoding(req)?;
    let too_large = || Response::with_reason(req, 413, "Presence Document Too Large");
    if req.body.len() > MAX_PIDF_BYTES {
        return Err(too_large());
    }
    let xml = if deflated {
        let limits = InflateLimits { max_output: MAX_PIDF_BYTES, ..InflateLimits::default() };
        body::inflate(&req.body, &limits).map_err(|e| match e {
            body::InflateError::TooLarge => too_large(),
            _ => Response::with_reason(req, 400, "Bad Deflate Body"),
        })?
    } else {
        req.body.to_vec()
    };
    let pidf = body::pidf::parse(&xml).map_err(|e| Response::with_reason(req, 400, e.0))?;
    let open = pidf.tuples.iter().any(|t| t.basic == Some(body::Basic::Open));
    let doc = body::rich::read(&xml).map_err(|e| Response::with_reason(req, 400, e.0))?;
    Ok(Published::with_doc(open, doc))
}
