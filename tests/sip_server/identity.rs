//! Issue 12: one SIP identity. A SIP user whose user part is an E.164 number (Linphone's
//! phone-number accounts, Kamailio's `pua_usrloc` AoRs) is a user: it subscribes, publishes,
//! registers and is a binding's target; and one canonical form keys the per-account cap and
//! the authenticated user alike. Over real loopback sockets.


use crate::common::peer::{Msg, Peer};
use crate::common::*;
use std::net::SocketAddr;

const E164_USER: &str = "sip:+4915100000001@example.org";

const OPEN: &str = r#"<?xml version="1.0" encoding="UTF-8"?><presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:x@example.org"><tuple id="t1"><status><basic>open</basic></status></tuple></presence>"#;

/// A PUBLISH of `presentity`'s open state, From `from`.
fn publish(local: SocketAddr, branch: &str, presentity: &str, from: &str) -> String {
    request("PUBLISH", "UDP", local, branch, "Event: presence\r\nExpires: 600\r\nContent-Type: application/pidf+xml\r\n", OPEN)
        .replace("PUBLISH sip:rls@example.org", &format!("PUBLISH {presentity}"))
        .replace("From: <sip:alice@example.org>", &format!("From: <{from}>"))
        .replace("To: <sip:rls@example.org>", &format!("To: <{presentity}>"))
}

/// An RFC 5367 list SUBSCRIBE From `from` watching `entries`.
fn list_subscribe(local: SocketAddr, branch: &str, from: &str, entries: &[&str]) -> String {
    let items: String = entries.iter().map(|u| format!("<entry uri=\"{u}\"/>")).collect();
    let body = format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><resource-lists xmlns=\"urn:ietf:params:xml:ns:resource-lists\"><list>{items}</list></resource-lists>");
    let extra = format!(
        "Contact: <sip:w@{local}>\r\nEvent: presence\r\nSupported: eventlist\r\nRequire: recipient-list-subscribe\r\n\
         Content-Type: application/resource-lists+xml\r\nContent-Disposition: recipient-list\r\n"
    );
    request("SUBSCRIBE", "UDP", local, branch, &extra, &body).replace("From: <sip:alice@example.org>", &format!("From: <{from}>"))
}

/// A REGISTER of `aor` (From and To) with one contact.
fn register(local: SocketAddr, branch: &str, aor: &str) -> String {
    request("REGISTER", "UDP", local, branch, &format!("Contact: <sip:phone@{local}>\r\nExpires: 600\r\n"), "")
        .replace("REGISTER sip:rls@example.org", "REGISTER sip:example.org")
        .replace("From: <sip:alice@example.org>", &format!("From: <{aor}>"))
        .replace("To: <sip:rls@example.org>", &format!("To: <{aor}>"))
}

async fn send(p: &mut Peer, text: &str) -> Msg {
    p.send(text.as_bytes()).await;
    p.response(&mut Vec::new()).await
}

/// SUBSCRIBE and PUBLISH from the E.164 user are accepted: `auth.mode = "none"` believes
/// the From; a trusted proxy vouches for it (here with digest on for everyone else).
async fn e164_user_is_an_identity(s: &TestServer) {
    let mut p = Peer::udp(s.udp()).await;
    let l = p.local();
    let published = send(&mut p, &publish(l, "p1", E164_USER, E164_USER)).await;
    assert_eq!(published.start_line(), "SIP/2.0 200 OK");
    let with_user_phone = format!("{E164_USER};user=phone");
    assert_eq!(send(&mut p, &publish(l, "p2", E164_USER, &with_user_phone)).await.status(), Some(200));
    let (resp, _) = {
        p.send(list_subscribe(l, "s1", E164_USER, &["sip:bob@example.org"]).as_bytes()).await;
        p.accepted().await
    };
    assert_eq!(resp.start_line(), "SIP/2.0 200 OK");
}

#[tokio::test]
async fn e164_user_subscribes_and_publishes_with_auth_none() {
    let s = TestServer::start().await;
    e164_user_is_an_identity(&s).await;
}

#[tokio::test]
async fn e164_user_subscribes_and_publishes_through_a_trusted_proxy() {
    let s = TestServer::start_with(|c| {
        c.auth.mode = smart_presence::config::AuthMode::Digest;
        c.auth.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    })
    .await;
    e164_user_is_an_identity(&s).await;
}

/// Bound through the admin API to the E.164 user, the number resolves to him in a list
/// NOTIFY; his REGISTER makes him online there.
#[tokio::test]
async fn e164_user_is_a_binding_target_and_registers() {
    let s = TestServer::start_with(|c| {
        c.admin.listen = Some("127.0.0.1:0".parse().unwrap());
        c.notify.min_interval_ms = 100;
        c.presence.notify_interval_secs = 1;
    })
    .await;
    let admin = s.server.admin_addr().expect("admin endpoint");
    let body = format!(r#"{{"sip_uri":"{E164_USER}"}}"#);
    let (status, answer) = http_put(admin, "/bindings/%2B4915100000002", &body).await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains(E164_USER), "{answer}");

    let mut w = Peer::udp(s.udp()).await;
    let wl = w.local();
    w.send(list_subscribe(wl, "w1", "sip:alice@example.org", &["sip:+4915100000002@example.org;user=phone"]).as_bytes()).await;
    let (resp, first) = w.accepted().await;
    assert_eq!(resp.status(), Some(200));
    let body = first.expect("a first NOTIFY").body();
    assert!(body.contains(&format!(">{E164_USER}</contact>")), "the number resolves to the E.164 user: {body}");
    assert!(body.contains("away"), "not registered yet (long-term presence): {body}");

    let mut phone = Peer::udp(s.udp()).await;
    let pl = phone.local();
    assert_eq!(send(&mut phone, &register(pl, "r1", E164_USER)).await.status(), Some(200));
    let live = w.notify(200).await;
    assert!(live.body().contains("<basic>open</basic>") && !live.body().contains("away"), "{}", live.body());
}

/// `sips:`, the host's case and the port do not make another user; the user part's case
/// does (RFC 3261 §19.1.4). The cap and the identity checked against the presentity agree.
#[tokio::test]
async fn one_identity_keys_the_account_cap_and_the_user() {
    let s = TestServer::start_with(|c| c.limits.max_subscriptions_per_account = 1).await;
    let limits = s.server.limits().clone();
    let mut p = Peer::udp(s.udp()).await;
    let l = p.local();
    p.send(list_subscribe(l, "a1", "sip:alice@example.org", &["sip:bob@example.org"]).as_bytes()).await;
    assert_eq!(p.accepted().await.0.status(), Some(200));
    let alice = smart_presence::identity::aor("sips:alice@EXAMPLE.org:5061").unwrap();
    assert_eq!(limits.subscriptions_of(&alice), 1);

    let again = send(&mut p, &list_subscribe(l, "a2", "sips:alice@EXAMPLE.org:5061", &["sip:bob@example.org"])).await;
    assert_eq!(again.start_line(), "SIP/2.0 503 Too Many Subscriptions For This Account");
    p.send(list_subscribe(l, "a3", "sip:ALICE@example.org", &["sip:bob@example.org"]).as_bytes()).await;
    assert_eq!(p.accepted().await.0.status(), Some(200), "ALICE is another user");

    // The identity PUBLISH checks against its presentity is the same canonical user.
    assert_eq!(send(&mut p, &publish(l, "p1", "sip:alice@example.org", "sips:alice@Example.ORG:5061")).await.status(), Some(200));
    let other = send(&mut p, &publish(l, "p2", "sip:alice@example.org", "sip:ALICE@example.org")).await;
    assert_eq!(other.start_line(), "SIP/2.0 403 Not Your Presence");
}

/// A raw HTTP/1.1 PUT (Connection: close) with a JSON body.
async fn http_put(addr: SocketAddr, path: &str, body: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "PUT {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut out)).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}
