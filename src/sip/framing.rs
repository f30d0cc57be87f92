//! Cutting a TCP/TLS byte stream into SIP messages by Content-Length (RFC 3261 §18.3).
//!
//! Handles several messages in one read, one message over many reads, and RFC 5626
//! keep-alives (`CRLFCRLF` ping answered by the transport with a `CRLF` pong). Owns only the
//! buffer; parsing the frame is `parse.rs`'s job.

use super::parse::find_header_end;
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
    #[error("message larger than {0} bytes")]
    TooLarge(usize),
    #[error("bad Content-Length")]
    BadLength,
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

    /// The buffer to read into (avoids a copy): call `filled(n)` after reading n bytes.
    pub fn buffer(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// The next complete frame, `Ok(None)` when more bytes are needed. An error means the
    /// stream cannot be resynchronised: close the connection.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FramingError> {
        if let Some(frame) = self.take_keepalive() {
            return Ok(Some(frame));
        }
        if self.buf.is_empty() {
            return Ok(None);
        }
        let Some((head_end, body_start)) = find_header_end(&self.buf) else {
            return if self.buf.len() > self.max { Err(FramingError::TooLarge(self.max)) } else { Ok(None) };
        };
        let length = content_length(&self.buf[..head_end])?;
        let total = body_start.checked_add(length).ok_or(FramingError::BadLength)?;
        if total > self.max {
            return Err(FramingError::TooLarge(self.max));
        }
        if self.buf.len() < total {
            return Ok(None);
        }
        Ok(Some(Frame::Message(self.buf.split_to(total).freeze())))
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

/// Content-Length from a header block; absent means 0 (validation then answers 400).
pub(crate) fn content_length(head: &[u8]) -> Result<usize, FramingError> {
    for line in head.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
        let name = line[..colon].trim_ascii();
        if name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l") {
            let value = std::str::from_utf8(line[colon + 1..].trim_ascii()).map_err(|_| FramingError::BadLength)?;
            return value.parse().map_err(|_| FramingError::BadLength);
        }
    }
    Ok(0)
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
        assert_eq!(f.next_frame(), Err(FramingError::TooLarge(100)));
        let mut f = Framer::new(100);
        f.push(&[b'a'; 101]);
        assert_eq!(f.next_frame(), Err(FramingError::TooLarge(100)));
        let mut f = Framer::new(100);
        f.push(b"OPTIONS sip:x SIP/2.0\r\nContent-Length: -1\r\n\r\n");
        assert_eq!(f.next_frame(), Err(FramingError::BadLength));
    }
}
