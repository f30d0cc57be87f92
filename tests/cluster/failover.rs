//! Failover (issue 14): three nodes on a real Redis behind a real Kamailio dispatcher
//! (`examples/cluster/kamailio.cfg`). A list subscriber through the dispatcher gets its
//! full state; `kill -9` of its node brings `terminated;reason=deactivated` from a survivor
//! within the lease time, through Kamailio; it re-subscribes through the dispatcher and a
//! live node serves it, later bindings included. A clean stop deactivates too. The admin
//! endpoint lists the nodes and their leases.

use crate::common::http::http;
use crate::common::peer::{Msg, Peer};
use crate::common::process::ServerProcess;
use crate::common::{list_subscribe, refresh, resource_list};
use crate::dispatcher::Dispatcher;
use crate::harness::{node, RedisServer};
use serde_json::Value;
use std::time::{Duration, Instant};

/// Short leases, so that a test waits seconds, not the default 6 s lease.
const LEASE_MS: u64 = 1500;
const BOB: &str = "+33612345678";
const CAROL: &str = "+33698765432";

struct Cluster {
    _dir: tempfile::TempDir,
    redis: RedisServer,
    nodes: Vec<ServerProcess>,
    lb: Dispatcher,
}

impl Cluster {
    /// Redis, three nodes (bob bound on each: cross-node bindings are not this test's),
    /// Kamailio in front.
    /// With `takeover = "deactivate"` (the RFC 6665 way; the default is "adopt").
    async fn start() -> Cluster {
        Cluster::start_with(LEASE_MS, "takeover = \"deactivate\"").await
    }

    /// The same with another lease and more `[cluster]` keys.
    async fn start_with(lease_ms: u64, extra: &str) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let redis = RedisServer::start(&dir.path().join("redis"), &[]);
        let mut nodes = Vec::new();
        for name in ["n1", "n2", "n3"] {
            let mut n = node(dir.path(), name, &redis.url(), &format!("lease_ms = {lease_ms}\n{extra}"));
            n.start().await;
            n.bind(BOB, "sip:bob@example.org").await;
            nodes.push(n);
        }
        let udp: Vec<_> = nodes.iter().map(|n| n.udp).collect();
        let lb = Dispatcher::start(&dir.path().join("kamailio"), &udp).await;
        Cluster { _dir: dir, redis, nodes, lb }
    }

    /// The node a response or NOTIFY came from, by its Contact's port.
    fn owner(&self, msg: &Msg) -> usize {
        let contact = msg.header("Contact").expect("a Contact");
        self.nodes.iter().position(|n| contact.contains(&format!(":{}", n.udp.port()))).unwrap_or_else(|| panic!("Contact {contact} is no node's"))
    }

    /// What the nodes and Kamailio logged, for a failure's message.
    fn logs(&self) -> String {
        let nodes: Vec<String> = self.nodes.iter().enumerate().map(|(i, n)| format!("--- n{} ---\n{}", i + 1, n.log())).collect();
        format!("{}\n--- kamailio ---\n{}", nodes.join("\n"), self.lb.log())
    }

    /// `GET /cluster/nodes` of node `i`.
    async fn listing(&self, i: usize) -> Value {
        let r = http(self.nodes[i].admin, "GET", "/cluster/nodes", &[], "").await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()
    }
}

/// Alice's list (bob, a user; carol, not yet), subscribed through the dispatcher; returns
/// the 200 and the first NOTIFY.
async fn subscribe(peer: &mut Peer, branch: &str) -> (Msg, Msg) {
    let entries = [format!("sip:{BOB}@example.org;user=phone"), format!("sip:{CAROL}@example.org;user=phone")];
    let req = list_subscribe("UDP", peer.local(), branch, "Expires: 600\r\n", &resource_list(&entries));
    peer.send(req.as_bytes()).await;
    let (ok, first) = peer.accepted().await;
    assert_eq!(ok.status(), Some(200), "{}", ok.start_line());
    let first = first.expect("the first NOTIFY");
    assert!(first.body().contains("sip:bob@example.org") && first.body().contains("fullState=\"true\""), "{}", first.body());
    assert!(ok.header("Record-Route").is_some(), "the dispatcher record-routes");
    (ok, first)
}

/// The next NOTIFY that ends the subscription, within `wait` (earlier ones answered 200).
async fn terminated(c: &Cluster, peer: &mut Peer, wait: Duration) -> Msg {
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let m = peer.recv_within(left).await.unwrap_or_else(|| panic!("no terminated NOTIFY within {wait:?}\n{}", c.logs()));
        if !m.is_request("NOTIFY") {
            continue;
        }
        peer.send(&m.response(200, "OK")).await;
        if m.header("Subscription-State").is_some_and(|s| s.starts_with("terminated")) {
            return m;
        }
    }
}

/// A subscriber through the dispatcher (dialog `branch`): the 200, the first NOTIFY, the
/// index of the node that owns it; after `settle`, for its record to be written (Redis
/// every 100 ms, sled on disk every 500 ms).
async fn subscribed(c: &Cluster, branch: &str, settle: Duration) -> (Peer, Msg, Msg, usize) {
    let mut peer = Peer::udp(c.lb.addr).await;
    let (ok, first) = subscribe(&mut peer, branch).await;
    let owner = c.owner(&ok);
    tokio::time::sleep(settle).await;
    (peer, ok, first, owner)
}

fn cseq(m: &Msg) -> u32 {
    m.header("CSeq").and_then(|c| c.split_whitespace().next()).and_then(|n| n.parse().ok()).expect("a CSeq")
}

#[tokio::test]
async fn a_killed_nodes_subscriber_is_deactivated_by_a_survivor_and_resubscribes_through_the_dispatcher() {
    let mut c = Cluster::start().await;
    let (mut alice, _, first, owner) = subscribed(&c, "fo1", Duration::from_millis(500)).await;

    let killed = Instant::now();
    c.nodes[owner].kill9();
    let end = terminated(&c, &mut alice, Duration::from_millis(LEASE_MS) + Duration::from_secs(6)).await;
    let took = killed.elapsed();
    assert_eq!(end.header("Subscription-State"), Some("terminated;reason=deactivated"));
    assert_eq!(end.header("Call-ID"), first.header("Call-ID"), "the same dialog");
    assert_eq!(end.tag("From"), first.tag("From"), "our tag of that dialog");
    assert!(cseq(&end) > cseq(&first), "a CSeq above the dead node's: {} after {}", cseq(&end), cseq(&first));
    assert_ne!(c.owner(&end), owner, "sent by a survivor");
    eprintln!("deactivated NOTIFY {took:?} after kill -9 (lease {LEASE_MS} ms)");

    // alice re-subscribes at once, through the dispatcher, to a live node.
    let (ok, _) = subscribe(&mut alice, "fo2").await;
    let now = c.owner(&ok);
    assert_ne!(now, owner, "a live node");
    // A later binding (made on every live node: cross-node bindings are another test's).
    for (i, n) in c.nodes.iter().enumerate() {
        if i != owner {
            n.bind(CAROL, "sip:carol@example.org").await;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let m = alice.recv_within(deadline.saturating_duration_since(Instant::now())).await.expect("carol's binding reaches alice");
        if m.is_request("NOTIFY") {
            alice.send(&m.response(200, "OK")).await;
            if m.body().contains("sip:carol@example.org") {
                break;
            }
        }
    }

    // The dead node leaves the list once taken over.
    let survivor = (owner + 1) % 3;
    let listing = c.listing(survivor).await;
    let names: Vec<&str> = listing["nodes"].as_array().unwrap().iter().map(|n| n["name"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 2, "{listing}");
    assert!(c.nodes[survivor].log().contains("taken over") || c.nodes[3 - owner - survivor].log().contains("taken over"));
}

#[tokio::test]
async fn a_clean_stop_deactivates_the_nodes_subscribers_and_leaves_the_list() {
    let mut c = Cluster::start().await;
    let mut alice = Peer::udp(c.lb.addr).await;
    let (ok, first) = subscribe(&mut alice, "st1").await;
    let owner = c.owner(&ok);
    // SIGTERM now; `stop` (which sends it again, ignored while stopping) waits for the exit.
    let pid = c.nodes[owner].pid().unwrap().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let end = terminated(&c, &mut alice, Duration::from_secs(5)).await;
    c.nodes[owner].stop();
    assert_eq!(end.header("Subscription-State"), Some("terminated;reason=deactivated"));
    assert_eq!(end.header("Call-ID"), first.header("Call-ID"));
    assert_eq!(c.owner(&end), owner, "the stopping node tells its own subscribers");
    let other = (owner + 1) % 3;
    let listing = c.listing(other).await;
    let names: Vec<&str> = listing["nodes"].as_array().unwrap().iter().map(|n| n["name"].as_str().unwrap()).collect();
    assert!(!names.contains(&["n1", "n2", "n3"][owner]), "a clean stop leaves the list: {listing}");
    let (ok, _) = subscribe(&mut alice, "st2").await;
    assert_ne!(c.owner(&ok), owner);
}

/// alice's re-SUBSCRIBE of the dialog `branch` opened, through the dispatcher (`route`, the
/// 200's Record-Route) to `contact` (a node's Contact).
fn resubscribe(peer: &Peer, branch: &str, tag: &str, cseq: u32, route: &str, contact: &str) -> String {
    refresh("UDP", peer.local(), branch, tag, cseq)
        .replacen("SUBSCRIBE sip:rls@example.org", &format!("SUBSCRIBE {}", contact.trim_matches(['<', '>'])), 1)
        .replacen("Max-Forwards: 70\r\n", &format!("Max-Forwards: 70\r\nRoute: {route}\r\n"), 1)
}

/// The next response, NOTIFYs before it answered 200.
async fn answer_to(peer: &mut Peer) -> Msg {
    peer.response(&mut Vec::new()).await
}

/// `takeover = "adopt"`: a survivor goes on with a killed node's subscription in the same
/// dialog (a full state from a CSeq and version above the dead node's, its own Contact);
/// a re-SUBSCRIBE to the survivor is its own; one still sent to the dead node is answered
/// 481 by the dispatcher (so the phone re-subscribes in a new dialog). A clean stop of the
/// survivor then leaves it to the last node, which adopts it in turn.
#[tokio::test]
async fn an_adopting_survivor_goes_on_with_the_dialog_and_the_dispatcher_answers_481_for_the_dead() {
    let mut c = Cluster::start_with(LEASE_MS, "takeover = \"adopt\"").await;
    let (mut alice, ok, first, owner) = subscribed(&c, "ad1", Duration::from_millis(500)).await;
    let (tag, route, dead_contact) = (ok.tag("To").unwrap(), ok.header("Record-Route").unwrap().to_string(), ok.header("Contact").unwrap().to_string());
    c.nodes[owner].kill9();
    let adopted = alice.recv_within(Duration::from_millis(LEASE_MS) + Duration::from_secs(6)).await.expect("a NOTIFY from a survivor");
    alice.send(&adopted.response(200, "OK")).await;
    assert!(adopted.is_request("NOTIFY"), "{}", adopted.start_line());
    assert!(adopted.header("Subscription-State").unwrap().starts_with("active"), "{:?}", adopted.header("Subscription-State"));
    assert_eq!(adopted.header("Call-ID"), first.header("Call-ID"));
    assert_eq!(adopted.tag("From").as_deref(), Some(tag.as_str()));
    assert!(cseq(&adopted) > cseq(&first));
    assert!(adopted.body().contains("fullState=\"true\"") && adopted.body().contains("sip:bob@example.org"), "{}", adopted.body());
    let survivor = c.owner(&adopted);
    assert_ne!(survivor, owner);

    let to_survivor = resubscribe(&alice, "ad1", &tag, 2, &route, adopted.header("Contact").unwrap());
    alice.send(to_survivor.as_bytes()).await;
    assert_eq!(answer_to(&mut alice).await.status(), Some(200), "the survivor holds the dialog");

    let to_dead = resubscribe(&alice, "ad1", &tag, 3, &route, &dead_contact);
    alice.send(to_dead.as_bytes()).await;
    let started = Instant::now();
    let gone = answer_to(&mut alice).await;
    assert_eq!(gone.status(), Some(481), "{}", gone.start_line());
    eprintln!("481 for the dead owner after {:?}", started.elapsed());

    // A clean stop of the survivor leaves the subscription to the last node, which adopts it.
    c.nodes[survivor].stop();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = alice.notify(200).await;
    while c.owner(&last) == survivor {
        assert!(Instant::now() < deadline, "no NOTIFY from the last node");
        last = alice.notify(200).await;
    }
    assert!(last.header("Subscription-State").unwrap().starts_with("active"), "{:?}", last.header("Subscription-State"));
    assert_eq!(last.header("Call-ID"), first.header("Call-ID"), "the same dialog still");
    assert!(cseq(&last) > cseq(&adopted));
    assert_eq!(c.owner(&last), 3 - owner - survivor);
}

/// A node restarted under its name after a survivor took it over resumes none of the
/// subscriptions it had stored (their phones were told to move); one restarted within its
/// lease resumes them, and no survivor steps in.
#[tokio::test]
async fn a_node_restarted_after_its_takeover_resumes_nothing_and_one_back_within_its_lease_resumes_all() {
    let mut c = Cluster::start().await;
    // On disk too, so that a resume would find it.
    let (mut alice, _, _, owner) = subscribed(&c, "rs1", Duration::from_millis(1500)).await;
    c.nodes[owner].kill9();
    terminated(&c, &mut alice, Duration::from_millis(LEASE_MS) + Duration::from_secs(6)).await;
    c.nodes[owner].start().await;
    assert!(alice.recv_within(Duration::from_secs(2)).await.is_none(), "nothing from the restarted node");
    assert!(!c.nodes[owner].log().contains("stored subscriptions loaded"), "{}", c.nodes[owner].log());

    let mut c = Cluster::start_with(8000, "takeover = \"deactivate\"").await;
    let (mut bob, _, first, owner) = subscribed(&c, "rs2", Duration::from_millis(500)).await;
    c.nodes[owner].kill9();
    c.nodes[owner].start().await;
    let resumed = bob.notify(200).await;
    assert_eq!(resumed.header("Call-ID"), first.header("Call-ID"));
    assert!(resumed.header("Subscription-State").unwrap().starts_with("active"));
    assert_eq!(c.owner(&resumed), owner, "resumed by its own node");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(c.nodes.iter().all(|n| !n.log().contains("taking its subscribers over")), "no takeover of a node back within its lease");
}

/// Redis down past every lease, then back: the nodes keep their subscribers (nothing is
/// deactivated), the node list answers 503 meanwhile, and once Redis is back no node takes
/// a live one over (each waits a lease before looking); the records written meanwhile
/// reach it.
#[tokio::test]
async fn redis_down_past_the_leases_takes_no_live_node_over() {
    let mut c = Cluster::start().await;
    let mut alice = Peer::udp(c.lb.addr).await;
    subscribe(&mut alice, "rd1").await;
    c.redis.kill9();
    // A subscription made while Redis is down is served, and its record follows later.
    let mut bob = Peer::udp(c.lb.addr).await;
    subscribe(&mut bob, "rd2").await;
    tokio::time::sleep(Duration::from_millis(LEASE_MS * 2)).await;
    let r = http(c.nodes[0].admin, "GET", "/cluster/nodes", &[], "").await;
    assert_eq!(r.status, 503, "{}", r.body);
    c.redis.restart(&[]);
    assert!(alice.recv_within(Duration::from_millis(LEASE_MS * 3)).await.is_none(), "no NOTIFY: nobody was taken over");
    assert!(c.nodes.iter().all(|n| !n.log().contains("taking its subscribers over")));
    let listing = c.listing(0).await;
    assert_eq!(listing["nodes"].as_array().unwrap().iter().filter(|n| n["alive"] == true).count(), 3, "{listing}");
    let held: u32 = ["n1", "n2", "n3"].iter().map(|n| c.redis.query(&["HLEN", &format!("sp:subs:{n}")]).and_then(|v| v.parse().ok()).unwrap_or(0)).sum();
    assert_eq!(held, 2, "both records in Redis, the one made while it was down included");
}

/// Right after a node dies, before the dispatcher's probes have taken it out, new
/// SUBSCRIBEs still land on live nodes: one hashed to the dead node times out there and
/// goes to the next.
#[tokio::test]
async fn new_subscriptions_fail_over_to_a_live_node_while_the_dead_one_is_still_listed() {
    let mut c = Cluster::start().await;
    c.nodes[0].kill9();
    let started = Instant::now();
    let mut peers = Vec::new();
    for i in 0..6 {
        let mut peer = Peer::udp(c.lb.addr).await;
        let entries = [format!("sip:{BOB}@example.org;user=phone")];
        peer.send(list_subscribe("UDP", peer.local(), &format!("fo-new{i}"), "Expires: 600\r\n", &resource_list(&entries)).as_bytes()).await;
        peers.push(peer);
    }
    for peer in &mut peers {
        let (ok, first) = peer.accepted().await;
        assert_eq!(ok.status(), Some(200), "{}", ok.start_line());
        assert_ne!(c.owner(&ok), 0, "a live node");
        assert!(first.is_some_and(|n| n.body().contains("sip:bob@example.org")));
    }
    eprintln!("6 new subscriptions served {:?} after a node died", started.elapsed());
}

#[tokio::test]
async fn the_admin_endpoint_lists_the_nodes_and_their_leases() {
    let c = Cluster::start().await;
    let mut alice = Peer::udp(c.lb.addr).await;
    let (ok, _) = subscribe(&mut alice, "ls1").await;
    let owner = c.owner(&ok);
    // Counts are those of the last renewal (every third of the lease).
    tokio::time::sleep(Duration::from_millis(LEASE_MS)).await;
    let listing = c.listing(0).await;
    assert_eq!(listing["node"], "n1");
    assert_eq!(listing["lease_ms"], LEASE_MS);
    let nodes = listing["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3, "{listing}");
    for (i, n) in nodes.iter().enumerate() {
        assert_eq!(n["name"], ["n1", "n2", "n3"][i]);
        assert_eq!(n["alive"], true);
        let left = n["lease_left_ms"].as_u64().unwrap();
        assert!(left > 0 && left <= LEASE_MS, "{n}");
        assert_eq!(n["sip"][0], format!("udp:{}", c.nodes[i].udp), "{n}");
        assert_eq!(n["admin"], c.nodes[i].admin.to_string());
        assert_eq!(n["subscriptions"], u64::from(i == owner), "{n}");
        assert_eq!(n["entries"], if i == owner { 2 } else { 0 }, "{n}");
    }

    // Outside cluster mode: 404, saying why.
    let dir = tempfile::tempdir().unwrap();
    let mut single = ServerProcess::new(dir.path(), "");
    single.start().await;
    let r = http(single.admin, "GET", "/cluster/nodes", &[], "").await;
    assert_eq!(r.status, 404);
    assert!(r.error().contains("not in cluster mode"), "{}", r.body);
}

/// The real liblinphone 5.1 client subscribes through the dispatcher; the node that holds
/// its subscription is killed. liblinphone 5.1's lists do not re-subscribe on
/// `deactivated` (its friend list ignores the terminated state), so this cluster runs with
/// `takeover = "adopt"`: a survivor goes on with the subscription in the same dialog, and
/// the client keeps seeing the right users: bob throughout, carol once bound after the death.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liblinphone_keeps_seeing_the_right_users_across_the_death_of_its_node() {
    let mut c = Cluster::start_with(LEASE_MS, "takeover = \"adopt\"").await;
    let t0 = Instant::now();
    let args = ["--register", "no", "--identity", "sip:alice@example.org"].map(String::from).to_vec();
    let client = crate::common::linphone::spawn_client_with(c.lb.addr, "udp", args, vec!["0612345678".into(), "0698765432".into()], 16, t0);
    let owner = held_by(&c, Duration::from_secs(8)).await;
    // Its record reaches Redis with the next write-behind batch (100 ms).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let killed_at = t0.elapsed().as_millis();
    c.nodes[owner].kill9();
    // A survivor holds it now.
    let now = loop {
        let live = (0..3).filter(|i| *i != owner).find(|i| subscribed_on(&c, *i));
        if let Some(i) = live {
            break i;
        }
        assert!(t0.elapsed().as_millis() < killed_at + 8000, "no live node took the client's subscription over");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let bound_at = t0.elapsed().as_millis();
    for (i, n) in c.nodes.iter().enumerate() {
        if i != owner {
            n.bind(CAROL, "sip:carol@example.org").await;
        }
    }
    let lines = client.await.unwrap();
    let final_of = |number: &str| lines.iter().find_map(|(_, l)| l.strip_prefix(&format!("FINAL {number} ")).map(str::to_string));
    assert_eq!(final_of("0612345678").as_deref(), Some("USER sip:bob@example.org"), "{lines:?}");
    assert_eq!(final_of("0698765432").as_deref(), Some("USER sip:carol@example.org"), "{lines:?}");
    let carol = lines.iter().find(|(_, l)| l.starts_with("PRESENCE 0698765432 open sip:carol@example.org ")).map(|(at, _)| *at).expect("carol seen");
    assert!(carol >= bound_at, "carol seen at {carol} ms, bound at {bound_at} ms");
    eprintln!("liblinphone: node {now} took it after node {owner} died at {killed_at} ms; carol bound at {bound_at} ms, seen at {carol} ms");
}

/// The node holding the one subscription, as its lease counts it.
async fn held_by(c: &Cluster, within: Duration) -> usize {
    let started = Instant::now();
    loop {
        let listing = c.listing(0).await;
        let nodes = listing["nodes"].as_array().unwrap();
        if let Some(i) = nodes.iter().position(|n| n["subscriptions"] == 1) {
            return i;
        }
        assert!(started.elapsed() < within, "no node holds the client's subscription: {listing}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Whether node `i` counts a subscription in its lease.
fn subscribed_on(c: &Cluster, i: usize) -> bool {
    let key = format!("sp:lease:{}", ["n1", "n2", "n3"][i]);
    c.redis.query(&["GET", &key]).is_some_and(|v| v.contains("\"subscriptions\":1"))
}
