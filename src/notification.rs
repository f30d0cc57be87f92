//! Notification: turns a subscription's state into NOTIFY requests (RFC 4662 / RFC 6665).
//!
//! Owns the NOTIFY's own headers (Event, Subscription-State, Require) and the choice of body
//! spelling, compression and splitting; the bodies themselves are `body`'s, the dialog's
//! headers are `dialog`'s, and sending is the client transactions'. Must not look anything
//! up: it is handed the resolved state.

use crate::body::{self, Flavor, ListNotify, ResourceState};
use crate::config::NotifyConfig;
use crate::dialog::Dialog;
use crate::sip::{HeaderName, Method, Request};
use bytes::Bytes;

/// How one subscriber is written to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Format {
    pub flavor: Flavor,
    pub compress: bool,
    /// Most body bytes per NOTIFY as sent (u32, not usize: every subscription holds one).
    pub max_body: u32,
    /// Most users (PIDF parts) per list NOTIFY: liblinphone 5.1's time to take one grows
    /// faster than linearly with the users in it (`notify.max_users_per_notify`).
    pub max_users: u32,
    /// Sent in datagrams (UDP): a NOTIFY can be no larger than one.
    pub datagram: bool,
}

/// The largest NOTIFY body a datagram carries, leaving room for the headers (an IPv4 UDP
/// payload is at most 65,507 bytes).
pub const MAX_DATAGRAM_BODY: usize = 65_507 - 2_048;

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
        let u32_of = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Format { flavor, compress, max_body: u32_of(max_body), max_users: u32_of(cfg.max_users_per_notify.max(1)), datagram: !reliable }
    }

    /// The Event header value this client matches (liblinphone 5.1 ignores `presence`).
    pub fn event(&self) -> &'static str {
        match self.flavor {
            Flavor::Linphone => "Presence",
            Flavor::Rfc => "presence",
        }
    }

    fn budget(&self) -> usize {
        let max_body = self.max_body as usize;
        if self.compress {
            max_body.saturating_mul(ASSUMED_RATIO)
        } else {
            max_body
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
    /// The last NOTIFY; `reason` as RFC 6665 §4.2.2 defines them (none after the
    /// subscriber's own un-SUBSCRIBE: `timeout` is for a subscription that expired).
    Terminated { reason: Option<&'static str> },
}

impl SubState {
    fn header(self) -> String {
        match self {
            SubState::Active { expires } => format!("active;expires={expires}"),
            SubState::Terminated { reason: Some(reason) } => format!("terminated;reason={reason}"),
            SubState::Terminated { reason: None } => "terminated".to_string(),
        }
    }
}

/// Whether a list of `uris` can be served to this subscriber at all. Over UDP the first
/// full-state NOTIFY lists every resource and cannot be split, so it must fit a datagram;
/// Err carries its size as it would be sent.
pub fn check_fits(format: Format, list_uri: &str, uris: &[String]) -> Result<(), usize> {
    if !format.datagram || floor_bound(list_uri, uris) <= MAX_DATAGRAM_BODY {
        return Ok(());
    }
    let resources: Vec<ResourceState> = uris.iter().map(|uri| ResourceState { uri, user: None }).collect();
    let notify = ListNotify { list_uri, version: 0, full_state: true, resources: &resources, flavor: format.flavor };
    let floor = body::full_state_floor(&notify);
    // Bodies shrink 9-11 times: a plain one small enough needs no deflating to tell.
    let size = if format.compress && floor.len() > MAX_DATAGRAM_BODY { body::deflate_zlib(&floor).len() } else { floor.len() };
    if size > MAX_DATAGRAM_BODY {
        return Err(size);
    }
    Ok(())
}

/// An upper bound of the full-state floor's size, from the URIs' lengths alone: most lists
/// are far below a datagram, and need not be written out to tell.
fn floor_bound(list_uri: &str, uris: &[String]) -> usize {
    // `<resource uri="..."/>` and its line end take 20 bytes; escaping turns one byte into
    // at most six (`&quot;`). The multipart framing and the `<list>` element take < 1 KiB.
    let escaped = |s: &str| s.len() + 5 * s.bytes().filter(|b| matches!(b, b'&' | b'<' | b'>' | b'"' | b'\'')).count();
    1024 + escaped(list_uri) + uris.iter().map(|u| 48 + escaped(u)).sum::<usize>()
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
    let parts = body::build_split(&notify, format.budget(), format.max_users as usize);
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
    let mut req = dialog.request(Method::Notify);
    let h = &mut req.headers;
    h.push(HeaderName::Event, format.event());
    h.push(HeaderName::SubscriptionState, state.header());
    h.push(HeaderName::Require, "eventlist");
    h.push(HeaderName::UserAgent, crate::sip::PRODUCT);
    if let Some((content_type, bytes)) = body {
        h.push(HeaderName::ContentType, content_type.to_string());
        if format.compress {
            h.push(HeaderName::ContentEncoding, "deflate");
        }
        req.body = Bytes::from(bytes);
    }
    req
}

#[cfg(test)]
mod tests {
    /// The format as stored before its limits were narrowed to u32 (usize then): postcard
    /// writes both as varints, so records of earlier builds still decode.
    #[test]
    fn a_format_stored_with_usize_limits_still_decodes() {
        #[derive(serde::Serialize)]
        struct Before {
            flavor: crate::body::Flavor,
            compress: bool,
            max_body: usize,
            max_users: usize,
            datagram: bool,
        }
        let old = Before { flavor: crate::body::Flavor::Linphone, compress: true, max_body: 16 * 1024, max_users: 100, datagram: true };
        let f: super::Format = postcard::from_bytes(&postcard::to_allocvec(&old).unwrap()).unwrap();
        assert_eq!((f.flavor, f.compress, f.max_body, f.max_users, f.datagram), (crate::body::Flavor::Linphone, true, 16 * 1024, 100, true));
    }

    #[test]
    fn the_floor_bound_is_above_the_floor() {
        let cfg = NotifyConfig::default();
        for flavor_ua in ["Linphone/5.1 (belle-sip/5.1.64)", "Linphone/6.0 (belle-sip/5.4.2)"] {
            let format = Format::choose(&cfg, Some(flavor_ua), false, false);
            let uris: Vec<String> = (0..300).map(|i| format!("sip:+3361{i:07}@example.org;user=phone&x=\"{i}\"")).collect();
            let resources: Vec<ResourceState> = uris.iter().map(|uri| ResourceState { uri, user: None }).collect();
            let notify = ListNotify { list_uri: "sip:rls@example.org", version: 0, full_state: true, resources: &resources, flavor: format.flavor };
            let floor = body::full_state_floor(&notify).len();
            assert!(floor_bound("sip:rls@example.org", &uris) >= floor, "{floor}");
        }
    }

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
