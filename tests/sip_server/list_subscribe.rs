//! Issue 4: list subscriptions end to end, replaying what liblinphone 5.1 really sends
//! (`fixtures/liblinphone-5.1/`) and checking the NOTIFY bytes it needs.


use crate::common::peer::{Msg, Peer};
use crate::common::*;
use smart_presence::index::Source;
use smart_presence::numbers::E164;
use std::time::{Duration, Instant};

const INITIAL_UDP: &[u8] = include_bytes!("../../fixtures/liblinphone-5.1/01-subscribe-initial-udp-4numbers-deflate.raw");
const REFRESH_UDP: &[u8] = include_bytes!("../../fixtures/liblinphone-5.1/03-subscribe-refresh-udp-in-dialog.raw");
const UNSUB_UDP: &[u8] = include_bytes!("../../fixtures/liblinphone-5.1/04-subscribe-unsubscribe-udp.raw");
const INITIAL_TCP: &[u8] = include_bytes!("../../fixtures/liblinphone-5.1/02-subscribe-initial-tcp-1number-uncompressed.raw");
const UNSUB_TCP: &[u8] = include_bytes!("../../fixtures/liblinphone-5.1/05-subscribe-unsubscribe-tcp.raw");

/// The fixture with its client address replaced by ours (head only: the body is binary),
/// and any other textual replacements.
fn replay(raw: &[u8], client: &str, local: std::net::SocketAddr, swaps: &[(&str, &str)]) -> Vec<u8> {
    let end = find(raw, b"\r\n\r\n").unwrap();
    let mut head = String::from_utf8(raw[..end].to_vec()).unwrap().replace(client, &local.to_string());
    for (from, to) in swaps {
        head = head.replace(from, to);
    }
    [head.as_bytes(), &raw[end..]].concat()
}

pub(crate) fn bind(s: &TestServer, number: &str, uri: &str) {
    let n: E164 = number.parse().unwrap();
    s.server.index().bind(n, uri, Source::Admin).unwrap();
}

const BOB: &str = "sip:+33612345678@example.org;user=phone";
const CAROL: &str = "sip:+33698765432@example.org;user=phone";

/// The multipart parts of a NOTIFY body: (part headers, part body).
pub(crate) fn parts(msg: &Msg) -> Vec<(String, String)> {
    let ct = msg.header("Content-Type").unwrap();
    let boundary = ct.rsplit_once("boundary=").unwrap().1;
    let body = msg.body();
    body.split(&format!("--{boundary}"))
        .filter(|p| !p.is_empty() && !p.starts_with("--"))
        .map(|p| {
            let p = p.trim_start_matches("\r\n");
            let (h, b) = p.split_once("\r\n\r\n").unwrap();
            (h.to_string(), b.trim_end_matches("\r\n").to_string())
        })
        .collect()
}

pub(crate) fn rlmi(msg: &Msg) -> String {
    parts(msg).into_iter().next().unwrap().1
}

#[tokio::test]
async fn liblinphone_udp_lifecycle_initial_refresh_live_update_unsubscribe() {
    let s = TestServer::start().await;
    bind(&s, "+33612345678", "sip:bob@example.org");
    let mut p = Peer::udp(s.udp()).await;
    let local = p.local();
    p.send(&replay(INITIAL_UDP, "127.0.0.1:40791", local, &[])).await;
    let mut early = Vec::new();
    let ok = p.response(&mut early).await;
    assert_eq!(ok.start_line(), "SIP/2.0 200 OK");
    assert_eq!(ok.header("Expires"), Some("3600"));
    assert_eq!(ok.header("Require"), Some("eventlist"));
    assert!(ok.header("Contact").unwrap().starts_with("<sip:rls@127.0.0.1:"));
    let tag = ok.tag("To").expect("a To tag");
    let first = match early.pop() {
        Some(n) => n,
        None => p.notify(200).await,
    };

    // The format liblinphone 5.1 needs, byte for byte where it matters.
    assert_eq!(first.header("Event"), Some("Presence"));
    assert_eq!(first.header("Require"), Some("eventlist"));
    assert_eq!(first.header("Content-Encoding"), Some("deflate"));
    assert!(first.header("Subscription-State").unwrap().starts_with("active;expires="));
    let ct = first.header("Content-Type").unwrap();
    assert!(ct.starts_with("multipart/related;type=\"application/rlmi+xml\";start=\"<cid"), "{ct}");
    assert!(ct.rsplit_once(';').unwrap().1.starts_with("boundary="), "boundary last: {ct}");
    assert!(!ct.rsplit_once("boundary=").unwrap().1.starts_with('"'), "boundary unquoted: {ct}");
    assert_eq!(first.tag("From").as_deref(), Some(tag.as_str()));
    assert_eq!(first.header("Call-ID"), Some("rr4VBsayOc"));
    assert!(first.start_line().starts_with(&format!("NOTIFY sip:alice@{local};transport=udp SIP/2.0")));
    let first_parts = parts(&first);
    assert_eq!(first_parts.len(), 2, "RLMI + one PIDF");
    assert!(first_parts[0].0.contains("Content-Id: cid"), "{}", first_parts[0].0);
    assert!(!first_parts[0].0.contains("Content-Id: <"));
    assert!(first_parts[0].0.contains("Content-Transfer-Encoding: binary"));
    let list = &first_parts[0].1;
    assert!(list.contains("version=\"0\"") && list.contains("fullState=\"true\""), "{list}");
    for entry in ["sip:+14155550100@example.org;user=phone", BOB, CAROL, "sip:+33711223344@example.org;user=phone"] {
        assert!(list.contains(&format!("<resource uri=\"{entry}\"")), "{entry} echoed: {list}");
    }
    assert_eq!(list.matches("<instance ").count(), 1, "one user");
    assert!(list.contains("state=\"active\""));
    let pidf = &first_parts[1].1;
    assert!(pidf.contains(&format!("entity=\"{BOB}\"")), "{pidf}");
    assert!(pidf.contains("<basic>open</basic>"));
    assert!(pidf.contains(">sip:bob@example.org</contact>"), "{pidf}");
    // What went on the wire validates against the IETF schemas.
    xmllint("rlmi.xsd", list.as_bytes());
    xmllint("pidf-with-extensions.xsd", pidf.as_bytes());

    // Refresh in the dialog: no body, full state again with the next version.
    p.send(&replay(REFRESH_UDP, "127.0.0.1:40791", local, &[("hat5gpbsac", &tag)])).await;
    let (ok, second) = p.accepted().await;
    assert_eq!(ok.status(), Some(200));
    let second = second.unwrap();
    assert!(rlmi(&second).contains("version=\"1\"") && rlmi(&second).contains("fullState=\"true\""));
    assert_eq!(rlmi(&second).matches("<instance ").count(), 1, "the list was kept");

    // A listed number becomes a user: a partial NOTIFY, within the coalescing interval.
    let started = Instant::now();
    bind(&s, "+33698765432", "sip:carol@example.org");
    let live = p.notify(200).await;
    let latency = started.elapsed();
    let list = rlmi(&live);
    assert!(list.contains("version=\"2\"") && list.contains("fullState=\"false\""), "{list}");
    assert!(list.contains(CAROL) && !list.contains(BOB), "only the change: {list}");
    assert!(parts(&live)[1].1.contains(">sip:carol@example.org</contact>"));
    assert!(latency < Duration::from_millis(1500), "{latency:?}");

    // A user leaves: first a partial NOTIFY showing him closed (what makes liblinphone call
    // the app back), then the full state that drops him (the only way liblinphone forgets).
    s.server.index().unbind("+33612345678".parse().unwrap()).unwrap();
    let closed = p.notify(200).await;
    let list = rlmi(&closed);
    assert!(list.contains("version=\"3\"") && list.contains("fullState=\"false\""), "{list}");
    assert!(list.contains(BOB) && !list.contains(CAROL), "only bob: {list}");
    let pidf = &parts(&closed)[1].1;
    assert!(pidf.contains("<basic>closed</basic>") && pidf.contains(&format!(">{BOB}</contact>")), "{pidf}");
    xmllint("pidf-with-extensions.xsd", pidf.as_bytes());
    let gone = p.notify(200).await;
    let list = rlmi(&gone);
    assert!(list.contains("version=\"4\"") && list.contains("fullState=\"true\""), "{list}");
    assert_eq!(list.matches("<instance ").count(), 1, "only carol left: {list}");

    // Unsubscribe: 200, then the final NOTIFY (liblinphone answers it 481: normal).
    p.send(&replay(UNSUB_UDP, "127.0.0.1:40791", local, &[("hat5gpbsac", &tag)])).await;
    let mut early = Vec::new();
    assert_eq!(p.response(&mut early).await.status(), Some(200));
    let last = match early.pop() {
        Some(n) => n,
        None => p.notify(481).await,
    };
    assert_eq!(last.header("Subscription-State"), Some("terminated"), "timeout is for expiry (RFC 6665)");
    wait_until(|| s.server.subscriptions().is_empty()).await;
    assert_eq!(s.server.subscriptions().watched_keys(), 0, "reverse index released");
}

async fn wait_until(cond: impl Fn() -> bool) {
    let started = Instant::now();
    while !cond() {
        assert!(started.elapsed() < WAIT, "condition not reached");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn liblinphone_tcp_notify_comes_back_on_the_client_connection() {
    let s = TestServer::start().await;
    bind(&s, "+33612345678", "sip:bob@example.org");
    let mut p = Peer::tcp(s.tcp()).await;
    let local = p.local();
    p.send(&replay(INITIAL_TCP, "127.0.0.1:39618", local, &[])).await;
    let mut early = Vec::new();
    let ok = p.response(&mut early).await;
    assert_eq!(ok.status(), Some(200));
    let tag = ok.tag("To").unwrap();
    let first = match early.pop() {
        Some(n) => n,
        None => p.notify(200).await,
    };
    assert!(first.header("Via").unwrap().starts_with("SIP/2.0/TCP "));
    assert!(rlmi(&first).contains("<instance "));
    p.send(&replay(UNSUB_TCP, "127.0.0.1:39618", local, &[("vw2k02aj7k", &tag), ("cSdn7OGhfc", "cSdn7OGhfc")])).await;
    let mut early = Vec::new();
    assert_eq!(p.response(&mut early).await.status(), Some(200));
    let last = match early.pop() {
        Some(n) => n,
        None => p.notify(481).await,
    };
    assert!(last.header("Subscription-State").unwrap().starts_with("terminated"));
}

#[tokio::test]
async fn tls_list_subscription_with_rfc_spelling() {
    let s = TestServer::start_with(|c| c.notify.format = smart_presence::config::NotifyFormat::Rfc).await;
    bind(&s, "+33612345678", "sip:bob@example.org");
    let tls = tls_connect(&s).await;
    let local = tls.get_ref().0.local_addr().unwrap();
    let mut p = Peer::stream(tls, local);
    let body = resource_list(&[BOB.to_string(), "sip:bob@example.org".into(), "sip:nobody@example.org".into()]);
    p.send(list_subscribe("TLS", local, "tls1", "", &body).as_bytes()).await;
    let (ok, n) = p.accepted().await;
    assert_eq!(ok.status(), Some(200));
    let n = n.unwrap();
    assert_eq!(n.header("Event"), Some("presence"));
    assert_eq!(n.header("Content-Encoding"), None, "no Accept-Encoding: deflate, no compression");
    let n_parts = parts(&n);
    assert!(n_parts[0].0.contains("Content-ID: <"), "{}", n_parts[0].0);
    let list = &n_parts[0].1;
    assert_eq!(list.matches("<instance ").count(), 2, "the number and the SIP user: {list}");
    assert!(list.contains("<resource uri=\"sip:nobody@example.org\"/>") || list.contains("<resource uri=\"sip:nobody@example.org\"></resource>"), "{list}");
}

#[tokio::test]
async fn error_responses() {
    let s = TestServer::start_with(|c| c.subscription.max_entries = 3).await;
    let mut p = Peer::udp(s.udp()).await;
    let local = p.local();
    let ok_body = resource_list(&[BOB.to_string()]);
    let too_many = resource_list(&(0..4).map(|i| format!("sip:+3361234567{i}@example.org;user=phone")).collect::<Vec<_>>());
    let doctype = "<?xml version=\"1.0\"?><!DOCTYPE r [<!ENTITY x \"y\">]><resource-lists xmlns=\"urn:ietf:params:xml:ns:resource-lists\"><list><entry uri=\"&x;\"/></list></resource-lists>";
    let base = list_subscribe("UDP", local, "X", "", &ok_body);
    let without_require = base.replace("Require: recipient-list-subscribe\r\n", "");
    let cases: Vec<(String, u16, Option<(&str, &str)>)> = vec![
        (base.replace("Event: presence", "Event: dialog"), 489, Some(("Allow-Events", "presence"))),
        (base.replace("Supported: eventlist\r\n", ""), 421, Some(("Require", "eventlist"))),
        (base.replace("application/resource-lists+xml", "text/plain"), 415, Some(("Accept", "application/resource-lists+xml"))),
        // A list under a wrong type is refused, never served as a presentity subscription.
        (without_require.replace("application/resource-lists+xml", "text/plain"), 415, Some(("Accept", "application/resource-lists+xml"))),
        (without_require.replace("application/resource-lists+xml", "application/resource-list+xml"), 415, Some(("Accept", "application/resource-lists+xml"))),
        (without_require.replace("Content-Disposition: recipient-list\r\n", "").replace("application/resource-lists+xml", "text/plain"), 415, None),
        (base.replace("Content-Disposition", "Content-Encoding: gzip\r\nContent-Disposition"), 415, Some(("Accept-Encoding", "deflate"))),
        (base.replace("Require: recipient-list-subscribe", "Require: recipient-list-subscribe, foo"), 420, Some(("Unsupported", "foo"))),
        (base.replace("Content-Disposition", "Expires: 10\r\nContent-Disposition"), 423, Some(("Min-Expires", "60"))),
        (list_subscribe("UDP", local, "X", "", "<resource-lists><list>"), 400, None),
        (list_subscribe("UDP", local, "X", "", &too_many), 413, None),
        (list_subscribe("UDP", local, "X", "", doctype), 400, None),
        (base.replace("To: <sip:rls@example.org>", "To: <sip:rls@example.org>;tag=unknown"), 481, None),
    ];
    for (i, (text, status, header)) in cases.into_iter().enumerate() {
        let text = text.replace("z9hG4bKX", &format!("z9hG4bKerr{i}"));
        p.send(text.as_bytes()).await;
        let resp = p.recv().await;
        assert_eq!(resp.status(), Some(status), "case {i}: {}", resp.start_line());
        if let Some((name, value)) = header {
            assert!(resp.header(name).is_some_and(|v| v.contains(value)), "case {i}: {name} in {}", resp.head);
        }
    }
    assert_eq!(p.recv_within(Duration::from_millis(200)).await.map(|m| m.start_line().to_string()), None, "no NOTIFY after errors");
    assert!(s.server.subscriptions().is_empty());
}

#[tokio::test]
async fn expiry_sends_terminated_and_releases() {
    let s = TestServer::start_with(|c| c.subscription.min_expires = 1).await;
    let mut p = Peer::udp(s.udp()).await;
    let local = p.local();
    let body = resource_list(&[BOB.to_string()]);
    p.send(list_subscribe("UDP", local, "exp", "Expires: 1\r\n", &body).as_bytes()).await;
    let mut early = Vec::new();
    assert_eq!(p.response(&mut early).await.header("Expires"), Some("1"));
    if early.is_empty() {
        p.notify(200).await;
    }
    let last = p.notify(200).await;
    assert_eq!(last.header("Subscription-State"), Some("terminated;reason=timeout"));
    wait_until(|| s.server.subscriptions().is_empty()).await;
}

#[tokio::test]
async fn rejected_notify_removes_the_subscription() {
    let s = TestServer::start().await;
    let mut p = Peer::udp(s.udp()).await;
    let local = p.local();
    p.send(list_subscribe("UDP", local, "rej", "", &resource_list(&[BOB.to_string()])).as_bytes()).await;
    let resp = p.recv().await;
    let first = if resp.status().is_some() { p.recv().await } else { resp };
    assert!(first.is_request("NOTIFY"));
    p.send(&first.response(481, "Call/Transaction Does Not Exist")).await;
    wait_until(|| s.server.subscriptions().is_empty()).await;
}

#[tokio::test]
async fn expires_is_capped_and_fetch_gets_one_terminated_notify() {
    let s = TestServer::start_with(|c| c.subscription.max_expires = 600).await;
    let mut p = Peer::udp(s.udp()).await;
    let local = p.local();
    let body = resource_list(&[BOB.to_string()]);
    p.send(list_subscribe("UDP", local, "cap", "Expires: 7200\r\n", &body).as_bytes()).await;
    let mut early = Vec::new();
    assert_eq!(p.response(&mut early).await.header("Expires"), Some("600"));
    if early.is_empty() {
        p.notify(200).await;
    }
    p.send(list_subscribe("UDP", local, "fetch", "Expires: 0\r\n", &body).replace("call-fetch", "call-fetch2").as_bytes()).await;
    let (ok, n) = p.accepted().await;
    assert_eq!(ok.status(), Some(200));
    let n = n.unwrap();
    assert_eq!(n.header("Subscription-State"), Some("terminated;reason=timeout"));
    assert!(rlmi(&n).contains("fullState=\"true\""));
    assert_eq!(s.server.subscriptions().len(), 1, "only the first one lives");
}

#[tokio::test]
async fn large_state_is_split_full_then_partial() {
    // A tiny UDP budget forces the split: 300 entries, 100 users.
    let s = TestServer::start_with(|c| c.notify.max_body_udp = 1024).await;
    let uris: Vec<String> = (0..300).map(|i| format!("sip:+3361000{i:04}@example.org;user=phone")).collect();
    for i in (0..300).step_by(3) {
        bind(&s, &format!("+3361000{i:04}"), &format!("sip:u{i}@example.org"));
    }
    let mut p = Peer::udp(s.udp()).await;
    let local = p.local();
    let body = resource_list(&uris);
    p.send(list_subscribe("UDP", local, "split", "Accept-Encoding: deflate\r\n", &body).as_bytes()).await;
    let mut notifies = Vec::new();
    assert_eq!(p.response(&mut notifies).await.status(), Some(200));
    let mut users = std::collections::HashSet::new();
    let mut version = 0;
    while users.len() < 100 {
        let n = match notifies.pop() {
            Some(n) => n,
            None => p.notify(200).await,
        };
        let list = rlmi(&n);
        assert!(list.contains(&format!("version=\"{version}\"")), "versions consecutive: {version}");
        if version == 0 {
            assert!(list.contains("fullState=\"true\""));
            assert_eq!(list.matches("<resource ").count(), 300, "full state lists every resource");
        } else {
            assert!(list.contains("fullState=\"false\""));
        }
        for part in parts(&n).iter().skip(1) {
            let entity = part.1.split("entity=\"").nth(1).unwrap().split('"').next().unwrap().to_string();
            assert!(users.insert(entity), "each user once");
        }
        version += 1;
    }
    assert!(version > 2, "the state was split into {version} NOTIFYs");
    assert_eq!(p.recv_within(Duration::from_millis(300)).await.map(|m| m.start_line().to_string()), None);
}
