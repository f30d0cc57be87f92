//! Issue 14: the state that is neither bindings, presence nor subscriptions is shared by
//! the nodes through one real Redis, and atomic across them: a discovery budget spent on
//! one node is spent on all; the SMS limit per number counts the sends of every node; a
//! code sent by one node verifies at another; an account made through one node
//! authenticates at another; a digest nonce issued by one node is accepted once by any and
//! refused on replay at all; an address book uploaded at one is served at another. With
//! Redis gone, writes answer 503 (with JSON and Retry-After), at once, and what needs no
//! Redis is still served.

use crate::common::http::{http, post_json, Reply};
use crate::common::peer::Peer;
use crate::common::process::ServerProcess;
use crate::common::{free_port, list_subscribe, resource_list, UdpClient};
use crate::harness::{node, RedisServer};
use serde_json::{json, Value};
use smart_presence::auth::digest::answer;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

/// A node with its provisioning API (log SMS gateway, no resend delay, five SMS per number).
struct ApiNode {
    node: ServerProcess,
    api: SocketAddr,
}

async fn api_node(dir: &Path, name: &str, redis: &RedisServer, sections: &str) -> ApiNode {
    let api = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let extra = format!(
        "\n[provisioning]\nlisten = \"{api}\"\nresend_after_secs = 0\nmax_sends = 100\nmax_sends_per_number = 5\n{sections}"
    );
    let mut node = node(dir, name, &redis.url(), &extra);
    node.start().await;
    ApiNode { node, api }
}

impl ApiNode {
    /// The codes this node's log gateway sent to `number`, oldest first.
    fn codes_sent(&self, number: &str) -> Vec<String> {
        let log = std::fs::read_to_string(self.node.dir.join("data/sms.log")).unwrap_or_default();
        log.lines()
            .filter(|l| l.contains(number))
            .map(|l| serde_json::from_str::<Value>(l).unwrap()["text"].as_str().unwrap().rsplit(' ').next().unwrap().to_string())
            .collect()
    }
}

async fn ask_code(api: SocketAddr, number: &str, device: &str) -> Reply {
    post_json(api, "/v1/verifications", None, &json!({"number": number, "device_id": device})).await
}

async fn check_code(api: SocketAddr, number: &str, device: &str, code: &str) -> Reply {
    post_json(api, "/v1/verifications/check", None, &json!({"number": number, "device_id": device, "code": code})).await
}

/// The SHA-256 digest challenge of a 401 from `api`.
async fn challenge(api: SocketAddr) -> String {
    let r = http(api, "GET", "/v1/account", &[], "").await;
    assert_eq!(r.status, 401);
    r.headers("WWW-Authenticate").into_iter().find(|c| c.starts_with("Digest") && c.contains("SHA-256")).expect("a digest challenge").to_string()
}

async fn account_with(api: SocketAddr, authorization: &str) -> Reply {
    http(api, "GET", "/v1/account", &[("Authorization", authorization)], "").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discovery_budget_spent_on_one_node_is_spent_on_all() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(&dir.path().join("redis"), &[]);
    let mut a = node(dir.path(), "a", &redis.url(), "\n[budget]\nburst = 3\n");
    let mut b = node(dir.path(), "b", &redis.url(), "\n[budget]\nburst = 3\n");
    a.start().await;
    b.start().await;
    let numbers: Vec<String> = (0..6).map(|i| format!("+3361234560{i}")).collect();
    for n in &numbers {
        a.bind(n, &format!("sip:u{}@example.org", &n[10..])).await;
        b.bind(n, &format!("sip:u{}@example.org", &n[10..])).await;
    }
    let uris = |ns: &[String]| ns.iter().map(|n| format!("sip:{n}@example.org;user=phone")).collect::<Vec<_>>();

    // Three new numbers at A spend alice's whole budget (burst 3)...
    assert_eq!(users_seen(a.tcp, "a1", &uris(&numbers[..3])).await, 3);
    // ...so at B three other numbers are over it, and the first three, already charged, are free.
    assert_eq!(users_seen(b.tcp, "b1", &uris(&numbers[3..])).await, 0, "the budget spent at A is spent at B");
    assert_eq!(users_seen(b.tcp, "b2", &uris(&numbers[..3])).await, 3, "numbers charged at A are known at B");
    let status = http(b.admin, "GET", "/budget/sip:alice@example.org", &[], "").await;
    assert_eq!((status.status, status.json()["tokens"].clone(), status.json()["remembered"].clone()), (200, json!(0), json!(3)), "{}", status.body);

    // Reset at B: a full budget again, which six fetches at once, alternating between the
    // nodes, each of one number, spend exactly: three numbers revealed, not three per node.
    assert_eq!(http(b.admin, "DELETE", "/budget/sip:alice@example.org", &[], "").await.status, 204);
    let fetches: Vec<_> = numbers
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let (server, list) = (if i % 2 == 0 { a.tcp } else { b.tcp }, uris(std::slice::from_ref(n)));
            tokio::spawn(async move { users_seen(server, &format!("c{i}"), &list).await })
        })
        .collect();
    let mut revealed = 0;
    for f in fetches {
        revealed += f.await.unwrap();
    }
    assert_eq!(revealed, 3, "concurrent charges at two nodes spend one budget");
}

/// Users reported by the NOTIFYs of one fetch (`Expires: 0`) of `uris` by alice at `server`.
async fn users_seen(server: SocketAddr, branch: &str, uris: &[String]) -> usize {
    let mut p = Peer::tcp(server).await;
    let request = list_subscribe("TCP", p.local(), branch, "Expires: 0\r\n", &resource_list(uris));
    p.users_seen(request.as_bytes()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codes_limits_accounts_nonces_and_books_are_shared() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(&dir.path().join("redis"), &[]);
    let a = api_node(dir.path(), "a", &redis, "").await;
    let b = api_node(dir.path(), "b", &redis, "").await;
    const N: &str = "+33612345678";

    // Five SMS per number in the cluster: requests alternate between the nodes (other devices,
    // so only the per-number cap applies); the sixth is refused by either.
    for i in 0..5 {
        let api = if i % 2 == 0 { a.api } else { b.api };
        let r = ask_code(api, N, &format!("dev{i}")).await;
        assert_eq!(r.status, 202, "send {i}: {}", r.body);
    }
    for api in [a.api, b.api] {
        let sixth = ask_code(api, N, "dev9").await;
        assert_eq!((sixth.status, sixth.error()), (429, "too_many_sms".to_string()), "{}", sixth.body);
    }
    assert_eq!(a.codes_sent(N).len() + b.codes_sent(N).len(), 5, "five SMS left the cluster");

    // The same at once: twelve requests for another number, in parallel at both nodes.
    const M: &str = "+33698765431";
    let asks: Vec<_> = (0..12)
        .map(|i| {
            let api = if i % 2 == 0 { a.api } else { b.api };
            tokio::spawn(async move { ask_code(api, M, &format!("dev{i}")).await.status })
        })
        .collect();
    let mut statuses = Vec::new();
    for ask in asks {
        statuses.push(ask.await.unwrap());
    }
    statuses.sort();
    assert_eq!(statuses, [[202; 5].as_slice(), &[429; 7]].concat(), "five in the cluster, not per node");
    assert_eq!(a.codes_sent(M).len() + b.codes_sent(M).len(), 5);

    // The code A sent to dev0 verifies at B: the account is made through B.
    let code = a.codes_sent(N)[0].clone();
    let made = check_code(b.api, N, "dev0", &code).await;
    assert_eq!(made.status, 200, "{}", made.body);
    let (user, password, token) = (made.json()["account"]["username"].as_str().unwrap().to_string(), made.json()["password"].as_str().unwrap().to_string(), made.json()["token"].as_str().unwrap().to_string());
    assert_eq!(check_code(a.api, N, "dev0", &code).await.error(), "no_verification", "a code is used once in the cluster");

    // ...and authenticates at A, with its token and with digest.
    let bearer = format!("Bearer {token}");
    let at_a = account_with(a.api, &bearer).await;
    assert_eq!((at_a.status, at_a.json()["username"].as_str()), (200, Some(user.as_str())), "{}", at_a.body);

    // A nonce from A's challenge: accepted once by B, its count refused on replay at both.
    let offer = challenge(a.api).await;
    let first = answer(&offer, &user, &password, "GET", "/v1/account", 1);
    assert_eq!(account_with(b.api, &first).await.status, 200, "A's nonce at B");
    assert_eq!(account_with(b.api, &first).await.status, 401, "replayed at B");
    assert_eq!(account_with(a.api, &first).await.status, 401, "replayed at A");
    let second = answer(&offer, &user, &password, "GET", "/v1/account", 2);
    assert_eq!(account_with(a.api, &second).await.status, 200, "the next count, at A");

    // An address book uploaded at A is served at B.
    let json_auth = [("Authorization", bearer.as_str()), ("Content-Type", "application/json")];
    let up = http(a.api, "PUT", "/v1/contacts", &json_auth, r#"{"contacts":[{"number":"+33698765432","name":"Bob"}]}"#).await;
    assert_eq!(up.status, 200, "{}", up.body);
    let got = http(b.api, "GET", "/v1/contacts", &json_auth[..1], "").await;
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!((got.json()["version"].clone(), got.json()["contacts"][0]["number"].clone()), (up.json()["version"].clone(), json!("+33698765432")), "{}", got.body);

    // An account added with the CLI on A's config, nodes running, is in the cluster's store:
    // it authenticates at B; its name and number are taken for every node.
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_smart-presence")).args(["accounts", "--config"]).arg(a.node.config_path()).args(args).output().unwrap();
        (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    };
    let added = cli(&["add", "carol", "secret", "+33611112222"]);
    assert!(added.0, "{}", added.1);
    assert_eq!(account_with(b.api, &crate::common::http::basic("carol", "secret")).await.status, 200);
    let (ok, text) = cli(&["add", "carol", "other"]);
    assert!(!ok && text.contains("taken"), "{text}");
    let (ok, text) = cli(&["add", "dave", "x", "+33611112222"]);
    assert!(!ok && text.contains("carol"), "{text}");
    assert!(cli(&["list"]).1.contains("sip:carol@example.org\t+33611112222"));

    // Its settings too: "share my status" set at B is read at A.
    let off = http(b.api, "PUT", "/v1/account/settings", &[json_auth[0], json_auth[1]], r#"{"share_status":false}"#).await;
    assert_eq!(off.status, 200, "{}", off.body);
    let read = http(a.node.admin, "GET", &format!("/accounts/{user}/settings"), &[], "").await;
    assert_eq!(read.json()["share_status"], json!(false), "{}", read.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_gone_writes_answer_503_and_what_needs_no_redis_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let mut redis = RedisServer::start(&dir.path().join("redis"), &[]);
    let a = api_node(dir.path(), "a", &redis, "").await;
    a.node.bind("+33611111111", "sip:carol@example.org").await;
    assert_eq!(ask_code(a.api, "+33612345678", "d").await.status, 202);
    let code = a.codes_sent("+33612345678")[0].clone();
    let made = check_code(a.api, "+33612345678", "d", &code).await;
    let bearer = format!("Bearer {}", made.json()["token"].as_str().unwrap());
    redis.kill9();

    for _ in 0..2 {
        let started = Instant::now();
        let r = ask_code(a.api, "+33698765432", "d").await;
        assert_eq!((r.status, r.error()), (503, "unavailable".to_string()), "{}", r.body);
        assert!(r.header("Retry-After").is_some(), "{:?}", r.headers);
        assert!(started.elapsed() < Duration::from_secs(4), "answered at once, not after a hang: {:?}", started.elapsed());
    }
    let up = http(a.api, "PUT", "/v1/contacts", &[("Authorization", &bearer), ("Content-Type", "application/json")], r#"{"contacts":[]}"#).await;
    assert_eq!((up.status, up.error()), (503, "unavailable".to_string()), "{}", up.body);
    let budget = http(a.node.admin, "DELETE", "/budget/sip:alice@example.org", &[], "").await;
    assert_eq!(budget.status, 503, "{}", budget.body);
    assert!(budget.json()["error"].is_string(), "{}", budget.body);

    // What needs no Redis still answers: a new list subscription (its budget charged in the
    // node's memory meanwhile), SIP OPTIONS, a binding lookup, the health routes.
    assert_eq!(users_seen(a.node.tcp, "down1", &["sip:+33611111111@example.org;user=phone".to_string()]).await, 1);
    assert!(a.node.log().contains("charged in this node's memory"), "{}", a.node.log());
    let c = UdpClient::new(a.node.udp).await;
    c.send(crate::common::request("OPTIONS", "UDP", c.local(), "opt", "", "").as_bytes()).await;
    assert!(c.recv().await.starts_with("SIP/2.0 200"));
    assert_eq!(http(a.node.admin, "GET", "/bindings/+33611111111", &[], "").await.status, 200);
    assert_eq!(http(a.api, "GET", "/health", &[], "").await.status, 200);

    // Redis back: writes go through again.
    redis.restart(&[]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = ask_code(a.api, "+33698765432", "d").await;
        if r.status == 202 {
            break;
        }
        assert!(Instant::now() < deadline, "still {} after Redis came back: {}", r.status, r.body);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A one-shot list SUBSCRIBE by `user`, with `authorization` if given.
fn digest_subscribe(local: SocketAddr, user: &str, branch: &str, authorization: Option<&str>) -> String {
    let auth = authorization.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
    let list = resource_list(&["sip:+33698765432@example.org;user=phone".to_string()]);
    list_subscribe("UDP", local, branch, &format!("{auth}Expires: 0\r\n"), &list).replace("sip:alice@", &format!("sip:{user}@"))
}

/// The status of the answer to `request` (NOTIFYs that come first are answered and dropped).
async fn sip_status(p: &mut Peer, request: &str) -> crate::common::peer::Msg {
    p.send(request.as_bytes()).await;
    p.response(&mut Vec::new()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sip_nonce_from_one_node_is_accepted_once_by_another_and_redis_gone_is_a_503() {
    let dir = tempfile::tempdir().unwrap();
    let mut redis = RedisServer::start(&dir.path().join("redis"), &[]);
    let mut nodes = Vec::new();
    for name in ["a", "b"] {
        let api = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut n = node(dir.path(), name, &redis.url(), &format!("\n[provisioning]\nlisten = \"{api}\"\n"));
        n.auth_mode = "digest";
        n.start().await;
        nodes.push((n, api));
    }
    let (a, b) = (&nodes[0], &nodes[1]);
    // The account is made through A's provisioning API.
    assert_eq!(ask_code(a.1, "+33612345678", "d").await.status, 202);
    let log = std::fs::read_to_string(a.0.dir.join("data/sms.log")).unwrap();
    let code = serde_json::from_str::<Value>(log.lines().last().unwrap()).unwrap()["text"].as_str().unwrap().rsplit(' ').next().unwrap().to_string();
    let made = check_code(a.1, "+33612345678", "d", &code).await;
    assert_eq!(made.status, 200, "{}", made.body);
    let (user, password) = (made.json()["account"]["username"].as_str().unwrap().to_string(), made.json()["password"].as_str().unwrap().to_string());

    let mut at_a = Peer::udp(a.0.udp).await;
    let mut at_b = Peer::udp(b.0.udp).await;
    let (local_a, local_b) = (at_a.local(), at_b.local());
    let challenge = sip_status(&mut at_a, &digest_subscribe(local_a, &user, "c1", None)).await;
    assert_eq!(challenge.status(), Some(401));
    let offer = challenge.headers("WWW-Authenticate").into_iter().find(|c| c.contains("SHA-256")).unwrap().to_string();
    let first = answer(&offer, &user, &password, "SUBSCRIBE", "sip:rls@example.org", 1);
    let ok = sip_status(&mut at_b, &digest_subscribe(local_b, &user, "b1", Some(&first))).await;
    assert_eq!(ok.status(), Some(200), "A's nonce at B: {}", ok.start_line());
    for (p, branch) in [(&mut at_b, "b2"), (&mut at_a, "a2")] {
        let local = p.local();
        let replay = sip_status(p, &digest_subscribe(local, &user, branch, Some(&first))).await;
        assert_eq!(replay.status(), Some(401), "a replayed count is refused at every node");
    }

    // Redis gone: a SUBSCRIBE that needs the accounts gets 503 with Retry-After, not 500.
    redis.kill9();
    let next = answer(&offer, &user, &password, "SUBSCRIBE", "sip:rls@example.org", 2);
    let down = sip_status(&mut at_a, &digest_subscribe(local_a, &user, "a3", Some(&next))).await;
    assert_eq!(down.status(), Some(503), "{}", down.start_line());
    assert!(down.header("Retry-After").is_some());
}
