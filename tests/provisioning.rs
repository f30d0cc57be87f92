//! Issue 6: the verification and provisioning web service, driven over real loopback sockets
//! with a hand-written HTTP/1.1 client; the HTTP SMS gateway is pointed at a local receiver
//! the test runs, and a SIP list subscriber (tests/common/peer.rs) watches a number.

mod common;

use common::peer::{Msg, Peer};
use common::http::*;
use common::*;
use serde_json::{json, Value};
use smart_presence::auth::digest::answer;
use smart_presence::config::{BodyEncoding, Config, GatewayKind};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const NUMBER: &str = "+33612345678";
const USERNAME: &str = "33612345678";

async fn ask_code(addr: SocketAddr, number: &str, device: &str) -> Reply {
    post_json(addr, "/v1/verifications", None, &json!({"number": number, "device_id": device})).await
}

async fn check_code(addr: SocketAddr, number: &str, device: &str, code: &str) -> Reply {
    post_json(addr, "/v1/verifications/check", None, &json!({"number": number, "device_id": device, "code": code})).await
}

// ---- servers and gateways ----------------------------------------------------------------

async fn server(tune: impl FnOnce(&mut Config)) -> (TestServer, SocketAddr) {
    let s = TestServer::start_with(|c| {
        c.provisioning.listen = Some("127.0.0.1:0".parse().unwrap());
        tune(c);
    })
    .await;
    let addr = s.server.provisioning_addr().expect("provisioning enabled");
    (s, addr)
}

/// The last code the log gateway wrote for `number`.
fn logged_code(s: &TestServer, number: &str) -> String {
    let log = std::fs::read_to_string(s.dir.path().join("sms.log")).expect("sms.log written");
    let line = log.lines().rfind(|l| l.contains(number)).expect("a message to the number");
    let v: Value = serde_json::from_str(line).unwrap();
    v["text"].as_str().unwrap().rsplit(' ').next().unwrap().to_string()
}

fn wrong(code: &str) -> String {
    if code == "0000" { "1111".into() } else { "0000".into() }
}

/// A request the local gateway receiver got.
struct Received {
    head: String,
    body: String,
}

/// An HTTP receiver on 127.0.0.1 that answers every request with `status` and reports it.
async fn gateway_receiver(status: u16) -> (SocketAddr, mpsc::UnboundedReceiver<Received>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let Some(received) = read_request(&mut conn).await else { return };
                let _ = tx.send(received);
                let answer = format!("HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}");
                let _ = conn.write_all(answer.as_bytes()).await;
            });
        }
    });
    (addr, rx)
}

/// Reads one request (head and Content-Length body; hyper writes header names in lowercase).
async fn read_request<S: tokio::io::AsyncRead + Unpin>(conn: &mut S) -> Option<Received> {
    let mut data = Vec::new();
    loop {
        if let Some(end) = find(&data, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).into_owned();
            let len = head
                .lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if data.len() >= end + 4 + len {
                let body = String::from_utf8_lossy(&data[end + 4..end + 4 + len]).into_owned();
                return Some(Received { head, body });
            }
        }
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(WAIT, conn.read(&mut buf)).await.ok()?.ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&buf[..n]);
    }
}

/// The same receiver over TLS, with a generated certificate for `localhost`; returns the
/// PEM file of that certificate too (the gateway's `ca_file`).
async fn tls_gateway_receiver(dir: &std::path::Path) -> (SocketAddr, std::path::PathBuf, mpsc::UnboundedReceiver<Received>) {
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_file = dir.join("gateway-cert.pem");
    std::fs::write(&cert_file, generated.cert.pem()).unwrap();
    let key_pem = generated.key_pair.serialize_pem();
    let certs = vec![generated.cert.der().clone()];
    let key = rustls_pemfile::private_key(&mut key_pem.as_bytes()).unwrap().unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            let (tx, acceptor) = (tx.clone(), acceptor.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(conn).await else { return };
                let Some(received) = read_request(&mut tls).await else { return };
                let _ = tx.send(received);
                let answer = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}";
                let _ = tls.write_all(answer.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (addr, cert_file, rx)
}

/// An HTTP/1.1 receiver that keeps connections open, answers 200 to every request, and
/// counts the connections it accepted.
async fn keepalive_gateway_receiver() -> (SocketAddr, mpsc::UnboundedReceiver<Received>, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = mpsc::unbounded_channel();
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let tx = tx.clone();
            tokio::spawn(async move {
                while let Some(received) = read_request(&mut conn).await {
                    let _ = tx.send(received);
                    let answer = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
                    if conn.write_all(answer.as_bytes()).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (addr, rx, accepted)
}

fn http_gateway(c: &mut Config, receiver: SocketAddr) {
    c.provisioning.sms.kind = GatewayKind::Http;
    c.provisioning.sms.url = format!("http://{receiver}/sms/json?ref={{ref}}");
    c.provisioning.sms.body_template = "api_key=k&api_secret=s&to={to}&from={from}&text={text}&client-ref={ref}".into();
    c.provisioning.sms.headers.insert("Content-Type".into(), "application/x-www-form-urlencoded".into());
    c.provisioning.sender = "Acme".into();
}

fn form(body: &str) -> std::collections::HashMap<String, String> {
    form_urlencoded::parse(body.as_bytes()).into_owned().collect()
}

// ---- SIP list subscriber -----------------------------------------------------------------

fn list_subscribe(local: SocketAddr, uris: &[&str]) -> String {
    let uris: Vec<String> = uris.iter().map(|u| u.to_string()).collect();
    common::list_subscribe("UDP", local, "prov1", "", &resource_list(&uris))
}

async fn watcher(s: &TestServer, number: &str) -> Peer {
    let mut p = Peer::udp(s.udp()).await;
    let local = p.local();
    p.send(list_subscribe(local, &[&format!("sip:{number}@example.org;user=phone")]).as_bytes()).await;
    let mut early: Vec<Msg> = Vec::new();
    assert_eq!(p.response(&mut early).await.status(), Some(200));
    if early.is_empty() {
        let first = p.notify(200).await;
        assert!(!first.body().contains("<instance "), "nobody is a user yet");
    }
    p
}

// ---- digest client -----------------------------------------------------------------------


// ---- tests -------------------------------------------------------------------------------

#[tokio::test]
async fn whole_workflow_over_the_http_gateway_notifies_a_watcher() {
    let (receiver, mut sms) = gateway_receiver(200).await;
    let (s, api) = server(|c| {
        http_gateway(c, receiver);
        c.provisioning.resend_after_secs = 0;
    })
    .await;
    let mut watcher = watcher(&s, NUMBER).await;

    // 1. A code goes out through the templated HTTP request.
    let r = ask_code(api, NUMBER, "phone-1").await;
    assert_eq!(r.status, 202, "{}", r.body);
    let started = r.json();
    assert_eq!(started["number"], NUMBER);
    assert_eq!(started["expires_in"], 600);
    assert_eq!(started["sends_left"], 4);
    let got = tokio::time::timeout(WAIT, sms.recv()).await.unwrap().unwrap();
    let reference = started["verification_id"].as_str().unwrap();
    assert!(got.head.starts_with(&format!("POST /sms/json?ref={reference} HTTP/1.1")), "{}", got.head);
    assert!(got.head.contains("content-type: application/x-www-form-urlencoded"), "{}", got.head.to_lowercase());
    let fields = form(&got.body);
    assert_eq!(fields["to"], USERNAME);
    assert_eq!(fields["from"], "Acme");
    assert_eq!(fields["client-ref"], reference);
    let text = &fields["text"];
    assert!(text.starts_with("Your smart-presence code is: "), "{text}");
    let code = text.rsplit(' ').next().unwrap().to_string();
    assert_eq!(code.len(), 4);
    assert!(code.chars().all(|c| c.is_ascii_digit()));

    // The gateway's delivery report is accepted for our reference only.
    let status_path = format!("/v1/verifications/status?number=%2B{USERNAME}&device_id=phone-1");
    assert_eq!(http(api, "GET", &status_path, &[], "").await.json()["delivery"], "submitted");
    let path = format!("/v1/delivery-status?ref={reference}&status=delivered");
    assert_eq!(http(api, "GET", &path, &[], "").await.status, 204);
    assert_eq!(http(api, "GET", &status_path, &[], "").await.json()["delivery"], "delivered");
    let unknown = http(api, "POST", "/v1/delivery-status", &[("Content-Type", "application/x-www-form-urlencoded")], "client-ref=nope&status=delivered").await;
    assert_eq!((unknown.status, unknown.error()), (404, "unknown_reference".into()));

    // 2. The code provisions the account.
    let r = check_code(api, NUMBER, "phone-1", &code).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let first = r.json();
    assert_eq!(first["created"], true);
    assert_eq!(first["account"]["username"], USERNAME);
    assert_eq!(first["account"]["sip_uri"], format!("sip:{USERNAME}@example.org"));
    assert_eq!(first["account"]["numbers"], json!([NUMBER]));
    let password = first["password"].as_str().unwrap().to_string();
    assert!(password.len() >= 16);
    let token = format!("Bearer {}", first["token"].as_str().unwrap());
    assert_eq!(check_code(api, NUMBER, "phone-1", &code).await.status, 404, "a code is used once");

    // Authenticated as the account: bearer, digest (both algorithms), basic on loopback.
    let me = http(api, "GET", "/v1/account", &[("Authorization", &token)], "").await;
    assert_eq!((me.status, me.json()["username"].clone()), (200, json!(USERNAME)));
    let challenge = http(api, "GET", "/v1/account", &[], "").await;
    assert_eq!(challenge.status, 401);
    let challenges = challenge.headers("WWW-Authenticate");
    assert!(challenges.iter().any(|c| c.starts_with("Bearer ")), "{challenges:?}");
    // Both offers share one nonce: each use counts up.
    for (i, name) in ["MD5", "SHA-256"].into_iter().enumerate() {
        let c = challenges.iter().find(|c| c.contains(&format!("algorithm={name}"))).unwrap();
        let authz = answer(c, USERNAME, &password, "GET", "/v1/account", i as u32 * 2 + 1);
        let r = http(api, "GET", "/v1/account", &[("Authorization", &authz)], "").await;
        assert_eq!(r.status, 200, "{name}: {}", r.body);
        let bad = answer(c, USERNAME, "wrong", "GET", "/v1/account", i as u32 * 2 + 2);
        assert_eq!(http(api, "GET", "/v1/account", &[("Authorization", &bad)], "").await.status, 401);
    }
    use base64::Engine;
    let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{USERNAME}:{password}")));
    assert_eq!(http(api, "GET", "/v1/account", &[("Authorization", &basic)], "").await.status, 200);

    // 3. The smart entry: a binding, and the watcher hears of it.
    let r = http(api, "POST", "/v1/smart-entry", &[("Authorization", &token)], "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["bindings"][0]["result"]["outcome"], "new");
    let live = watcher.notify(200).await;
    assert!(live.body().contains(&format!(">sip:{USERNAME}@example.org</contact>")), "{}", live.body());
    let other = post_json(api, "/v1/smart-entry", Some(&token), &json!({"numbers": ["+33698765432"]})).await;
    assert_eq!((other.status, other.error()), (403, "number_not_verified".into()));

    // 4. The address book: national numbers read in the account's region.
    let book = json!({"numbers": [NUMBER, "06 12 34 56 78", "+33698765432", "not a number"]});
    let r = post_json(api, "/v1/address-book", Some(&token), &book).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let contacts = r.json()["contacts"].clone();
    assert_eq!(contacts[0]["smart"], true);
    assert_eq!(contacts[0]["sip_uri"], format!("sip:{USERNAME}@example.org"));
    assert_eq!((contacts[1]["smart"].clone(), contacts[1]["e164"].clone()), (json!(true), json!(NUMBER)));
    assert_eq!(contacts[2]["smart"], false);
    assert_eq!(contacts[3]["smart"], false);
    assert!(contacts[3]["error"].is_string());

    // Provisioning again yields the same account, with new credentials.
    assert_eq!(ask_code(api, NUMBER, "phone-1").await.status, 202, "recovery is off: a code again");
    let again = tokio::time::timeout(WAIT, sms.recv()).await.unwrap().unwrap();
    let code = form(&again.body)["text"].rsplit(' ').next().unwrap().to_string();
    let second = check_code(api, NUMBER, "phone-1", &code).await.json();
    assert_eq!(second["created"], false);
    assert_eq!(second["account"], first["account"]);
    assert_ne!(second["password"], first["password"]);
    assert_eq!(http(api, "GET", "/v1/account", &[("Authorization", &token)], "").await.status, 401, "old token revoked");
    let account = s.server.accounts().by_number(NUMBER.parse().unwrap()).unwrap().unwrap();
    assert_eq!(account.username, USERNAME);
    assert_eq!(account.numbers, vec![NUMBER.parse().unwrap()]);

    // Leaving: the binding goes, and the watcher is told.
    let token = format!("Bearer {}", second["token"].as_str().unwrap());
    let r = http(api, "DELETE", "/v1/smart-entry", &[("Authorization", &token)], "").await;
    assert_eq!((r.status, r.json()["removed"].clone()), (200, json!([NUMBER])), "{}", r.body);
    let closed = watcher.notify(200).await;
    assert!(closed.body().contains("fullState=\"false\"") && closed.body().contains("<basic>closed</basic>"), "shown closed first: {}", closed.body());
    let gone = watcher.notify(200).await;
    assert!(!gone.body().contains("<instance "), "{}", gone.body());
    assert!(s.server.index().lookup(NUMBER.parse().unwrap()).unwrap().is_none());
}

#[tokio::test]
async fn send_limits_too_many_and_too_soon() {
    let (_s, api) = server(|c| c.provisioning.resend_after_secs = 0).await;
    for left in (0..5).rev() {
        let r = ask_code(api, NUMBER, "d").await;
        assert_eq!((r.status, r.json()["sends_left"].clone()), (202, json!(left)));
    }
    let sixth = ask_code(api, NUMBER, "d").await;
    assert_eq!((sixth.status, sixth.error()), (429, "too_many_sms".into()));
    assert!(sixth.header("Retry-After").is_some());
    assert_eq!(ask_code(api, NUMBER, "other-device").await.status, 202, "per number and device");

    // Device ids are made up by clients: the number has its own cap.
    let (_s, api) = server(|c| {
        c.provisioning.resend_after_secs = 0;
        c.provisioning.max_sends_per_number = 3;
    })
    .await;
    for device in ["a", "b", "c"] {
        assert_eq!(ask_code(api, NUMBER, device).await.status, 202);
    }
    assert_eq!(ask_code(api, NUMBER, "d").await.error(), "too_many_sms");

    let (_s, api) = server(|_| {}).await;
    assert_eq!(ask_code(api, NUMBER, "d").await.status, 202);
    let soon = ask_code(api, NUMBER, "d").await;
    assert_eq!((soon.status, soon.error()), (429, "resend_too_soon".into()));
    let retry: u64 = soon.header("Retry-After").unwrap().parse().unwrap();
    assert!((59..=60).contains(&retry), "{retry}");
}

#[tokio::test]
async fn wrong_codes_lock_and_codes_expire() {
    let (s, api) = server(|_| {}).await;
    assert_eq!(ask_code(api, NUMBER, "d").await.status, 202);
    let code = logged_code(&s, NUMBER);
    for left in [2, 1, 0] {
        let r = check_code(api, NUMBER, "d", &wrong(&code)).await;
        assert_eq!((r.status, r.error(), r.json()["attempts_left"].clone()), (422, "wrong_code".into(), json!(left)));
    }
    let fourth = check_code(api, NUMBER, "d", &code).await;
    assert_eq!((fourth.status, fourth.error()), (403, "verification_locked".into()), "even the right code");

    let (s, api) = server(|c| c.provisioning.code_validity_secs = 1).await;
    assert_eq!(ask_code(api, NUMBER, "d").await.status, 202);
    let code = logged_code(&s, NUMBER);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let late = check_code(api, NUMBER, "d", &code).await;
    assert_eq!((late.status, late.error()), (410, "code_expired".into()));
}

#[tokio::test]
async fn bad_requests_get_json_errors() {
    let (receiver, _sms) = gateway_receiver(500).await;
    let (s, api) = server(|c| {
        http_gateway(c, receiver);
        c.provisioning.max_body_bytes = 1024;
        c.provisioning.delivery_status_token = "s3cret".into();
    })
    .await;
    s.server.accounts().create("alice", "pw", &[]).unwrap();
    let basic_alice = "Basic YWxpY2U6cHc="; // alice:pw, accepted on loopback
    let alice = Some(basic_alice);
    let json_ct = [("Content-Type", "application/json")];
    let cases: Vec<(Reply, u16, &str)> = vec![
        (http(api, "POST", "/v1/verifications", &json_ct, "{\"number\": ").await, 400, "malformed_json"),
        (http(api, "POST", "/v1/verifications", &json_ct, "{\"number\": 5}").await, 400, "malformed_json"),
        (http(api, "POST", "/v1/verifications", &[("Content-Type", "text/plain")], "{}").await, 415, "unsupported_media_type"),
        (http(api, "POST", "/v1/verifications", &[], "{}").await, 415, "unsupported_media_type"),
        (http(api, "POST", "/v1/verifications", &json_ct, &format!("{{\"number\":\"{}\"}}", "1".repeat(2000))).await, 413, "body_too_large"),
        (ask_code(api, "06 12 34 56 78", "d").await, 400, "invalid_number"),
        (ask_code(api, "hello", "d").await, 400, "invalid_number"),
        (ask_code(api, NUMBER, "").await, 400, "invalid_device_id"),
        (check_code(api, "+33698765432", "d", "1234").await, 404, "no_verification"),
        (http(api, "GET", "/v1/nothing", &[], "").await, 404, "not_found"),
        (http(api, "GET", "/v1/verifications", &[], "").await, 405, "method_not_allowed"),
        (post_json(api, "/v1/verifications", None, &json!({"number": NUMBER, "device_id": "d", "extra": 1})).await, 400, "malformed_json"),
        (http(api, "GET", "/v1/account", &[("Authorization", "Bearer nope")], "").await, 401, "unauthorized"),
        (post_json(api, "/v1/verifications", None, &json!({"number": NUMBER, "device_id": "d", "channel": "voice"})).await, 400, "channel_unavailable"),
        (ask_code(api, NUMBER, "d").await, 502, "delivery_failed"),
        (http(api, "GET", "/v1/delivery-status?ref=x&status=delivered", &[], "").await, 403, "bad_token"),
        (http(api, "GET", "/v1/delivery-status?ref=x&status=delivered&token=s3cret", &[], "").await, 404, "unknown_reference"),
        (http(api, "GET", "/v1/delivery-status?ref=x&token=s3cret", &[], "").await, 400, "missing_field"),
        (http(api, "GET", "/v1/verifications/status?number=%2B33698765432&device_id=d", &[], "").await, 404, "no_verification"),
        (http(api, "GET", "/v1/verifications/status?number=%2B33698765432", &[], "").await, 400, "malformed_query"),
        (post_json(api, "/v1/address-book", alice, &json!({"numbers": "+33612345678"})).await, 400, "malformed_json"),
        (post_json(api, "/v1/address-book", alice, &json!({"numbers": [], "region": "XX"})).await, 400, "invalid_region"),
        (post_json(api, "/v1/address-book", None, &json!({"numbers": []})).await, 401, "unauthorized"),
        (http(api, "POST", "/v1/smart-entry", &[("Authorization", basic_alice), ("Content-Type", "text/plain")], "x").await, 415, "unsupported_media_type"),
    ];
    for (i, (reply, status, code)) in cases.into_iter().enumerate() {
        assert_eq!((reply.status, reply.error()), (status, code.to_string()), "case {i}: {}", reply.body);
        assert!(reply.header("Content-Type").unwrap().starts_with("application/json"), "case {i}");
        assert!(!reply.json()["message"].as_str().unwrap().is_empty(), "case {i}");
    }
}

#[tokio::test]
async fn basic_auth_is_refused_off_loopback() {
    let (s, _) = server(|c| c.provisioning.listen = Some("0.0.0.0:0".parse().unwrap())).await;
    let port = s.server.provisioning_addr().unwrap().port();
    let api: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    s.server.accounts().create("bob", "pw", &[]).unwrap();
    let r = http(api, "GET", "/v1/account", &[("Authorization", "Basic Ym9iOnB3")], "").await;
    assert_eq!((r.status, r.error()), (401, "basic_refused".into()));
    assert!(!r.headers("WWW-Authenticate").iter().any(|c| c.starts_with("Basic")));
}

#[tokio::test]
async fn address_book_is_charged_to_the_budget() {
    let (s, api) = server(|c| c.budget.burst = 3).await;
    s.server.accounts().create("alice", "pw", &["+33700000001".parse().unwrap()]).unwrap();
    let numbers: Vec<String> = (0..5).map(|i| format!("+3361234560{i}")).collect();
    for n in &numbers {
        s.server.index().bind(n.parse().unwrap(), &format!("sip:u{}@example.org", &n[1..]), smart_presence::index::Source::Admin).unwrap();
    }
    let auth = "Basic YWxpY2U6cHc="; // alice:pw, accepted on loopback
    let r = post_json(api, "/v1/address-book", Some(auth), &json!({"numbers": numbers})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    let smart: Vec<bool> = v["contacts"].as_array().unwrap().iter().map(|c| c["smart"].as_bool().unwrap()).collect();
    assert_eq!(smart, vec![true, true, true, false, false], "over budget reads as not a user");
    assert_eq!(v["over_budget"], 2);
    let again = post_json(api, "/v1/address-book", Some(auth), &json!({"numbers": &numbers[..3]})).await.json();
    assert_eq!(again["over_budget"], 0, "asking again costs nothing");
    assert_eq!(s.server.budget().status("alice").unwrap().tokens, 0);
    let too_many = post_json(api, "/v1/address-book", Some(auth), &json!({"numbers": vec!["+33612345678"; 5001]})).await;
    assert_eq!((too_many.status, too_many.error()), (413, "too_many_numbers".into()));
}

#[tokio::test]
async fn reinstall_recovery_only_when_enabled_and_same_device() {
    let (s, api) = server(|c| c.provisioning.reinstall_recovery = true).await;
    assert_eq!(ask_code(api, NUMBER, "d").await.status, 202);
    let first = check_code(api, NUMBER, "d", &logged_code(&s, NUMBER)).await.json();
    let recovered = ask_code(api, NUMBER, "d").await;
    assert_eq!(recovered.status, 200, "{}", recovered.body);
    assert_eq!(recovered.json()["recovered"], true);
    assert_eq!(recovered.json()["account"], first["account"]);
    assert_eq!(ask_code(api, NUMBER, "another-device").await.status, 202, "another device needs a code");
}

#[tokio::test]
async fn voice_callback_channel_reads_the_code_digit_by_digit() {
    let (s, api) = server(|c| c.provisioning.voice.kind = GatewayKind::Log).await;
    let r = post_json(api, "/v1/verifications", None, &json!({"number": NUMBER, "device_id": "d", "channel": "voice"})).await;
    assert_eq!((r.status, r.json()["channel"].clone()), (202, json!("voice")), "{}", r.body);
    let log = std::fs::read_to_string(s.dir.path().join("voice.log")).expect("voice.log written");
    let text = serde_json::from_str::<Value>(log.lines().last().unwrap()).unwrap()["text"].as_str().unwrap().to_string();
    let spoken = text.strip_prefix("Your smart-presence code is ").expect("voice text");
    assert_eq!(spoken.len(), 7, "four digits spaced out: {spoken}");
    let code: String = spoken.split(' ').collect();
    assert_eq!(check_code(api, NUMBER, "d", &code).await.status, 200);
}

/// Runs the binary on `data` with provisioning on `port` until the API answers.
async fn spawn_server(dir: &std::path::Path, port: u16) -> std::process::Child {
    let config = dir.join("sp.toml");
    let text = format!(
        "domain = \"example.org\"\ndata_dir = \"{}\"\n[sip]\nudp = [\"127.0.0.1:0\"]\ntcp = []\ntls = []\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n[provisioning]\nlisten = \"127.0.0.1:{port}\"\nmax_sends = 2\nresend_after_secs = 0\n",
        dir.join("data").display()
    );
    std::fs::write(&config, text).unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_smart-presence"))
        .args(["serve", "--config"])
        .arg(&config)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let started = std::time::Instant::now();
    while TcpStream::connect(addr).await.is_err() {
        assert!(started.elapsed() < Duration::from_secs(10), "the server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child
}

#[tokio::test]
async fn what_was_answered_survives_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
    let api: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut child = spawn_server(dir.path(), port).await;
    assert_eq!(ask_code(api, NUMBER, "d").await.status, 202);
    let log = std::fs::read_to_string(dir.path().join("data/sms.log")).unwrap();
    let text = serde_json::from_str::<Value>(log.lines().last().unwrap()).unwrap()["text"].as_str().unwrap().to_string();
    let code = text.rsplit(' ').next().unwrap();
    let token = check_code(api, NUMBER, "d", code).await.json()["token"].as_str().unwrap().to_string();
    assert_eq!(ask_code(api, NUMBER, "d").await.status, 202);
    child.kill().unwrap();
    child.wait().unwrap();

    let mut child = spawn_server(dir.path(), port).await;
    let me = http(api, "GET", "/v1/account", &[("Authorization", &format!("Bearer {token}"))], "").await;
    assert_eq!((me.status, me.json()["username"].clone()), (200, json!(USERNAME)), "the account and its token");
    assert_eq!(ask_code(api, NUMBER, "d").await.error(), "too_many_sms", "the send counter");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test]
async fn https_gateway_with_json_body_and_voice_text() {
    let certs = tempfile::tempdir().unwrap();
    let (receiver, ca_file, mut calls) = tls_gateway_receiver(certs.path()).await;
    let (_s, api) = server(|c| {
        let v = &mut c.provisioning.voice;
        v.kind = GatewayKind::Http;
        v.url = format!("https://localhost:{}/v1/calls", receiver.port());
        v.body_encoding = BodyEncoding::Json;
        v.body_template = r#"{"to":[{"type":"phone","number":"{to}"}],"from":{"type":"phone","number":"{from}"},"ncco":[{"action":"talk","text":"{text}"}]}"#.into();
        v.headers.insert("Content-Type".into(), "application/json".into());
        v.headers.insert("Authorization".into(), "Bearer gateway-jwt".into());
        v.ca_file = Some(ca_file.clone());
        c.provisioning.app_name = "Say \"hi\"".into();
    })
    .await;
    let r = post_json(api, "/v1/verifications", None, &json!({"number": NUMBER, "device_id": "d", "channel": "voice"})).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let call = tokio::time::timeout(WAIT, calls.recv()).await.unwrap().unwrap();
    assert!(call.head.starts_with("POST /v1/calls HTTP/1.1"), "{}", call.head);
    assert!(call.head.to_lowercase().contains("authorization: bearer gateway-jwt"), "{}", call.head);
    let body: Value = serde_json::from_str(&call.body).expect("the template stays valid JSON");
    assert_eq!(body["to"][0]["number"], USERNAME);
    let text = body["ncco"][0]["text"].as_str().unwrap();
    assert!(text.starts_with("Your Say \"hi\" code is "), "{text}");
}

#[tokio::test]
async fn stale_digest_nonce_gets_a_new_challenge() {
    let (s, api) = server(|c| c.provisioning.digest_nonce_secs = 1).await;
    s.server.accounts().create("alice", "pw", &[]).unwrap();
    let challenge = http(api, "GET", "/v1/account", &[], "").await;
    let c = challenge.headers("WWW-Authenticate").into_iter().find(|c| c.contains("algorithm=SHA-256")).unwrap().to_string();
    let authz = answer(&c, "alice", "pw", "GET", "/v1/account", 1);
    assert_eq!(http(api, "GET", "/v1/account", &[("Authorization", &authz)], "").await.status, 200);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let stale = http(api, "GET", "/v1/account", &[("Authorization", &authz)], "").await;
    assert_eq!(stale.status, 401);
    assert!(stale.headers("WWW-Authenticate").iter().any(|c| c.contains("stale=true")), "{:?}", stale.headers);
}

#[tokio::test]
async fn a_silent_gateway_times_out_with_502() {
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((conn, _)) = silent.accept().await {
            conns.push(conn); // accepted, never answered
        }
    });
    let (_s, api) = server(|c| {
        http_gateway(c, addr);
        c.provisioning.sms.timeout_secs = 1;
    })
    .await;
    let started = std::time::Instant::now();
    let r = ask_code(api, NUMBER, "d").await;
    assert_eq!((r.status, r.error()), (502, "delivery_failed".into()));
    assert!(started.elapsed() < Duration::from_secs(3));
    held.abort();
}

#[tokio::test]
async fn gateway_messages_reuse_one_connection() {
    let (receiver, mut sms, accepted) = keepalive_gateway_receiver().await;
    let (_s, api) = server(|c| http_gateway(c, receiver)).await;
    for number in [NUMBER, "+33612345679", "+33612345680"] {
        let r = ask_code(api, number, "phone-1").await;
        assert_eq!(r.status, 202, "{}", r.body);
        let got = tokio::time::timeout(WAIT, sms.recv()).await.unwrap().unwrap();
        assert_eq!(form(&got.body)["to"], number.trim_start_matches('+'));
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "three messages over one kept-alive connection");
}
