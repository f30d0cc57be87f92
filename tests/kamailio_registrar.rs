//! Registrar integration over SIP with a real Kamailio 5.6 (Debian `kamailio`,
//! `kamailio-presence-modules`): Kamailio is the registrar and, through `pua_usrloc`,
//! PUBLISHes its users' registration state to us. A SIPp UA registers at Kamailio; a list
//! subscriber watching the user's number sees him go online, then offline on un-REGISTER.
//! Also replays the captured PUBLISHes (`fixtures/kamailio-5.6/`), whose quirks (entity
//! without a scheme, a tuple id that is not an xs:ID, removal without a closed document)
//! we must accept.

mod common;

use common::peer::{Msg, Peer};
use common::*;
use smart_presence::index::Source;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn fixture(name: &str) -> String {
    let path = format!("{}/fixtures/kamailio-5.6/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(path).unwrap()
}

/// A captured PUBLISH, sent from `local` (its Via rewritten: Kamailio sends no rport).
fn captured(name: &str, local: std::net::SocketAddr, etag: Option<&str>) -> String {
    let text = fixture(name).replace("127.0.0.1:25070", &local.to_string());
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let head: String = head
        .lines()
        .filter(|l| !l.starts_with("Content-Length"))
        .map(|l| match (l.starts_with("SIP-If-Match:"), etag) {
            (true, Some(tag)) => format!("SIP-If-Match: {tag}\r\n"),
            _ => format!("{l}\r\n"),
        })
        .collect();
    format!("{head}Content-Length: {}\r\n\r\n{body}", body.len())
}

#[tokio::test]
async fn captured_pua_usrloc_publishes_are_accepted() {
    let s = TestServer::start_with(|c| c.auth.trusted_proxies = vec!["127.0.0.1".parse().unwrap()]).await;
    let mut p = Peer::udp(s.udp()).await;
    let l = p.local();
    p.send(captured("pua_usrloc-01-register-initial.txt", l, None).as_bytes()).await;
    let ok = p.recv().await;
    assert_eq!(ok.status(), Some(200), "{}", ok.head);
    assert_eq!(ok.header("Expires"), Some("61"));
    let etag = ok.header("SIP-ETag").expect("Kamailio needs SIP-ETag").to_string();
    p.send(captured("pua_usrloc-02-reregister-refresh.txt", l, Some(&etag)).as_bytes()).await;
    let ok = p.recv().await;
    assert_eq!(ok.status(), Some(200));
    let etag = ok.header("SIP-ETag").unwrap().to_string();
    p.send(captured("pua_usrloc-03-unregister-remove.txt", l, Some(&etag)).as_bytes()).await;
    assert_eq!(p.recv().await.status(), Some(200));
}

struct Kamailio(Child);

impl Drop for Kamailio {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let _ = self.0.wait();
    }
}


async fn start_kamailio(presence: std::net::SocketAddr, rundir: &std::path::Path) -> (Kamailio, u16) {
    let found = Command::new("kamailio").arg("-v").output().is_ok();
    assert!(found, "kamailio not found: install kamailio and kamailio-presence-modules (scripts/test.sh does)");
    let port = free_port();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/kamailio/run.sh");
    let child = Command::new("bash")
        .arg(script)
        .arg(rundir)
        .arg(port.to_string())
        .arg(format!("sip:{presence}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("kamailio starts");
    let kam = Kamailio(child);
    // Up when it answers OPTIONS.
    let c = UdpClient::new(format!("127.0.0.1:{port}").parse().unwrap()).await;
    let started = Instant::now();
    loop {
        c.send(request("OPTIONS", "UDP", c.local(), &format!("k{}", started.elapsed().as_millis()), "", "").as_bytes()).await;
        if c.recv_within(Duration::from_millis(200)).await.is_some() {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "kamailio did not come up");
    }
    (kam, port)
}

/// Answers NOTIFYs until one's PIDF satisfies `want` (None after 20 s). Other NOTIFYs
/// (e.g. the binding's own change event racing the subscription) are passed over.
async fn notify_until(watcher: &mut Peer, want: impl Fn(&str) -> bool) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while let Some(wait) = deadline.checked_duration_since(Instant::now()) {
        let n = watcher.recv_within(wait).await?;
        if n.is_request("NOTIFY") {
            watcher.send(&n.response(200, "OK")).await;
            let pidf = pidf_of(&n);
            if want(&pidf) {
                return Some(pidf);
            }
        }
    }
    None
}

/// Binds alice's number and subscribes a watcher to it; returns him and his first NOTIFY.
async fn watch_alice(s: &TestServer, branch: &str) -> (Peer, Msg) {
    s.server.index().bind("+33612345678".parse().unwrap(), "sip:alice@example.org", Source::Admin).unwrap();
    let mut watcher = Peer::udp(s.udp()).await;
    let wl = watcher.local();
    let list = r#"<resource-lists xmlns="urn:ietf:params:xml:ns:resource-lists"><list><entry uri="sip:+33612345678@example.org;user=phone"/></list></resource-lists>"#;
    let extra = format!("Contact: <sip:w@{wl}>\r\nEvent: presence\r\nSupported: eventlist\r\nRequire: recipient-list-subscribe\r\nContent-Type: application/resource-lists+xml\r\n");
    watcher.send(request("SUBSCRIBE", "UDP", wl, branch, &extra, list).replace("sip:alice@", "sip:watcher@").as_bytes()).await;
    let (ok, first) = watcher.accepted().await;
    assert_eq!(ok.status(), Some(200));
    (watcher, first.expect("a first NOTIFY"))
}

fn pidf_of(n: &Msg) -> String {
    n.body().split("<presence").nth(1).map(|p| format!("<presence{p}")).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kamailio_pua_usrloc_drives_presence_for_list_watchers() {
    // Shown only when the test fails: the SIP exchanged.
    let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("smart_presence=info").try_init();
    let s = TestServer::start_with(|c| {
        c.sip.log_messages = true;
        c.auth.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
        c.presence.notify_interval_secs = 1;
        c.notify.min_interval_ms = 100;
    })
    .await;
    let (mut watcher, first) = watch_alice(&s, "kw").await;
    assert!(pidf_of(&first).contains("away"), "offline before registering");

    let rundir = tempfile::tempdir().unwrap();
    let (_kam, kam_port) = start_kamailio(s.udp(), rundir.path()).await;
    let scenario = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/sipp/register.xml");
    let sipp_dir = tempfile::tempdir().unwrap();
    let mut sipp = tokio::process::Command::new("sipp")
        .args(["-sf", scenario, "-s", "alice", "-key", "expires", "60", "-d", "2500", "-m", "1", "-t", "u1"])
        .args(["-i", "127.0.0.1", "-p", &free_port().to_string(), "-nostdin", "-timeout", "30s", "-timeout_error"])
        .arg(format!("127.0.0.1:{kam_port}"))
        .current_dir(sipp_dir.path())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("sipp runs");
    let online = notify_until(&mut watcher, |pidf| pidf.contains("<basic>open</basic>") && !pidf.contains("away")).await;
    assert!(online.is_some(), "online after REGISTER");
    let offline = notify_until(&mut watcher, |pidf| pidf.contains("away")).await;
    assert!(offline.is_some(), "offline after un-REGISTER");
    let status = sipp.wait().await.unwrap();
    assert!(status.success(), "the SIPp UA's REGISTERs all succeeded at Kamailio");
}

#[tokio::test]
async fn captured_publish_reaches_a_watcher() {
    let s = TestServer::start_with(|c| {
        c.auth.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
        c.notify.min_interval_ms = 100;
    })
    .await;
    let (mut watcher, _) = watch_alice(&s, "cw").await;
    let mut p = Peer::udp(s.udp()).await;
    let l = p.local();
    p.send(captured("pua_usrloc-01-register-initial.txt", l, None).as_bytes()).await;
    assert_eq!(p.recv().await.status(), Some(200));
    let online = watcher.notify(200).await;
    let pidf = pidf_of(&online);
    assert!(!pidf.contains("away"), "online: {pidf}");
}
