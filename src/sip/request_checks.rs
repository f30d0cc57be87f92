//! Typed access to the request headers several handlers act on (Event, Content-Type,
//! Expires), and the one expiry policy SUBSCRIBE, PUBLISH and REGISTER share: a default, a
//! minimum answered with 423 and Min-Expires, a maximum granted instead of more.
//!
//! Owns reading these headers and the responses for bad or too brief values; each handler
//! builds its policy from its own config section. Knows nothing of what is subscribed,
//! published or registered.

use super::message::{HeaderName, Headers, Request, Response};
use super::uri::split_params;

/// An Event header (RFC 6665 §7.2.1): the package and its parameters (`id`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// As written: packages compare byte for byte (RFC 6665 §8.2.1).
    pub package: String,
    pub params: Vec<(String, Option<String>)>,
}

impl Event {
    pub fn parse(text: &str) -> Event {
        let (package, params) = split_params(text);
        Event { package: package.to_string(), params }
    }

    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        find_param(&self.params, name)
    }
}

/// A Content-Type (RFC 3261 §20.15): `type/subtype` and its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaType {
    /// `type/subtype`, lower-cased (media types compare case-insensitively).
    pub essence: String,
    pub params: Vec<(String, Option<String>)>,
}

impl MediaType {
    pub fn parse(text: &str) -> MediaType {
        let (essence, params) = split_params(text);
        MediaType { essence: essence.to_ascii_lowercase(), params }
    }

    /// This type, whatever the case it is written in.
    pub fn is(&self, essence: &str) -> bool {
        self.essence.eq_ignore_ascii_case(essence)
    }

    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        find_param(&self.params, name)
    }
}

fn find_param<'a>(params: &'a [(String, Option<String>)], name: &str) -> Option<Option<&'a str>> {
    params.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_deref())
}

/// A header value that is not what its grammar allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadHeader(pub &'static str);

impl BadHeader {
    /// 400 with the problem as the reason phrase.
    pub fn response(&self, req: &Request) -> Response {
        Response::with_reason(req, 400, self.0)
    }
}

impl Headers {
    /// The (first) Event header.
    pub fn event(&self) -> Option<Event> {
        self.get(&HeaderName::Event).map(|v| Event::parse(&v))
    }

    /// The Content-Type, when there is one.
    pub fn content_type(&self) -> Option<MediaType> {
        self.get(&HeaderName::ContentType).map(|v| MediaType::parse(&v))
    }

    /// The Expires header as delta-seconds (RFC 3261 §20.19); None when absent.
    pub fn expires(&self) -> Result<Option<u32>, BadHeader> {
        match self.get(&HeaderName::Expires) {
            None => Ok(None),
            Some(v) => v.trim().parse().map(Some).map_err(|_| BadHeader("Bad Expires")),
        }
    }
}

/// How long a subscription, publication or binding may last, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpiryPolicy {
    /// Granted when the request asks for nothing.
    pub default: u32,
    /// Anything shorter (but 0, which ends) gets 423 with this as Min-Expires.
    pub min: u32,
    /// Anything longer is granted this.
    pub max: u32,
}

impl ExpiryPolicy {
    /// The request's Expires header granted; 400 when it is not a number.
    pub fn grant(&self, req: &Request) -> Result<u32, Response> {
        let asked = req.headers.expires().map_err(|bad| bad.response(req))?;
        self.grant_asked(req, asked)
    }

    /// `asked` (None: nothing asked) granted: 0 stays 0 (an end or a fetch), too brief
    /// gets 423 with Min-Expires, too long is shortened to the maximum.
    pub fn grant_asked(&self, req: &Request, asked: Option<u32>) -> Result<u32, Response> {
        let asked = asked.unwrap_or(self.default);
        if asked != 0 && asked < self.min {
            return Err(Response::to(req, 423).header(HeaderName::MinExpires, self.min.to_string()));
        }
        Ok(asked.min(self.max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::{parse_message, Message};
    use bytes::Bytes;

    fn req(extra: &str) -> Request {
        let raw = format!("PUBLISH sip:bob@x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKa\r\nCall-ID: c\r\n{extra}\r\n");
        match parse_message(Bytes::from(raw)) {
            Ok(Message::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn event_package_and_params() {
        let e = req("o: presence ; id=7;X\r\n").headers.event().unwrap();
        assert_eq!(e.package, "presence");
        assert_eq!((e.param("id"), e.param("x")), (Some(Some("7")), Some(None)));
        assert_eq!(req("Event: Presence\r\n").headers.event().unwrap().package, "Presence", "kept as written");
        assert_eq!(req("").headers.event(), None);
    }

    #[test]
    fn content_type_is_lower_cased_with_params() {
        let t = req("c: Application/PIDF+XML; charset=UTF-8\r\n").headers.content_type().unwrap();
        assert_eq!(t.essence, "application/pidf+xml");
        assert!(t.is("application/pidf+xml"));
        assert_eq!(t.param("CHARSET"), Some(Some("UTF-8")));
        assert_eq!(req("").headers.content_type(), None);
    }

    #[test]
    fn expires_is_delta_seconds() {
        assert_eq!(req("Expires: 600\r\n").headers.expires(), Ok(Some(600)));
        assert_eq!(req("").headers.expires(), Ok(None));
        for bad in ["-1", "soon", "1.5", "4294967296", ""] {
            assert_eq!(req(&format!("Expires: {bad}\r\n")).headers.expires(), Err(BadHeader("Bad Expires")), "{bad:?}");
        }
    }

    const POLICY: ExpiryPolicy = ExpiryPolicy { default: 3600, min: 60, max: 7200 };

    #[test]
    fn policy_grants_default_zero_and_caps_at_max() {
        assert_eq!(POLICY.grant(&req("")), Ok(3600));
        assert_eq!(POLICY.grant(&req("Expires: 0\r\n")), Ok(0));
        assert_eq!(POLICY.grant(&req("Expires: 60\r\n")), Ok(60));
        assert_eq!(POLICY.grant(&req("Expires: 99999\r\n")), Ok(7200));
        assert_eq!(POLICY.grant_asked(&req("Expires: 10\r\n"), Some(600)), Ok(600), "a Contact's own expires wins");
    }

    #[test]
    fn policy_refuses_too_brief_with_423_and_bad_with_400() {
        let r = req("Expires: 59\r\n");
        let resp = POLICY.grant(&r).unwrap_err();
        assert_eq!(resp.status, 423);
        assert_eq!(resp.headers.get(&HeaderName::MinExpires).as_deref(), Some("60"));
        let bad = POLICY.grant(&req("Expires: never\r\n")).unwrap_err();
        assert_eq!((bad.status, bad.reason.as_str()), (400, "Bad Expires"));
    }
}
