//! Reading enough of a message we cannot take whole (bad start line, bad header line, cut
//! off or too large) to answer it with an error response (RFC 3261 §8.2.6, §21.4.1).
//!
//! Owns no policy: it only finds whether the bytes begin a request that can be answered,
//! and its headers; the core and the stream transport decide what to answer.

use super::header::CSeq;
use super::message::{HeaderName, Method, Request};
use super::parse::{find_header_end, is_token_char, parse_header_block};
use super::validate::check_request;
use bytes::Bytes;

/// The request to answer, read from the start of `buf`: None unless it is a request (not
/// a response, not an ACK, which are never answered) whose Via, From, To, Call-ID and
/// CSeq read. Lines that are not headers are skipped; a head without its blank line is read
/// up to its last whole line. The method is CSeq's; the Request-URI is left empty.
pub fn answerable(buf: &[u8]) -> Option<Request> {
    let start = buf.iter().position(|&b| b != b'\r' && b != b'\n')?;
    let buf = &buf[start..];
    let head = match find_header_end(buf) {
        Some((end, _)) => &buf[..end],
        None => &buf[..buf.iter().rposition(|&b| b == b'\n')?],
    };
    let mut lines = head.split(|&b| b == b'\n');
    if lines.next()?.starts_with(b"SIP/") {
        return None;
    }
    let mut headers = parse_header_block(header_lines(lines)).ok()?;
    let cseq = CSeq::parse(&headers.get(&HeaderName::CSeq)?).ok()?;
    if cseq.method == Method::Ack {
        return None;
    }
    // The body is not ours to check: the answer is about the rest.
    headers.remove(&HeaderName::ContentLength);
    let mut req = Request { method: cseq.method, uri: String::new(), headers, body: Bytes::new() };
    check_request(&mut req, false).ok()?;
    Some(req)
}

/// The lines that are headers (`name: value` and their continuation lines), LF-ended.
fn header_lines<'a>(lines: impl Iterator<Item = &'a [u8]>) -> Bytes {
    let mut out = Vec::new();
    let mut keeping = false;
    for line in lines {
        let continuation = line.first().is_some_and(|&b| b == b' ' || b == b'\t');
        keeping = if continuation { keeping } else { is_header_line(line) };
        if keeping {
            out.extend_from_slice(line);
            out.push(b'\n');
        }
    }
    Bytes::from(out)
}

fn is_header_line(line: &[u8]) -> bool {
    let Some(colon) = line.iter().position(|&b| b == b':') else { return false };
    let name = line[..colon].trim_ascii_end();
    !name.is_empty() && name.iter().all(|&b| is_token_char(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str =
        "Via: SIP/2.0/TCP h:5060;branch=z9hG4bK1\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n";

    #[test]
    fn bad_start_line_and_stray_lines_are_skipped() {
        let raw = format!("\r\nOPTIONS sip:x SIP/2.0 junk\r\n{HEAD}this is no header\r\n\r\n");
        let req = answerable(raw.as_bytes()).expect("answerable");
        assert_eq!(req.method, Method::Options);
        assert_eq!(req.headers.get(&HeaderName::CallId).unwrap(), "c");
    }

    #[test]
    fn a_cut_head_is_read_to_its_last_whole_line() {
        let raw = format!("OPTIONS sip:x SIP/2.0\r\n{HEAD}Subject: cut he");
        assert!(answerable(raw.as_bytes()).is_some());
    }

    #[test]
    fn what_cannot_be_answered() {
        let cases = [
            format!("SIP/2.0 200 OK\r\n{HEAD}\r\n"),
            format!("ACK sip:x SIP/2.0\r\n{}\r\n", HEAD.replace("1 OPTIONS", "1 ACK")),
            format!("OPTIONS sip:x SIP/2.0\r\n{}\r\n", HEAD.replace("Call-ID: c\r\n", "")),
            format!("OPTIONS sip:x SIP/2.0\r\n{}\r\n", HEAD.replace("Via: SIP/2.0/TCP h:5060", "Via: x")),
            "\r\n\r\n".to_string(),
            "no line end at all".to_string(),
        ];
        for raw in cases {
            assert!(answerable(raw.as_bytes()).is_none(), "{raw:?}");
        }
    }
}
