//! Issue 17: stored address books. A book uploaded over the Contact Sync API (HTTP) is
//! served at the list URI: a body-less SUBSCRIBE to `sip:contacts@example.org` gets the
//! same RLMI/PIDF NOTIFYs as a list in the body, and every change of the book (delta,
//! deletion) or of a binding reaches it. The store is read raw: no number in clear.

use super::list_subscribe::{bind, parts, rlmi};
use crate::common::http::*;
use crate::common::peer::{Msg, Peer};
use crate::common::*;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Users, by the time each test needs them.
const BOB: &str = "+33612345678";
const CAROL: &str = "+33698765432";
const EVE: &str = "+33611223344";
/// Never a user.
const DAN: &str = "+33655443322";

fn entry(number: &str) -> String {
    format!("sip:{number}@example.org;user=phone")
}

/// A server with the provisioning API on, and account `alice` (HTTP Basic on loopback).
async fn server(tune: impl FnOnce(&mut smart_presence::config::Config)) -> (TestServer, SocketAddr) {
    let s = TestServer::start_with(|c| {
        c.provisioning.listen = Some("127.0.0.1:0".parse().unwrap());
        c.notify.min_interval_ms = 100;
        tune(c);
    })
    .await;
    s.server.accounts().create("alice", "alice-pw", &[]).unwrap();
    let api = s.server.provisioning_addr().unwrap();
    (s, api)
}

fn alice() -> String {
    basic("alice", "alice-pw")
}

async fn call(api: SocketAddr, method: &str, path: &str, body: &Value) -> Reply {
    let auth = alice();
    let body = if body.is_null() { String::new() } else { body.to_string() };
    http(api, method, path, &[("Content-Type", "application/json"), ("Authorization", &auth)], &body).await
}

fn contacts(numbers: &[&str]) -> Value {
    json!(numbers.iter().map(|n| json!({"number": n, "name": format!("name of {n}")})).collect::<Vec<_>>())
}

/// The next NOTIFY within a generous bound, and how long it took.
async fn next_notify(p: &mut Peer, since: Instant) -> (Msg, Duration) {
    let m = p.notify(200).await;
    (m, since.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_list_follows_its_book_and_ends_with_it() {
    let (s, api) = server(|_| {}).await;
    bind(&s, BOB, "sip:bob@example.org");

    // Upload: the numbers are read and stored; what is no number is rejected.
    let up = call(api, "PUT", "/v1/contacts", &json!({"contacts": [{"number": BOB, "name": "Bob"}, {"number": DAN}, {"number": "not a number"}]})).await;
    assert_eq!(up.status, 200, "{}", up.body);
    let up = up.json();
    assert_eq!((up["version"].as_u64(), up["stored"].as_u64()), (Some(1), Some(2)));
    assert_eq!(up["rejected"][0]["number"], "not a number");

    // A body-less SUBSCRIBE to the list URI without `Supported: eventlist`: 421.
    let mut p = Peer::tcp(s.tcp()).await;
    p.send(stored_list_subscribe("TCP", p.local(), "st0", "").as_bytes()).await;
    let refused = p.recv().await;
    assert_eq!(refused.status(), Some(421), "{}", refused.start_line());

    // With it: 200 and the full state of the stored book.
    p.send(stored_list_subscribe("TCP", p.local(), "st1", "Supported: eventlist\r\n").as_bytes()).await;
    let (ok, first) = p.accepted().await;
    assert_eq!(ok.status(), Some(200), "{}", ok.start_line());
    assert_eq!(ok.header("Require"), Some("eventlist"));
    let first = first.expect("the first NOTIFY");
    let list = rlmi(&first);
    assert!(list.contains("fullState=\"true\"") && list.contains("uri=\"sip:contacts@example.org\""), "{list}");
    for n in [BOB, DAN] {
        assert!(list.contains(&format!("<resource uri=\"{}\"", entry(n))), "{n}: {list}");
    }
    assert_eq!(list.matches("<instance ").count(), 1, "bob is the one user: {list}");
    assert!(parts(&first)[1].1.contains(">sip:bob@example.org</contact>"));
    xmllint("rlmi.xsd", list.as_bytes());

    // A delta adding a number that is a user: a partial NOTIFY with him alone.
    bind(&s, CAROL, "sip:carol@example.org");
    let started = Instant::now();
    let d = call(api, "PATCH", "/v1/contacts", &json!({"base_version": 1, "add": [{"number": CAROL, "name": "Carol"}]})).await;
    assert_eq!((d.status, d.json()["version"].as_u64()), (200, Some(2)), "{}", d.body);
    let (added, took) = next_notify(&mut p, started).await;
    let list = rlmi(&added);
    assert!(list.contains("fullState=\"false\"") && list.contains(&entry(CAROL)) && !list.contains(&entry(BOB)), "{list}");
    assert!(parts(&added)[1].1.contains(">sip:carol@example.org</contact>"));
    eprintln!("delta to partial NOTIFY: {took:?}");
    assert!(took < WAIT, "{took:?}");
    assert_eq!(s.server.limits().entries_held(), 3, "the entries held follow the book");

    // A number of the book that becomes a user later: a NOTIFY too.
    let d = call(api, "PATCH", "/v1/contacts", &json!({"base_version": 2, "add": [{"number": EVE}]})).await;
    assert_eq!(d.status, 200, "{}", d.body);
    let (not_yet, _) = next_notify(&mut p, Instant::now()).await;
    assert!(rlmi(&not_yet).contains(&entry(EVE)) && rlmi(&not_yet).matches("<instance ").count() == 0, "{}", rlmi(&not_yet));
    bind(&s, EVE, "sip:eve@example.org");
    let (bound, _) = next_notify(&mut p, Instant::now()).await;
    assert!(rlmi(&bound).contains(&entry(EVE)) && parts(&bound)[1].1.contains(">sip:eve@example.org</contact>"), "{}", bound.body());

    // A stale delta is refused with the current version.
    let stale = call(api, "PATCH", "/v1/contacts", &json!({"base_version": 1, "remove": [BOB]})).await;
    assert_eq!((stale.status, stale.error(), stale.json()["version"].as_u64()), (409, "version_conflict".into(), Some(3)));

    // Removing a user: he is first shown closed, then a full state drops him.
    let d = call(api, "PATCH", "/v1/contacts", &json!({"base_version": 3, "remove": [BOB]})).await;
    assert_eq!(d.status, 200, "{}", d.body);
    let (closed, _) = next_notify(&mut p, Instant::now()).await;
    let list = rlmi(&closed);
    assert!(list.contains("fullState=\"false\"") && list.contains(&entry(BOB)), "{list}");
    assert!(parts(&closed)[1].1.contains("<basic>closed</basic>"));
    let (full, _) = next_notify(&mut p, Instant::now()).await;
    let list = rlmi(&full);
    assert!(list.contains("fullState=\"true\"") && !list.contains(&entry(BOB)) && list.contains(&entry(CAROL)), "{list}");

    // Deleting the book ends the subscription: the resource is gone.
    assert_eq!(call(api, "DELETE", "/v1/contacts", &Value::Null).await.status, 204);
    let (last, _) = next_notify(&mut p, Instant::now()).await;
    assert_eq!(last.header("Subscription-State"), Some("terminated;reason=noresource"));
    assert_eq!(call(api, "DELETE", "/v1/contacts", &Value::Null).await.status, 404);

    // No book: a stored-list SUBSCRIBE gets 404.
    p.send(stored_list_subscribe("TCP", p.local(), "st2", "Supported: eventlist\r\n").as_bytes()).await;
    assert_eq!(p.recv().await.status(), Some(404));
    assert_no_plain_numbers(&s, &[BOB, CAROL, EVE, DAN], &["Bob", "Carol", "name of"]);
}

/// Reads every file of the book store: no number (as text or as the index's 8-byte key),
/// no name in clear.
fn assert_no_plain_numbers(s: &TestServer, numbers: &[&str], names: &[&str]) {
    let dir = smart_presence::address_books::dir_in(s.dir.path());
    let mut files = vec![dir];
    let mut read = 0;
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().flatten().map(|e| e.path()));
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        read += bytes.len();
        for n in numbers {
            let digits = n.trim_start_matches('+');
            let key = digits.parse::<u64>().unwrap().to_be_bytes();
            for needle in [digits.as_bytes(), &key[..]] {
                assert!(!bytes.windows(needle.len()).any(|w| w == needle), "{} holds {n}", path.display());
            }
        }
        for name in names {
            assert!(!bytes.windows(name.len()).any(|w| w == name.as_bytes()), "{} holds {name:?}", path.display());
        }
    }
    assert!(read > 0, "the store was written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contact_sync_api_syncs_a_2000_contact_book_in_one_request() {
    let (s, api) = server(|c| {
        c.address_books.log_versions = 2;
        c.budget.burst = 2001;
    })
    .await;
    let numbers: Vec<String> = (0..2000).map(|i| format!("+336{:08}", 10_000_000 + i * 37)).collect();
    let refs: Vec<&str> = numbers.iter().map(String::as_str).collect();
    assert_eq!(call(api, "GET", "/v1/contacts/version", &Value::Null).await.status, 404);
    assert_eq!(http(api, "GET", "/v1/contacts", &[], "").await.status, 401, "authenticated as the other routes");

    let started = Instant::now();
    let up = call(api, "PUT", "/v1/contacts", &json!({"contacts": contacts(&refs)})).await;
    eprintln!("2,000-contact upload answered in {:?}", started.elapsed());
    assert_eq!(up.status, 200, "{}", up.body);
    assert_eq!((up.json()["stored"].as_u64(), up.json()["over_budget"].as_u64()), (Some(2000), Some(0)));
    let v = call(api, "GET", "/v1/contacts/version", &Value::Null).await.json();
    assert_eq!((v["version"].as_u64(), v["count"].as_u64()), (Some(1), Some(2000)));

    // Export: the numbers and names as given.
    let book = call(api, "GET", "/v1/contacts", &Value::Null).await.json();
    let exported: Vec<&str> = book["contacts"].as_array().unwrap().iter().map(|c| c["number"].as_str().unwrap()).collect();
    assert_eq!(exported, refs);
    assert_eq!(book["contacts"][5]["name"], format!("name of {}", refs[5]));

    // Smart contacts: the users of the book, with SIP URI and presence.
    bind(&s, refs[7], "sip:seven@example.org");
    let smart = call(api, "GET", "/v1/contacts/smart", &Value::Null).await.json();
    assert_eq!(smart["contacts"].as_array().unwrap().len(), 1, "{smart}");
    assert_eq!(smart["contacts"][0]["sip_uri"], "sip:seven@example.org");
    assert_eq!(smart["contacts"][0]["presence"]["online"], false);

    // A delta: charged like any lookup (one token was left), and listed as a change.
    let d = call(api, "PATCH", "/v1/contacts", &json!({"base_version": 1, "add": contacts(&[BOB, CAROL]), "remove": [refs[0], "06 00"]})).await;
    assert_eq!(d.status, 200, "{}", d.body);
    let d = d.json();
    assert_eq!((d["version"].as_u64(), d["added"].as_u64(), d["removed"].as_u64(), d["over_budget"].as_u64()), (Some(2), Some(2), Some(1), Some(1)));
    assert_eq!(d["rejected"].as_array().unwrap().len(), 1, "{d}");
    let ch = call(api, "GET", "/v1/contacts/changes?since=1", &Value::Null).await.json();
    assert_eq!(ch["complete"], true);
    let added: Vec<&str> = ch["added"].as_array().unwrap().iter().map(|c| c["number"].as_str().unwrap()).collect();
    assert_eq!(added, vec![BOB, CAROL]);
    assert_eq!(ch["removed"][0]["number"], refs[0]);
    assert_eq!(call(api, "GET", "/v1/contacts/changes?since=2", &Value::Null).await.json()["added"], json!([]));
    for base in [2, 3] {
        assert_eq!(call(api, "PATCH", "/v1/contacts", &json!({"base_version": base, "remove": [refs[base as usize]]})).await.status, 200);
    }
    assert_eq!(call(api, "GET", "/v1/contacts/changes?since=1", &Value::Null).await.json()["complete"], false, "log_versions = 2");
    assert_eq!(call(api, "GET", "/v1/contacts/changes", &Value::Null).await.status, 400);

    // Caps: more contacts than a book holds.
    let many: Vec<String> = (0..5001).map(|i| format!("+337{:08}", i)).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let big = call(api, "PUT", "/v1/contacts", &json!({"contacts": contacts(&many)})).await;
    assert_eq!((big.status, big.error()), (413, "too_many_contacts".into()));

    // Deleting the account deletes its book.
    assert_eq!(call(api, "DELETE", "/v1/account", &Value::Null).await.status, 204);
    assert!(s.server.address_books().version("alice").unwrap().is_none());
    assert!(s.server.accounts().get("alice").unwrap().is_none());
    assert_eq!(call(api, "GET", "/v1/contacts", &Value::Null).await.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_updates_every_subscription_of_the_book_in_both_spellings() {
    let (s, api) = server(|_| {}).await;
    bind(&s, BOB, "sip:bob@example.org");
    bind(&s, CAROL, "sip:carol@example.org");
    assert_eq!(call(api, "PUT", "/v1/contacts", &json!({"contacts": contacts(&[BOB, DAN])})).await.status, 200);

    // liblinphone's spelling (no User-Agent: auto picks it) over UDP, RFC's over TCP.
    let mut linphone = Peer::udp(s.udp()).await;
    linphone.send(stored_list_subscribe("UDP", linphone.local(), "sp1", "Supported: eventlist\r\n").as_bytes()).await;
    let mut rfc = Peer::tcp(s.tcp()).await;
    rfc.send(stored_list_subscribe("TCP", rfc.local(), "sp2", "Supported: eventlist\r\nUser-Agent: Phone belle-sip/5.4.0\r\n").as_bytes()).await;
    for (p, event, cid) in [(&mut linphone, "Presence", "Content-Id: cid"), (&mut rfc, "presence", "Content-ID: <")] {
        let (ok, first) = p.accepted().await;
        assert_eq!(ok.status(), Some(200));
        let first = first.expect("the first NOTIFY");
        assert_eq!(first.header("Event"), Some(event));
        assert!(parts(&first)[0].0.contains(cid), "{}", parts(&first)[0].0);
        assert_eq!(rlmi(&first).matches("<instance ").count(), 1);
    }

    // A new upload (not a delta) reaches both: carol added, dan kept, no full state.
    let started = Instant::now();
    assert_eq!(call(api, "PUT", "/v1/contacts", &json!({"contacts": contacts(&[BOB, DAN, CAROL])})).await.status, 200);
    for p in [&mut linphone, &mut rfc] {
        let (added, took) = next_notify(p, started).await;
        let list = rlmi(&added);
        assert!(list.contains("fullState=\"false\"") && list.contains(&entry(CAROL)) && !list.contains(&entry(DAN)), "{list}");
        eprintln!("upload to partial NOTIFY: {took:?}");
    }
    // An upload without a change sends nothing.
    assert_eq!(call(api, "PUT", "/v1/contacts", &json!({"contacts": contacts(&[BOB, DAN, CAROL])})).await.status, 200);
    assert!(linphone.recv_within(Duration::from_millis(500)).await.is_none(), "no NOTIFY for an unchanged book");
}
