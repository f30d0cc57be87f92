//! The SIP parser: bytes of one message in, a `Message` out.
//!
//! Written for what peers really send (see `shared/reference/rsip-0.4.md` for what rsip 0.4
//! gets wrong): unknown methods, folded headers, compact names, space before the colon, bare
//! LF line ends, non-UTF-8 bytes in values and any URI scheme in the start line all parse.
//! Framing is not done here: the caller hands one datagram, or one frame cut by
//! `framing.rs`. Semantic checks (mandatory headers, CSeq) are `validate.rs`'s job.

use super::message::{Header, HeaderName, Headers, Message, Method, Request, Response};
use bytes::Bytes;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("empty message")]
    Empty,
    #[error("no blank line after the headers")]
    NoHeaderEnd,
    #[error("bad start line")]
    StartLine,
    #[error("bad header line")]
    HeaderLine,
}

/// Where the header block ends: (end of the last header line, start of the body).
/// Accepts CRLFCRLF and, leniently, LFLF.
pub fn find_header_end(buf: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while let Some(pos) = memchr::memchr(b'\n', &buf[i..]) {
        let nl = i + pos;
        let next = nl + 1;
        if buf.get(next) == Some(&b'\n') {
            return Some((nl, next + 1));
        }
        if buf.get(next) == Some(&b'\r') && buf.get(next + 1) == Some(&b'\n') {
            return Some((nl, next + 2));
        }
        i = next;
    }
    None
}

/// Parses one complete message. The body is everything after the blank line; the caller
/// reconciles it with Content-Length (see `validate::content_length`).
pub fn parse_message(buf: Bytes) -> Result<Message, ParseError> {
    let start = skip_leading_crlf(&buf);
    if start == buf.len() {
        return Err(ParseError::Empty);
    }
    let (head_end, body_start) = find_header_end(&buf[start..]).ok_or(ParseError::NoHeaderEnd)?;
    let head = buf.slice(start..start + head_end);
    let body = buf.slice(start + body_start..);
    let mut lines = Lines::new(&head);
    let first = lines.next().ok_or(ParseError::StartLine)?;
    let headers = parse_headers(&head, lines)?;
    let first = std::str::from_utf8(&head[first.0..first.1]).map_err(|_| ParseError::StartLine)?;
    if let Some(rest) = first.strip_prefix("SIP/2.0 ") {
        let (status, reason) = parse_status(rest)?;
        Ok(Message::Response(Response { status, reason, headers, body }))
    } else {
        let (method, uri) = parse_request_line(first)?;
        Ok(Message::Request(Request { method, uri, headers, body }))
    }
}

/// Parses header lines without a start line (`salvage.rs` reads what it can of a message
/// whose start line is bad).
pub fn parse_header_block(block: Bytes) -> Result<Headers, ParseError> {
    parse_headers(&block, Lines::new(&block))
}

fn skip_leading_crlf(buf: &[u8]) -> usize {
    buf.iter().position(|&b| b != b'\r' && b != b'\n').unwrap_or(buf.len())
}

fn parse_status(rest: &str) -> Result<(u16, String), ParseError> {
    let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
    let status: u16 = code.parse().map_err(|_| ParseError::StartLine)?;
    if !(100..=699).contains(&status) || code.len() != 3 {
        return Err(ParseError::StartLine);
    }
    Ok((status, reason.to_string()))
}

fn parse_request_line(line: &str) -> Result<(Method, String), ParseError> {
    let mut parts = line.split(' ');
    let (method, uri, version) = (parts.next(), parts.next(), parts.next());
    let (Some(method), Some(uri), Some("SIP/2.0"), None) = (method, uri, version, parts.next())
    else {
        return Err(ParseError::StartLine);
    };
    if method.is_empty() || !method.bytes().all(is_token_char) || !uri.contains(':') {
        return Err(ParseError::StartLine);
    }
    Ok((Method::parse(method), uri.to_string()))
}

pub(crate) fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

/// Line ranges of the head, without their CR/LF.
struct Lines<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Lines<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Lines { buf, pos: 0 }
    }
}

impl Iterator for Lines<'_> {
    type Item = (usize, usize);

    fn next(&mut self) -> Option<(usize, usize)> {
        if self.pos >= self.buf.len() {
            return None;
        }
        let start = self.pos;
        let nl = memchr::memchr(b'\n', &self.buf[start..]).map(|p| start + p);
        let end = nl.unwrap_or(self.buf.len());
        self.pos = nl.map_or(self.buf.len(), |p| p + 1);
        let trimmed = if end > start && self.buf[end - 1] == b'\r' { end - 1 } else { end };
        Some((start, trimmed))
    }
}

fn parse_headers(head: &Bytes, lines: Lines<'_>) -> Result<Headers, ParseError> {
    let mut headers: Vec<Header> = Vec::with_capacity(24);
    // Continuation lines are rare; collect a header's line ranges and join only when needed.
    let mut pending: Option<(HeaderName, Vec<(usize, usize)>)> = None;
    for (s, e) in lines {
        let line = &head[s..e];
        if line.first().is_some_and(|&b| b == b' ' || b == b'\t') {
            let (_, parts) = pending.as_mut().ok_or(ParseError::HeaderLine)?;
            parts.push((s, e));
            continue;
        }
        if let Some((name, parts)) = pending.take() {
            headers.push(finish_header(head, name, &parts));
        }
        let colon = memchr::memchr(b':', line).ok_or(ParseError::HeaderLine)?;
        let name = std::str::from_utf8(&line[..colon]).map_err(|_| ParseError::HeaderLine)?;
        let name = name.trim_end_matches([' ', '\t']);
        if name.is_empty() || !name.bytes().all(is_token_char) {
            return Err(ParseError::HeaderLine);
        }
        pending = Some((HeaderName::parse(name), vec![(s + colon + 1, e)]));
    }
    if let Some((name, parts)) = pending {
        headers.push(finish_header(head, name, &parts));
    }
    Ok(Headers(headers))
}

fn finish_header(head: &Bytes, name: HeaderName, parts: &[(usize, usize)]) -> Header {
    if let [(s, e)] = parts {
        let (s, e) = trim(head, *s, *e);
        return Header { name, value: head.slice(s..e) };
    }
    // Folded: each continuation's leading whitespace becomes one space (RFC 3261 §7.3.1).
    let mut joined = Vec::new();
    for &(s, e) in parts {
        let (s, e) = trim(head, s, e);
        if s == e {
            continue;
        }
        if !joined.is_empty() {
            joined.push(b' ');
        }
        joined.extend_from_slice(&head[s..e]);
    }
    Header { name, value: Bytes::from(joined) }
}

fn trim(buf: &[u8], mut s: usize, mut e: usize) -> (usize, usize) {
    while s < e && (buf[s] == b' ' || buf[s] == b'\t') {
        s += 1;
    }
    while e > s && (buf[e - 1] == b' ' || buf[e - 1] == b'\t') {
        e -= 1;
    }
    (s, e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(text: &str) -> Request {
        match parse_message(Bytes::copy_from_slice(text.as_bytes())) {
            Ok(Message::Request(r)) => r,
            other => panic!("not a request: {other:?}"),
        }
    }

    const HEAD: &str = "Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK1\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\nCall-ID: c1\r\nCSeq: 1 ";

    #[test]
    fn tel_request_uri() {
        let r = req(&format!("OPTIONS tel:+4930123456 SIP/2.0\r\n{HEAD}OPTIONS\r\n\r\n"));
        assert_eq!(r.uri, "tel:+4930123456");
    }

    #[test]
    fn ipv6_request_uri() {
        let r = req(&format!("OPTIONS sip:[2001:db8::1]:5060 SIP/2.0\r\n{HEAD}OPTIONS\r\n\r\n"));
        assert_eq!(r.uri, "sip:[2001:db8::1]:5060");
    }

    #[test]
    fn folded_header_is_joined() {
        let r = req(&format!(
            "OPTIONS sip:x SIP/2.0\r\n{HEAD}OPTIONS\r\nSubject: I know\r\n   you're there,\r\n\tpick up\r\n\r\n"
        ));
        let v = r.headers.get(&HeaderName::Other("subject".into())).unwrap();
        assert_eq!(v, "I know you're there, pick up");
    }

    #[test]
    fn space_before_colon() {
        let r = req(&format!("SUBSCRIBE sip:x SIP/2.0\r\n{HEAD}SUBSCRIBE\r\nEvent : presence\r\n\r\n"));
        assert_eq!(r.headers.get(&HeaderName::Event).unwrap(), "presence");
    }

    #[test]
    fn compact_forms() {
        let r = req("OPTIONS sip:x SIP/2.0\r\nv: SIP/2.0/UDP h;branch=z9hG4bKa\r\nf: <sip:a@x>;tag=1\r\nt: <sip:b@x>\r\ni: c\r\nCSeq: 1 OPTIONS\r\nl: 0\r\no: presence\r\nk: eventlist\r\n\r\n");
        assert!(r.headers.get(&HeaderName::Via).is_some());
        assert_eq!(r.headers.get(&HeaderName::CallId).unwrap(), "c");
        assert!(r.headers.has_token(&HeaderName::Supported, "eventlist"));
        assert_eq!(r.headers.get(&HeaderName::ContentLength).unwrap(), "0");
    }

    #[test]
    fn unknown_method() {
        let r = req(&format!("FROBNICATE sip:x SIP/2.0\r\n{HEAD}FROBNICATE\r\n\r\n"));
        assert_eq!(r.method, Method::Other("FROBNICATE".into()));
    }

    #[test]
    fn non_utf8_header_byte_does_not_fail() {
        let mut raw = format!("OPTIONS sip:x SIP/2.0\r\n{HEAD}OPTIONS\r\n").into_bytes();
        raw.extend_from_slice(b"Subject: caf\xe9\r\n\r\n");
        let Ok(Message::Request(r)) = parse_message(Bytes::from(raw)) else { panic!() };
        let subject = r.headers.get_raw(&HeaderName::Other("Subject".into())).unwrap();
        assert_eq!(&subject[..], b"caf\xe9");
    }

    #[test]
    fn bare_lf_accepted() {
        let r = req("OPTIONS sip:x SIP/2.0\nVia: SIP/2.0/UDP h;branch=z9hG4bKa\nCall-ID: c\n\nbody");
        assert_eq!(&r.body[..], b"body");
    }

    #[test]
    fn missing_blank_line_is_an_error() {
        let raw = format!("OPTIONS sip:x SIP/2.0\r\n{HEAD}OPTIONS\r\n");
        assert_eq!(parse_message(Bytes::from(raw)), Err(ParseError::NoHeaderEnd));
    }

    #[test]
    fn response_with_multiword_reason() {
        let raw = "SIP/2.0 489 Bad Event\r\nCall-ID: x\r\n\r\n";
        let Ok(Message::Response(r)) = parse_message(Bytes::from(raw)) else { panic!() };
        assert_eq!((r.status, r.reason.as_str()), (489, "Bad Event"));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for g in ["", "\r\n", "hello", "SIP/2.0 99999 x\r\n\r\n", "A B C D\r\n\r\n", ":\r\n\r\n"] {
            assert!(parse_message(Bytes::from(g)).is_err(), "{g:?}");
        }
    }
}
