//! What a method handler serves, as it declares it: its methods (Allow), event packages
//! (Allow-Events), body types (Accept), body encodings (Accept-Encoding) and option tags
//! (Supported). The core advertises the union of them in OPTIONS and 405; each handler
//! answers 489, 415 and 420 from its own declaration.
//!
//! Owns those headers' values and the refusals that name them; no routing, no state.

use super::message::{HeaderName, Method, Request, Response};
use super::request_checks::{Event, MediaType};
use super::validate::is_deflated;

/// One handler's declaration.
#[derive(Debug, Clone, Copy)]
pub struct Capabilities {
    pub methods: &'static [Method],
    pub events: &'static [&'static str],
    pub accept: &'static [&'static str],
    pub accept_encoding: &'static [&'static str],
    pub supported: &'static [&'static str],
}

impl Capabilities {
    /// Serves nothing; the base of a declaration (`..Capabilities::NONE`).
    pub const NONE: Capabilities = Capabilities { methods: &[], events: &[], accept: &[], accept_encoding: &[], supported: &[] };

    /// The Event package, compared byte for byte (RFC 6665 §8.2.1) with those served; else
    /// 489 with Allow-Events.
    pub fn check_event(&self, req: &Request) -> Result<Event, Response> {
        match req.headers.event() {
            Some(e) if self.events.contains(&e.package.as_str()) => Ok(e),
            _ => Err(Response::to(req, 489).header(HeaderName::AllowEvents, self.events.join(", "))),
        }
    }

    /// The body's Content-Type among those accepted; else 415 with Accept.
    pub fn check_content_type(&self, req: &Request) -> Result<MediaType, Response> {
        match req.headers.content_type() {
            Some(t) if self.accept.iter().any(|a| t.is(a)) => Ok(t),
            _ => Err(Response::to(req, 415).header(HeaderName::Accept, self.accept.join(", "))),
        }
    }

    /// Whether the body is deflated, the one coding we read; another coding, or deflate
    /// where it is not declared, gets 415 with Accept-Encoding.
    pub fn check_encoding(&self, req: &Request) -> Result<bool, Response> {
        let refuse = || Response::to(req, 415).header(HeaderName::AcceptEncoding, self.accept_encoding.join(", "));
        match is_deflated(&req.headers) {
            Ok(true) if !self.accept_encoding.iter().any(|e| e.eq_ignore_ascii_case("deflate")) => Err(refuse()),
            Ok(deflated) => Ok(deflated),
            Err(_) => Err(refuse()),
        }
    }

    /// Option tags in `Require` that are not `supported` get 420 naming them
    /// (RFC 3261 §8.2.2.3).
    pub fn check_require(&self, req: &Request) -> Result<(), Response> {
        let unknown: Vec<String> = req
            .headers
            .list(&HeaderName::Require)
            .filter(|t| !self.supported.iter().any(|k| k.eq_ignore_ascii_case(t)))
            .map(|t| t.into_owned())
            .collect();
        if unknown.is_empty() {
            return Ok(());
        }
        Err(Response::to(req, 420).header(HeaderName::Unsupported, unknown.join(", ")))
    }
}

/// The union of several declarations, each list in first-declared order without repeats:
/// the values the core writes in OPTIONS and 405.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Advertised {
    pub allow: Vec<String>,
    pub events: Vec<String>,
    pub accept: Vec<String>,
    pub accept_encoding: Vec<String>,
    pub supported: Vec<String>,
}

impl Advertised {
    pub fn of<'a>(all: impl IntoIterator<Item = &'a Capabilities>) -> Advertised {
        let mut a = Advertised::default();
        for c in all {
            add(&mut a.allow, c.methods.iter().map(Method::as_str));
            add(&mut a.events, c.events.iter().copied());
            add(&mut a.accept, c.accept.iter().copied());
            add(&mut a.accept_encoding, c.accept_encoding.iter().copied());
            add(&mut a.supported, c.supported.iter().copied());
        }
        a
    }

    /// The `Allow` value.
    pub fn allow(&self) -> String {
        self.allow.join(", ")
    }

    /// Writes every non-empty list: Allow, Accept, Accept-Encoding, Supported, Allow-Events.
    pub fn write(&self, mut resp: Response) -> Response {
        for (name, values) in [
            (HeaderName::Allow, &self.allow),
            (HeaderName::Accept, &self.accept),
            (HeaderName::AcceptEncoding, &self.accept_encoding),
            (HeaderName::Supported, &self.supported),
            (HeaderName::AllowEvents, &self.events),
        ] {
            if !values.is_empty() {
                resp = resp.header(name, values.join(", "));
            }
        }
        resp
    }
}

fn add<'a>(list: &mut Vec<String>, values: impl Iterator<Item = &'a str>) {
    for v in values {
        if !list.iter().any(|have| have.eq_ignore_ascii_case(v)) {
            list.push(v.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::{parse_message, Message};
    use bytes::Bytes;

    const LISTS: Capabilities = Capabilities {
        methods: &[Method::Subscribe],
        events: &["presence"],
        accept: &["application/resource-lists+xml"],
        accept_encoding: &["deflate"],
        supported: &["eventlist"],
    };
    const PIDF: Capabilities = Capabilities {
        methods: &[Method::Publish],
        events: &["presence"],
        accept: &["application/pidf+xml"],
        accept_encoding: &["deflate"],
        supported: &[],
    };

    fn req(extra: &str) -> Request {
        let raw = format!("SUBSCRIBE sip:x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKa\r\nCall-ID: c\r\n{extra}\r\n");
        match parse_message(Bytes::from(raw)) {
            Ok(Message::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn union_keeps_order_without_repeats() {
        let a = Advertised::of(&[Capabilities { methods: &[Method::Options, Method::Ack], ..Capabilities::NONE }, LISTS, PIDF]);
        assert_eq!(a.allow(), "OPTIONS, ACK, SUBSCRIBE, PUBLISH");
        assert_eq!(a.events, ["presence"]);
        assert_eq!(a.accept, ["application/resource-lists+xml", "application/pidf+xml"]);
        assert_eq!(a.accept_encoding, ["deflate"]);
        let resp = a.write(Response::to(&req(""), 200));
        assert_eq!(resp.headers.get(&HeaderName::Supported).as_deref(), Some("eventlist"));
        assert_eq!(resp.headers.get(&HeaderName::AllowEvents).as_deref(), Some("presence"));
    }

    #[test]
    fn refusals_name_what_is_served() {
        assert_eq!(LISTS.check_event(&req("Event: presence;id=1\r\n")).unwrap().param("id"), Some(Some("1")));
        for extra in ["", "Event: dialog\r\n", "Event: Presence\r\n"] {
            let resp = LISTS.check_event(&req(extra)).unwrap_err();
            assert_eq!(resp.status, 489, "{extra:?}");
            assert_eq!(resp.headers.get(&HeaderName::AllowEvents).as_deref(), Some("presence"));
        }
        assert!(PIDF.check_content_type(&req("Content-Type: Application/PIDF+xml;charset=utf-8\r\n")).is_ok());
        let resp = PIDF.check_content_type(&req("Content-Type: text/plain\r\n")).unwrap_err();
        assert_eq!((resp.status, resp.headers.get(&HeaderName::Accept).as_deref()), (415, Some("application/pidf+xml")));
        assert_eq!(LISTS.check_encoding(&req("Content-Encoding: deflate\r\n")), Ok(true));
        assert_eq!(LISTS.check_encoding(&req("")), Ok(false));
        let resp = LISTS.check_encoding(&req("Content-Encoding: gzip\r\n")).unwrap_err();
        assert_eq!((resp.status, resp.headers.get(&HeaderName::AcceptEncoding).as_deref()), (415, Some("deflate")));
        let none = Capabilities { accept_encoding: &[], ..PIDF };
        assert_eq!(none.check_encoding(&req("Content-Encoding: deflate\r\n")).unwrap_err().status, 415);
        assert!(LISTS.check_require(&req("Require: EventList\r\n")).is_ok());
        let resp = LISTS.check_require(&req("Require: eventlist, 100rel, timer\r\n")).unwrap_err();
        assert_eq!((resp.status, resp.headers.get(&HeaderName::Unsupported).as_deref()), (420, Some("100rel, timer")));
    }
}
