//! Notification: turns a subscription's state into NOTIFY requests (RFC 4662 / RFC 6665).
//!
//! Owns the NOTIFY's headers and the choice of body spelling, compression and splitting;
//! the bodies themselves are `body`'s, the dialog is `subscription`'s, and sending is the
//! client transactions'. Must not look anything up: it is handed the resolved state.

use crate::body::{self, Flavor, ListNotify, ResourceState};
use crate::config::NotifyConfig;
use crate::sip::{HeaderName, Headers, Method, Request};
use crate::subscription::dialog::Dialog;
use bytes::Bytes;

/// How one subscriber is written to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Format {
    pub flavor: Flavor,
    pub compress: bool,
    /// Most body bytes per NOTIFY as sent.
    pub max_body: usize,
}

/// Full-state bodies shrink 9-11 times; the split budget assumes a safe 8.
const ASSUMED_RATIO: usize = 8;

impl Format {
    pub fn choose(cfg: &NotifyConfig, user_agent: Option<&str>, accepts_deflate: bool, reliable: bool) -> Format {
        let flavor = match cfg.format.as_str() {
            "rfc" => Flavor::Rfc,
            "linphone" => Flavor::Linphone,
            _ => auto_flavor(cfg, user_agent.unwrap_or("")),
        };
        let compress = cfg.compress && accepts_deflate;
        let max_body = if reliable { cfg.max_body_stream } else { cfg.max_body_udp };
        Format { flavor, compress, max_body }
    }

    /// The Event header value this client matches (liblinphone 5.1 ignores `presence`).
    pub fn event(&self) -> &'static str {
        match self.flavor {
            Flavor::Linphone => "Presence",
            Flavor::Rfc => "presence",
        }
    }

    fn budget(&self) -> usize {
        if self.compress {
            self.max_body.saturating_mul(ASSUMED_RATIO)
        } else {
            self.max_body
        }
    }
}

/// RFC spelling for belle-sip 5.4+ and configured User-Agents; liblinphone's otherwise.
fn auto_flavor(cfg: &NotifyConfig, ua: &str) -> Flavor {
    if cfg.rfc_user_agents.iter().any(|p| !p.is_empty() && ua.contains(p.as_str())) {
        return Flavor::Rfc;
    }
    match belle_sip_version(ua) {
        Some((major, minor)) if (major, minor) >= (5, 4) => Flavor::Rfc,
        _ => Flavor::Linphone,
    }
}

fn belle_sip_version(ua: &str) -> Option<(u32, u32)> {
    let rest = &ua[ua.find("belle-sip/")? + "belle-sip/".len()..];
    let mut parts = rest.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// The Subscription-State of a NOTIFY.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubState {
    Active { expires: u32 },
    Terminated { reason: &'static str },
}

impl SubState {
    fn header(self) -> String {
        match self {
            SubState::Active { expires } => format!("active;expires={expires}"),
            SubState::Terminated { reason } => format!("terminated;reason={reason}"),
        }
    }
}

/// The NOTIFYs that carry `resources` (split when too big), versions from `*version` on
/// (advanced past the last one used).
pub fn list_notifies(
    dialog: &mut Dialog,
    list_uri: &str,
    version: &mut u32,
    full_state: bool,
    resources: &[ResourceState],
    format: Format,
    state: SubState,
) -> Vec<Request> {
    let notify = ListNotify { list_uri, version: *version, full_state, resources, flavor: format.flavor };
    let parts = body::build_split(&notify, format.budget());
    let mut out = Vec::with_capacity(parts.len());
    for part in parts {
        *version = part.version + 1;
        let body = if format.compress { body::deflate_zlib(&part.body) } else { part.body };
        out.push(notify_request(dialog, format, state, Some((part.content_type.as_str(), body))));
    }
    out
}

/// The NOTIFY of a single-presentity subscription (RFC 3856): a PIDF document for
/// `entity`; a non-user gets a PIDF with no tuple, which says nothing about him.
pub fn presentity_notify(
    dialog: &mut Dialog,
    format: Format,
    state: SubState,
    entity: &str,
    user: Option<body::UserPresence>,
) -> Request {
    let mut pidf = Vec::with_capacity(512);
    match user {
        Some(p) => body::build_pidf_into(entity, &p, &mut pidf),
        None => {
            pidf.extend_from_slice(b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"");
            body::escape_attr(&mut pidf, entity);
            pidf.extend_from_slice(b"\"/>");
        }
    }
    let pidf = if format.compress { body::deflate_zlib(&pidf) } else { pidf };
    let mut req = notify_request(dialog, format, state, Some(("application/pidf+xml", pidf)));
    req.headers.remove(&HeaderName::Require);
    req
}

/// One NOTIFY in `dialog`; `body` is (Content-Type, bytes as sent).
pub fn notify_request(dialog: &mut Dialog, format: Format, state: SubState, body: Option<(&str, Vec<u8>)>) -> Request {
    let mut h = Headers(Vec::with_capacity(14));
    h.push(HeaderName::MaxForwards, "70");
    h.push(HeaderName::From, dialog.local());
    h.push(HeaderName::To, dialog.remote().to_string());
    h.push(HeaderName::CallId, dialog.call_id().to_string());
    h.push(HeaderName::CSeq, format!("{} NOTIFY", dialog.next_cseq));
    dialog.next_cseq += 1;
    for r in dialog.route() {
        h.push(HeaderName::Route, r.to_string());
    }
    h.push(HeaderName::Contact, dialog.contact());
    h.push(HeaderName::Event, format.event());
    h.push(HeaderName::SubscriptionState, state.header());
    h.push(HeaderName::Require, "eventlist");
    h.push(HeaderName::UserAgent, crate::sip::PRODUCT);
    let body = match body {
        Some((content_type, bytes)) => {
            h.push(HeaderName::ContentType, content_type.to_string());
            if format.compress {
                h.push(HeaderName::ContentEncoding, "deflate");
            }
            Bytes::from(bytes)
        }
        None => Bytes::new(),
    };
    Request { method: Method::Notify, uri: dialog.remote_target().to_string(), headers: h, body }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flavor_by_user_agent() {
        let cfg = NotifyConfig::default();
        let pick = |ua| Format::choose(&cfg, Some(ua), true, false).flavor;
        assert_eq!(pick("Linphone/5.1.65 (belle-sip/5.1.64)"), Flavor::Linphone);
        assert_eq!(pick("Unknown"), Flavor::Linphone);
        assert_eq!(pick("LinphoneAndroid/5.4.2 (belle-sip/5.4.2)"), Flavor::Rfc);
        assert_eq!(pick("Linphone/6.0 (belle-sip/10.0.1)"), Flavor::Rfc);
        let cfg = NotifyConfig { rfc_user_agents: vec!["SIPp".into()], ..NotifyConfig::default() };
        assert_eq!(Format::choose(&cfg, Some("SIPp/3.6"), false, false).flavor, Flavor::Rfc);
        let forced = NotifyConfig { format: crate::config::NotifyFormat::Rfc, ..NotifyConfig::default() };
        assert_eq!(Format::choose(&forced, Some("Linphone/5.1"), false, false).event(), "presence");
    }
}
