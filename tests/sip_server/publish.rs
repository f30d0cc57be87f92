//! Issue 5: PUBLISH (RFC 3903) and presence reaching list subscribers.


use crate::common::peer::{Msg, Peer};
use crate::common::*;
use smart_presence::index::Source;
use std::time::{Duration, Instant};

const OPEN: &str = r#"<?xml version="1.0" encoding="UTF-8"?><presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:bob@example.org"><tuple id="t1"><status><basic>open</basic></status><contact>sip:bob@192.0.2.1</contact></tuple></presence>"#;

fn closed() -> String {
    OPEN.replace("<basic>open</basic>", "<basic>closed</basic>")
}

fn publish(local: std::net::SocketAddr, branch: &str, extra: &str, body: &str) -> String {
    let ct = if body.is_empty() { "" } else { "Content-Type: application/pidf+xml\r\n" };
    request("PUBLISH", "UDP", local, branch, &format!("Event: presence\r\n{ct}{extra}"), body)
        .replace("PUBLISH sip:rls@example.org", "PUBLISH sip:bob@example.org")
        .replace("<sip:alice@example.org>", "<sip:bob@example.org>")
}

async fn send(p: &mut Peer, text: &str) -> Msg {
    p.send(text.as_bytes()).await;
    p.recv().await
}

#[tokio::test]
async fn publish_lifecycle_and_errors() {
    let s = TestServer::start().await;
    let mut p = Peer::udp(s.udp()).await;
    let l = p.local();
    let first = send(&mut p, &publish(l, "p1", "Expires: 600\r\n", OPEN)).await;
    assert_eq!(first.status(), Some(200));
    assert_eq!(first.header("Expires"), Some("600"));
    let etag = first.header("SIP-ETag").expect("an entity-tag").to_string();

    let refreshed = send(&mut p, &publish(l, "p2", &format!("SIP-If-Match: {etag}\r\nExpires: 600\r\n"), "")).await;
    assert_eq!(refreshed.status(), Some(200));
    let etag2 = refreshed.header("SIP-ETag").unwrap().to_string();
    assert_ne!(etag, etag2, "a refresh gets a new entity-tag");

    let stale = send(&mut p, &publish(l, "p3", &format!("SIP-If-Match: {etag}\r\n"), "")).await;
    assert_eq!(stale.status(), Some(412), "the old tag is gone");

    let modified = send(&mut p, &publish(l, "p4", &format!("SIP-If-Match: {etag2}\r\n"), &closed())).await;
    assert_eq!(modified.status(), Some(200));
    let etag3 = modified.header("SIP-ETag").unwrap().to_string();

    let removed = send(&mut p, &publish(l, "p5", &format!("SIP-If-Match: {etag3}\r\nExpires: 0\r\n"), "")).await;
    assert_eq!(removed.status(), Some(200));
    assert_eq!(send(&mut p, &publish(l, "p6", &format!("SIP-If-Match: {etag3}\r\nExpires: 0\r\n"), "")).await.status(), Some(412));

    let cases = [
        (publish(l, "e1", "", ""), 400, None),
        (publish(l, "e2", "Expires: 10\r\n", OPEN), 423, Some(("Min-Expires", "60"))),
        (publish(l, "e3", "", OPEN).replace("application/pidf+xml", "text/plain"), 415, Some(("Accept", "application/pidf+xml"))),
        (publish(l, "e4", "", OPEN).replace("Event: presence", "Event: dialog"), 489, Some(("Allow-Events", "presence"))),
        (publish(l, "e5", "", "<presence>"), 400, None),
        (publish(l, "e6", "SIP-If-Match: nosuchtag\r\n", ""), 412, None),
    ];
    for (text, status, header) in cases {
        let resp = send(&mut p, &text).await;
        assert_eq!(resp.status(), Some(status), "{}", resp.start_line());
        if let Some((name, value)) = header {
            assert!(resp.header(name).is_some_and(|v| v.contains(value)), "{name}: {}", resp.head);
        }
    }
}

fn pidf_of(n: &Msg) -> String {
    let body = n.body();
    body.split("<presence").nth(1).map(|p| format!("<presence{p}")).unwrap_or_default()
}

#[tokio::test]
async fn presence_reaches_list_watchers_rate_limited() {
    let s = TestServer::start_with(|c| {
        c.presence.notify_interval_secs = 1;
        c.notify.min_interval_ms = 100;
    })
    .await;
    s.server.index().bind("+33612345678".parse().unwrap(), "sip:bob@example.org", Source::Admin).unwrap();
    let mut watcher = Peer::udp(s.udp()).await;
    let wl = watcher.local();
    let list = r#"<resource-lists xmlns="urn:ietf:params:xml:ns:resource-lists"><list><entry uri="sip:+33612345678@example.org;user=phone"/></list></resource-lists>"#;
    let sub = request(
        "SUBSCRIBE",
        "UDP",
        wl,
        "w1",
        &format!("Contact: <sip:w@{wl}>\r\nEvent: presence\r\nSupported: eventlist\r\nRequire: recipient-list-subscribe\r\nContent-Type: application/resource-lists+xml\r\n"),
        list,
    );
    watcher.send(sub.as_bytes()).await;
    let mut early = Vec::new();
    assert_eq!(watcher.response(&mut early).await.status(), Some(200));
    let first = match early.pop() {
        Some(n) => n,
        None => watcher.notify(200).await,
    };
    let offline = pidf_of(&first);
    assert!(offline.contains("<basic>open</basic>") && offline.contains("away"), "long-term presence: {offline}");

    let mut publisher = Peer::udp(s.udp()).await;
    let pl = publisher.local();
    let started = Instant::now();
    let ok = send(&mut publisher, &publish(pl, "on", "", OPEN)).await;
    let etag = ok.header("SIP-ETag").unwrap().to_string();
    let online = watcher.notify(200).await;
    let pidf = pidf_of(&online);
    assert!(pidf.contains("<basic>open</basic>") && !pidf.contains("away"), "online: {pidf}");
    assert!(pidf.contains(">sip:bob@example.org</contact>"), "contact stays the bound URI: {pidf}");
    assert!(started.elapsed() < Duration::from_millis(900), "first change goes out at once");

    // Two changes inside the interval: one NOTIFY, at the end of it, with the last state.
    let changed_at = Instant::now();
    let ok = send(&mut publisher, &publish(pl, "off", &format!("SIP-If-Match: {etag}\r\n"), &closed())).await;
    let etag = ok.header("SIP-ETag").unwrap().to_string();
    send(&mut publisher, &publish(pl, "on2", &format!("SIP-If-Match: {etag}\r\n"), &closed().replace("closed", "open"))).await;
    let n = watcher.notify(200).await;
    assert!(changed_at.elapsed() >= Duration::from_millis(700), "held for the interval: {:?}", changed_at.elapsed());
    assert!(!pidf_of(&n).contains("away"), "coalesced into the last state");
    assert_eq!(watcher.recv_within(Duration::from_millis(1500)).await.map(|m| m.start_line().to_string()), None, "one NOTIFY for both");
}

#[tokio::test]
async fn a_user_may_publish_only_his_own_presence() {
    let s = TestServer::start().await;
    let mut p = Peer::udp(s.udp()).await;
    let l = p.local();
    let as_eve = publish(l, "eve", "", OPEN).replace("From: <sip:bob@example.org>", "From: <sip:eve@example.org>");
    let resp = send(&mut p, &as_eve).await;
    assert_eq!((resp.status(), resp.start_line()), (Some(403), "SIP/2.0 403 Not Your Presence"));
}
