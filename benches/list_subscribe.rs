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
//! Beside it, in the same run (issue 17): the same cycle for a stored list (a body-less
//! SUBSCRIBE to the list URI, its 100 numbers read from the sealed stored book), and the
//! upload of a 2,000-contact book (keyed hashes, sealing, one sled write), with the bytes
//! it stores per contact.
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
use smart_presence::address_books::{AddressBooks, Contact, Limits};
use smart_presence::subscription::books::StoredLists;

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

/// A body-less SUBSCRIBE to the stored list (a BLF phone's).
fn stored_subscribe() -> Bytes {
    let head = String::from_utf8(subscribe(0).to_vec()).expect("text");
    let head = head.split("Content-Type:").next().expect("head").replace("SUBSCRIBE sip:rls@127.0.0.1:5060", "SUBSCRIBE sip:contacts@127.0.0.1:5060");
    let head = head.replace("To: <sip:rls@127.0.0.1>", "To: <sip:contacts@127.0.0.1>").replace("Require: recipient-list-subscribe\r\n", "");
    Bytes::from(format!("{head}Content-Length: 0\r\n\r\n"))
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
    let (size, count) = notify_list(&req, list.entries, list.accepts_deflate, expires, index, presence, config, source);
    if let (Some(m), Some(at)) = (metrics, received) {
        count_list_subscribe(m, method, count, at);
    }
    size
}

/// The same for a stored list: the entries come from the sealed book.
fn stored_cycle(raw: &Bytes, lists: &StoredLists, index: &Index, presence: &PresenceStore, config: &Config, source: &Source) -> usize {
    let Ok(Message::Request(req)) = parse_message(raw.clone()) else { panic!("bench request parses") };
    let expires = request::check_common(&req, &config.subscription).expect("valid");
    request::check_require(&req).expect("valid");
    assert!(lists.is_list_uri(&req.uri));
    request::check_stored(&req).expect("valid");
    let numbers = lists.books.numbers("sipp1").expect("readable").expect("a book");
    let uris = lists.entry_uris(numbers.into_iter());
    notify_list(&req, uris, request::accepts_deflate(&req), expires, index, presence, config, source).0
}

/// Classify, resolve and write the full-state NOTIFYs of `uris`; their bytes' length.
#[allow(clippy::too_many_arguments)]
fn notify_list(req: &smart_presence::sip::Request, uris: Vec<String>, deflate: bool, expires: u32, index: &Index, presence: &PresenceStore, config: &Config, source: &Source) -> (usize, usize) {
    let entries = resolution::classify(uris, None);
    let users = resolution::resolve_all(index, presence, entries.iter().map(|e| e.key.clone()));
    let presences: Vec<Option<UserPresence>> = users
        .iter()
        .map(|u| u.as_ref().map(|u| UserPresence { contact: &u.contact, basic_open: true, away: true, timestamp: Some(u.since), doc: None }))
        .collect();
    let resources: Vec<ResourceState> = entries.iter().zip(presences).map(|(e, user)| ResourceState { uri: &e.uri, user }).collect();
    let mut dialog = Dialog::from_subscribe(req, source, "127.0.0.1").expect("dialog");
    let format = Format::choose(&config.notify, Some("SIPp"), deflate, false);
    let mut version = 0;
    let state = SubState::Active { expires };
    let notifies = notification::list_notifies(&mut dialog, &req.uri, &mut version, true, &resources, format, state);
    (notifies.iter().map(|n| n.to_bytes().len()).sum(), notifies.len())
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
    let lists = stored_lists(dir.path());
    let raw = stored_subscribe();
    println!("stored list of 100: NOTIFY {} bytes", stored_cycle(&raw, &lists, &index, &presence, &config, &source));
    group.bench_function(BenchmarkId::new("stored_list_read_resolve_notify", 100), |b| {
        b.iter(|| black_box(stored_cycle(&raw, &lists, &index, &presence, &config, &source)))
    });
    group.finish();
    drop(metrics);
    let _ = upkeep.join();
    upload(c, dir.path());
}

fn book(numbers: impl Iterator<Item = String>) -> Vec<Contact> {
    numbers.map(|n| Contact { e164: n.parse().expect("E.164"), name: Some(format!("Contact {n}")), number: n }).collect()
}

/// The book store with `sipp1`'s 100-number book (the numbers of the request-contained list).
fn stored_lists(dir: &std::path::Path) -> StoredLists {
    let limits = Limits { max_contacts: 5000, log_versions: 32 };
    let books = AddressBooks::open(&dir.join("books"), &[9; 32], limits).expect("book store");
    books.replace("sipp1", book((0..100).map(|e| number(0, e)))).expect("stored");
    StoredLists::new(books, "sip:contacts@127.0.0.1", "127.0.0.1").expect("list URI")
}

/// Uploading a 2,000-contact book (a new version each time), and what it stores.
fn upload(c: &mut Criterion, dir: &std::path::Path) {
    let limits = Limits { max_contacts: 5000, log_versions: 32 };
    let books = AddressBooks::open(&dir.join("upload"), &[7; 32], limits).expect("book store");
    let contacts = book((0..2000).map(|e| format!("+3362{e:07}")));
    books.replace("fresh", contacts.clone()).expect("stored");
    let (book, log) = books.stored_bytes("fresh").expect("readable").expect("stored");
    println!("2,000-contact book: {book} bytes stored, {} per contact, and {log} bytes of change log (its first upload)", book / 2000);
    let mut group = c.benchmark_group("address_book");
    group.sample_size(20);
    group.bench_function("upload_2000", |b| b.iter(|| black_box(books.replace("alice", contacts.clone()).expect("stored"))));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
