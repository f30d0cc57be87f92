//! The one SIP message type the rest of the server sees.
//!
//! Header values are kept as the raw bytes from the wire (unfolded, trimmed), so a header we
//! echo (Via, From, To, Call-ID) goes back byte for byte, and a stray non-UTF-8 byte in one
//! header does not cost us the whole message. Typed views live in `header.rs`.

use bytes::Bytes;
use std::borrow::Cow;
use std::fmt;

/// A request method. Unknown methods parse, so the core can answer them 405.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Options,
    Register,
    Subscribe,
    Notify,
    Publish,
    Info,
    Prack,
    Update,
    Message,
    Refer,
    Other(Box<str>),
}

impl Method {
    pub fn parse(token: &str) -> Method {
        match token {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "OPTIONS" => Method::Options,
            "REGISTER" => Method::Register,
            "SUBSCRIBE" => Method::Subscribe,
            "NOTIFY" => Method::Notify,
            "PUBLISH" => Method::Publish,
            "INFO" => Method::Info,
            "PRACK" => Method::Prack,
            "UPDATE" => Method::Update,
            "MESSAGE" => Method::Message,
            "REFER" => Method::Refer,
            other => Method::Other(other.into()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Options => "OPTIONS",
            Method::Register => "REGISTER",
            Method::Subscribe => "SUBSCRIBE",
            Method::Notify => "NOTIFY",
            Method::Publish => "PUBLISH",
            Method::Info => "INFO",
            Method::Prack => "PRACK",
            Method::Update => "UPDATE",
            Method::Message => "MESSAGE",
            Method::Refer => "REFER",
            Method::Other(s) => s,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Header names we act on get a variant (compact forms map to them); the rest keep their text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HeaderName {
    Via,
    From,
    To,
    CallId,
    CSeq,
    Contact,
    ContentLength,
    ContentType,
    ContentEncoding,
    ContentDisposition,
    Event,
    Expires,
    MinExpires,
    MaxForwards,
    Supported,
    Require,
    Unsupported,
    Allow,
    AllowEvents,
    Accept,
    AcceptEncoding,
    SubscriptionState,
    UserAgent,
    Server,
    Route,
    RecordRoute,
    SipETag,
    SipIfMatch,
    RetryAfter,
    Authorization,
    WwwAuthenticate,
    PAssertedIdentity,
    Other(Box<str>),
}

/// (variant, canonical spelling, compact form) for every known header.
const KNOWN: &[(HeaderName, &str, Option<u8>)] = &[
    (HeaderName::Via, "Via", Some(b'v')),
    (HeaderName::From, "From", Some(b'f')),
    (HeaderName::To, "To", Some(b't')),
    (HeaderName::CallId, "Call-ID", Some(b'i')),
    (HeaderName::CSeq, "CSeq", None),
    (HeaderName::Contact, "Contact", Some(b'm')),
    (HeaderName::ContentLength, "Content-Length", Some(b'l')),
    (HeaderName::ContentType, "Content-Type", Some(b'c')),
    (HeaderName::ContentEncoding, "Content-Encoding", Some(b'e')),
    (HeaderName::ContentDisposition, "Content-Disposition", None),
    (HeaderName::Event, "Event", Some(b'o')),
    (HeaderName::Expires, "Expires", None),
    (HeaderName::MinExpires, "Min-Expires", None),
    (HeaderName::MaxForwards, "Max-Forwards", None),
    (HeaderName::Supported, "Supported", Some(b'k')),
    (HeaderName::Require, "Require", None),
    (HeaderName::Unsupported, "Unsupported", None),
    (HeaderName::Allow, "Allow", None),
    (HeaderName::AllowEvents, "Allow-Events", Some(b'u')),
    (HeaderName::Accept, "Accept", None),
    (HeaderName::AcceptEncoding, "Accept-Encoding", None),
    (HeaderName::SubscriptionState, "Subscription-State", None),
    (HeaderName::UserAgent, "User-Agent", None),
    (HeaderName::Server, "Server", None),
    (HeaderName::Route, "Route", None),
    (HeaderName::RecordRoute, "Record-Route", None),
    (HeaderName::SipETag, "SIP-ETag", None),
    (HeaderName::SipIfMatch, "SIP-If-Match", None),
    (HeaderName::RetryAfter, "Retry-After", None),
    (HeaderName::Authorization, "Authorization", None),
    (HeaderName::WwwAuthenticate, "WWW-Authenticate", None),
    (HeaderName::PAssertedIdentity, "P-Asserted-Identity", None),
];

impl HeaderName {
    /// Case-insensitive lookup, compact forms included (RFC 3261 §7.3.3).
    pub fn parse(name: &str) -> HeaderName {
        if name.len() == 1 {
            let c = name.as_bytes()[0].to_ascii_lowercase();
            if let Some((h, _, _)) = KNOWN.iter().find(|(_, _, compact)| *compact == Some(c)) {
                return h.clone();
            }
        }
        match KNOWN.iter().find(|(_, full, _)| full.eq_ignore_ascii_case(name)) {
            Some((h, _, _)) => h.clone(),
            None => HeaderName::Other(name.into()),
        }
    }

    /// The spelling we write.
    pub fn as_str(&self) -> &str {
        match self {
            HeaderName::Other(s) => s,
            known => KNOWN.iter().find(|(h, _, _)| h == known).map(|(_, s, _)| *s).unwrap_or(""),
        }
    }

    /// Headers whose value is a comma-separated list (RFC 3261 §7.3.1) that we may split.
    fn is_list(&self) -> bool {
        matches!(
            self,
            HeaderName::Via
                | HeaderName::Contact
                | HeaderName::Route
                | HeaderName::RecordRoute
                | HeaderName::Supported
                | HeaderName::Require
                | HeaderName::Unsupported
                | HeaderName::Allow
                | HeaderName::AllowEvents
                | HeaderName::Accept
                | HeaderName::AcceptEncoding
                | HeaderName::ContentEncoding
        )
    }

    fn matches(&self, other: &HeaderName) -> bool {
        match (self, other) {
            (HeaderName::Other(a), HeaderName::Other(b)) => a.eq_ignore_ascii_case(b),
            (a, b) => a == b,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: HeaderName,
    pub value: Bytes,
}

impl Header {
    pub fn new(name: HeaderName, value: impl Into<Bytes>) -> Header {
        Header { name, value: value.into() }
    }

    /// The value as text; invalid UTF-8 is replaced, not fatal.
    pub fn text(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.value)
    }
}

/// The header list, in wire order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<Header>);

impl Headers {
    pub fn push(&mut self, name: HeaderName, value: impl Into<Bytes>) {
        self.0.push(Header::new(name, value));
    }

    pub fn iter(&self) -> impl Iterator<Item = &Header> {
        self.0.iter()
    }

    /// The first header of that name, as text.
    pub fn get(&self, name: &HeaderName) -> Option<Cow<'_, str>> {
        self.0.iter().find(|h| h.name.matches(name)).map(Header::text)
    }

    pub fn get_raw(&self, name: &HeaderName) -> Option<&Bytes> {
        self.0.iter().find(|h| h.name.matches(name)).map(|h| &h.value)
    }

    pub fn count(&self, name: &HeaderName) -> usize {
        self.0.iter().filter(|h| h.name.matches(name)).count()
    }

    pub fn all<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a Header> + 'a {
        self.0.iter().filter(move |h| h.name.matches(name))
    }

    /// Every element of a list header across all its lines, trimmed
    /// (`Accept: a, b` + `Accept: c` gives a, b, c).
    pub fn list<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = Cow<'a, str>> + 'a {
        let split = name.is_list();
        self.all(name).flat_map(move |h| {
            // Borrow from the wire bytes; only a value with invalid UTF-8 is copied.
            let parts: Vec<Cow<'a, str>> = match std::str::from_utf8(&h.value) {
                Ok(text) if split => split_list(text).into_iter().map(Cow::Borrowed).collect(),
                Ok(text) => vec![Cow::Borrowed(text.trim())],
                Err(_) => {
                    let text = h.text();
                    let owned: Vec<String> = if split { split_list(&text).into_iter().map(str::to_string).collect() } else { vec![text.trim().to_string()] };
                    owned.into_iter().map(Cow::Owned).collect()
                }
            };
            parts
        })
    }

    /// True when a list header carries `token` (case-insensitive), e.g. `Supported: eventlist`.
    pub fn has_token(&self, name: &HeaderName, token: &str) -> bool {
        self.list(name).any(|t| t.eq_ignore_ascii_case(token))
    }

    pub fn remove(&mut self, name: &HeaderName) {
        self.0.retain(|h| !h.name.matches(name));
    }

    pub fn set(&mut self, name: HeaderName, value: impl Into<Bytes>) {
        self.remove(&name);
        self.push(name, value);
    }
}

/// Splits a header value at top-level commas: not inside quotes or angle brackets.
pub fn split_list(value: &str) -> Vec<&str> {
    list_elements(value).collect()
}

/// The elements of a comma-separated header value, trimmed, the empty ones left out
/// (commas inside quotes or angle brackets do not split), one at a time.
pub fn list_elements(value: &str) -> impl Iterator<Item = &str> + '_ {
    let mut rest = Some(value);
    std::iter::from_fn(move || {
        while let Some(text) = rest {
            let (element, after) = match element_end(text) {
                Some(i) => (&text[..i], Some(&text[i + 1..])),
                None => (text, None),
            };
            rest = after;
            let element = element.trim();
            if !element.is_empty() {
                return Some(element);
            }
        }
        None
    })
}

/// Where the first element of a list ends: its comma outside quotes and angle brackets.
fn element_end(value: &str) -> Option<usize> {
    memchr::memchr(b',', value.as_bytes())?; // most values are one element
    let (mut quoted, mut angle, mut escaped) = (false, false, false);
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '<' if !quoted => angle = true,
            '>' if !quoted => angle = false,
            ',' if !quoted && !angle => return Some(i),
            _ => {}
        }
    }
    None
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    /// The Request-URI as written; parse it with `Uri::parse` when needed.
    pub uri: String,
    pub headers: Headers,
    pub body: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub headers: Headers,
    pub body: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Request(Request),
    Response(Response),
}

impl Message {
    pub fn headers(&self) -> &Headers {
        match self {
            Message::Request(r) => &r.headers,
            Message::Response(r) => &r.headers,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_and_case_insensitive_names() {
        assert_eq!(HeaderName::parse("v"), HeaderName::Via);
        assert_eq!(HeaderName::parse("I"), HeaderName::CallId);
        assert_eq!(HeaderName::parse("call-id"), HeaderName::CallId);
        assert_eq!(HeaderName::parse("o"), HeaderName::Event);
        assert_eq!(HeaderName::parse("X-Thing").as_str(), "X-Thing");
    }

    #[test]
    fn list_split_respects_quotes_and_brackets() {
        let v = r#"<sip:a@b;x=1,2>;q=1, "Doe, J" <sip:c@d>, eventlist"#;
        assert_eq!(split_list(v), vec!["<sip:a@b;x=1,2>;q=1", r#""Doe, J" <sip:c@d>"#, "eventlist"]);
    }
}
