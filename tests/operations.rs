//! Issue 15, operations: health checks for load balancers and Kubernetes, JSON logs, the
//! systemd service protocol (READY=1, WATCHDOG=1, STOPPING=1) and unit, and the admin API's
//! bearer token (the server refusing, the CLI sending it). Most tests run the real binary
//! (`ServerProcess`) on loopback ports.

mod common;

use common::peer::Peer;
use common::process::ServerProcess;
use common::*;
use smart_presence::config::Config;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "s3cret-admin-token";
const NUMBER: &str = "+33612345678";

/// An HTTP/1.1 exchange: the status, the response's head and its body.
struct Answer {
    status: u16,
    head: String,
    body: String,
}

async fn http(addr: SocketAddr, method: &str, path: &str, authorization: Option<&str>) -> Answer {
    let auth = authorization.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
    let req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n");
    let mut s = tokio::time::timeout(WAIT, tokio::net::TcpStream::connect(addr)).await.expect("connect in time").expect("connect");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(WAIT, s.read_to_string(&mut out)).await.expect("an answer in time").unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no status line: {out}"));
    Answer { status, head: head.to_string(), body: body.to_string() }
}

/// The server with `[admin] token = TOKEN`, started.
async fn started_with_token(dir: &std::path::Path) -> ServerProcess {
    let mut server = ServerProcess::new(dir, "");
    server.admin_extra = format!("token = \"{TOKEN}\"");
    server.start().await;
    server
}

/// A list SUBSCRIBE of NUMBER from `p`, accepted (its first NOTIFY answered).
async fn subscribe_to_number(p: &mut Peer, branch: &str) {
    let body = resource_list(&[format!("sip:{NUMBER}@example.org;user=phone")]);
    p.send(list_subscribe("UDP", p.local(), branch, "", &body).as_bytes()).await;
    let (ok, _) = p.accepted().await;
    assert_eq!(ok.status(), Some(200), "{}", ok.head);
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// Before the stores open the admin endpoint already answers: live, not ready (naming
/// what it waits for), and its other routes 503; once they open, ready and served.
#[tokio::test]
async fn not_ready_until_the_stores_open() {
    use smart_presence::health::Health;
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.admin.listen = Some("127.0.0.1:0".parse().unwrap());
    let health = Health::default();
    let opening = health.pending("stores");
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    let admin = smart_presence::admin::bind(&config, &health, &stopped).await.unwrap().expect("listening");
    let a = admin.addr();

    assert_eq!(http(a, "GET", "/health/live", None).await.status, 200);
    let ready = http(a, "GET", "/health/ready", None).await;
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert_eq!(json(&ready.body), serde_json::json!({"status": "not ready", "waiting": ["stores"]}));
    assert!(ready.head.to_ascii_lowercase().contains("content-type: application/json"), "{}", ready.head);
    assert_eq!(http(a, "GET", "/health", None).await.status, 200, "the CLI's probe answers from the start");
    let stats = http(a, "GET", "/stats", None).await;
    assert_eq!(stats.status, 503, "{}", stats.body);

    let index = smart_presence::index::Index::open(&smart_presence::index::dir_in(dir.path())).unwrap();
    let budget = smart_presence::budget::Budget::open(&smart_presence::budget::dir_in(dir.path()), &config.budget).unwrap();
    admin.serve(index, budget, None);
    drop(opening);
    let ready = http(a, "GET", "/health/ready", None).await;
    assert_eq!((ready.status, json(&ready.body)), (200, serde_json::json!({"status": "ready"})));
    assert_eq!(http(a, "GET", "/stats", None).await.status, 200);
}

/// `[admin] metrics_open = true` lets a scraper read `/metrics` without the token; every
/// other guarded route still wants it.
#[tokio::test]
async fn metrics_open_exempts_only_the_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.admin.listen = Some("127.0.0.1:0".parse().unwrap());
    config.admin.token = Some(TOKEN.into());
    config.admin.metrics_open = true;
    let health = smart_presence::health::Health::default();
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    let admin = smart_presence::admin::bind(&config, &health, &stopped).await.unwrap().expect("listening");
    let index = smart_presence::index::Index::open(&smart_presence::index::dir_in(dir.path())).unwrap();
    let budget = smart_presence::budget::Budget::open(&smart_presence::budget::dir_in(dir.path()), &config.budget).unwrap();
    admin.serve(index, budget, None);
    let metrics = http(admin.addr(), "GET", "/metrics", None).await;
    assert_ne!(metrics.status, 401, "{}", metrics.head);
    assert_eq!(http(admin.addr(), "GET", "/metrics/../stats", None).await.status, 401);
    assert_eq!(http(admin.addr(), "GET", "/stats", None).await.status, 401);
    assert_eq!(http(admin.addr(), "GET", "/stats", Some(&format!("Bearer {TOKEN}"))).await.status, 200);
}

/// After a restart, not ready while the stored subscriptions are being resumed; ready
/// once every one has been started. `resume_per_second = 100` paces 400 over ~4 s. The
/// provisioning listener reports the same.
#[tokio::test]
async fn not_ready_while_stored_subscriptions_resume() {
    const COUNT: usize = 400;
    let dir = tempfile::tempdir().unwrap();
    let provisioning = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let extra = format!(
        "[subscription]\nresume_per_second = 100\n[limits]\nrequests_per_second = 0\n\
         max_subscriptions_per_account = 0\nmax_subscriptions_per_source = 0\n[provisioning]\nlisten = \"{provisioning}\""
    );
    let mut server = ServerProcess::new(dir.path(), &extra);
    server.start().await;
    let ready = http(server.admin, "GET", "/health/ready", None).await;
    assert_eq!(ready.status, 200, "nothing to resume on a first start: {}", ready.body);
    let mut p = Peer::udp(server.udp).await;
    for i in 0..COUNT {
        subscribe_to_number(&mut p, &format!("r{i}")).await;
    }
    server.stop(); // subscription.on_shutdown = keep: all stored
    server.start().await;
    let ready = http(server.admin, "GET", "/health/ready", None).await;
    assert_eq!(ready.status, 503, "still resuming: {}\n{}", ready.body, server.log());
    assert_eq!(json(&ready.body)["waiting"], serde_json::json!(["resuming subscriptions"]));
    assert_eq!(http(server.admin, "GET", "/health/live", None).await.status, 200, "live all the same");
    let on_provisioning = http(provisioning, "GET", "/health/ready", None).await;
    assert_eq!((on_provisioning.status, json(&on_provisioning.body)), (503, json(&ready.body)));
    let started = Instant::now();
    loop {
        let ready = http(server.admin, "GET", "/health/ready", None).await;
        if ready.status == 200 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "never ready: {}\n{}", ready.body, server.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(server.log().contains(&format!("resumed={COUNT}")), "{}", server.log());
    assert_eq!(http(provisioning, "GET", "/health/ready", None).await.status, 200);
}

/// `log_format = "json"`: every line is a JSON object with the stable fields, and the
/// address book of a SUBSCRIBE stays out of it.
#[tokio::test]
async fn json_log_lines_carry_the_stable_fields() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::new(dir.path(), "log_format = \"json\"");
    server.start().await;
    let mut p = Peer::udp(server.udp).await;
    subscribe_to_number(&mut p, "json1").await;
    server.stop();
    let log = server.log();
    let lines: Vec<serde_json::Value> = log.lines().filter(|l| !l.trim().is_empty()).map(json).collect();
    assert!(lines.len() >= 3, "{log}");
    for line in &lines {
        for field in ["timestamp", "level", "target", "message"] {
            assert!(line[field].is_string(), "no {field}: {line}");
        }
        assert!(["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&line["level"].as_str().unwrap()), "{line}");
    }
    let listening = lines.iter().find(|l| l["message"] == "smart-presence listening").expect("the start is logged");
    assert_eq!(listening["target"], "smart_presence::server");
    assert!(listening["udp"].as_str().is_some_and(|u| u.contains(&server.udp.to_string())), "event fields at the top: {listening}");
    assert!(lines.iter().any(|l| l["message"] == "smart-presence stopped"), "{log}");
    assert!(!log.contains(NUMBER) && !log.contains("612345678"), "an address book in the log: {log}");
}

/// With `[admin] token`, every admin route but the health checks wants it: none or a
/// wrong one gets 401 with a Bearer challenge, the right one passes.
#[tokio::test]
async fn admin_routes_require_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let server = started_with_token(dir.path()).await;
    let a = server.admin;
    for path in ["/stats", "/bindings/%2B33612345678", "/export", "/budget/alice", "/metrics", "/nothing-here"] {
        let none = http(a, "GET", path, None).await;
        assert_eq!(none.status, 401, "{path}: {}", none.body);
        assert!(none.head.contains("www-authenticate: Bearer realm="), "{path}: {}", none.head);
        let wrong = http(a, "GET", path, Some(&format!("Bearer {TOKEN}x"))).await;
        assert_eq!(wrong.status, 401, "{path}");
        assert!(wrong.head.contains("error=\"invalid_token\""), "{}", wrong.head);
        let basic = http(a, "GET", path, Some("Basic YWRtaW46czNjcmV0")).await;
        assert_eq!(basic.status, 401, "{path}");
    }
    let right = format!("Bearer {TOKEN}");
    assert_eq!(http(a, "GET", "/stats", Some(&right)).await.status, 200);
    assert_eq!(http(a, "GET", "/bindings/%2B33612345678", Some(&right)).await.status, 404, "passes, not bound");
    assert_eq!(http(a, "DELETE", "/stats", None).await.status, 401, "any method");
    for path in ["/health", "/health/live", "/health/ready"] {
        assert_eq!(http(a, "GET", path, None).await.status, 200, "{path} is open");
    }
}

/// The CLI reads the token from the configuration (`token` or `token_file`) and sends it;
/// with a wrong one it says what to fix.
#[tokio::test]
async fn the_cli_sends_the_configured_token() {
    let dir = tempfile::tempdir().unwrap();
    let server = started_with_token(dir.path()).await;
    let cli = |config: &std::path::Path, args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_smart-presence")).arg("bindings").arg("--config").arg(config).args(args).output().unwrap()
    };
    let add = cli(&server.config_path(), &["add", NUMBER, "sip:bob@example.org"]);
    assert!(add.status.success(), "{}", String::from_utf8_lossy(&add.stderr));

    let text = std::fs::read_to_string(server.config_path()).unwrap();
    std::fs::write(dir.path().join("token"), format!("{TOKEN}\n")).unwrap();
    let from_file = dir.path().join("from-file.toml");
    let token_file = format!("token_file = \"{}\"", dir.path().join("token").display());
    std::fs::write(&from_file, text.replace(&server.admin_extra, &token_file)).unwrap();
    let get = cli(&from_file, &["get", NUMBER]);
    assert!(get.status.success(), "{}", String::from_utf8_lossy(&get.stderr));
    assert!(String::from_utf8_lossy(&get.stdout).contains("sip:bob@example.org"));

    let wrong = dir.path().join("wrong.toml");
    std::fs::write(&wrong, text.replace(TOKEN, "not-the-token")).unwrap();
    let refused = cli(&wrong, &["get", NUMBER]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && err.contains("401") && err.contains("admin.token"), "{err}");
    let none = dir.path().join("none.toml");
    std::fs::write(&none, text.replace(&server.admin_extra, "")).unwrap();
    let refused = cli(&none, &["stats"]);
    assert!(!refused.status.success() && String::from_utf8_lossy(&refused.stderr).contains("401"));
}

/// An admin endpoint off loopback without a token does not start; the error names the key.
#[test]
fn off_loopback_without_a_token_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::new(dir.path(), "");
    server.admin = SocketAddr::from(([0, 0, 0, 0], free_port()));
    server.write_config();
    let (code, log) = server.start_failing();
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("admin.listen") && log.contains("admin.token") && log.contains("0.0.0.0"), "{log}");
}

/// `systemd-analyze verify` accepts the example unit, with no warning (its ExecStart is
/// pointed at the built binary, since verify checks that the program exists).
#[test]
fn the_systemd_unit_verifies() {
    let tool = "/usr/bin/systemd-analyze";
    assert!(std::path::Path::new(tool).exists(), "{tool} is missing: apt-get install systemd (scripts/test.sh installs it)");
    let unit = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/systemd/smart-presence.service")).unwrap();
    for key in ["Type=notify", "WatchdogSec=", "NoNewPrivileges=yes", "ProtectSystem=strict", "ReadWritePaths=/var/lib/smart-presence"] {
        assert!(unit.contains(key), "the unit lacks {key}");
    }
    assert!(unit.contains("\nExecStart=/usr/local/bin/smart-presence serve"), "ExecStart moved: update this test");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("smart-presence.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/smart-presence", env!("CARGO_BIN_EXE_smart-presence"))).unwrap();
    let out = Command::new(tool).arg("verify").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "systemd-analyze verify: {:?}\n{stderr}", out.status);
}

/// Under systemd (`NOTIFY_SOCKET`): READY=1 comes once the SIP listeners answer, then
/// WATCHDOG=1 at half of `WATCHDOG_USEC`, and STOPPING=1 at a stop.
#[tokio::test]
async fn systemd_hears_ready_watchdog_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = tokio::net::UnixDatagram::bind(&socket_path).unwrap();
    let mut server = ServerProcess::new(dir.path(), "");
    server.env = vec![
        ("NOTIFY_SOCKET".into(), socket_path.display().to_string()),
        ("WATCHDOG_USEC".into(), "1000000".into()),
    ];
    server.spawn();
    let next = |what: &'static str| {
        let socket = &socket;
        async move {
            let mut buf = vec![0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(30), socket.recv(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("no {what} within 30 s"))
                .unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        }
    };
    let first = next("READY=1").await;
    assert!(first.lines().any(|l| l == "READY=1"), "the first state is READY=1: {first:?}");
    // At READY=1 every listener is bound and served.
    assert!(std::net::TcpStream::connect_timeout(&server.tcp, Duration::from_secs(1)).is_ok(), "SIP TCP listens");
    let c = UdpClient::new(server.udp).await;
    c.send(request("OPTIONS", "UDP", c.local(), "ready1", "", "").as_bytes()).await;
    let answer = c.recv_within(WAIT).await.expect("OPTIONS answered over UDP");
    assert!(answer.starts_with("SIP/2.0 200"), "{answer}");
    assert_eq!(http(server.admin, "GET", "/health/live", None).await.status, 200);

    let started = Instant::now();
    let ping = next("WATCHDOG=1").await;
    assert_eq!(ping, "WATCHDOG=1");
    assert!(started.elapsed() < Duration::from_secs(5), "a ping within half of the 1 s interval, give or take a loaded machine");
    assert_eq!(next("a second WATCHDOG=1").await, "WATCHDOG=1");

    server.stop(); // waits for the exit: whatever it sent is queued on our socket
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 4096];
    while let Ok(n) = socket.try_recv(&mut buf) {
        seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert!(seen.iter().any(|s| s.lines().any(|l| l == "STOPPING=1")), "STOPPING=1 at the stop: {seen:?}");
}

/// `docs/admin.openapi.yaml` documents every route the admin listener serves (each
/// `.route("...")` of `src/admin/` and `src/health.rs`, `:param` written `{param}`).
#[test]
fn the_openapi_file_lists_every_admin_route() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/admin.openapi.yaml")).unwrap();
    let mut sources = vec![root.join("src/health.rs")];
    for e in std::fs::read_dir(root.join("src/admin")).unwrap() {
        sources.push(e.unwrap().path());
    }
    let mut routes = Vec::new();
    for file in sources {
        let text = std::fs::read_to_string(&file).unwrap();
        for part in text.split(".route(\"").skip(1) {
            let path = part.split('"').next().unwrap();
            let path: Vec<String> =
                path.split('/').map(|s| s.strip_prefix(':').map_or(s.to_string(), |p| format!("{{{p}}}"))).collect();
            routes.push(path.join("/"));
        }
    }
    assert!(routes.len() >= 9, "routes found: {routes:?}");
    for r in &routes {
        assert!(doc.contains(&format!("\n  {r}:\n")), "{r} is not in docs/admin.openapi.yaml");
    }
}
