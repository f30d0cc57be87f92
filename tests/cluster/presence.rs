//! Presence shared by the nodes (issue 14): a PUBLISH at one node reaches the watchers of
//! another, its entity-tag works at a third, publications and registrations expire
//! without the node that took them, and a Redis that is away refuses writes with 503 and
//! Retry-After, then catches up. Three nodes of the real binary on one real Redis.

use crate::common::peer::{Msg, Peer};
use crate::common::process::ServerProcess;
use crate::common::{list_subscribe, presentity_subscribe, publish_as, register_as, resource_list};
use crate::harness::{node, RedisServer};
use std::path::Path;
use std::time::{Duration, Instant};

const BOB: &str = "sip:bob@example.org";
const BOB_NUMBER: &str = "+33612345678";
const BOB_TEL: &str = "sip:+33612345678@example.org;user=phone";

/// Short expiries allowed, NOTIFYs about a presentity at most once a second.
const TUNING: &str = "\n[presence]\nmin_expires = 1\nnotify_interval_secs = 1\n[registrar]\nmin_expires = 1\n[notify]\nmin_interval_ms = 100";

fn open_pidf(note: &str) -> String {
    format!(r#"<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:bob@example.org"><tuple id="t1"><status><basic>open</basic></status>{note}</tuple></presence>"#)
}

/// Online as watchers read him (long-term presence shows an offline user "away").
fn online(pidf: &str) -> bool {
    pidf.contains("<basic>open</basic>") && !pidf.contains("away")
}

fn offline(pidf: &str) -> bool {
    !online(pidf)
}

/// Redis and `count` started nodes (n0, n1, ...), each with bob's number bound (until
/// bindings are shared, each node's own).
async fn cluster(dir: &Path, count: usize) -> (RedisServer, Vec<ServerProcess>) {
    let redis = RedisServer::start(&dir.join("redis"), &[]);
    let mut nodes = Vec::new();
    for i in 0..count {
        let mut n = node(dir, &format!("n{i}"), &redis.url(), &format!("timeout_ms = 300{TUNING}"));
        n.start().await;
        n.bind(BOB_NUMBER, BOB).await;
        nodes.push(n);
    }
    (redis, nodes)
}

/// A single-presentity watcher of `target` at `node`, with the PIDF of its first NOTIFY.
async fn watch(node: &ServerProcess, target: &str, branch: &str) -> (Peer, String) {
    let mut w = Peer::udp(node.udp).await;
    w.send(presentity_subscribe(target, w.local(), branch, "Expires: 600\r\n").as_bytes()).await;
    let (ok, first) = w.accepted().await;
    assert_eq!(ok.status(), Some(200), "{}", ok.head);
    (w, first.expect("the first NOTIFY").body())
}

/// A list watcher of bob's number at `node`, with the body of its first NOTIFY.
async fn watch_list(node: &ServerProcess, branch: &str) -> (Peer, String) {
    let mut w = Peer::udp(node.udp).await;
    let body = resource_list(&[BOB_TEL.to_string()]);
    w.send(list_subscribe("UDP", w.local(), branch, "Expires: 600\r\n", &body).as_bytes()).await;
    let (ok, first) = w.accepted().await;
    assert_eq!(ok.status(), Some(200), "{}", ok.head);
    (w, first.expect("the first NOTIFY").body())
}

/// Waits up to `within` for a NOTIFY whose body satisfies `wanted` (answering each);
/// returns that body, or fails with the bodies seen.
async fn notified(w: &mut Peer, within: Duration, what: &str, wanted: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let Some(m) = w.recv_within(left).await else { break };
        if !m.is_request("NOTIFY") {
            continue;
        }
        w.send(&m.response(200, "OK")).await;
        let body = m.body();
        if wanted(&body) {
            return body;
        }
        seen.push(body);
    }
    panic!("no NOTIFY saying {what} within {within:?}; seen: {seen:#?}");
}

/// Bob's PUBLISH through `p` (at some node): its response.
async fn publish(p: &mut Peer, branch: &str, extra: &str, body: &str) -> Msg {
    p.send(publish_as("bob", p.local(), branch, extra, body).as_bytes()).await;
    let mut early = Vec::new();
    p.response(&mut early).await
}

/// `count` tasks at once, alternately at the first two nodes (`f` gets the task's number and
/// its node's SIP address); their results in order.
async fn at_once<T, Fut>(nodes: &[ServerProcess], count: usize, f: impl Fn(usize, std::net::SocketAddr) -> Fut) -> Vec<T>
where
    T: Send + 'static,
    Fut: std::future::Future<Output = T> + Send + 'static,
{
    let tasks: Vec<_> = (0..count).map(|i| tokio::spawn(f(i, nodes[i % 2].udp))).collect();
    let mut out = Vec::with_capacity(count);
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

fn etag(m: &Msg) -> String {
    assert_eq!(m.status(), Some(200), "{}", m.head);
    m.header("SIP-ETag").expect("an entity-tag").to_string()
}

#[tokio::test]
async fn a_publication_made_at_one_node_reaches_another_and_its_etag_works_at_a_third() {
    let dir = tempfile::tempdir().unwrap();
    let (_redis, nodes) = cluster(dir.path(), 3).await;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let (mut single, first) = watch(a, BOB, "w1").await;
    assert!(offline(&first), "{first}");
    let (mut list, first) = watch_list(a, "l1").await;
    assert!(!first.contains("<basic>open</basic>") || first.contains("away"), "{first}");

    // Published at C: A's watchers are told within 2 s.
    let mut at_c = Peer::udp(c.udp).await;
    let tag = etag(&publish(&mut at_c, "p1", "Expires: 600\r\n", &open_pidf("")).await);
    notified(&mut single, Duration::from_secs(2), "bob online", online).await;
    notified(&mut list, Duration::from_secs(2), "bob online in the list", |b| b.contains(BOB) && online(b)).await;

    // Refreshed then modified at B with C's entity-tag.
    let mut at_b = Peer::udp(b.udp).await;
    let refreshed = etag(&publish(&mut at_b, "p2", &format!("Expires: 600\r\nSIP-If-Match: {tag}\r\n"), "").await);
    assert_ne!(refreshed, tag);
    let note = r#"<note xml:lang="en">In a meeting</note>"#;
    let modified = etag(&publish(&mut at_b, "p3", &format!("Expires: 600\r\nSIP-If-Match: {refreshed}\r\n"), &open_pidf(note)).await);
    notified(&mut single, Duration::from_secs(3), "bob's note", |b| b.contains("In a meeting") && online(b)).await;
    // The old tag is gone everywhere.
    assert_eq!(publish(&mut at_c, "p4", &format!("Expires: 600\r\nSIP-If-Match: {tag}\r\n"), "").await.status(), Some(412));

    // Removed at B: offline at A.
    let removed = publish(&mut at_b, "p5", &format!("Expires: 0\r\nSIP-If-Match: {modified}\r\n"), "").await;
    assert_eq!(removed.status(), Some(200), "{}", removed.head);
    notified(&mut single, Duration::from_secs(3), "bob offline", offline).await;
    notified(&mut list, Duration::from_secs(3), "bob offline in the list", |b| b.contains(BOB) && offline(b)).await;
}

#[tokio::test]
async fn a_publication_expires_at_every_node_after_its_node_died() {
    let dir = tempfile::tempdir().unwrap();
    let (redis, mut nodes) = cluster(dir.path(), 3).await;
    let (mut at_a, _) = watch(&nodes[0], BOB, "w1").await;
    let (mut at_b, _) = watch(&nodes[1], BOB, "w2").await;
    let mut p = Peer::udp(nodes[2].udp).await;
    etag(&publish(&mut p, "p1", "Expires: 3\r\n", &open_pidf("")).await);
    notified(&mut at_a, Duration::from_secs(2), "bob online at A", online).await;
    notified(&mut at_b, Duration::from_secs(2), "bob online at B", online).await;
    nodes[2].kill9();
    notified(&mut at_a, Duration::from_secs(6), "bob offline at A", offline).await;
    notified(&mut at_b, Duration::from_secs(6), "bob offline at B", offline).await;
    // And Redis is swept of it.
    let started = Instant::now();
    while redis.query(&["ZCARD", "sp:presence-expiry"]).as_deref() != Some("0") {
        assert!(started.elapsed() < Duration::from_secs(5), "the expired publication stays in Redis's expiry set");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let record = redis.query(&["GET", "sp:presence:sip:bob@example.org"]).unwrap_or_default();
    assert!(!record.is_empty(), "bob's last state (last seen) is kept");
}

#[tokio::test]
async fn the_sweep_sets_stale_expiry_entries_right() {
    let dir = tempfile::tempdir().unwrap();
    let (redis, nodes) = cluster(dir.path(), 1).await;
    let mut p = Peer::udp(nodes[0].udp).await;
    etag(&publish(&mut p, "p1", "Expires: 600\r\n", &open_pidf("")).await);
    let score = || redis.query(&["ZSCORE", "sp:presence-expiry", BOB]).unwrap_or_default();
    let real = score();
    assert!(real.parse::<u64>().is_ok_and(|ms| ms > 1_000), "bob's expiry: {real:?}");
    // Stale entries, as a lost write could leave them: one of a presentity with no record,
    // bob's due though his publication is not.
    assert_eq!(redis.query(&["ZADD", "sp:presence-expiry", "1", "sip:ghost@example.org", "1", BOB]).as_deref(), Some("1"));
    let started = Instant::now();
    while redis.query(&["ZSCORE", "sp:presence-expiry", "sip:ghost@example.org"]).is_some_and(|s| !s.is_empty()) || score() != real {
        assert!(started.elapsed() < Duration::from_secs(5), "not corrected by the sweep: bob {:?}", score());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let record = redis.query(&["GET", "sp:presence:sip:bob@example.org"]).unwrap_or_default();
    assert!(!record.is_empty(), "bob's record stays");
}

#[tokio::test]
async fn a_registration_at_a_node_that_dies_keeps_the_user_online_until_it_expires() {
    let dir = tempfile::tempdir().unwrap();
    let (redis, mut nodes) = cluster(dir.path(), 3).await;
    let (mut at_a, _) = watch(&nodes[0], BOB, "w1").await;
    let mut phone = Peer::udp(nodes[1].udp).await;
    phone.send(register_as("bob", phone.local(), "r1", 10).as_bytes()).await;
    let ok = phone.response(&mut Vec::new()).await;
    assert_eq!(ok.status(), Some(200), "{}", ok.head);
    assert!(redis.query(&["GET", "sp:registration:sip:bob@example.org"]).is_some_and(|r| !r.is_empty()), "the registration is in Redis");
    notified(&mut at_a, Duration::from_secs(2), "bob online", online).await;
    let registered = Instant::now();
    nodes[1].kill9();

    // A restart of another node keeps him online (read back from Redis).
    nodes[0].stop();
    nodes[0].start().await;
    let (mut at_a, now) = watch(&nodes[0], BOB, "w2").await;
    assert!(online(&now), "still online after B died and A restarted: {now}");
    // The phone refreshes at C: C reads the registration B made (one contact, not two).
    phone = Peer::udp(nodes[2].udp).await;
    phone.send(register_as("bob", phone.local(), "r2", 10).as_bytes()).await;
    let refreshed = phone.response(&mut Vec::new()).await;
    assert_eq!(refreshed.status(), Some(200), "{}", refreshed.head);
    assert_eq!(refreshed.headers("Contact").len(), 2, "B's contact (another address) and C's: {}", refreshed.head);
    // C's contact removed at C: B's stays until it expires, then bob goes offline at A,
    // with no node alive that took it.
    phone.send(register_as("bob", phone.local(), "r3", 0).as_bytes()).await;
    let left = phone.response(&mut Vec::new()).await;
    assert_eq!(left.headers("Contact").len(), 1, "B's contact is left: {}", left.head);
    notified(&mut at_a, Duration::from_secs(14), "bob offline when B's registration expired", offline).await;
    assert!(registered.elapsed() >= Duration::from_secs(8), "offline only once the registration expired (10 s, kept to the second) ({:?})", registered.elapsed());
}

#[tokio::test]
async fn redis_away_refuses_publish_with_503_and_retry_after_then_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let (mut redis, nodes) = cluster(dir.path(), 2).await;
    let (mut watcher, _) = watch(&nodes[1], BOB, "w1").await;
    redis.kill9();
    let mut p = Peer::udp(nodes[0].udp).await;
    let refused = publish(&mut p, "p1", "Expires: 600\r\n", &open_pidf("")).await;
    assert_eq!(refused.status(), Some(503), "{}", refused.head);
    assert!(refused.header("Retry-After").is_some_and(|r| r.parse::<u32>().is_ok()), "{}", refused.head);
    p.send(register_as("bob", p.local(), "r1", 600).as_bytes()).await;
    let refused = p.response(&mut Vec::new()).await;
    assert_eq!(refused.status(), Some(503), "REGISTER too: {}", refused.head);
    // Reads go on from the mirror.
    let (_, read) = watch(&nodes[1], BOB, "w2").await;
    assert!(offline(&read), "{read}");

    redis.restart(&[]);
    let started = Instant::now();
    loop {
        let answer = publish(&mut p, &format!("p2-{}", started.elapsed().as_millis()), "Expires: 600\r\n", &open_pidf("")).await;
        if answer.status() == Some(200) {
            break;
        }
        assert_eq!(answer.status(), Some(503), "{}", answer.head);
        assert!(started.elapsed() < Duration::from_secs(5), "PUBLISH still refused 5 s after Redis came back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    notified(&mut watcher, Duration::from_secs(4), "bob online once Redis is back", online).await;
}

#[tokio::test]
async fn concurrent_publications_at_two_nodes_are_all_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (_redis, nodes) = cluster(dir.path(), 2).await;
    let (mut watcher, _) = watch(&nodes[0], BOB, "w1").await;
    // 2 × 20 PUBLISHes for bob at once, from two nodes: each must be kept (no write lost
    // to a concurrent one), so that each tag removes its own publication.
    let tags = at_once(&nodes, 40, |i, addr| async move {
        let mut p = Peer::udp(addr).await;
        etag(&publish(&mut p, &format!("c{i}"), "Expires: 600\r\n", &open_pidf("")).await)
    })
    .await;
    notified(&mut watcher, Duration::from_secs(2), "bob online", online).await;
    for (i, tag) in tags.iter().enumerate() {
        let mut p = Peer::udp(nodes[(i + 1) % 2].udp).await;
        let removed = publish(&mut p, &format!("r{i}"), &format!("Expires: 0\r\nSIP-If-Match: {tag}\r\n"), "").await;
        assert_eq!(removed.status(), Some(200), "publication {i} was kept: {}", removed.head);
    }
    notified(&mut watcher, Duration::from_secs(3), "bob offline once all are removed", offline).await;
}

#[tokio::test]
async fn a_node_that_missed_trimmed_changes_reloads_and_tells_its_watchers() {
    let dir = tempfile::tempdir().unwrap();
    let (redis, nodes) = cluster(dir.path(), 2).await;
    let (mut watcher, _) = watch(&nodes[0], BOB, "w1").await;
    let pid = nodes[0].pid().expect("running").to_string();
    let signal = |sig: &str| assert!(std::process::Command::new("kill").args([sig, &pid]).status().unwrap().success());
    signal("-STOP");
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_connection_with_timeout(Duration::from_secs(2)).unwrap();
    let filler = |conn: &mut redis::Connection, count: usize| {
        let mut pipe = redis::pipe();
        for _ in 0..count {
            pipe.cmd("XADD").arg("sp:presence-changes").arg("MAXLEN").arg("~").arg(1000).arg("*").arg("u").arg("sip:nobody@example.org").arg("a").arg(1).ignore();
        }
        pipe.exec(conn).unwrap();
    };
    // The stopped node's pending read is answered with a filler; bob's change comes after
    // it and is trimmed away by 3,000 more before the node reads on.
    filler(&mut conn, 1);
    let mut p = Peer::udp(nodes[1].udp).await;
    etag(&publish(&mut p, "p1", "Expires: 600\r\n", &open_pidf("")).await);
    filler(&mut conn, 3000);
    signal("-CONT");
    let started = Instant::now();
    while !nodes[0].log().contains("changes trimmed before this node read them") {
        assert!(started.elapsed() < Duration::from_secs(5), "no reload: {}", nodes[0].log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    notified(&mut watcher, Duration::from_secs(3), "bob online after the reload", online).await;
}

#[tokio::test]
async fn concurrent_registers_of_one_aor_at_two_nodes_keep_every_contact() {
    let dir = tempfile::tempdir().unwrap();
    let (redis, nodes) = cluster(dir.path(), 2).await;
    let (mut watcher, _) = watch(&nodes[0], BOB, "w1").await;
    // 2 × 12 phones of bob (each its own address, so its own contact) register at once,
    // half at each node: no node's write may drop a contact another node wrote meanwhile.
    let mut phones = at_once(&nodes, 24, |i, addr| async move {
        let mut p = Peer::udp(addr).await;
        p.send(register_as("bob", p.local(), &format!("r{i}"), 600).as_bytes()).await;
        let ok = p.response(&mut Vec::new()).await;
        assert_eq!(ok.status(), Some(200), "{}", ok.head);
        p
    })
    .await;
    notified(&mut watcher, Duration::from_secs(2), "bob online", online).await;
    let mut last = Peer::udp(nodes[0].udp).await;
    last.send(register_as("bob", last.local(), "r-last", 600).as_bytes()).await;
    let all = last.response(&mut Vec::new()).await;
    let listed = all.headers("Contact");
    for p in &phones {
        let contact = format!("<sip:bob@{}>", p.local());
        assert!(listed.iter().any(|c| c.starts_with(&contact)), "{contact} was lost to a concurrent REGISTER: {}", all.head);
    }
    assert_eq!(listed.len(), phones.len() + 1, "{}", all.head);
    // Each removed at the other node: the last removal ends the one publication the
    // registration kept (a publication orphaned by a lost entity-tag would keep bob online).
    phones.push(last);
    for (i, p) in phones.iter().enumerate() {
        let mut at = Peer::udp(nodes[(i + 1) % 2].udp).await;
        let removal = register_as("bob", p.local(), &format!("u{i}"), 0);
        at.send(removal.as_bytes()).await;
        let left = at.response(&mut Vec::new()).await;
        assert_eq!(left.status(), Some(200), "{}", left.head);
    }
    assert_eq!(redis.query(&["EXISTS", "sp:registration:sip:bob@example.org"]).as_deref(), Some("0"), "no contact left");
    notified(&mut watcher, Duration::from_secs(3), "bob offline once every contact is removed", offline).await;
}
