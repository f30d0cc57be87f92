//! Parsing the captured liblinphone list SUBSCRIBE, and writing a response, with our parser;
//! rsip 0.4 on the same input for comparison.

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use smart_presence::sip::{check_request, parse_message, top_via, HeaderName, Message, NameAddr, Response};

const SUBSCRIBE: &[u8] = include_bytes!("../fixtures/liblinphone-5.1/01-subscribe-initial-udp-4numbers-deflate.raw");

fn parse(c: &mut Criterion) {
    let data = Bytes::from_static(SUBSCRIBE);
    c.bench_function("parse liblinphone SUBSCRIBE", |b| {
        b.iter(|| parse_message(black_box(data.clone())).unwrap())
    });
    c.bench_function("parse + validate + typed Via/From/To", |b| {
        b.iter(|| {
            let Ok(Message::Request(mut req)) = parse_message(black_box(data.clone())) else { panic!() };
            check_request(&mut req, false).unwrap();
            let via = top_via(&req.headers).unwrap();
            let from = NameAddr::parse(&req.headers.get(&HeaderName::From).unwrap()).unwrap();
            let to = NameAddr::parse(&req.headers.get(&HeaderName::To).unwrap()).unwrap();
            black_box((via, from, to))
        })
    });
    c.bench_function("rsip 0.4 parse (comparison)", |b| {
        b.iter(|| rsip::SipMessage::try_from(black_box(SUBSCRIBE)).unwrap())
    });
}

fn write(c: &mut Criterion) {
    let Ok(Message::Request(req)) = parse_message(Bytes::from_static(SUBSCRIBE)) else { panic!() };
    c.bench_function("build + write 200 to SUBSCRIBE", |b| {
        b.iter(|| {
            let mut resp = Response::to(black_box(&req), 200);
            resp.set_to_tag("abcdef1234");
            resp = resp.header(HeaderName::Expires, "3600").header(HeaderName::Require, "eventlist");
            resp.to_bytes()
        })
    });
}

criterion_group!(benches, parse, write);
criterion_main!(benches);
