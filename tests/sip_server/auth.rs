//! Issue 5: who may subscribe, publish and register. Digest (401 with SHA-256 and MD5,
//! never 407) against the account store: wrong password, stale nonce, replayed nonce; and
//! the embedded registrar turning REGISTER into presence.


use crate::common::peer::{Msg, Peer};
use crate::common::*;
use smart_presence::auth::digest::answer;
use std::time::Duration;

async fn server(nonce_secs: u64) -> TestServer {
    let s = TestServer::start_with(|c| {
        c.auth.mode = smart_presence::config::AuthMode::Digest;
        c.auth.nonce_secs = nonce_secs;
        c.notify.min_interval_ms = 100;
        c.presence.notify_interval_secs = 1;
    })
    .await;
    s.server.accounts().create("alice", "secret", &["+33612345678".parse().unwrap()]).unwrap();
    s
}

fn subscribe(local: std::net::SocketAddr, branch: &str, authorization: Option<&str>) -> String {
    let auth = authorization.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
    let list = r#"<resource-lists xmlns="urn:ietf:params:xml:ns:resource-lists"><list><entry uri="sip:0612345678@example.org;user=phone"/></list></resource-lists>"#;
    request(
        "SUBSCRIBE",
        "UDP",
        local,
        branch,
        &format!("{auth}Contact: <sip:alice@{local}>\r\nEvent: presence\r\nSupported: eventlist\r\nRequire: recipient-list-subscribe\r\nContent-Type: application/resource-lists+xml\r\n"),
        list,
    )
}

const URI: &str = "sip:rls@example.org";

async fn challenge(p: &mut Peer, branch: &str) -> Msg {
    let l = p.local();
    p.send(subscribe(l, branch, None).as_bytes()).await;
    let resp = p.recv().await;
    assert_eq!(resp.status(), Some(401), "{}", resp.start_line());
    resp
}

#[tokio::test]
async fn digest_handshake_sha256_and_md5() {
    let s = server(300).await;
    let mut p = Peer::udp(s.udp()).await;
    let l = p.local();
    let resp = challenge(&mut p, "a1").await;
    let offers = resp.headers("WWW-Authenticate");
    assert_eq!(offers.len(), 2);
    assert!(offers[0].contains("algorithm=SHA-256") && offers[1].contains("algorithm=MD5"), "{offers:?}");
    assert!(resp.header("Proxy-Authenticate").is_none(), "401, never 407");
    for (i, offer) in offers.iter().enumerate() {
        // Both offers carry one nonce: the second use counts up (nc=2).
        let auth = answer(offer, "alice", "secret", "SUBSCRIBE", URI, i as u32 + 1);
        p.send(subscribe(l, &format!("ok{i}"), Some(&auth)).as_bytes()).await;
        let mut early = Vec::new();
        let ok = p.response(&mut early).await;
        assert_eq!(ok.status(), Some(200), "{offer}");
        let n = match early.pop() {
            Some(n) => n,
            None => p.notify(200).await,
        };
        // The national number was read with the region of alice's own number (FR).
        assert!(n.body().contains("<resource uri=\"sip:0612345678@example.org;user=phone\""));
    }
    assert_eq!(s.server.subscriptions().len(), 2);
}

#[tokio::test]
async fn wrong_password_and_replayed_nonce_are_refused() {
    let s = server(300).await;
    let mut p = Peer::udp(s.udp()).await;
    let l = p.local();
    let offer = challenge(&mut p, "w0").await.header("WWW-Authenticate").unwrap().to_string();
    let wrong = answer(&offer, "alice", "guess", "SUBSCRIBE", URI, 1);
    p.send(subscribe(l, "w1", Some(&wrong)).as_bytes()).await;
    assert_eq!(p.recv().await.status(), Some(401));
    let nobody = answer(&offer, "mallory", "secret", "SUBSCRIBE", URI, 1);
    p.send(subscribe(l, "w2", Some(&nobody)).as_bytes()).await;
    assert_eq!(p.recv().await.status(), Some(401));

    let good = answer(&offer, "alice", "secret", "SUBSCRIBE", URI, 1);
    p.send(subscribe(l, "w3", Some(&good)).as_bytes()).await;
    let mut early = Vec::new();
    assert_eq!(p.response(&mut early).await.status(), Some(200));
    if early.is_empty() {
        p.notify(200).await;
    }
    // The same answer again (a captured request replayed in a new transaction).
    p.send(subscribe(l, "w4", Some(&good)).as_bytes()).await;
    let replay = p.recv().await;
    assert_eq!(replay.status(), Some(401), "replayed nonce count");
    assert!(!replay.header("WWW-Authenticate").unwrap().contains("stale=true"));
}

#[tokio::test]
async fn stale_nonce_gets_a_fresh_challenge() {
    let s = server(1).await;
    let mut p = Peer::udp(s.udp()).await;
    let l = p.local();
    let offer = challenge(&mut p, "s0").await.header("WWW-Authenticate").unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let late = answer(&offer, "alice", "secret", "SUBSCRIBE", URI, 1);
    p.send(subscribe(l, "s1", Some(&late)).as_bytes()).await;
    let resp = p.recv().await;
    assert_eq!(resp.status(), Some(401));
    let fresh = resp.header("WWW-Authenticate").unwrap().to_string();
    assert!(fresh.contains("stale=true"), "{fresh}");
    let retry = answer(&fresh, "alice", "secret", "SUBSCRIBE", URI, 1);
    p.send(subscribe(l, "s2", Some(&retry)).as_bytes()).await;
    assert_eq!(p.response(&mut Vec::new()).await.status(), Some(200));
}

fn register(local: std::net::SocketAddr, branch: &str, expires: u32, authorization: Option<&str>) -> String {
    let auth = authorization.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
    request("REGISTER", "UDP", local, branch, &format!("{auth}Contact: <sip:alice@{local}>\r\nExpires: {expires}\r\n"), "")
        .replace("REGISTER sip:rls@example.org", "REGISTER sip:example.org")
        .replace("To: <sip:rls@example.org>", "To: <sip:alice@example.org>")
}

#[tokio::test]
async fn embedded_registrar_makes_a_registered_user_online() {
    let s = server(300).await;
    // A watcher (bob, unauthenticated here: a trusted proxy would vouch for him).
    let mut watcher = Peer::udp(s.udp()).await;
    let wl = watcher.local();
    let mut phone = Peer::udp(s.udp()).await;
    let pl = phone.local();
    phone.send(register(pl, "r0", 600, None).as_bytes()).await;
    let challenge = phone.recv().await;
    assert_eq!(challenge.status(), Some(401), "{}", challenge.start_line());
    let offer = challenge.header("WWW-Authenticate").unwrap().to_string();

    s.server.accounts().create("bob", "pw", &[]).unwrap();
    let w_offer = {
        watcher.send(subscribe(wl, "wb0", None).replace("sip:alice@", "sip:bob@").as_bytes()).await;
        watcher.recv().await.header("WWW-Authenticate").unwrap().to_string()
    };
    let w_auth = answer(&w_offer, "bob", "pw", "SUBSCRIBE", URI, 1);
    watcher.send(subscribe(wl, "wb1", Some(&w_auth)).replace("sip:alice@", "sip:bob@").as_bytes()).await;
    let mut early = Vec::new();
    let ok = watcher.response(&mut early).await;
    assert_eq!(ok.status(), Some(200), "{}", ok.start_line());
    if early.is_empty() {
        watcher.notify(200).await;
    }
    s.server.index().bind("+33612345678".parse().unwrap(), "sip:alice@example.org", smart_presence::index::Source::Admin).unwrap();
    let bound = watcher.notify(200).await;
    assert!(bound.body().contains("away"), "a user, offline");

    let auth = answer(&offer, "alice", "secret", "REGISTER", "sip:example.org", 1);
    phone.send(register(pl, "r1", 600, Some(&auth)).as_bytes()).await;
    let ok = phone.recv().await;
    assert_eq!(ok.status(), Some(200), "{}", ok.start_line());
    assert!(ok.header("Contact").unwrap().contains(";expires="));
    let online = watcher.notify(200).await;
    assert!(!online.body().contains("away"), "registered: online");

    let auth = answer(&offer, "alice", "secret", "REGISTER", "sip:example.org", 2);
    phone.send(register(pl, "r2", 0, Some(&auth)).as_bytes()).await;
    assert_eq!(phone.recv().await.status(), Some(200));
    let offline = watcher.notify(200).await;
    assert!(offline.body().contains("away"), "unregistered: offline again");

    // Someone else's address of record is refused.
    let auth = answer(&offer, "alice", "secret", "REGISTER", "sip:example.org", 3);
    let other = register(pl, "r3", 600, Some(&auth)).replace("To: <sip:alice@example.org>", "To: <sip:bob@example.org>");
    phone.send(other.as_bytes()).await;
    assert_eq!(phone.recv().await.status(), Some(403));
}
