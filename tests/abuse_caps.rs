//! Issue 8: every cap gives its SIP error over real loopback sockets, and every slot a
//! subscription or connection takes is given back when it ends.

mod common;

use common::peer::{Msg, Peer};
use common::*;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

const BOB: &str = "sip:+33612345678@example.org;user=phone";

/// An RFC 5367 list SUBSCRIBE from `user`@example.org.
fn list_subscribe(proto: &str, local: SocketAddr, branch: &str, user: &str, extra: &str, body: &[u8]) -> Vec<u8> {
    let msg = list_subscribe_raw(proto, local, branch, extra, body);
    let end = find(&msg, b"\r\n\r\n").unwrap_or(msg.len());
    let head = String::from_utf8_lossy(&msg[..end]).replace("sip:alice@", &format!("sip:{user}@"));
    [head.as_bytes(), &msg[end..]].concat()
}

fn resource_list(uris: &[&str], padding: usize) -> Vec<u8> {
    let entries: String = uris.iter().map(|u| format!("<entry uri=\"{u}\"/>")).collect();
    let pad = " ".repeat(padding);
    format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><resource-lists xmlns=\"urn:ietf:params:xml:ns:resource-lists\"><list>{entries}</list>{pad}</resource-lists>").into_bytes()
}

fn deflate(data: &[u8]) -> Vec<u8> {
    smart_presence::body::deflate_zlib(data)
}

/// Sends a SUBSCRIBE; returns the final response, answering NOTIFYs with `notify_status`.
async fn subscribe(p: &mut Peer, msg: &[u8], notify_status: u16) -> Msg {
    p.send(msg).await;
    let mut notified = false;
    loop {
        let m = p.recv().await;
        if m.status().is_some() {
            if m.status() == Some(200) && !notified {
                // The first NOTIFY follows the 200 (or came before it).
                if let Some(n) = p.recv_within(Duration::from_millis(2000)).await {
                    if n.is_request("NOTIFY") {
                        p.send(&n.response(notify_status, "X")).await;
                    }
                }
            }
            return m;
        }
        p.send(&m.response(notify_status, "X")).await;
        notified = true;
    }
}

async fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let started = Instant::now();
    while !cond() {
        assert!(started.elapsed() < WAIT, "condition not reached: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn list_caps_entries_body_size_and_compression_ratio_give_413() {
    let s = TestServer::start_with(|c| {
        c.subscription.max_entries = 3;
        c.subscription.max_body_bytes = 4096;
    })
    .await;
    let mut p = Peer::udp(s.udp()).await;
    let local = p.local();
    let four: Vec<String> = (0..4).map(|i| format!("sip:+3361234567{i}@example.org;user=phone")).collect();
    let four: Vec<&str> = four.iter().map(String::as_str).collect();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("entries", resource_list(&four, 0), ""),
        ("body size, plain", resource_list(&[BOB], 5000), ""),
        ("body size, inflated", deflate(&resource_list(&[BOB], 10_000)), "Content-Encoding: deflate\r\n"),
    ];
    for (i, (what, body, extra)) in cases.into_iter().enumerate() {
        p.send(&list_subscribe("UDP", local, &format!("cap{i}"), "alice", extra, &body)).await;
        let resp = p.recv().await;
        assert_eq!(resp.status(), Some(413), "{what}: {}", resp.start_line());
    }
    // The same list within the caps is served.
    let ok = subscribe(&mut p, &list_subscribe("UDP", local, "fine", "alice", "", &resource_list(&four[..3], 0)), 200).await;
    assert_eq!(ok.status(), Some(200));

    // Compression ratio: a list padded with 300 KB of spaces deflates about 1000:1. The body
    // size cap (1 MiB) is not reached: the ratio cap (100) refuses it.
    let s = TestServer::start().await;
    let bomb = deflate(&resource_list(&[BOB], 300_000));
    assert!(bomb.len() < 2000, "{} bytes", bomb.len());
    let mut p = Peer::udp(s.udp()).await;
    let local = p.local();
    p.send(&list_subscribe("UDP", local, "bomb", "alice", "Content-Encoding: deflate\r\n", &bomb)).await;
    assert_eq!(p.recv().await.status(), Some(413), "ratio cap");
    let s = TestServer::start_with(|c| c.subscription.max_compression_ratio = 1_000_000).await;
    let mut p = Peer::udp(s.udp()).await;
    let local = p.local();
    let ok = subscribe(&mut p, &list_subscribe("UDP", local, "bomb2", "alice", "Content-Encoding: deflate\r\n", &bomb), 200).await;
    assert_eq!(ok.status(), Some(200), "the same body passes with the ratio cap raised");
}

#[tokio::test]
async fn subscriptions_per_account_give_503_and_are_released() {
    let s = TestServer::start_with(|c| c.limits.max_subscriptions_per_account = 2).await;
    let limits = s.server.limits().clone();
    let mut p = Peer::udp(s.udp()).await;
    let local = p.local();
    let body = resource_list(&[BOB], 0);
    let first = subscribe(&mut p, &list_subscribe("UDP", local, "a1", "alice", "", &body), 200).await;
    assert_eq!(first.status(), Some(200));
    let tag = first.tag("To").unwrap();
    // The same account from another address and spelled otherwise still counts.
    let mut q = Peer::udp(s.udp()).await;
    let qlocal = q.local();
    let second = String::from_utf8(list_subscribe("UDP", qlocal, "a2", "alice", "", &body)).unwrap().replace("From: <sip:alice@example.org>", "From: \"Alice\" <sips:alice@EXAMPLE.org:5061>");
    assert_eq!(subscribe(&mut q, second.as_bytes(), 200).await.status(), Some(200));
    assert_eq!(limits.subscriptions_of("sip:alice@example.org"), 2);

    let third = subscribe(&mut p, &list_subscribe("UDP", local, "a3", "alice", "", &body), 200).await;
    assert_eq!(third.start_line(), "SIP/2.0 503 Too Many Subscriptions For This Account");
    assert_eq!(third.header("Retry-After"), Some("60"));
    // Another account is not affected.
    assert_eq!(subscribe(&mut p, &list_subscribe("UDP", local, "b1", "bob", "", &body), 200).await.status(), Some(200));

    // Unsubscribing frees the slot.
    let unsub = String::from_utf8(list_subscribe("UDP", local, "a1", "alice", "Expires: 0\r\n", b""))
        .unwrap()
        .replace("To: <sip:rls@example.org>", &format!("To: <sip:rls@example.org>;tag={tag}"))
        .replace("CSeq: 1 SUBSCRIBE", "CSeq: 2 SUBSCRIBE")
        .replace("z9hG4bKa1", "z9hG4bKa1u")
        .replace("Content-Type: application/resource-lists+xml\r\n", "");
    assert_eq!(subscribe(&mut p, unsub.as_bytes(), 481).await.status(), Some(200));
    wait_until("alice's slot freed", || limits.subscriptions_of("sip:alice@example.org") == 1).await;
    assert_eq!(subscribe(&mut p, &list_subscribe("UDP", local, "a4", "alice", "", &body), 200).await.status(), Some(200));

    // A subscription whose NOTIFY is rejected ends, and frees its slot too.
    assert_eq!(subscribe(&mut p, &list_subscribe("UDP", local, "c1", "carol", "", &body), 481).await.status(), Some(200));
    wait_until("carol's slot freed", || limits.subscriptions_of("sip:carol@example.org") == 0).await;
    // A fetch (Expires: 0) holds no slot once answered.
    assert_eq!(subscribe(&mut p, &list_subscribe("UDP", local, "d1", "dave", "Expires: 0\r\n", &body), 200).await.status(), Some(200));
    wait_until("fetch holds nothing", || limits.subscriptions_of("sip:dave@example.org") == 0).await;
    assert_eq!(limits.subscriptions(), s.server.subscriptions().len());
}

#[tokio::test]
async fn subscriptions_per_source_give_503_and_expiry_releases() {
    let s = TestServer::start_with(|c| {
        c.limits.max_subscriptions_per_source = 2;
        c.subscription.min_expires = 1;
    })
    .await;
    let limits = s.server.limits().clone();
    let mut p = Peer::udp(s.udp()).await;
    let local = p.local();
    let body = resource_list(&[BOB], 0);
    assert_eq!(subscribe(&mut p, &list_subscribe("UDP", local, "u1", "u1", "Expires: 1\r\n", &body), 200).await.status(), Some(200));
    assert_eq!(subscribe(&mut p, &list_subscribe("UDP", local, "u2", "u2", "", &body), 200).await.status(), Some(200));
    let third = subscribe(&mut p, &list_subscribe("UDP", local, "u3", "u3", "", &body), 200).await;
    assert_eq!(third.start_line(), "SIP/2.0 503 Too Many Subscriptions From This Address");
    assert!(third.header("Retry-After").is_some());
    // u1 expires after 1 s: its terminated NOTIFY, then the slot is free again.
    let last = p.notify(200).await;
    assert!(last.header("Subscription-State").unwrap().starts_with("terminated"));
    wait_until("expired slot freed", || limits.subscriptions() == 1).await;
    assert_eq!(subscribe(&mut p, &list_subscribe("UDP", local, "u4", "u3", "", &body), 200).await.status(), Some(200));
}

fn options(proto: &str, local: SocketAddr, branch: &str) -> String {
    request("OPTIONS", proto, local, branch, "", "")
}

/// Collects responses by branch until `wait` passes with nothing new.
async fn collect(p: &mut Peer, wait: Duration) -> HashMap<String, Msg> {
    let mut got = HashMap::new();
    while let Some(m) = p.recv_within(wait).await {
        let via = m.header("Via").unwrap().to_string();
        let branch = via.split("branch=").nth(1).unwrap().split(';').next().unwrap().to_string();
        got.insert(branch, m);
    }
    got
}

async fn rate_limit_over(mut p: Peer) {
    let local = p.local();
    let proto = if matches!(p, Peer::Udp { .. }) { "UDP" } else { "TCP" };
    let mut all = Vec::new();
    for i in 0..12 {
        all.extend_from_slice(options(proto, local, &format!("r{i}")).as_bytes());
        if proto == "UDP" {
            p.send(&all).await;
            all.clear();
        }
    }
    if !all.is_empty() {
        p.send(&all).await;
    }
    let got = collect(&mut p, Duration::from_millis(700)).await;
    let count = |st: u16| got.values().filter(|m| m.status() == Some(st)).count();
    assert_eq!(count(200), 5, "{proto}: the burst is served");
    assert_eq!(count(503), 2, "{proto}: then a few 503s");
    assert_eq!(got.len(), 7, "{proto}: the rest is dropped unanswered");
    for m in got.values().filter(|m| m.status() == Some(503)) {
        assert_eq!(m.start_line(), "SIP/2.0 503 Rate Limit Exceeded");
        assert!(m.header("Retry-After").unwrap().parse::<u32>().unwrap() >= 1);
    }
    // Tokens come back at 5/s.
    tokio::time::sleep(Duration::from_millis(400)).await;
    p.send(options(proto, local, "later").as_bytes()).await;
    assert_eq!(p.recv().await.status(), Some(200), "{proto}: served again after a pause");
}

#[tokio::test]
async fn requests_per_second_per_source_give_503_with_retry_after() {
    let tune = |c: &mut smart_presence::config::Config| {
        c.limits.requests_per_second = 5;
        c.limits.request_burst = 5;
        c.limits.rejects_per_second = 2;
    };
    let s = TestServer::start_with(tune).await;
    rate_limit_over(Peer::udp(s.udp()).await).await;
    let s = TestServer::start_with(tune).await;
    rate_limit_over(Peer::tcp(s.tcp()).await).await;
}

#[tokio::test]
async fn connections_per_source_are_capped_and_released() {
    let s = TestServer::start_with(|c| c.limits.max_connections_per_source = 3).await;
    let mut peers = Vec::new();
    for i in 0..3 {
        let mut p = Peer::tcp(s.tcp()).await;
        let local = p.local();
        p.send(options("TCP", local, &format!("c{i}")).as_bytes()).await;
        assert_eq!(p.recv().await.status(), Some(200));
        peers.push(p);
    }
    assert_eq!(s.server.limits().connections(), 3);
    let mut refused = tcp_connect(s.tcp()).await;
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(WAIT, refused.read(&mut buf)).await.expect("closed at once");
    assert!(matches!(n, Ok(0) | Err(_)), "the fourth connection is closed");
    drop(peers.pop());
    wait_until("slot freed", || s.server.limits().connections() == 2).await;
    let mut p = Peer::tcp(s.tcp()).await;
    let local = p.local();
    p.send(options("TCP", local, "again").as_bytes()).await;
    assert_eq!(p.recv().await.status(), Some(200));
}

#[tokio::test]
async fn entries_held_in_all_are_capped() {
    let s = TestServer::start_with(|c| c.limits.max_entries_held = 5).await;
    let mut p = Peer::udp(s.udp()).await;
    let local = p.local();
    let three = resource_list(&[BOB, "sip:a@example.org", "sip:b@example.org"], 0);
    assert_eq!(subscribe(&mut p, &list_subscribe("UDP", local, "e1", "u1", "", &three), 200).await.status(), Some(200));
    assert_eq!(s.server.limits().entries_held(), 3);
    let refused = subscribe(&mut p, &list_subscribe("UDP", local, "e2", "u2", "", &three), 200).await;
    assert_eq!(refused.start_line(), "SIP/2.0 503 Too Many Entries Watched");
    assert!(refused.header("Retry-After").is_some());
    let two = resource_list(&[BOB, "sip:c@example.org"], 0);
    assert_eq!(subscribe(&mut p, &list_subscribe("UDP", local, "e3", "u2", "", &two), 200).await.status(), Some(200));
    assert_eq!(s.server.limits().entries_held(), 5);
}

#[tokio::test]
async fn read_timeout_cuts_incomplete_messages_not_idle_or_keepalive_connections() {
    let s = TestServer::start_with(|c| c.sip.read_timeout_secs = 1).await;
    let mut tcp = tcp_connect(s.tcp()).await;
    let local = tcp.local_addr().unwrap();
    // A keep-alive ping, then silence past the read timeout: the connection stays.
    write_all(&mut tcp, b"\r\n\r\n").await;
    let mut pong = [0u8; 2];
    tokio::time::timeout(WAIT, tcp.read_exact(&mut pong)).await.unwrap().unwrap();
    assert_eq!(&pong, b"\r\n");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // A message sent in two parts within the timeout is served.
    let msg = options("TCP", local, "slow");
    write_all(&mut tcp, &msg.as_bytes()[..20]).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    write_all(&mut tcp, &msg.as_bytes()[20..]).await;
    let mut pending = Vec::new();
    let resp = read_message(&mut tcp, &mut pending).await.expect("a response");
    assert_eq!(status(&resp), "SIP/2.0 200 OK");
    // A message left incomplete past the timeout: the server closes the connection.
    let started = Instant::now();
    write_all(&mut tcp, b"OPTIONS sip:rls@example.org SIP/2.0\r\nVia: SIP/2.0/TCP x").await;
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(WAIT, tcp.read(&mut buf)).await.expect("closed by the server");
    assert!(matches!(n, Ok(0) | Err(_)));
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(3), "{took:?}");
}
