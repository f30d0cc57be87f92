//! Cutting a TCP/TLS byte stream into SIP messages by Content-Length (RFC 3261 §18.3).
//!
//! Handles several messages in one read, one message over many reads, folded and compact
//! Content-Length headers, and RFC 5626 keep-alives (`CRLFCRLF` ping answered by the
//! transport with a `CRLF` pong). Owns only the buffer; parsing the frame is `parse.rs`'s
//! job. When the stream cannot be cut (too large, bad length) it also writes the error
//! response to send before closing, if the pending message says enough to answer it.

use super::parse::find_header_end;
use super::{salvage, Response};
use bytes::{Bytes, BytesMut};

#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// One whole message: head, blank line and exactly Content-Length body bytes.
    Message(Bytes),
    /// A `CRLFCRLF` keep-alive ping; answer `CRLF`.
    Ping,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    /// The header block alone is over the limit.
    #[error("header block larger than {0} bytes")]
    HeadTooLarge(usize),
    /// The headers fit; with the body the message is over the limit.
    #[error("message larger than {0} bytes")]
    BodyTooLarge(usize),
    #[error("bad Content-Length")]
    BadLength,
}

impl FramingError {
    /// The response it earns (RFC 3261 §21.4.11, §21.5.14).
    pub fn status(&self) -> (u16, &'static str) {
        match self {
            FramingError::HeadTooLarge(_) => (513, "Message Too Large"),
            FramingError::BodyTooLarge(_) => (413, "Request Entity Too Large"),
            FramingError::BadLength => (400, "Bad Content-Length"),
        }
    }
}

pub struct Framer {
    buf: BytesMut,
    max: usize,
}

impl Framer {
    pub fn new(max_message: usize) -> Framer {
        Framer { buf: BytesMut::with_capacity(4096), max: max_message }
    }

    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The buffer to read into (avoids a copy).
    pub fn buffer(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// The next complete frame, `Ok(None)` when more bytes are needed. An error means the
    /// stream cannot be resynchronised: send [`Framer::refusal`] if any, then close.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FramingError> {
        if let Some(frame) = self.take_keepalive() {
            return Ok(Some(frame));
        }
        if self.buf.is_empty() {
            return Ok(None);
        }
        let Some((head_end, body_start)) = find_header_end(&self.buf) else {
            return if self.buf.len() > self.max { Err(FramingError::HeadTooLarge(self.max)) } else { Ok(None) };
        };
        if body_start > self.max {
            return Err(FramingError::HeadTooLarge(self.max));
        }
        let length = content_length(&self.buf[..head_end])?;
        let total = body_start.checked_add(length).ok_or(FramingError::BodyTooLarge(self.max))?;
        if total > self.max {
            return Err(FramingError::BodyTooLarge(self.max));
        }
        if self.buf.len() < total {
            return Ok(None);
        }
        Ok(Some(Frame::Message(self.buf.split_to(total).freeze())))
    }

    /// The response to send before closing on `err`: None when the pending message is not
    /// a request whose Via, From, To, Call-ID and CSeq can be read.
    pub fn refusal(&self, err: &FramingError) -> Option<Bytes> {
        let req = salvage::answerable(&self.buf)?;
        let (status, reason) = err.status();
        Some(Response::with_reason(&req, status, reason).to_bytes())
    }

    /// Leading CRLFs: `CRLFCRLF` is a ping, a lone `CRLF` (a pong, or padding) is dropped.
    fn take_keepalive(&mut self) -> Option<Frame> {
        loop {
            if self.buf.starts_with(b"\r\n\r\n") {
                let _ = self.buf.split_to(4);
                return Some(Frame::Ping);
            }
            if self.buf.starts_with(b"\r\n") && self.buf.len() >= 3 && self.buf[2] != b'\r' {
                let _ = self.buf.split_to(2);
                continue;
            }
            return None;
        }
    }
}

/// Content-Length (or compact `l`, any case) from a header block; absent means 0
/// (validation then answers 400). Its value may be folded onto continuation lines
/// (RFC 3261 §7.3.1); the start line and other headers' continuations are not headers.
pub(crate) fn content_length(head: &[u8]) -> Result<usize, FramingError> {
    let mut lines = split_lines(head).skip(1).peekable();
    while let Some(line) = lines.next() {
        if is_continuation(line) {
            continue;
        }
        let Some(colon) = memchr::memchr(b':', line) else { continue };
        let name = line[..colon].trim_ascii();
        if !(name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l")) {
            continue;
        }
        let mut value = line[colon + 1..].trim_ascii().to_vec();
        while let Some(more) = lines.next_if(|l| is_continuation(l)) {
            let more = more.trim_ascii();
            if !more.is_empty() && !value.is_empty() {
                value.push(b' ');
            }
            value.extend_from_slice(more);
        }
        let value = std::str::from_utf8(&value).map_err(|_| FramingError::BadLength)?;
        return value.parse().map_err(|_| FramingError::BadLength);
    }
    Ok(0)
}

/// The lines of `head`, split at LF (vectorised: this runs on every datagram).
fn split_lines(head: &[u8]) -> impl Iterator<Item = &[u8]> + '_ {
    let mut rest = Some(head);
    std::iter::from_fn(move || {
        let text = rest?;
        match memchr::memchr(b'\n', text) {
            Some(i) => {
                rest = Some(&text[i + 1..]);
                Some(&text[..i])
            }
            None => rest.take(),
        }
    })
}

fn is_continuation(line: &[u8]) -> bool {
    line.first().is_some_and(|&b| b == b' ' || b == b'\t')
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"OPTIONS sip:x SIP/2.0\r\nCall-ID: a\r\nContent-Length: 4\r\n\r\nbody";

    #[test]
    fn two_messages_in_one_read() {
        let mut f = Framer::new(1 << 16);
        f.push(&[MSG, MSG].concat());
        assert_eq!(f.next_frame().unwrap(), Some(Frame::Message(Bytes::from_static(MSG))));
        assert_eq!(f.next_frame().unwrap(), Some(Frame::Message(Bytes::from_static(MSG))));
        assert_eq!(f.next_frame().unwrap(), None);
    }

    #[test]
    fn one_message_byte_by_byte() {
        let mut f = Framer::new(1 << 16);
        for (i, b) in MSG.iter().enumerate() {
            f.push(&[*b]);
            let frame = f.next_frame().unwrap();
            assert_eq!(frame.is_some(), i == MSG.len() - 1, "at byte {i}");
        }
    }

    #[test]
    fn keepalive_ping_and_pong() {
        let mut f = Framer::new(1 << 16);
        f.push(b"\r\n\r\n");
        assert_eq!(f.next_frame().unwrap(), Some(Frame::Ping));
        f.push(b"\r\n");
        f.push(MSG);
        assert!(matches!(f.next_frame().unwrap(), Some(Frame::Message(_))));
    }

    #[test]
    fn compact_length_and_limits() {
        let mut f = Framer::new(100);
        f.push(b"OPTIONS sip:x SIP/2.0\r\nl: 1000\r\n\r\n");
        assert_eq!(f.next_frame(), Err(FramingError::BodyTooLarge(100)));
        let mut f = Framer::new(100);
        f.push(&[b'a'; 101]);
        assert_eq!(f.next_frame(), Err(FramingError::HeadTooLarge(100)));
        let mut f = Framer::new(100);
        f.push(format!("OPTIONS sip:x SIP/2.0\r\nSubject: {}\r\n\r\n", "x".repeat(100)).as_bytes());
        assert_eq!(f.next_frame(), Err(FramingError::HeadTooLarge(100)));
        let mut f = Framer::new(100);
        f.push(b"OPTIONS sip:x SIP/2.0\r\nContent-Length: -1\r\n\r\n");
        assert_eq!(f.next_frame(), Err(FramingError::BadLength));
    }

    #[test]
    fn folded_compact_and_any_case_length() {
        for head in ["Content-Length:\r\n 4", "CONTENT-LENGTH :\r\n\t4", "l:\r\n  \r\n 4", "L: 4", "content-length: 4\r\n "] {
            let mut f = Framer::new(1 << 16);
            f.push(format!("OPTIONS sip:x SIP/2.0\r\n{head}\r\nCall-ID: a\r\n\r\nbodyNEXT").as_bytes());
            let Ok(Some(Frame::Message(m))) = f.next_frame() else { panic!("{head:?}") };
            assert!(m.ends_with(b"\r\n\r\nbody"), "{head:?}");
            assert_eq!(&f.buffer()[..], b"NEXT");
        }
        let mut f = Framer::new(1 << 16);
        f.push(b"OPTIONS sip:x SIP/2.0\r\nContent-Length: 4\r\n 1\r\n\r\n");
        assert_eq!(f.next_frame(), Err(FramingError::BadLength), "\"4 1\" is no number");
    }

    #[test]
    fn only_header_lines_name_the_length() {
        // Another header's continuation, and the start line, are not a Content-Length.
        let mut f = Framer::new(1 << 16);
        f.push(b"L:9 sip:x SIP/2.0\r\nSubject: a\r\n l: 9\r\nContent-Length: 0\r\n\r\n");
        assert!(matches!(f.next_frame(), Ok(Some(Frame::Message(_)))));
        assert!(f.buffer().is_empty());
    }

    #[test]
    fn refusal_answers_only_a_readable_request() {
        let head = "OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/TCP h:5060;branch=z9hG4bK1\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n";
        let mut f = Framer::new(200);
        f.push(format!("{head}Content-Length: 1000\r\n\r\n").as_bytes());
        let err = f.next_frame().unwrap_err();
        let answer = f.refusal(&err).expect("an answer");
        assert!(answer.starts_with(b"SIP/2.0 413 Request Entity Too Large\r\n"));
        let mut f = Framer::new(100);
        f.push(b"OPTIONS sip:x SIP/2.0\r\nl: 1000\r\n\r\n");
        let err = f.next_frame().unwrap_err();
        assert_eq!(f.refusal(&err), None, "no Via: nothing to answer");
    }
}
