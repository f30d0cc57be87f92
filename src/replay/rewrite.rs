//! Rewriting a trace's client request into one copy's live request: trace addresses to the
//! live ones, Call-ID, From tag and Via branch suffixed so copies (and runs) never collide,
//! the server's To tag replaced by the one it chose this time, and phone numbers offset so
//! each copy is a distinct user with a distinct address book.
//!
//! Owns these substitutions only; which message to send when is `runner.rs`'s business.

use crate::body::deflate::{deflate_zlib, inflate, InflateLimits};
use crate::sip::{Header, HeaderName, Request};
use bytes::Bytes;
use std::collections::HashMap;
use std::net::SocketAddr;

pub struct Rewriter {
    /// Appended to Call-IDs, From tags and branches: `.<run>.<copy>`.
    suffix: String,
    /// Added to every phone number (`+` and 7 to 15 digits).
    number_offset: u64,
    /// Trace `ip:port` text to live text.
    addrs: Vec<(String, String)>,
    /// The server's To tag in the trace to the one it gave this copy.
    server_tags: HashMap<String, String>,
}

impl Rewriter {
    pub fn new(run: &str, copy: u64, number_step: u64) -> Rewriter {
        Rewriter { suffix: format!(".{run}.{copy}"), number_offset: copy * number_step, addrs: Vec::new(), server_tags: HashMap::new() }
    }

    pub fn map_addr(&mut self, trace: SocketAddr, live: SocketAddr) {
        self.addrs.push((trace.to_string(), live.to_string()));
    }

    /// Remembers the To tag the live server chose where the trace's server chose `trace`.
    pub fn learn_tag(&mut self, trace: &str, live: &str) {
        self.server_tags.insert(trace.to_string(), live.to_string());
    }

    pub fn suffix(&self) -> &str {
        &self.suffix
    }

    /// The live request for a trace request.
    pub fn request(&self, req: &Request) -> Request {
        let headers = req.headers.iter().map(|h| Header::new(h.name.clone(), self.header(h))).collect();
        let encoded = req.headers.get(&HeaderName::ContentEncoding).is_some_and(|e| e.to_ascii_lowercase().contains("deflate"));
        Request {
            method: req.method.clone(),
            uri: self.numbers(&replace_addrs(&req.uri, &self.addrs)),
            headers: crate::sip::Headers(headers),
            body: self.body(&req.body, encoded),
        }
    }

    fn header(&self, h: &Header) -> Bytes {
        let text = replace_addrs(&h.text(), &self.addrs);
        let text = match h.name {
            HeaderName::CallId => format!("{}{}", text.trim(), self.suffix),
            HeaderName::Via => replace_param(&text, "branch", |b| format!("{b}{}", self.suffix)),
            HeaderName::From => replace_param(&text, "tag", |t| format!("{t}{}", self.suffix)),
            HeaderName::To => replace_param(&text, "tag", |t| self.server_tags.get(t).cloned().unwrap_or_else(|| t.to_string())),
            _ => text,
        };
        Bytes::from(self.numbers(&text))
    }

    fn body(&self, body: &Bytes, deflated: bool) -> Bytes {
        if self.number_offset == 0 || body.is_empty() {
            return body.clone();
        }
        if deflated {
            return match inflate(body, &InflateLimits::default()) {
                Ok(plain) => Bytes::from(deflate_zlib(self.numbers(&String::from_utf8_lossy(&plain)).as_bytes())),
                Err(_) => body.clone(),
            };
        }
        match std::str::from_utf8(body) {
            Ok(text) => Bytes::from(self.numbers(text)),
            Err(_) => body.clone(),
        }
    }

    /// Offsets every `+` followed by 7 to 15 digits, keeping the digit count (wrapping).
    pub fn numbers(&self, text: &str) -> String {
        if self.number_offset == 0 {
            return text.to_string();
        }
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(plus) = rest.find('+') {
            out.push_str(&rest[..=plus]);
            rest = &rest[plus + 1..];
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if (7..=15).contains(&digits) {
                out.push_str(&offset_digits(&rest[..digits], self.number_offset));
                rest = &rest[digits..];
            }
        }
        out.push_str(rest);
        out
    }
}

fn offset_digits(digits: &str, offset: u64) -> String {
    let value: u64 = digits.parse().unwrap_or(0);
    let modulus = 10u64.pow(digits.len() as u32);
    let moved = (value + offset % modulus) % modulus;
    format!("{moved:0width$}", width = digits.len())
}

/// Replaces every trace `ip:port` with its live text (not when more port digits follow).
pub fn replace_addrs(text: &str, addrs: &[(String, String)]) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut i = 0;
    'outer: while i < text.len() {
        for (from, to) in addrs {
            let end = i + from.len();
            if text[i..].starts_with(from.as_str()) && !text[end..].starts_with(|c: char| c.is_ascii_digit()) {
                out.push_str(to);
                i = end;
                continue 'outer;
            }
        }
        let c = text[i..].chars().next().unwrap_or(' ');
        out.push(c);
        i += c.len_utf8();
    }
    out
}

/// Rewrites the value of `;name=` parameters (case-insensitive) with `f`.
pub fn replace_param(text: &str, name: &str, f: impl Fn(&str) -> String) -> String {
    let key = format!(";{name}=");
    let lower = text.to_ascii_lowercase();
    let Some(at) = lower.find(&key) else { return text.to_string() };
    let start = at + key.len();
    let end = text[start..].find([';', ',', '>', ' ']).map_or(text.len(), |e| start + e);
    format!("{}{}{}", &text[..start], f(&text[start..end]), replace_param(&text[end..], name, f))
}

/// The value of `;name=` in a header value.
pub fn param(text: &str, name: &str) -> Option<String> {
    let key = format!(";{name}=");
    let at = text.to_ascii_lowercase().find(&key)? + key.len();
    let end = text[at..].find([';', ',', '>', ' ']).map_or(text.len(), |e| at + e);
    Some(text[at..end].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::{parse_message, Message};

    const SUB: &str = "SUBSCRIBE sip:rls@127.0.0.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bK-1;rport\r\n\
From: <sip:+33612345678@127.0.0.1>;tag=abc\r\n\
To: <sip:rls@127.0.0.1>;tag=srv1\r\n\
Call-ID: 1-2@127.0.0.1\r\n\
Contact: <sip:sipp@127.0.0.1:5090>\r\n\
Content-Length: 41\r\n\r\n<entry uri=\"sip:+33612345678@x\"/> +123 +1";

    fn req() -> Request {
        match parse_message(Bytes::from(SUB)).unwrap() {
            Message::Request(r) => r,
            _ => unreachable!(),
        }
    }

    #[test]
    fn a_copy_gets_its_own_ids_addresses_and_numbers() {
        let mut rw = Rewriter::new("r1", 2, 1000);
        rw.map_addr("127.0.0.1:5090".parse().unwrap(), "127.0.0.1:40000".parse().unwrap());
        rw.map_addr("127.0.0.1:5060".parse().unwrap(), "127.0.0.1:6000".parse().unwrap());
        rw.learn_tag("srv1", "live9");
        let out = String::from_utf8(rw.request(&req()).to_bytes().to_vec()).unwrap();
        assert!(out.starts_with("SUBSCRIBE sip:rls@127.0.0.1:6000 SIP/2.0\r\n"), "{out}");
        assert!(out.contains("Via: SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bK-1.r1.2;rport\r\n"), "{out}");
        assert!(out.contains("From: <sip:+33612347678@127.0.0.1>;tag=abc.r1.2\r\n"), "{out}");
        assert!(out.contains("To: <sip:rls@127.0.0.1>;tag=live9\r\n"), "{out}");
        assert!(out.contains("Call-ID: 1-2@127.0.0.1.r1.2\r\n"), "{out}");
        assert!(out.contains("<sip:sipp@127.0.0.1:40000>"), "{out}");
        assert!(out.ends_with("<entry uri=\"sip:+33612347678@x\"/> +123 +1"), "{out}");
    }

    #[test]
    fn copy_zero_keeps_numbers_and_ports_are_whole() {
        let rw = Rewriter::new("r", 0, 1000);
        assert_eq!(rw.numbers("+33612345678"), "+33612345678");
        let map = vec![("1.2.3.4:506".to_string(), "X".to_string())];
        assert_eq!(replace_addrs("1.2.3.4:5060 1.2.3.4:506;", &map), "1.2.3.4:5060 X;");
        assert_eq!(offset_digits("9999999", 2), "0000001");
    }

    #[test]
    fn params() {
        assert_eq!(param("<sip:a>;tag=x;y", "tag").as_deref(), Some("x"));
        assert_eq!(replace_param("<sip:a>;Tag=x", "tag", |t| format!("{t}1")), "<sip:a>;Tag=x1");
    }
}
