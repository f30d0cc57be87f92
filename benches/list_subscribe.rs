//! A list SUBSCRIBE end to end in-process, without sockets: parse the request, check it,
//! classify and resolve its 100 (or 500) numbers against a sled index where 20% are bound,
//! and build the full-state NOTIFY as it goes on the wire. This is the per-call work of
//! `benches/load.sh`'s list cycle, less transport, transactions and the task per subscription.
//!
//! With metrics on (issue 15), the same cycle also does the counting the server does for
//! one list SUBSCRIBE (the arrival stamp, the request counter, one NOTIFY sent per NOTIFY,
//! the SUBSCRIBE-to-first-NOTIFY histogram), with the histograms folded every second on
//! another thread as the server does; `interleaved_metrics_off`/`_on` run both, cycle by
//! cycle, and each reports one side; `metrics_count_only` times that counting alone.
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
use smart_presence::metrics::{MethodLabel, Metrics, Transport};
use smart_presence::sip::Method;
use std::sync::Arc;
use std::time::{Duration, Instant};
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

/// The work of one initial list SUBSCRIBE; returns the NOTIFY bytes' length. With
/// `metrics`, counted as the server counts it.
fn cycle(raw: &Bytes, index: &Index, presence: &PresenceStore, config: &Config, source: &Source, metrics: Option<&Metrics>) -> usize {
    let received = metrics.map(|_| Instant::now());
    let Ok(Message::Request(req)) = parse_message(raw.clone()) else { panic!("bench request parses") };
    let method = MethodLabel::of(&req.method);
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
    let size = notifies.iter().map(|n| n.to_bytes().len()).sum();
    if let (Some(m), Some(at)) = (metrics, received) {
        count_list_subscribe(m, method, notifies.len(), at);
    }
    size
}

/// What the server counts for one list SUBSCRIBE answered 200 and its full state.
fn count_list_subscribe(m: &Metrics, method: MethodLabel, notifies: usize, received: Instant) {
    m.request(method, Some(200), Transport::Udp);
    for _ in 0..notifies {
        m.notify_sent();
    }
    m.first_notify(received);
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
    let metrics = Arc::new(Metrics::new());
    let upkeep = std::thread::spawn({
        let m = Arc::downgrade(&metrics);
        move || {
            while let Some(m) = m.upgrade() {
                m.upkeep();
                drop(m);
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
        }
    });
    let mut group = c.benchmark_group("list_subscribe");
    for entries in [100, 500] {
        let raw = subscribe(entries);
        println!("{entries} numbers: SUBSCRIBE {} bytes, NOTIFY {} bytes", raw.len(), cycle(&raw, &index, &presence, &config, &source, None));
        group.bench_with_input(BenchmarkId::new("parse_check_resolve_notify", entries), &raw, |b, raw| {
            b.iter(|| black_box(cycle(raw, &index, &presence, &config, &source, None)))
        });
        // Metrics off and on, interleaved cycle by cycle (alternating which goes first) so that
        // the load of a shared machine weighs on both alike; each reports its own side's time.
        for (name, on) in [("interleaved_metrics_off", false), ("interleaved_metrics_on", true)] {
            group.bench_with_input(BenchmarkId::new(name, entries), &raw, |b, raw| {
                b.iter_custom(|iters| {
                    let (mut with, mut without) = (Duration::ZERO, Duration::ZERO);
                    for i in 0..iters {
                        for counted in [i % 2 == 0, i % 2 != 0] {
                            let t = Instant::now();
                            black_box(cycle(raw, &index, &presence, &config, &source, counted.then_some(&*metrics)));
                            *(if counted { &mut with } else { &mut without }) += t.elapsed();
                        }
                    }
                    if on { with } else { without }
                })
            });
        }
    }
    let subscribe = MethodLabel::of(&Method::Subscribe);
    group.bench_function("metrics_count_only", |b| b.iter(|| count_list_subscribe(&metrics, black_box(subscribe), 1, Instant::now())));
    group.finish();
    drop(metrics);
    let _ = upkeep.join();
}

criterion_group!(benches, bench);
criterion_main!(benches);
