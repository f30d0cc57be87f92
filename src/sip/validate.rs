//! Checks that make a parsed request usable: mandatory headers, CSeq, Content-Length.
//!
//! A request failing here is answered 400 with the returned reason phrase, which names the
//! problem. Nothing here looks at the method's semantics (that is the handlers' job).

use super::header::{top_via, CSeq, NameAddr};
use super::message::{HeaderName, Headers, Request};
use bytes::Bytes;

/// The reason phrase of the 400 to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadRequest(pub &'static str);

/// Validates a request and cuts its body to Content-Length. `stream` is true on TCP/TLS,
/// where framing already cut the body but the header is mandatory.
pub fn check_request(req: &mut Request, stream: bool) -> Result<(), BadRequest> {
    top_via(&req.headers).map_err(|_| BadRequest(missing_or_bad(&req.headers, HeaderName::Via, "Via")))?;
    for (name, label) in [(HeaderName::From, "From"), (HeaderName::To, "To")] {
        let value = req.headers.get(&name).ok_or(BadRequest(missing(label)))?;
        NameAddr::parse(&value).map_err(|_| BadRequest(bad(label)))?;
    }
    let call_id = req.headers.get(&HeaderName::CallId).ok_or(BadRequest("Missing Call-ID"))?;
    if call_id.trim().is_empty() {
        return Err(BadRequest("Empty Call-ID"));
    }
    let cseq = req.headers.get(&HeaderName::CSeq).ok_or(BadRequest("Missing CSeq"))?;
    let cseq = CSeq::parse(&cseq).map_err(|_| BadRequest("Bad CSeq"))?;
    if cseq.method != req.method {
        return Err(BadRequest("CSeq Method Does Not Match Request"));
    }
    req.body = body_by_length(&req.headers, std::mem::take(&mut req.body), stream)?;
    Ok(())
}

/// Applies Content-Length to a body: a datagram body longer than it is cut (RFC 3261
/// §18.3), shorter is an error; on streams the header must be present.
pub fn body_by_length(headers: &Headers, body: Bytes, stream: bool) -> Result<Bytes, BadRequest> {
    if headers.count(&HeaderName::ContentLength) > 1 {
        return Err(BadRequest("Duplicate Content-Length"));
    }
    let Some(value) = headers.get(&HeaderName::ContentLength) else {
        return if stream { Err(BadRequest("Missing Content-Length")) } else { Ok(body) };
    };
    let len: usize = value.trim().parse().map_err(|_| BadRequest("Bad Content-Length"))?;
    if len > body.len() {
        return Err(BadRequest("Content-Length Exceeds Body"));
    }
    Ok(body.slice(..len))
}

/// Whether a body is deflated: `deflate` yes, `identity` or none no; any other coding is
/// one we cannot read (the caller answers 415 with `Accept-Encoding: deflate`).
pub fn is_deflated(headers: &Headers) -> Result<bool, UnsupportedCoding> {
    let mut deflated = false;
    for coding in headers.list(&HeaderName::ContentEncoding) {
        match coding.to_ascii_lowercase().as_str() {
            "deflate" => deflated = true,
            "identity" => {}
            _ => return Err(UnsupportedCoding),
        }
    }
    Ok(deflated)
}

/// A Content-Encoding other than deflate or identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnsupportedCoding;

fn missing_or_bad(headers: &Headers, name: HeaderName, label: &'static str) -> &'static str {
    if headers.get(&name).is_some() {
        bad(label)
    } else {
        missing(label)
    }
}

fn missing(label: &str) -> &'static str {
    match label {
        "Via" => "Missing Via",
        "From" => "Missing From",
        _ => "Missing To",
    }
}

fn bad(label: &str) -> &'static str {
    match label {
        "Via" => "Bad Via",
        "From" => "Bad From",
        _ => "Bad To",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::{parse_message, Message};

    fn check(text: &str, stream: bool) -> Result<Request, BadRequest> {
        let Ok(Message::Request(mut r)) = parse_message(Bytes::from(text.to_string())) else {
            panic!("parse")
        };
        check_request(&mut r, stream).map(|_| r)
    }

    const OK: &str = "OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/UDP h:5060;branch=z9hG4bK1\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n";

    #[test]
    fn valid_request_passes_and_body_is_cut() {
        let r = check(&format!("{OK}Content-Length: 2\r\n\r\nabcd"), false).unwrap();
        assert_eq!(&r.body[..], b"ab");
    }

    #[test]
    fn each_problem_is_named() {
        let cases = [
            (OK.replace("Via: SIP/2.0/UDP h:5060;branch=z9hG4bK1\r\n", ""), "Missing Via"),
            (OK.replace("Via: SIP/2.0/UDP h:5060", "Via: junk"), "Bad Via"),
            (OK.replace("From: <sip:a@x>;tag=1\r\n", ""), "Missing From"),
            (OK.replace("To: <sip:b@x>\r\n", ""), "Missing To"),
            (OK.replace("Call-ID: c\r\n", ""), "Missing Call-ID"),
            (OK.replace("CSeq: 1 OPTIONS\r\n", ""), "Missing CSeq"),
            (OK.replace("CSeq: 1 OPTIONS", "CSeq: one OPTIONS"), "Bad CSeq"),
            (OK.replace("CSeq: 1 OPTIONS", "CSeq: 1 INVITE"), "CSeq Method Does Not Match Request"),
            (format!("{OK}Content-Length: x\r\n"), "Bad Content-Length"),
            (format!("{OK}Content-Length: 10\r\n"), "Content-Length Exceeds Body"),
        ];
        for (text, reason) in cases {
            assert_eq!(check(&format!("{text}\r\n"), false).unwrap_err(), BadRequest(reason));
        }
        assert_eq!(check(&format!("{OK}\r\n"), true).unwrap_err(), BadRequest("Missing Content-Length"));
    }
}
