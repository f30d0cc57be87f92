//! Bindings in cluster mode: Redis is the record, each node answers from its mirror, kept
//! current by the Redis Stream of changes. A binding made at one node reaches another
//! node's list subscriber; a node stopped past the stream's trimming resynchronises; with
//! Redis down, lookups go on from the mirror and writes are refused with 503.
#![allow(dead_code)]

use crate::common::http::{http, Reply};
use crate::common::peer::{Msg, Peer};
use crate::common::process::ServerProcess;
use crate::common::{list_subscribe, resource_list};
use crate::harness::{node, RedisServer};
use std::process::Command;
use std::time::{Duration, Instant};

pub const BOB_TEL: &str = "sip:+33612345678@example.org;user=phone";
pub const CAROL_TEL: &str = "sip:+33698765432@example.org;user=phone";

/// Faster NOTIFYs than the default pacing, for bounded tests.
pub const FAST_NOTIFY: &str = "\n[notify]\nmin_interval_ms = 50";

pub async fn put(n: &ServerProcess, number: &str, uri: &str) -> Reply {
    let body = format!("{{\"sip_uri\":\"{uri}\"}}");
    http(n.admin, "PUT", &format!("/bindings/{number}"), &[("Content-Type", "application/json")], &body).await
}

pub async fn get(n: &ServerProcess, number: &str) -> Reply {
    http(n.admin, "GET", &format!("/bindings/{number}"), &[], "").await
}

/// Subscribes `p` to the list of `uris`; returns the first NOTIFY.
pub async fn subscribe(p: &mut Peer, uris: &[&str], branch: &str) -> Msg {
    let body = resource_list(&uris.iter().map(|u| u.to_string()).collect::<Vec<_>>());
    p.send(list_subscribe("UDP", p.local(), branch, "Expires: 600\r\n", &body).as_bytes()).await;
    let (ok, first) = p.accepted().await;
    assert_eq!(ok.status(), Some(200), "{}", ok.head);
    first.expect("the first NOTIFY")
}

/// Answers NOTIFYs until one whose body contains `what` (None after `wait`).
pub async fn notify_with(p: &mut Peer, what: &str, wait: Duration) -> Option<Msg> {
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        let m = p.recv_within(left).await?;
        if m.is_request("NOTIFY") {
            p.send(&m.response(200, "OK")).await;
            if m.body().contains(what) {
                return Some(m);
            }
        }
    }
}

/// Sends a signal (`STOP`, `CONT`) to a node.
pub fn signal(n: &ServerProcess, sig: &str) {
    let pid = n.pid().expect("running").to_string();
    assert!(Command::new("kill").args([&format!("-{sig}"), &pid]).status().unwrap().success());
}

#[tokio::test]
async fn a_binding_made_at_one_node_reaches_a_subscriber_of_another_within_2_s() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(&dir.path().join("redis"), &[]);
    let mut a = node(dir.path(), "a", &redis.url(), FAST_NOTIFY);
    let mut b = node(dir.path(), "b", &redis.url(), FAST_NOTIFY);
    a.start().await;
    b.start().await;
    let mut p = Peer::udp(b.udp).await;
    let first = subscribe(&mut p, &[BOB_TEL, CAROL_TEL], "cb1").await;
    assert!(!first.body().contains("sip:bob@example.org"));

    let bound = put(&a, "+33612345678", "sip:bob@example.org").await;
    assert_eq!(bound.status, 200, "{}", bound.body);
    assert_eq!(bound.json()["outcome"], "new");
    let at = Instant::now();
    let live = notify_with(&mut p, "sip:bob@example.org", Duration::from_secs(2)).await;
    assert!(live.is_some(), "no NOTIFY at node b within 2 s of the bind at node a\n{}", b.log());
    assert!(at.elapsed() < Duration::from_secs(2));
    let seen = get(&b, "+33612345678").await;
    assert_eq!((seen.status, seen.json()["sip_uri"].as_str()), (200, Some("sip:bob@example.org")), "{}", seen.body);

    // The record is Redis: both directions and the stream entry are there.
    assert_eq!(redis.query(&["HGET", "sp:b:fwd", "33612345678"]).unwrap().split('\t').next(), Some("sip:bob@example.org"));
    assert_eq!(redis.query(&["SMEMBERS", "sp:b:rev:sip:bob@example.org"]).as_deref(), Some("33612345678"));
    assert_eq!(redis.query(&["XLEN", "sp:b:changes"]).as_deref(), Some("1"));

    // A rebind and an unbind at b reach a's lookups too.
    assert_eq!(put(&b, "+33612345678", "sip:carol@example.org").await.json()["outcome"], "rebound");
    let deadline = Instant::now() + Duration::from_secs(2);
    while get(&a, "+33612345678").await.json()["sip_uri"] != "sip:carol@example.org" {
        assert!(Instant::now() < deadline, "node a never saw the rebind");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let gone = http(b.admin, "DELETE", "/bindings/+33612345678", &[], "").await;
    assert_eq!(gone.status, 200, "{}", gone.body);
    assert_eq!(get(&b, "+33612345678").await.status, 404, "the writer's own lookup sees its write at once");
    assert_eq!(redis.query(&["EXISTS", "sp:b:rev:sip:carol@example.org"]).as_deref(), Some("0"));
}

#[tokio::test]
async fn a_node_stopped_past_the_stream_trim_resynchronises_and_notifies_its_subscriber() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(&dir.path().join("redis"), &[]);
    // 1000 is the smallest stream the nodes keep.
    let extra = format!("stream_max_len = 1000{FAST_NOTIFY}");
    let mut a = node(dir.path(), "a", &redis.url(), &extra);
    let mut b = node(dir.path(), "b", &redis.url(), &extra);
    a.start().await;
    b.start().await;
    assert_eq!(put(&a, "+33612345678", "sip:bob@example.org").await.status, 200);
    let mut p = Peer::udp(b.udp).await;
    subscribe(&mut p, &[BOB_TEL, CAROL_TEL], "cs1").await;

    signal(&b, "STOP");
    // 3000 changes (> 1000 kept): carol bound, bob unbound, and many others.
    let mut csv = String::from("+33698765432,sip:carol@example.org\n");
    for i in 0..3000u32 {
        csv.push_str(&format!("+3361{:07},sip:u{i}@example.org\n", 1_000_000 + i));
    }
    let imported = http(a.admin, "POST", "/import?format=csv", &[("Content-Type", "text/csv")], &csv).await;
    assert_eq!(imported.status, 200, "{}", imported.body);
    assert_eq!(http(a.admin, "DELETE", "/bindings/+33612345678", &[], "").await.status, 200);
    let kept: u64 = redis.query(&["XLEN", "sp:b:changes"]).unwrap().parse().unwrap();
    assert!(kept < 2000, "the stream was trimmed ({kept} entries kept)");
    signal(&b, "CONT");

    let carol = notify_with(&mut p, "sip:carol@example.org", Duration::from_secs(10)).await;
    assert!(carol.is_some(), "no NOTIFY for carol after SIGCONT\n{}", b.log());
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(&b, "+33612345678").await.status != 404 || get(&b, "+33611002999").await.status != 200 {
        assert!(Instant::now() < deadline, "node b's lookups stay wrong\n{}", b.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(get(&b, "+33611002999").await.json()["sip_uri"], "sip:u2999@example.org");
    let log = b.log();
    assert!(log.contains("full resynchronisation") && log.contains("trimmed"), "the resync is logged at warn\n{log}");
    let stats = http(b.admin, "GET", "/stats", &[], "").await.json();
    assert_eq!(stats["numbers"], 3001, "{stats}");
}

#[tokio::test]
async fn with_redis_down_nodes_answer_from_their_mirror_refuse_writes_and_catch_up_after() {
    let dir = tempfile::tempdir().unwrap();
    let mut redis = RedisServer::start(&dir.path().join("redis"), &[]);
    let extra = format!("timeout_ms = 300{FAST_NOTIFY}");
    let mut a = node(dir.path(), "a", &redis.url(), &extra);
    let mut b = node(dir.path(), "b", &redis.url(), &extra);
    a.start().await;
    b.start().await;
    assert_eq!(put(&a, "+33612345678", "sip:bob@example.org").await.status, 200);
    let deadline = Instant::now() + Duration::from_secs(2);
    while get(&b, "+33612345678").await.status != 200 {
        assert!(Instant::now() < deadline, "node b never saw bob");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    redis.kill9();
    let mut p = Peer::udp(b.udp).await;
    let first = subscribe(&mut p, &[BOB_TEL, CAROL_TEL], "cd1").await;
    assert!(first.body().contains("sip:bob@example.org"), "answered from the mirror: {}", first.body());
    let refused = put(&a, "+33698765432", "sip:carol@example.org").await;
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert!(refused.json()["error"].as_str().is_some_and(|e| e.contains("Redis")), "{}", refused.body);
    assert_eq!(refused.header("Retry-After"), Some("1"));
    assert_eq!(get(&a, "+33612345678").await.status, 200, "lookups go on");

    redis.restart(&[]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = put(&a, "+33698765432", "sip:carol@example.org").await;
        if r.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "writes never worked again: {} {}", r.status, r.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let carol = notify_with(&mut p, "sip:carol@example.org", Duration::from_secs(10)).await;
    assert!(carol.is_some(), "node b never caught up\n{}", b.log());
    assert_eq!(get(&b, "+33698765432").await.json()["sip_uri"], "sip:carol@example.org");
    assert_eq!(get(&b, "+33612345678").await.json()["sip_uri"], "sip:bob@example.org", "the restarted Redis kept bob (AOF)");
}

#[tokio::test]
async fn the_redis_primary_killed_mid_import_loses_no_acknowledged_binding() {
    use crate::sentinel::{Failover, MASTER};
    let dir = tempfile::tempdir().unwrap();
    let mut f = Failover::start(&dir.path().join("redis"));
    let extra = format!("sentinels = [\"{}\"]\nmaster_name = \"{MASTER}\"\nreplicas = 1\nwait_timeout_ms = 500\ntimeout_ms = 300{FAST_NOTIFY}", f.sentinel_addr());
    let mut a = node(dir.path(), "a", "", &extra);
    a.start().await;

    // Binds one number after another; the primary is SIGKILLed after 100 acknowledged,
    // brought back (Sentinel makes it a replica of the promoted one) once the replica is
    // promoted, and the import goes on until 20 more are acknowledged.
    let (mut acked, mut i, mut after) = (Vec::new(), 0u32, 0);
    let (mut killed, mut restarted) = (false, false);
    let deadline = Instant::now() + Duration::from_secs(45);
    while after < 20 {
        assert!(Instant::now() < deadline, "writes never resumed after the failover ({} acknowledged)\n{}", acked.len(), a.log());
        let (number, uri) = (format!("+3361{:07}", 1_000_000 + i), format!("sip:u{i}@example.org"));
        i += 1;
        let r = put(&a, &number, &uri).await;
        match r.status {
            200 => {
                acked.push((number, uri));
                after += usize::from(killed);
            }
            503 => tokio::time::sleep(Duration::from_millis(20)).await,
            other => panic!("PUT answered {other}: {}", r.body),
        }
        if acked.len() == 100 && !killed {
            f.primary.kill9();
            killed = true;
        }
        if killed && !restarted && f.primary_port() == Some(f.replica.port) {
            f.primary.restart(&[]);
            restarted = true;
        }
    }
    assert!(restarted, "Sentinel promoted the replica");
    for (number, uri) in &acked {
        let stored = f.replica.query(&["HGET", "sp:b:fwd", &number[1..]]).unwrap_or_default();
        assert_eq!(stored.split('\t').next(), Some(uri.as_str()), "acknowledged {number} lost by the promoted replica");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for (number, uri) in &acked {
        loop {
            let seen = get(&a, number).await;
            if seen.status == 200 && seen.json()["sip_uri"] == uri.as_str() {
                break;
            }
            assert!(Instant::now() < deadline, "node a's mirror lacks {number}\n{}", a.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
