//! Issue 7: `smart-presence replay` over loopback. The traces in `fixtures/replay/` were
//! recorded from SIPp's list-SUBSCRIBE scenario against our server (see the README there);
//! here they are read in each format and replayed, in several copies, against a test server.

mod common;

use common::*;
use smart_presence::index::Source;
use smart_presence::replay::packet::{self, Proto};
use smart_presence::replay::{self, pcap, read, trace, Args, Transport};
use smart_presence::sip::{HeaderName, Message, Method};
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/replay")).join(name)
}

const UDP_PCAP: &str = "list_subscribe_udp.pcap";
const TCP_PCAPNG: &str = "list_subscribe_tcp.pcapng";
const SIPP_LOG: &str = "list_subscribe_udp_messages.log";

/// The recorded calls: 2 list-SUBSCRIBE cycles of 100 numbers, each SUBSCRIBE, 200, NOTIFY,
/// 200, un-SUBSCRIBE, 200, NOTIFY (terminated), 200.
const CALLS: u64 = 2;

/// Binds what `make_lists.py` binds for the first lines (every 5th number), so replayed
/// copies (numbers offset by 1000 = the next line) see users too.
fn bind_lists(s: &TestServer, lines: usize) {
    for line in 0..lines {
        for e in (0..100).step_by(5) {
            let n = format!("+3361{line:04}{e:03}").parse().unwrap();
            s.server.index().bind(n, &format!("sip:u{line}x{e}@example.org"), Source::Admin).unwrap();
        }
    }
}

fn args(trace: &str, target: std::net::SocketAddr, copies: u64) -> Args {
    Args {
        trace: fixture(trace),
        target,
        speed: 0.0,
        copies,
        number_step: 1000,
        server: None,
        transport: None,
        timeout: 5.0,
        bind: None,
        quiet: true,
    }
}

fn assert_cycles(report: &replay::report::Report, copies: u64) {
    let text = report.render();
    assert!(report.matches_trace(), "{text}");
    assert_eq!(report.get("sent SUBSCRIBE"), 2 * CALLS * copies, "{text}");
    assert_eq!(report.get("recv 200 SUBSCRIBE"), 2 * CALLS * copies, "{text}");
    assert_eq!(report.get("recv NOTIFY"), 2 * CALLS * copies, "{text}");
    assert_eq!(report.get("sent 200 NOTIFY"), 2 * CALLS * copies, "{text}");
    assert_eq!(report.unexpected, 0, "{text}");
    assert_eq!(report.latencies["SUBSCRIBE"].len() as u64, 2 * CALLS * copies, "{text}");
    assert!(report.percentile("NOTIFY after request", 99.0).is_some(), "{text}");
}

#[test]
fn the_three_fixtures_parse_alike() {
    for (name, proto) in [(UDP_PCAP, Proto::Udp), (TCP_PCAPNG, Proto::Tcp), (SIPP_LOG, Proto::Udp)] {
        let t = read::read_file(&fixture(name)).unwrap();
        assert_eq!(t.messages.len() as u64, 8 * CALLS, "{name}");
        assert!(t.messages.iter().all(|m| m.proto == proto), "{name}");
        let server = replay::script::server_of(&t, None).unwrap();
        let scripts = replay::script::scripts(&t, server);
        assert_eq!(scripts.len(), 1, "{name}: one SIPp socket");
        assert_eq!(scripts[0].steps.len() as u64, 2 * CALLS, "{name}");
        assert!(scripts[0].steps.iter().all(|s| s.expected == Some(200)), "{name}");
        assert_eq!(scripts[0].answers.len() as u64, 2 * CALLS, "{name}");
        assert!(t.messages.windows(2).all(|w| w[0].at <= w[1].at), "{name}: in time order");
    }
}

#[test]
fn truncated_fixtures_fail_with_the_offset() {
    for name in [UDP_PCAP, TCP_PCAPNG] {
        let data = std::fs::read(fixture(name)).unwrap();
        let err = read::parse(&data[..data.len() - 7]).unwrap_err();
        assert!(err.offset > 0 && err.offset < data.len() as u64, "{name}: {err}");
        for cut in (0..data.len()).step_by(97) {
            let _ = read::parse(&data[..cut]);
        }
    }
}

#[test]
fn corrupted_fixtures_do_not_panic() {
    for name in [UDP_PCAP, TCP_PCAPNG, SIPP_LOG] {
        let data = std::fs::read(fixture(name)).unwrap();
        for at in (0..data.len()).step_by(41) {
            let mut bad = data.clone();
            bad[at] ^= 0xa5;
            if let Err(e) = read::parse(&bad) {
                assert!(e.offset <= data.len() as u64, "{name}: {e}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_pcap_replays_in_copies_as_recorded() {
    // As recorded: one datagram per NOTIFY (by default a 100-number state is split in two).
    let s = TestServer::start_with(|c| c.notify.max_body_udp = 65_000).await;
    bind_lists(&s, 6);
    let report = replay::run(args(UDP_PCAP, s.udp(), 3)).await.unwrap();
    assert_cycles(&report, 3);
    assert!(s.server.subscriptions().is_empty(), "every copy unsubscribed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_pcapng_replays_over_tcp() {
    let s = TestServer::start().await;
    bind_lists(&s, 4);
    let report = replay::run(args(TCP_PCAPNG, s.tcp(), 2)).await.unwrap();
    assert_cycles(&report, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_log_replays_with_timing_and_over_another_transport() {
    let s = TestServer::start().await;
    let mut a = args(SIPP_LOG, s.udp(), 1);
    a.speed = 10.0;
    let report = replay::run(a).await.unwrap();
    assert_cycles(&report, 1);
    let mut a = args(SIPP_LOG, s.tcp(), 2);
    a.transport = Some(Transport::Tcp);
    let report = replay::run(a).await.unwrap();
    assert_cycles(&report, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_answer_is_reported() {
    // Against a server that does not serve SUBSCRIBE the codes differ from the trace.
    let s = TestServer::start_with(|c| c.subscription.max_entries = 10).await;
    let mut a = args(UDP_PCAP, s.udp(), 1);
    a.timeout = 1.0;
    let report = replay::run(a).await.unwrap();
    assert!(!report.matches_trace());
    assert_eq!(report.differing.get("SUBSCRIBE: trace 200, got 413"), Some(&CALLS), "{}", report.render());
    assert!(report.render().contains("SUBSCRIBE: trace 200, got 413"));
}

// ---- Issue 19: fragmented UDP (real captures, see fixtures/replay/record_fragments.sh) ----

/// The same two SUBSCRIBEs (IPv4, 7,104 bytes in 5 fragments; IPv6, 9,256 bytes in 7),
/// captured on `lo` (Ethernet) and on `any` (Linux cooked v1 and v2).
const FRAGMENTED: [&str; 3] = ["fragmented_subscribe_lo.pcap", "fragmented_subscribe_sll.pcap", "fragmented_subscribe_sll2.pcap"];

/// Checks a trace holds both SUBSCRIBEs whole: every list entry and the body's end.
fn assert_whole_subscribes(t: &trace::Trace, what: &str) {
    let subscribes: Vec<_> = t
        .messages
        .iter()
        .filter_map(|m| match &m.message {
            Message::Request(r) => Some((m, r)),
            _ => None,
        })
        .collect();
    assert_eq!(subscribes.len(), 2, "{what}: {:?}", t.messages.iter().map(|m| m.src).collect::<Vec<_>>());
    let expected = [("127.0.0.1:5070", 120), ("[::1]:5070", 160)];
    for ((m, req), (src, entries)) in subscribes.iter().zip(expected) {
        assert_eq!((m.proto, m.src), (Proto::Udp, src.parse().unwrap()), "{what}");
        assert_eq!(req.method, Method::Subscribe, "{what}");
        let length: usize = req.headers.get(&HeaderName::ContentLength).unwrap().parse().unwrap();
        assert_eq!(req.body.len(), length, "{what}: {src}");
        let body = std::str::from_utf8(&req.body).unwrap();
        assert_eq!(body.matches("<entry uri=").count(), entries, "{what}: {src}");
        assert!(body.ends_with("</list></resource-lists>"), "{what}: {src}");
    }
}

#[test]
fn fragmented_subscribes_are_reassembled_from_real_captures() {
    for name in FRAGMENTED {
        let t = read::read_file(&fixture(name)).unwrap();
        assert_whole_subscribes(&t, name);
    }
}

/// (time, frame) records of a little-endian pcap.
fn pcap_records(data: &[u8]) -> Vec<(f64, Vec<u8>)> {
    let le32 = |at: usize| u32::from_le_bytes(data[at..at + 4].try_into().unwrap());
    let (mut at, mut out) = (24, Vec::new());
    while at < data.len() {
        let (secs, micros, len) = (le32(at), le32(at + 4), le32(at + 8) as usize);
        out.push((f64::from(secs) + f64::from(micros) * 1e-6, data[at + 16..at + 16 + len].to_vec()));
        at += 16 + len;
    }
    out
}

/// The link header of an IPv4 (false) or IPv6 (true) packet.
type LinkHeader = fn(bool) -> Vec<u8>;

#[test]
fn fragmented_subscribes_over_every_other_link_type_and_pcapng() {
    let ethernet = pcap_records(&std::fs::read(fixture(FRAGMENTED[0])).unwrap());
    assert_eq!(ethernet.len(), 12, "5 + 7 fragments");
    let t = read::parse(&pcap::write_pcapng(&ethernet)).unwrap();
    assert_whole_subscribes(&t, "pcapng");
    // The same IP packets behind the other link headers we read.
    let links: [(u32, LinkHeader); 3] = [
        (packet::LINK_NULL, |v6| if v6 { 30u32 } else { 2 }.to_le_bytes().to_vec()),
        (packet::LINK_LOOP, |v6| if v6 { 24u32 } else { 2 }.to_be_bytes().to_vec()),
        (packet::LINK_RAW, |_| Vec::new()),
    ];
    for (link, header) in links {
        let frames: Vec<(f64, Vec<u8>)> = ethernet.iter().map(|(time, f)| (*time, [header(f[14] >> 4 == 6), f[14..].to_vec()].concat())).collect();
        let t = read::parse(&pcap::write_pcap_link(link, &frames)).unwrap();
        assert_whole_subscribes(&t, &format!("link type {link}"));
    }
    // Last fragment first, and the two packets' fragments interleaved.
    let (mut v4, mut v6): (Vec<_>, Vec<_>) = ethernet.into_iter().partition(|(_, f)| f[14] >> 4 == 4);
    v4.reverse();
    v6.reverse();
    let mut mixed = Vec::new();
    for i in 0..v6.len() {
        mixed.extend(v6.get(i).cloned());
        mixed.extend(v4.get(i).cloned());
    }
    let t = read::parse(&pcap::write_pcap(&mixed)).unwrap();
    let mut srcs: Vec<String> = t.messages.iter().map(|m| m.src.to_string()).collect();
    srcs.sort();
    assert_eq!(srcs, ["127.0.0.1:5070", "[::1]:5070"], "both complete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reassembled_subscribe_replays_against_the_server() {
    // The capture's numbers are +3361 0000 xxx (IPv4) and +3361 0001 xxx (IPv6).
    let s = TestServer::start_with(|c| c.notify.max_body_udp = 65_000).await;
    bind_lists(&s, 2);
    for server in ["127.0.0.1:5060", "[::1]:5060"] {
        let mut a = args(FRAGMENTED[0], s.udp(), 1);
        a.server = Some(server.parse().unwrap());
        a.timeout = 2.0;
        let report = replay::run(a).await.unwrap();
        let text = report.render();
        assert_eq!(report.get("sent SUBSCRIBE"), 1, "{server}: {text}");
        assert_eq!(report.get("recv 200 SUBSCRIBE"), 1, "{server}: {text}");
        assert!(report.get("recv NOTIFY") >= 1, "{server}: {text}");
    }
}
