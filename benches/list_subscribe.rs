//! A list SUBSCRIBE end to end in-process, without sockets: parse the request, check it,
//! classify and resolve its 100 (or 500) numbers against a sled index where 20% are bound,
//! and build the full-state NOTIFY as it goes on the wire. This is the per-call work of
//! `benches/load.sh`'s list cycle, less transport, transactions and the task per subscription.
//!
//! `cargo bench --bench list_subscribe`.

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use smart_presence::body::{ResourceState, UserPresence};
use smart_presence::config::Config;
use smart_presence::index::{Index, Source as BindSource};
use smart_presence::notification::{self, Format, SubState};
use smart_presence::presence::PresenceStore;
use smart_presence::resolution;
use smart_presence::sip::{parse_message, Message};
use smart_presence::dialog::Dialog;
use smart_presence::subscription::request;
use smart_presence::transport::{Protocol, Source};

fn number(line: usize, entry: usize) -> String {
    format!("+3361{line:04}{entry:03}")
}

fn subscribe(entries: usize) -> Bytes {
    let mut body = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<resource-lists xmlns=\"urn:ietf:params:xml:ns:resource-lists\"><list>\n");
    for e in 0..entries {
        body.push_str(&format!("  <entry uri=\"sip:{}@127.0.0.1;user=phone\"/>\n", number(0, e)));
    }
    body.push_str("</list></resource-lists>\n");
    let head = "SUBSCRIBE sip:rls@127.0.0.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bK-1-1;rport\r\n\
From: <sip:sipp1@127.0.0.1>;tag=1SIPpTag1\r\nTo: <sip:rls@127.0.0.1>\r\nCall-ID: 1-1@127.0.0.1\r\n\
CSeq: 1 SUBSCRIBE\r\nMax-Forwards: 70\r\nContact: <sip:sipp@127.0.0.1:5090;transport=UDP>\r\n\
Event: presence\r\nExpires: 3600\r\nSupported: eventlist\r\nRequire: recipient-list-subscribe\r\n\
Accept: multipart/related, application/rlmi+xml, application/pidf+xml\r\n\
Content-Type: application/resource-lists+xml\r\nContent-Disposition: recipient-list\r\nUser-Agent: SIPp\r\n";
    Bytes::from(format!("{head}Content-Length: {}\r\n\r\n{body}", body.len()))
}

/// The work of one initial list SUBSCRIBE; returns the NOTIFY bytes' length.
fn cycle(raw: &Bytes, index: &Index, presence: &PresenceStore, config: &Config, source: &Source) -> usize {
    let Ok(Message::Request(req)) = parse_message(raw.clone()) else { panic!("bench request parses") };
    let expires = request::check_common(&req, &config.subscription).expect("valid");
    request::check_require(&req).expect("valid");
    let list = request::check_list(&req, expires, &config.subscription).expect("valid");
    let entries = resolution::classify(list.entries, None);
    let users = resolution::resolve_all(index, presence, entries.iter().map(|e| e.key.clone()));
    let presences: Vec<Option<UserPresence>> = users
        .iter()
        .map(|u| u.as_ref().map(|u| UserPresence { contact: &u.contact, basic_open: true, away: true, timestamp: Some(u.since), doc: None }))
        .collect();
    let resources: Vec<ResourceState> = entries.iter().zip(presences).map(|(e, user)| ResourceState { uri: &e.uri, user }).collect();
    let mut dialog = Dialog::from_subscribe(&req, source, "127.0.0.1").expect("dialog");
    let format = Format::choose(&config.notify, Some("SIPp"), list.accepts_deflate, false);
    let mut version = 0;
    let state = SubState::Active { expires };
    let notifies = notification::list_notifies(&mut dialog, &req.uri, &mut version, true, &resources, format, state);
    notifies.iter().map(|n| n.to_bytes().len()).sum()
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let index = Index::open(dir.path()).expect("index");
    for e in (0..500).step_by(5) {
        let n = number(0, e).parse().expect("E.164");
        index.bind(n, &format!("sip:u0x{e}@example.org"), BindSource::Admin).expect("bind");
    }
    let config = Config::default();
    let (presence, _changes) = PresenceStore::new();
    let source = Source { protocol: Protocol::Udp, remote: "127.0.0.1:5090".parse().unwrap(), local: "127.0.0.1:5060".parse().unwrap(), conn: None };
    let mut group = c.benchmark_group("list_subscribe");
    for entries in [100, 500] {
        let raw = subscribe(entries);
        println!("{entries} numbers: SUBSCRIBE {} bytes, NOTIFY {} bytes", raw.len(), cycle(&raw, &index, &presence, &config, &source));
        group.bench_with_input(BenchmarkId::new("parse_check_resolve_notify", entries), &raw, |b, raw| {
            b.iter(|| black_box(cycle(raw, &index, &presence, &config, &source)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
