//! Issue 13: a restart no phone notices. The server (the real binary) is killed or stopped
//! and started again on the same data directory and ports; its subscribers, who send
//! nothing in between, get a full-state NOTIFY that continues their dialog (higher CSeq,
//! higher version) and then the live updates.

mod common;

use common::peer::{Msg, Peer};
use common::process::ServerProcess;
use common::*;
use smart_presence::storage::log::{Kind, Log};
use smart_presence::subscription::durable;
use std::io::Write;
use std::time::Duration;

const BOB: &str = "sip:+33612345678@example.org;user=phone";
const CAROL: &str = "sip:+33698765432@example.org;user=phone";

fn cseq(m: &Msg) -> u32 {
    m.header("CSeq").and_then(|c| c.split_whitespace().next()?.parse().ok()).expect("a CSeq")
}

fn version(m: &Msg) -> u32 {
    let body = m.body();
    let at = body.find("version=\"").expect("an RLMI version") + 9;
    body[at..].split('"').next().unwrap().parse().unwrap()
}

/// Subscribes `p` to BOB and CAROL; returns the first NOTIFY (answered 200).
async fn subscribe(p: &mut Peer, proto: &str, branch: &str, extra: &str) -> Msg {
    let body = resource_list(&[BOB.to_string(), CAROL.to_string()]);
    p.send(list_subscribe(proto, p.local(), branch, extra, &body).as_bytes()).await;
    let (ok, first) = p.accepted().await;
    assert_eq!(ok.status(), Some(200), "{}", ok.head);
    first.expect("the first NOTIFY")
}

#[tokio::test]
async fn a_udp_subscription_survives_sigkill_and_gets_later_bindings() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::new(dir.path(), "[notify]\nmin_interval_ms = 100");
    server.start().await;
    server.bind("+33612345678", "sip:bob@example.org").await;
    let mut p = Peer::udp(server.udp).await;
    let before = server.store_stamp("subscriptions");
    let first = subscribe(&mut p, "UDP", "k9", "").await;
    assert_eq!(version(&first), 0);
    server.written_back("subscriptions", before).await;
    // A NOTIFY the old process sent meanwhile (bob's binding caught up with the new
    // subscription) is answered here, not taken for the resumed one.
    while let Some(m) = p.recv_within(Duration::from_millis(100)).await {
        if m.is_request("NOTIFY") {
            p.send(&m.response(200, "OK")).await;
        }
    }
    server.kill9();

    server.start().await;
    server.logged("resumed=1").await;
    let resumed = p.notify(200).await;
    assert!(cseq(&resumed) > cseq(&first), "CSeq goes on: {} after {}", cseq(&resumed), cseq(&first));
    assert!(version(&resumed) > version(&first), "version goes on");
    assert!(resumed.body().contains("fullState=\"true\"") && resumed.body().contains("sip:bob@example.org"), "{}", resumed.body());
    assert_eq!(resumed.tag("From"), first.tag("From"), "the same dialog");
    server.bind("+33698765432", "sip:carol@example.org").await;
    let live = p.notify(200).await;
    assert!(live.body().contains("sip:carol@example.org") && version(&live) == version(&resumed) + 1);
    assert!(cseq(&live) > cseq(&resumed));
}

#[tokio::test]
async fn a_clean_stop_loses_nothing_and_versions_keep_rising_over_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::new(dir.path(), "");
    server.start().await;
    let mut p = Peer::udp(server.udp).await;
    let mut last = subscribe(&mut p, "UDP", "term", "").await;
    // The resumed dialogs do not rewrite their records: each start's mark in the store
    // moves them on (a SIGKILL too: the mark is synced before anything is sent).
    for round in 0..4 {
        if round == 2 {
            server.kill9();
        } else {
            server.stop(); // at once: the clean stop writes the store back
        }
        server.start().await;
        let resumed = p.notify(200).await;
        assert!(cseq(&resumed) > cseq(&last) && version(&resumed) > version(&last));
        last = resumed;
    }
}

#[tokio::test]
async fn an_expired_subscription_is_not_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::new(dir.path(), "[subscription]\nmin_expires = 1");
    server.start().await;
    let mut p = Peer::udp(server.udp).await;
    let before = server.store_stamp("subscriptions");
    subscribe(&mut p, "UDP", "exp", "Expires: 2\r\n").await;
    server.written_back("subscriptions", before).await;
    server.kill9();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    server.start().await;
    server.logged("expired=1").await;
    assert!(p.recv_within(Duration::from_millis(800)).await.is_none(), "nothing sent to an expired subscriber");
}

#[tokio::test]
async fn deactivate_on_shutdown_ends_every_subscription_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::new(dir.path(), "[subscription]\non_shutdown = \"deactivate\"");
    server.start().await;
    let mut p = Peer::udp(server.udp).await;
    subscribe(&mut p, "UDP", "deact", "").await;
    let stopping = tokio::task::spawn_blocking(move || {
        server.stop();
        server
    });
    let last = p.notify(200).await;
    assert_eq!(last.header("Subscription-State"), Some("terminated;reason=deactivated"));
    let mut server = stopping.await.unwrap();
    server.start().await;
    assert!(p.recv_within(Duration::from_millis(800)).await.is_none(), "a deactivated subscription is not resumed");
}

#[tokio::test]
async fn a_tcp_subscriber_is_reached_on_a_new_connection_to_its_contact() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::new(dir.path(), "");
    server.start().await;
    // The phone listens on its Contact, as a SIP UA over TCP does.
    let phone = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let contact = phone.local_addr().unwrap();
    let mut p = Peer::tcp(server.tcp).await;
    let extra = format!("Contact: <sip:alice@{contact};transport=tcp>\r\n");
    let body = resource_list(&[BOB.to_string()]);
    let msg = list_subscribe("TCP", p.local(), "tcpk", "", &body).replacen(&format!("Contact: <sip:alice@{};transport=tcp>\r\n", p.local()), &extra, 1);
    let before = server.store_stamp("subscriptions");
    p.send(msg.as_bytes()).await;
    let (ok, first) = p.accepted().await;
    assert_eq!(ok.status(), Some(200));
    let first = first.unwrap();
    server.written_back("subscriptions", before).await;
    server.kill9();
    drop(p); // the old connection died with the server

    server.start().await;
    let (conn, _) = tokio::time::timeout(WAIT, phone.accept()).await.expect("the server connects to the Contact").unwrap();
    let mut p = Peer::stream(conn, contact);
    let resumed = p.notify(200).await;
    assert!(cseq(&resumed) > cseq(&first));
}

#[tokio::test]
async fn a_tcp_subscriber_that_cannot_be_reached_is_ended_and_counted_in_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::new(dir.path(), "");
    server.start().await;
    let mut p = Peer::tcp(server.tcp).await;
    let before = server.store_stamp("subscriptions");
    subscribe(&mut p, "TCP", "tcpgone", "").await; // Contact: its own ephemeral port
    server.written_back("subscriptions", before).await;
    server.kill9();
    drop(p);
    server.start().await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let log = server.log();
    assert!(log.contains("NOTIFY not sent") && log.contains("unreachable"), "{log}");
}

#[tokio::test]
async fn a_corrupt_record_is_skipped_a_cut_end_dropped_and_a_foreign_layout_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::new(dir.path(), "");
    server.start().await;
    let mut p = Peer::udp(server.udp).await;
    subscribe(&mut p, "UDP", "corrupt", "").await;
    server.stop();
    let log = durable::log_in(&dir.path().join("data/subscriptions"));
    {
        let (mut store, _) = Log::open(&log, 1).unwrap();
        store.push(Kind::Put, b"bogus\0record", b"\xff\x00not a record").unwrap();
        store.write().unwrap();
    }
    // and half an entry at the end, as a crash in the middle of a write leaves it
    let whole = std::fs::metadata(&log).unwrap().len();
    std::fs::OpenOptions::new().append(true).open(&log).unwrap().write_all(&[200, 0, 0, 0, 1, 2, 3]).unwrap();
    server.start().await;
    let out = server.logged("resumed=1").await;
    assert!(out.contains("corrupt record skipped"), "{out}");
    assert!(out.contains("cut short"), "{out}");
    p.notify(200).await;
    server.stop();
    assert!(std::fs::metadata(&log).unwrap().len() >= whole, "the cut end went, the records stayed");
    std::fs::remove_file(&log).unwrap();
    drop(Log::open(&log, 99).unwrap());
    let (code, out) = server.start_failing();
    assert_ne!(code, Some(0));
    assert!(out.contains("has layout 99"), "a clear error: {out}");
}

/// A store of the older layout (sled, up to session 8) is copied into the log at the first
/// start, resumed, and deleted.
#[tokio::test]
async fn a_store_of_the_older_layout_is_carried_over() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::new(dir.path(), "");
    server.start().await;
    let mut p = Peer::udp(server.udp).await;
    let first = subscribe(&mut p, "UDP", "older", "").await;
    server.stop();
    let store = dir.path().join("data/subscriptions");
    let log = durable::log_in(&store);
    let (key, value) = {
        let (store, _) = Log::open(&log, 1).unwrap();
        let reader = store.reader().unwrap();
        let mut scan = reader.scan();
        let e = scan.next_entry().expect("the record").unwrap();
        (e.key.to_vec(), e.value.to_vec())
    };
    std::fs::remove_file(&log).unwrap();
    {
        let db = sled::open(&store).unwrap();
        db.insert(b"\0layout", 1u32.to_be_bytes().to_vec()).unwrap();
        db.insert(key, value).unwrap();
        db.flush().unwrap();
    }
    server.start().await;
    let out = server.logged("resumed=1").await;
    assert!(out.contains("copied into the log"), "{out}");
    let resumed = p.notify(200).await;
    assert!(cseq(&resumed) > cseq(&first) && version(&resumed) > version(&first));
    assert!(!store.join("conf").exists() && !store.join("db").exists(), "the sled files deleted");
    server.stop();
    server.start().await;
    server.logged("resumed=1").await;
    p.notify(200).await;
    server.stop();
}

/// The store is read back while the server already answers. A refresh that arrives
/// before its dialog is read back waits for it and gets 200, not 481; a subscription
/// opened and written to the store meanwhile is not read back as a second one. The
/// refreshed record is the last of `COPIES + 1` read back (the others are copies of it
/// under other Call-IDs, written into the stopped server's store before it), and the test
/// checks that the load was still going when each step was done.
#[tokio::test]
async fn the_store_is_read_back_while_the_server_serves() {
    const COPIES: usize = 30_000; // ~4 s of load for a debug build here
    const LAST: &str = "call-zz-last"; // the same length as every copy's "call-c000000"
    let dir = tempfile::tempdir().unwrap();
    let unlimited = "[subscription]\nresume_per_second = 20\n[limits]\nmax_subscriptions_per_account = 0\nmax_subscriptions_per_source = 0\nmax_subscriptions = 0\nmax_entries_held = 0";
    let mut server = ServerProcess::new(dir.path(), unlimited);
    server.start().await;
    let mut p = Peer::udp(server.udp).await;
    let numbers: Vec<String> = (0..100).map(|i| format!("sip:+3361{:07}@example.org;user=phone", 1_000_000 + i * 7_919)).collect();
    let body = resource_list(&numbers);
    p.send(list_subscribe("UDP", p.local(), "zz-last", "", &body).as_bytes()).await;
    let (ok, _) = p.accepted().await;
    let tag = ok.tag("To").expect("our tag");
    server.stop();
    copy_record(&dir.path().join("data/subscriptions"), LAST, COPIES);

    server.start().await;
    let loading = |server: &ServerProcess, step: &str| {
        let log = server.log();
        assert!(!log.contains("stored subscriptions loaded"), "the load ended before {step}: raise COPIES\n{log}");
    };
    let before = server.store_stamp("subscriptions");
    let mut q = Peer::udp(server.udp).await;
    q.send(list_subscribe("UDP", q.local(), "zzz-new", "", &body).as_bytes()).await; // written during the load: not one of those read back
    assert_eq!(q.accepted().await.0.status(), Some(200));
    server.written_back("subscriptions", before).await;
    loading(&server, "the new subscription was written");
    p.send(refresh("UDP", p.local(), "zz-last", &tag, 2).as_bytes()).await;
    let ok = p.response(&mut Vec::new()).await;
    assert_eq!(ok.status(), Some(200), "{}", ok.head);
    server.logged(&format!("resumed={} ", COPIES + 1)).await;
}

/// Writes `copies` copies of the record whose Call-ID is `call_id` under other Call-IDs of
/// the same length (`call-c000000`, ...), then the record itself again: it is read back last.
fn copy_record(store: &std::path::Path, call_id: &str, copies: usize) {
    let (mut log, _) = Log::open(&durable::log_in(store), 1).unwrap();
    let (key, value) = {
        let reader = log.reader().unwrap();
        let mut scan = reader.scan();
        let mut found = None;
        while let Some(e) = scan.next_entry() {
            let e = e.unwrap();
            if e.key.starts_with(call_id.as_bytes()) {
                found = Some((e.key.to_vec(), e.value.to_vec()));
            }
        }
        found.expect("the record")
    };
    let replace = |bytes: &[u8], by: &str| {
        let at = bytes.windows(call_id.len()).position(|w| w == call_id.as_bytes()).expect("the Call-ID in the record");
        [&bytes[..at], by.as_bytes(), &bytes[at + call_id.len()..]].concat()
    };
    for i in 0..copies {
        let other = format!("call-c{i:06}");
        assert_eq!(other.len(), call_id.len());
        log.push(Kind::Put, &replace(&key, &other), &replace(&value, &other)).unwrap();
    }
    log.push(Kind::Put, &key, &value).unwrap();
    log.write().unwrap();
    log.sync().unwrap();
}

const OPEN: &str = r#"<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:bob@example.org"><tuple id="t1"><status><basic>open</basic></status></tuple></presence>"#;

/// The PIDF of a single-presentity subscription to `target`'s first NOTIFY (answered).
async fn presence_of(server: &ServerProcess, target: &str, branch: &str) -> String {
    let mut w = Peer::udp(server.udp).await;
    w.send(presentity_subscribe(target, w.local(), branch, "").as_bytes()).await;
    let (ok, first) = w.accepted().await;
    assert_eq!(ok.status(), Some(200));
    first.unwrap().body()
}

fn timestamp(pidf: &str) -> Option<&str> {
    Some(pidf.split("<timestamp>").nth(1)?.split("</timestamp>").next().unwrap_or(""))
}

#[tokio::test]
async fn published_and_registered_presence_survive_a_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::new(dir.path(), "");
    server.start().await;
    server.bind("+33612345678", "sip:bob@example.org").await;
    server.bind("+33698765432", "sip:carol@example.org").await;
    server.bind("+33611111111", "sip:dave@example.org").await;
    let mut bob = Peer::udp(server.udp).await;
    bob.send(publish_as("bob", bob.local(), "pub1", "Expires: 600\r\n", OPEN).as_bytes()).await;
    let published = bob.recv().await;
    assert_eq!(published.status(), Some(200));
    let etag = published.header("SIP-ETag").expect("an entity-tag").to_string();
    let mut carol = Peer::udp(server.udp).await;
    carol.send(register_as("carol", carol.local(), "reg1", 600).as_bytes()).await;
    assert_eq!(carol.recv().await.status(), Some(200));
    // Dave was online, then left: what watchers keep is when he was last seen.
    let mut dave = Peer::udp(server.udp).await;
    dave.send(publish_as("dave", dave.local(), "pub2", "Expires: 600\r\n", &OPEN.replace("bob", "dave")).as_bytes()).await;
    let dave_etag = dave.recv().await.header("SIP-ETag").unwrap().to_string();
    let before = server.store_stamp("presence");
    dave.send(publish_as("dave", dave.local(), "pub3", &format!("Expires: 0\r\nSIP-If-Match: {dave_etag}\r\n"), "").as_bytes()).await;
    assert_eq!(dave.recv().await.status(), Some(200));
    let last_seen = presence_of(&server, "sip:dave@example.org", "w0").await;
    assert!(last_seen.contains("away"), "{last_seen}");
    server.written_back("presence", before).await;
    server.kill9();
    tokio::time::sleep(Duration::from_millis(1_100)).await;

    server.start().await;
    let bob_now = presence_of(&server, "sip:bob@example.org", "w1").await;
    assert!(bob_now.contains("<basic>open</basic>") && !bob_now.contains("away"), "bob's PUBLISH survived: {bob_now}");
    let carol_now = presence_of(&server, "sip:carol@example.org", "w2").await;
    assert!(carol_now.contains("<basic>open</basic>") && !carol_now.contains("away"), "carol's REGISTER survived: {carol_now}");
    let dave_now = presence_of(&server, "sip:dave@example.org", "w3").await;
    assert!(dave_now.contains("away"), "{dave_now}");
    assert_eq!(timestamp(&dave_now), timestamp(&last_seen), "last seen before the restart, not at it");
    // Bob's publisher refreshes with the entity-tag it holds: still known.
    bob.send(publish_as("bob", bob.local(), "pub4", &format!("Expires: 600\r\nSIP-If-Match: {etag}\r\n"), "").as_bytes()).await;
    assert_eq!(bob.recv().await.status(), Some(200), "the entity-tag survived the restart");
    // Carol un-registers: her stored registration ends, and she goes offline.
    carol.send(register_as("carol", carol.local(), "reg2", 0).as_bytes()).await;
    assert_eq!(carol.recv().await.status(), Some(200));
    let carol_gone = presence_of(&server, "sip:carol@example.org", "w4").await;
    assert!(carol_gone.contains("away"), "offline after the un-REGISTER: {carol_gone}");
}

/// Issue 17: a subscription to the stored list survives a SIGKILL, and after the restart it
/// still follows its book (a delta reaches it) and the bindings of its numbers.
#[tokio::test]
async fn a_stored_list_subscription_survives_sigkill_and_follows_its_book() {
    use common::http::{basic, http};
    let dir = tempfile::tempdir().unwrap();
    let api = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut server = ServerProcess::new(dir.path(), &format!("[notify]\nmin_interval_ms = 100\n[provisioning]\nlisten = \"{api}\""));
    server.start().await;
    server.stop();
    let add = std::process::Command::new(env!("CARGO_BIN_EXE_smart-presence"))
        .args(["accounts", "--config"])
        .arg(dir.path().join("sp.toml"))
        .args(["add", "alice", "alice-pw"])
        .output()
        .unwrap();
    assert!(add.status.success(), "{}", String::from_utf8_lossy(&add.stderr));
    server.start().await;
    server.bind("+33612345678", "sip:bob@example.org").await;
    let auth = basic("alice", "alice-pw");
    let headers = [("Content-Type", "application/json"), ("Authorization", auth.as_str())];
    let up = http(api, "PUT", "/v1/contacts", &headers, r#"{"contacts":[{"number":"+33612345678"},{"number":"+33698765432"}]}"#).await;
    assert_eq!(up.status, 200, "{}", up.body);

    let mut p = Peer::udp(server.udp).await;
    let before = server.store_stamp("subscriptions");
    p.send(stored_list_subscribe("UDP", p.local(), "sl1", "Supported: eventlist\r\n").as_bytes()).await;
    let (ok, first) = p.accepted().await;
    assert_eq!(ok.status(), Some(200), "{}", ok.head);
    let first = first.expect("the first NOTIFY");
    assert!(first.body().contains("sip:bob@example.org") && first.body().contains(CAROL), "{}", first.body());
    server.written_back("subscriptions", before).await;
    server.kill9();

    server.start().await;
    server.logged("resumed=1").await;
    let resumed = p.notify(200).await;
    assert!(resumed.body().contains("fullState=\"true\"") && resumed.body().contains("sip:bob@example.org"));
    assert!(version(&resumed) > version(&first) && cseq(&resumed) > cseq(&first));
    server.bind("+33698765432", "sip:carol@example.org").await;
    let live = p.notify(200).await;
    assert!(live.body().contains("sip:carol@example.org"), "{}", live.body());
    server.bind("+33611223344", "sip:eve@example.org").await;
    let delta = http(api, "PATCH", "/v1/contacts", &headers, r#"{"base_version":1,"add":[{"number":"+33611223344"}]}"#).await;
    assert_eq!(delta.status, 200, "{}", delta.body);
    let added = p.notify(200).await;
    assert!(added.body().contains("fullState=\"false\"") && added.body().contains("sip:eve@example.org"), "{}", added.body());
}
