//! Issue 14 with stored address books: a book changed or deleted through one node reaches
//! the stored-list subscriptions held at another (the stream `ab:changes`), and the node
//! that made the change notifies its own subscriptions once, not once more from the stream.
//! A node that missed changes (stopped while the stream was trimmed past them) re-reads
//! every book it follows.

use crate::common::http::{basic, http, Reply};
use crate::common::peer::{Msg, Peer};
use crate::common::{free_port, stored_list_subscribe, WAIT};
use crate::harness::{node, RedisServer};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

const BOB: &str = "+33612345678";
const CAROL: &str = "+33698765432";
const DAVE: &str = "+33611223344";

fn entry(number: &str) -> String {
    format!("sip:{number}@example.org;user=phone")
}

async fn api_node(dir: &Path, name: &str, redis: &RedisServer) -> (crate::common::process::ServerProcess, SocketAddr) {
    let api = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut n = node(dir, name, &redis.url(), &format!("stream_max_len = 1000\n[provisioning]\nlisten = \"{api}\"\n"));
    n.start().await;
    (n, api)
}

async fn call(api: SocketAddr, method: &str, body: &Value) -> Reply {
    let auth = basic("alice", "alice-pw");
    let body = if body.is_null() { String::new() } else { body.to_string() };
    http(api, method, "/v1/contacts", &[("Content-Type", "application/json"), ("Authorization", &auth)], &body).await
}

/// A stored-list subscription of alice's at `sip`, with its first NOTIFY's body.
async fn subscribe(sip: SocketAddr, branch: &str) -> (Peer, String) {
    let mut p = Peer::tcp(sip).await;
    p.send(stored_list_subscribe("TCP", p.local(), branch, "Supported: eventlist\r\n").as_bytes()).await;
    let (ok, first) = p.accepted().await;
    assert_eq!(ok.status(), Some(200), "{}", ok.start_line());
    (p, first.expect("the first NOTIFY").body().to_string())
}

/// The next NOTIFY within [`WAIT`], and how long it took from `since`.
async fn next_notify(p: &mut Peer, since: Instant) -> (Msg, Duration) {
    let m = p.notify(200).await;
    (m, since.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_book_changed_at_one_node_reaches_its_stored_list_at_another() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(&dir.path().join("redis"), &[]);
    let (a, api_a) = api_node(dir.path(), "a", &redis).await;
    let (b, _api_b) = api_node(dir.path(), "b", &redis).await;
    let cli = std::process::Command::new(env!("CARGO_BIN_EXE_smart-presence")).args(["accounts", "--config"]).arg(a.config_path()).args(["add", "alice", "alice-pw"]).output().unwrap();
    assert!(cli.status.success(), "{}", String::from_utf8_lossy(&cli.stderr));
    for n in [&a, &b] {
        n.bind(BOB, "sip:bob@example.org").await;
        n.bind(CAROL, "sip:carol@example.org").await;
        n.bind(DAVE, "sip:dave@example.org").await;
    }

    let up = call(api_a, "PUT", &json!({"contacts": [{"number": BOB, "name": "Bob"}]})).await;
    assert_eq!((up.status, up.json()["version"].as_u64()), (200, Some(1)), "{}", up.body);
    let (mut at_b, first) = subscribe(b.tcp, "sb1").await;
    assert!(first.contains("fullState=\"true\"") && first.contains(&entry(BOB)) && !first.contains(&entry(CAROL)), "{first}");
    let (mut at_a, _) = subscribe(a.tcp, "sa1").await;

    // A delta through A's API: a partial NOTIFY with Carol alone at B, within a few seconds.
    let started = Instant::now();
    let d = call(api_a, "PATCH", &json!({"base_version": 1, "add": [{"number": CAROL, "name": "Carol"}]})).await;
    assert_eq!((d.status, d.json()["version"].as_u64()), (200, Some(2)), "{}", d.body);
    let (added, took) = next_notify(&mut at_b, started).await;
    let body = added.body();
    assert!(body.contains("fullState=\"false\"") && body.contains(&entry(CAROL)) && !body.contains(&entry(BOB)), "{body}");
    assert!(body.contains(">sip:carol@example.org</contact>"), "{body}");
    eprintln!("delta at A to partial NOTIFY at B: {took:?} (shared noisy 2-core VM)");
    assert!(took < WAIT, "{took:?}");

    // A, which made the change, notified its own subscription once: no second NOTIFY from
    // the stream (its own entries are skipped).
    let (at_a_added, _) = next_notify(&mut at_a, started).await;
    assert!(at_a_added.body().contains(&entry(CAROL)), "{}", at_a_added.body());
    let again = at_a.recv_within(Duration::from_secs(2)).await;
    assert!(again.is_none(), "a second NOTIFY at A: {}", again.map(|m| m.start_line().to_string()).unwrap_or_default());

    // B stopped while a change is made and the stream trimmed past it (1500 other
    // entries, about 1000 kept): continued, B sees the gap and re-reads alice's book.
    signal(&b, "-STOP");
    let d = call(api_a, "PATCH", &json!({"base_version": 2, "add": [{"number": DAVE}]})).await;
    assert_eq!(d.status, 200, "{}", d.body);
    flood(&redis, 1500);
    let started = Instant::now();
    signal(&b, "-CONT");
    let (caught_up, took) = next_notify(&mut at_b, started).await;
    let body = caught_up.body();
    assert!(body.contains(&entry(DAVE)) && body.contains(">sip:dave@example.org</contact>"), "{body}");
    assert!(b.log().contains("changes trimmed before this node read them"), "the gap was seen");
    eprintln!("gap to NOTIFY at B: {took:?} (shared noisy 2-core VM)");
    assert!(at_a.notify(200).await.body().contains(&entry(DAVE)));

    // The book deleted through A: B's subscription ends, the resource gone.
    let started = Instant::now();
    assert_eq!(call(api_a, "DELETE", &Value::Null).await.status, 204);
    let (last, took) = next_notify(&mut at_b, started).await;
    assert_eq!(last.header("Subscription-State"), Some("terminated;reason=noresource"), "{}", last.start_line());
    assert!(took < WAIT, "{took:?}");
}

fn signal(n: &crate::common::process::ServerProcess, sig: &str) {
    let pid = n.pid().expect("a running node").to_string();
    assert!(std::process::Command::new("kill").args([sig, pid.as_str()]).status().unwrap().success());
}

/// `count` entries of another owner in the book stream, trimmed to about 1000.
fn flood(redis: &RedisServer, count: usize) {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_connection_with_timeout(Duration::from_secs(2)).unwrap();
    let mut pipe = redis::pipe();
    for _ in 0..count {
        pipe.cmd("XADD").arg("sp:ab:changes").arg("MAXLEN").arg("~").arg(1000).arg("*").arg("o").arg("test").arg("t").arg("00".repeat(16)).ignore();
    }
    pipe.query::<()>(&mut conn).unwrap();
}
