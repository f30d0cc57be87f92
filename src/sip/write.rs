//! Serialisation and response building.
//!
//! We write what the RFCs spell: reason phrases from RFC 3261 §21 and friends (`489 Bad
//! Event`, not rsip's `BadEvent`), header names in canonical case, parameters as received.
//! Content-Length is always computed from the body, never copied.

use super::message::{Header, HeaderName, Headers, Request, Response};
use bytes::Bytes;
use std::io::Write;

/// The standard reason phrase for a status code.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Trying",
        180 => "Ringing",
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        410 => "Gone",
        412 => "Conditional Request Failed",
        413 => "Request Entity Too Large",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        421 => "Extension Required",
        423 => "Interval Too Brief",
        429 => "Too Many Requests",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        489 => "Bad Event",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        600 => "Busy Everywhere",
        603 => "Decline",
        _ => match status / 100 {
            1 => "Trying",
            2 => "OK",
            3 => "Redirect",
            4 => "Client Error",
            5 => "Server Error",
            _ => "Global Failure",
        },
    }
}

/// What we say in `Server` and `User-Agent`.
pub const PRODUCT: &str = concat!("smart-presence/", env!("CARGO_PKG_VERSION"));

fn write_headers(out: &mut Vec<u8>, headers: &Headers, body: &[u8]) {
    for h in headers.iter().filter(|h| h.name != HeaderName::ContentLength) {
        out.extend_from_slice(h.name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(&h.value);
        out.extend_from_slice(b"\r\n");
    }
    let _ = write!(out, "Content-Length: {}\r\n\r\n", body.len());
    out.extend_from_slice(body);
}

impl Request {
    pub fn to_bytes(&self) -> Bytes {
        let mut out = Vec::with_capacity(256 + self.body.len() + self.headers.0.len() * 48);
        let _ = write!(out, "{} {} SIP/2.0\r\n", self.method, self.uri);
        write_headers(&mut out, &self.headers, &self.body);
        Bytes::from(out)
    }
}

impl Response {
    pub fn to_bytes(&self) -> Bytes {
        let mut out = Vec::with_capacity(256 + self.body.len() + self.headers.0.len() * 48);
        let _ = write!(out, "SIP/2.0 {} {}\r\n", self.status, self.reason);
        write_headers(&mut out, &self.headers, &self.body);
        Bytes::from(out)
    }

    /// A response to `req` (RFC 3261 §8.2.6.2): Vias, From, To, Call-ID and CSeq copied; a
    /// To tag added when the request had none (except for 100).
    pub fn to(req: &Request, status: u16) -> Response {
        Response::with_reason(req, status, reason_phrase(status))
    }

    pub fn with_reason(req: &Request, status: u16, reason: &str) -> Response {
        let mut headers = Headers(Vec::with_capacity(10));
        for h in req.headers.iter() {
            let copy = matches!(
                h.name,
                HeaderName::Via | HeaderName::From | HeaderName::CallId | HeaderName::CSeq
            );
            if copy {
                headers.0.push(h.clone());
            } else if h.name == HeaderName::To {
                headers.0.push(to_with_tag(h, status));
            }
        }
        headers.push(HeaderName::Server, PRODUCT);
        Response { status, reason: reason.to_string(), headers, body: Bytes::new() }
    }

    /// Replaces the To tag (a dialog-creating response chooses its own).
    pub fn set_to_tag(&mut self, tag: &str) {
        if let Some(h) = self.headers.0.iter_mut().find(|h| h.name == HeaderName::To) {
            let text = h.text();
            let base = match text.find(";tag=") {
                Some(i) => strip_tag(&text, i),
                None => text.to_string(),
            };
            h.value = Bytes::from(format!("{base};tag={tag}"));
        }
    }

    pub fn header(mut self, name: HeaderName, value: impl Into<Bytes>) -> Response {
        self.headers.push(name, value);
        self
    }
}

fn strip_tag(text: &str, i: usize) -> String {
    let rest = &text[i + 5..];
    let end = rest.find(';').map_or(text.len(), |e| i + 5 + e);
    format!("{}{}", &text[..i], &text[end..])
}

fn to_with_tag(h: &Header, status: u16) -> Header {
    let has_tag = h.text().contains(";tag=");
    if has_tag || status == 100 {
        return h.clone();
    }
    let mut value = h.value.to_vec();
    value.extend_from_slice(b";tag=");
    value.extend_from_slice(new_tag().as_bytes());
    Header::new(HeaderName::To, value)
}

/// A random token for tags and branches: 10 chars of [a-z0-9].
pub fn new_tag() -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    // Ten base-36 digits of one random 64-bit draw: 51 bits of randomness (RFC 3261
    // §19.3 asks for 32), one draw instead of ten.
    let mut n: u64 = rand::random();
    let mut tag = String::with_capacity(10);
    for _ in 0..10 {
        tag.push(CHARS[(n % 36) as usize] as char);
        n /= 36;
    }
    tag
}

/// A new RFC 3261 branch (magic cookie prefix).
pub fn new_branch() -> String {
    format!("z9hG4bK{}{}", new_tag(), new_tag())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::{parse_message, Message};

    fn request() -> Request {
        let raw = "SUBSCRIBE sip:rls@x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1;rport=5062;received=1.2.3.4\r\nFrom: <sip:a@x>;tag=f\r\nTo: sip:rls@x\r\nCall-ID: c\r\nCSeq: 7 SUBSCRIBE\r\nEvent: presence\r\nContent-Length: 0\r\n\r\n";
        match parse_message(Bytes::from(raw)) {
            Ok(Message::Request(r)) => r,
            _ => panic!(),
        }
    }

    #[test]
    fn reason_phrases_are_spelled_as_the_rfcs() {
        let r = Response::to(&request(), 489).to_bytes();
        assert!(r.starts_with(b"SIP/2.0 489 Bad Event\r\n"));
        assert_eq!(reason_phrase(423), "Interval Too Brief");
    }

    #[test]
    fn response_copies_dialog_headers_and_adds_to_tag() {
        let mut resp = Response::to(&request(), 200);
        let to = resp.headers.get(&HeaderName::To).unwrap().to_string();
        assert!(to.starts_with("sip:rls@x;tag="), "{to}");
        resp.set_to_tag("mine");
        assert_eq!(resp.headers.get(&HeaderName::To).unwrap(), "sip:rls@x;tag=mine");
        let text = String::from_utf8(resp.to_bytes().to_vec()).unwrap();
        assert!(text.contains("Via: SIP/2.0/UDP h;branch=z9hG4bK1;rport=5062;received=1.2.3.4\r\n"));
        assert!(text.contains("CSeq: 7 SUBSCRIBE\r\n"));
        assert!(text.ends_with("Content-Length: 0\r\n\r\n"));
        assert!(!text.contains("Event:"));
    }

    #[test]
    fn content_length_is_computed() {
        let mut req = request();
        req.body = Bytes::from_static(b"hello");
        let text = req.to_bytes();
        assert!(text.ends_with(b"Content-Length: 5\r\n\r\nhello"));
        assert_eq!(text.windows(15).filter(|w| w == b"Content-Length:").count(), 1);
    }
}
