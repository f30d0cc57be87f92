//! Issue 16: rich presence over SIP: what a user publishes (activities, notes, capabilities)
//! reaches single-presentity watchers of his number and of his SIP URI as the same
//! document, valid against the PIDF, data-model and RPID schemas; "share my status" off
//! hides it, and a user sets it himself over HTTP (the operator with the CLI, through the
//! admin endpoint) on the running server, his watchers told at once; hostile and oversize
//! PUBLISH bodies are refused.

use super::list_subscribe::parts;
use crate::common::http::*;
use crate::common::peer::{Msg, Peer};
use crate::common::*;
use serde_json::json;
use smart_presence::index::Source;

/// What liblinphone 5.1.65 publishes for "on the phone" with a note
/// (`fixtures/liblinphone-5.1/41-*`), with an OMA capability and an unknown extension added.
const RICH: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" xmlns:op="urn:oma:xml:prs:pidf:oma-pres" xmlns:x="urn:example:tracking" entity="sip:bob@example.org" xmlns="urn:ietf:params:xml:ns:pidf">
 <tuple id="y1b-gr">
  <status><basic>open</basic></status>
  <op:service-description><op:service-id>groupchat</op:service-id><op:version>1.1</op:version></op:service-description>
  <contact priority="0.8">sip:bob@example.org</contact>
  <note xml:lang="en">In a call &amp; busy</note>
  <timestamp>2026-12-03T07:04:18Z</timestamp>
 </tuple>
 <dm:person id="xof.q."><rpid:activities><rpid:on-the-phone/></rpid:activities><timestamp>2026-12-03T07:04:18Z</timestamp></dm:person>
 <x:where>secret</x:where>
</presence>"#;

/// A server that notifies quickly (changes of a presentity at most once a second), with
/// account `bob` (password `b0b`) whose number is bound to him; `tune` adds to the config.
async fn with_bob(tune: impl FnOnce(&mut smart_presence::config::Config)) -> TestServer {
    let s = TestServer::start_with(|c| {
        c.notify.min_interval_ms = 100;
        c.presence.notify_interval_secs = 1;
        tune(c);
    })
    .await;
    s.server.accounts().create("bob", "b0b", &["+33612345678".parse().unwrap()]).unwrap();
    s.server.index().bind("+33612345678".parse().unwrap(), "sip:bob@example.org", Source::Admin).unwrap();
    s
}

async fn watch(s: &TestServer, target: &str, branch: &str) -> Peer {
    subscribed(s, |l| presentity_subscribe(target, l, branch, "")).await
}

/// A list watcher (alice) of `entry`, its first NOTIFY taken.
async fn watch_list(s: &TestServer, entry: &str, branch: &str) -> Peer {
    subscribed(s, |l| list_subscribe("UDP", l, branch, "", &resource_list(&[entry.to_string()]))).await
}

/// A watcher over UDP that sent the SUBSCRIBE `request` writes, 200 and first NOTIFY taken.
async fn subscribed(s: &TestServer, request: impl FnOnce(std::net::SocketAddr) -> String) -> Peer {
    let mut p = Peer::udp(s.udp()).await;
    let l = p.local();
    p.send(request(l).as_bytes()).await;
    let mut early = Vec::new();
    assert_eq!(p.response(&mut early).await.status(), Some(200));
    if early.is_empty() {
        p.notify(200).await;
    }
    p
}

async fn publish(s: &TestServer, branch: &str, body: &[u8], extra: &str) -> Msg {
    let mut p = Peer::udp(s.udp()).await;
    let text = publish_as("bob", p.local(), branch, extra, "");
    let head = text.replace("Content-Length: 0\r\n\r\n", &format!("Content-Type: application/pidf+xml\r\nContent-Length: {}\r\n\r\n", body.len()));
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    p.send(&bytes).await;
    p.recv().await
}

/// The document with its entity taken out, to compare what two watchers got.
fn without_entity(body: &str, entity: &str) -> String {
    body.replace(&format!("entity=\"{entity}\""), "entity=\"-\"")
}

#[tokio::test]
async fn rich_presence_reaches_number_and_sip_watchers_alike_unless_not_shared() {
    let s = with_bob(|_| {}).await;
    let by_number = "sip:+33612345678@example.org;user=phone";
    let mut number_watcher = watch(&s, by_number, "w1").await;
    let mut sip_watcher = watch(&s, "sip:bob@example.org", "w2").await;

    assert_eq!(publish(&s, "p1", RICH.as_bytes(), "").await.status(), Some(200));
    let a = number_watcher.notify(200).await.body();
    let b = sip_watcher.notify(200).await.body();
    for doc in [&a, &b] {
        assert!(doc.contains("<rpid:on-the-phone/>"), "{doc}");
        assert!(doc.contains("<note xml:lang=\"en\">In a call &amp; busy</note>"), "{doc}");
        assert!(doc.contains("<op:service-id>groupchat</op:service-id><op:version>1.1</op:version>"), "{doc}");
        assert!(doc.contains("<dm:timestamp>2026-12-03T07:04:18Z</dm:timestamp>"), "{doc}");
        assert!(!doc.contains("secret") && !doc.contains("tracking"), "unknown extensions dropped: {doc}");
        assert!(doc.contains(">sip:bob@example.org</contact>"), "{doc}");
        xmllint("pidf.xsd", doc.as_bytes());
        xmllint("pidf-with-extensions.xsd", doc.as_bytes());
    }
    assert_eq!(without_entity(&a, by_number), without_entity(&b, "sip:bob@example.org"), "the same document");

    // "Share my status" off: the next NOTIFY says only that he is a user.
    s.server.accounts().set_share_status("bob", false).unwrap();
    let busy = RICH.replace("on-the-phone", "busy");
    assert_eq!(publish(&s, "p2", busy.as_bytes(), "").await.status(), Some(200));
    for w in [&mut number_watcher, &mut sip_watcher] {
        let doc = w.notify(200).await.body();
        assert!(doc.contains("<basic>open</basic>") && doc.contains(">sip:bob@example.org</contact>"), "{doc}");
        assert!(!doc.contains("busy") && !doc.contains("In a call") && !doc.contains("groupchat"), "not shared: {doc}");
        xmllint("pidf-with-extensions.xsd", doc.as_bytes());
    }
}

#[tokio::test]
async fn hostile_and_oversize_publish_bodies_are_refused() {
    let s = TestServer::start().await;
    let laughs = r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]><presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:bob@example.org"><tuple id="a"><status><basic>open</basic></status><note>&lol2;</note></tuple></presence>"#;
    assert_eq!(publish(&s, "h1", laughs.as_bytes(), "").await.status(), Some(400));
    let deep = format!("<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"sip:bob@example.org\">{}{}</presence>", "<x:a xmlns:x=\"urn:x\">".repeat(40), "</x:a>".repeat(40));
    assert_eq!(publish(&s, "h2", deep.as_bytes(), "").await.status(), Some(400));
    let big_note = RICH.replace("In a call", &"x".repeat(20_000));
    let resp = publish(&s, "h3", big_note.as_bytes(), "").await;
    assert_eq!(resp.status(), Some(413), "{}", resp.start_line());
    // Small on the wire, too large once inflated.
    let inflated = RICH.replace("In a call", &" ".repeat(40_000));
    let bomb = smart_presence::body::deflate_zlib(inflated.as_bytes());
    assert!(bomb.len() < 2_000);
    assert_eq!(publish(&s, "h4", &bomb, "Content-Encoding: deflate\r\n").await.status(), Some(413));
    // The same document at a sane size is taken.
    assert_eq!(publish(&s, "h5", RICH.as_bytes(), "").await.status(), Some(200));
}

/// The PIDF a NOTIFY carries: the body of a single-presentity one, the resource's part
/// of a list one.
fn pidf(n: &Msg) -> String {
    let multipart = n.header("Content-Type").is_some_and(|ct| ct.starts_with("multipart/"));
    if !multipart {
        return n.body();
    }
    parts(n).into_iter().map(|(_, b)| b).find(|b| b.contains("<presence")).unwrap_or_else(|| panic!("no PIDF part: {}", n.body()))
}

/// Whether `doc` shows bob's rich presence, and shows him (open, his contact) at all.
fn shows(doc: &str, rich: bool) {
    assert!(doc.contains("<basic>open</basic>") && doc.contains(">sip:bob@example.org</contact>"), "still a user: {doc}");
    for part in ["<rpid:on-the-phone/>", "In a call", "groupchat"] {
        assert_eq!(doc.contains(part), rich, "{part} (shared: {rich}): {doc}");
    }
    xmllint("pidf-with-extensions.xsd", doc.as_bytes());
}

#[tokio::test]
async fn a_user_sets_share_status_over_http_and_his_watchers_are_told() {
    let s = with_bob(|c| c.provisioning.listen = Some("127.0.0.1:0".parse().unwrap())).await;
    let api = s.server.provisioning_addr().unwrap();
    let bob = basic("bob", "b0b");
    let json_auth = [("Content-Type", "application/json"), ("Authorization", bob.as_str())];
    let put = |body: &'static str| http(api, "PUT", "/v1/account/settings", &json_auth, body);

    let mut by_sip = watch(&s, "sip:bob@example.org", "w1").await;
    let mut by_list = watch_list(&s, "sip:+33612345678@example.org;user=phone", "w2").await;
    let mut by_number = watch(&s, "sip:+33612345678@example.org;user=phone", "w3").await;
    assert_eq!(publish(&s, "p1", RICH.as_bytes(), "").await.status(), Some(200));
    for w in [&mut by_sip, &mut by_list, &mut by_number] {
        shows(&pidf(&w.notify(200).await), true);
    }
    let got = http(api, "GET", "/v1/account/settings", &json_auth, "").await;
    assert_eq!((got.status, got.json()), (200, json!({"share_status": true})), "on by default");

    // Off, on the running server: each watcher is told, without a new PUBLISH.
    let off = put(r#"{"share_status": false}"#).await;
    assert_eq!((off.status, off.json()), (200, json!({"share_status": false})), "{}", off.body);
    for w in [&mut by_sip, &mut by_list, &mut by_number] {
        shows(&pidf(&w.notify(200).await), false);
    }
    let got = http(api, "GET", "/v1/account/settings", &json_auth, "").await;
    assert_eq!(got.json(), json!({"share_status": false}));

    // On again: what he published comes back.
    assert_eq!(put(r#"{"share_status": true}"#).await.status, 200);
    for w in [&mut by_sip, &mut by_list, &mut by_number] {
        shows(&pidf(&w.notify(200).await), true);
    }

    // Without credentials: 401 with challenges; a bad body: 400, nothing changed.
    for method in ["GET", "PUT"] {
        let r = http(api, method, "/v1/account/settings", &[("Content-Type", "application/json")], r#"{"share_status": false}"#).await;
        assert_eq!(r.status, 401, "{method}: {}", r.body);
        assert!(!r.headers("WWW-Authenticate").is_empty());
    }
    for bad in [r#"{"share_status": false, "invisible": true}"#, r#"{"share_status": "off"}"#, "{}", "share_status=false"] {
        let r = put(bad).await;
        assert_eq!((r.status, r.error().as_str()), (400, "malformed_json"), "{bad}: {}", r.body);
    }
    let r = http(api, "PUT", "/v1/account/settings", &[("Authorization", bob.as_str())], r#"{"share_status": false}"#).await;
    assert_eq!(r.status, 415, "{}", r.body);
    let got = http(api, "GET", "/v1/account/settings", &json_auth, "").await;
    assert_eq!(got.json(), json!({"share_status": true}), "unchanged by the refused requests");
}

/// The operator's `smart-presence accounts share-status` reaches the running server through
/// its admin endpoint: stored, and the user's watchers told at once, as over HTTP.
#[tokio::test]
async fn the_cli_sets_share_status_on_the_running_server() {
    let s = with_bob(|c| c.admin.listen = Some("127.0.0.1:0".parse().unwrap())).await;
    let config = s.dir.path().join("cli.toml");
    let admin = s.server.admin_addr().unwrap();
    std::fs::write(&config, format!("data_dir = \"{}\"\n[admin]\nlisten = \"{admin}\"\n", s.dir.path().display())).unwrap();
    let cli = |args: &'static [&'static str]| {
        let config = config.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_smart-presence")).args(["accounts", "--config"]).arg(&config).args(args).output().unwrap()
        })
    };

    let mut by_sip = watch(&s, "sip:bob@example.org", "c1").await;
    assert_eq!(publish(&s, "c2", RICH.as_bytes(), "").await.status(), Some(200));
    shows(&pidf(&by_sip.notify(200).await), true);
    let out = cli(&["share-status", "bob", "off"]).await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("running server"));
    shows(&pidf(&by_sip.notify(200).await), false);
    assert!(!s.server.accounts().settings("bob").unwrap().share_status);

    let out = cli(&["share-status", "nobody", "on"]).await.unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("404") && err.contains("nobody"), "{err}");
}
