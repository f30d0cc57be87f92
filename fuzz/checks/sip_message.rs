//! The SIP message layer as the transports feed it: one datagram, and a byte stream cut
//! into reads of a size the input chooses and framed by Content-Length; every message is
//! parsed, validated (`check_request`), answered by the writer, and a list SUBSCRIBE goes
//! through the handler's pure checks (`subscription::request`). What does not parse, or
//! cannot be framed, goes through `salvage` and `Framer::refusal` as the core and the stream
//! transport do. Invariants: nothing panics, and the responses we write parse back.

use bytes::Bytes;
use smart_presence::config::SubscriptionConfig;
use smart_presence::sip::framing::{Frame, Framer};
use smart_presence::sip::{check_request, parse_message, salvage, HeaderName, Message, Method, Response};
use smart_presence::subscription::request;

pub fn check(data: &[u8]) {
    one(Bytes::copy_from_slice(data), false);
    let mut framer = Framer::new(16 * 1024);
    let step = 1 + usize::from(data.first().copied().unwrap_or(0)) % 97;
    for chunk in data.chunks(step) {
        framer.push(chunk);
        loop {
            match framer.next_frame() {
                Ok(Some(Frame::Message(m))) => one(m, true),
                Ok(Some(Frame::Ping)) => {}
                Ok(None) => break,
                Err(e) => {
                    if let Some(answer) = framer.refusal(&e) {
                        assert!(parse_message(answer).is_ok(), "a refusal we write must parse");
                    }
                    return;
                }
            }
        }
    }
}

fn one(data: Bytes, stream: bool) {
    match parse_message(data.clone()) {
        Ok(Message::Request(mut req)) => {
            let valid = check_request(&mut req, stream).is_ok();
            let resp = Response::to(&req, if valid { 200 } else { 400 });
            let wire = resp.to_bytes();
            assert!(parse_message(wire).is_ok(), "a response we write must parse");
            if valid && req.method == Method::Subscribe {
                subscribe(&req);
            }
            if let Some(from) = req.headers.get(&HeaderName::From) {
                let _ = smart_presence::identity::of_header(&from);
            }
            let _ = (req.headers.event(), req.headers.content_type(), req.headers.expires());
        }
        Ok(Message::Response(resp)) => {
            let _ = resp.to_bytes();
        }
        Err(_) => {
            if let Some(req) = salvage::answerable(&data) {
                let wire = Response::with_reason(&req, 400, "Bad Request Line").to_bytes();
                assert!(parse_message(wire).is_ok(), "a 400 to an unparseable request must parse");
            }
        }
    }
}

fn subscribe(req: &smart_presence::sip::Request) {
    let cfg = SubscriptionConfig { max_entries: 100, max_body_bytes: 64 * 1024, ..SubscriptionConfig::default() };
    let expires = match request::check_common(req, &cfg) {
        Ok(e) => e,
        Err(r) => return check_error(&r),
    };
    if let Err(r) = request::check_require(req) {
        return check_error(&r);
    }
    if request::is_list_subscribe(req) {
        match request::check_list(req, expires, &cfg) {
            Ok(list) => assert!(list.entries.len() <= 100),
            Err(r) => check_error(&r),
        }
    }
}

/// Error responses carry a status line that parses (reason phrases without CR/LF).
fn check_error(r: &Response) {
    assert!((400..700).contains(&r.status));
    assert!(!r.reason.contains(['\r', '\n']), "reason phrase {:?}", r.reason);
    assert!(parse_message(r.to_bytes()).is_ok());
}
