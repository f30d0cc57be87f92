//! The trace model: SIP messages with time, endpoints and transport, and cutting captured
//! TCP streams into messages. A leaf: the readers (`read.rs`, `pcap.rs`, `text.rs`,
//! `packet.rs`) and the replayers (`script.rs`, `runner.rs`) depend on it, it on none.

use crate::sip::framing::{Frame, Framer};
use crate::sip::{self, Message};
use bytes::Bytes;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

/// The transport a SIP message travelled on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    Udp,
    Tcp,
}

impl Proto {
    pub fn name(self) -> &'static str {
        match self {
            Proto::Udp => "UDP",
            Proto::Tcp => "TCP",
        }
    }
}

/// A transport payload and where it went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment<'a> {
    pub proto: Proto,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// TCP sequence number of the first payload byte (0 for UDP).
    pub seq: u32,
    /// TCP SYN flag (the stream starts at seq + 1).
    pub syn: bool,
    pub payload: &'a [u8],
}

/// One SIP message of a trace.
#[derive(Debug, Clone)]
pub struct TraceMessage {
    /// Time since the trace's first message.
    pub at: Duration,
    pub proto: Proto,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub message: Message,
    /// Where in the file the packet (or text record) that completed it starts.
    pub offset: u64,
}

#[derive(Debug, Clone, Default)]
pub struct Trace {
    pub messages: Vec<TraceMessage>,
}

#[derive(Debug, thiserror::Error)]
#[error("at byte {offset}: {what}")]
pub struct TraceError {
    pub offset: u64,
    pub what: String,
}

impl TraceError {
    pub fn at(offset: u64, what: impl Into<String>) -> TraceError {
        TraceError { offset, what: what.into() }
    }
}

/// Parses one message's bytes; non-SIP payloads give None.
pub fn sip_message(data: &[u8]) -> Option<Message> {
    sip::parse_message(Bytes::copy_from_slice(data)).ok()
}

/// Collects captured segments into messages: UDP payloads one each, TCP streams reassembled
/// by sequence number and cut by Content-Length.
#[derive(Default)]
pub struct Collector {
    messages: Vec<TraceMessage>,
    streams: HashMap<(SocketAddr, SocketAddr), Stream>,
    first: Option<f64>,
}

struct Stream {
    next_seq: Option<u32>,
    framer: Framer,
}

const MAX_MESSAGE: usize = 1 << 20;

impl Collector {
    /// `time` in seconds on any fixed clock; `offset` where the packet starts in the file.
    pub fn push(&mut self, time: f64, offset: u64, seg: Segment<'_>) {
        let first = *self.first.get_or_insert(time);
        let at = Duration::from_micros(((time - first) * 1e6).round().max(0.0) as u64);
        match seg.proto {
            Proto::Udp => {
                if let Some(message) = sip_message(seg.payload) {
                    self.messages.push(TraceMessage { at, proto: Proto::Udp, src: seg.src, dst: seg.dst, message, offset });
                }
            }
            Proto::Tcp => self.push_tcp(at, offset, seg),
        }
    }

    fn push_tcp(&mut self, at: Duration, offset: u64, seg: Segment<'_>) {
        let stream = self.streams.entry((seg.src, seg.dst)).or_insert_with(|| Stream { next_seq: None, framer: Framer::new(MAX_MESSAGE) });
        if seg.syn {
            stream.next_seq = Some(seg.seq.wrapping_add(1));
            return;
        }
        let payload = match stream.next_seq {
            // Already seen (retransmission) or partly seen: keep only the new bytes.
            Some(next) if (next.wrapping_sub(seg.seq) as i32) > 0 => {
                let seen = next.wrapping_sub(seg.seq) as usize;
                seg.payload.get(seen..).unwrap_or(&[])
            }
            // A gap: bytes were not captured; what is buffered cannot be completed.
            Some(next) if next != seg.seq => {
                stream.framer = Framer::new(MAX_MESSAGE);
                seg.payload
            }
            _ => seg.payload,
        };
        if payload.is_empty() {
            return;
        }
        stream.next_seq = Some(seg.seq.wrapping_add(seg.payload.len() as u32));
        stream.framer.push(payload);
        loop {
            match stream.framer.next_frame() {
                Ok(Some(Frame::Message(bytes))) => {
                    if let Ok(message) = sip::parse_message(bytes) {
                        self.messages.push(TraceMessage { at, proto: Proto::Tcp, src: seg.src, dst: seg.dst, message, offset });
                    }
                }
                Ok(Some(Frame::Ping)) => {}
                Ok(None) => break,
                Err(_) => {
                    stream.framer = Framer::new(MAX_MESSAGE);
                    break;
                }
            }
        }
    }

    pub fn finish(self) -> Trace {
        Trace { messages: self.messages }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg<'a>(proto: Proto, seq: u32, payload: &'a [u8]) -> Segment<'a> {
        Segment { proto, src: "127.0.0.1:1".parse().unwrap(), dst: "127.0.0.1:2".parse().unwrap(), seq, syn: false, payload }
    }

    const OPTIONS: &[u8] = b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: x\r\nContent-Length: 0\r\n\r\n";

    #[test]
    fn tcp_stream_split_and_retransmitted() {
        let mut c = Collector::default();
        let two = [OPTIONS, OPTIONS].concat();
        c.push(1.0, 0, seg(Proto::Tcp, 100, &two[..30]));
        c.push(1.1, 10, seg(Proto::Tcp, 100, &two[..30])); // retransmission
        c.push(1.2, 20, seg(Proto::Tcp, 130, &two[30..]));
        let t = c.finish();
        assert_eq!(t.messages.len(), 2);
        assert_eq!(t.messages[1].offset, 20);
        assert!(t.messages[0].at > Duration::from_millis(150));
    }

    #[test]
    fn non_sip_udp_is_skipped() {
        let mut c = Collector::default();
        c.push(0.0, 0, seg(Proto::Udp, 0, b"\x00\x01 dns"));
        c.push(0.0, 0, seg(Proto::Udp, 0, OPTIONS));
        assert_eq!(c.finish().messages.len(), 1);
    }
}
