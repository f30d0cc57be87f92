//! Issue 15: the Prometheus metrics, read by a real Prometheus (Debian package
//! `prometheus`) scraping the admin listener on loopback every second. The test drives a
//! list SUBSCRIBE, a binding that changes what it watches and a refused request, then asks
//! Prometheus' HTTP API to see the counters, gauges and histograms move. The exposition
//! must pass `promtool check metrics`, and every metric the Grafana dashboard
//! (`examples/grafana/smart-presence.json`) queries must be in it.

mod common;

use common::peer::Peer;
use common::*;
use smart_presence::index::Source;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PROMETHEUS: &str = "/usr/bin/prometheus";
const PROMTOOL: &str = "/usr/bin/promtool";
const DASHBOARD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/grafana/smart-presence.json");

/// What the metrics must show once Prometheus has scraped the traffic: (PromQL, least value).
const EXPECTED: &[(&str, f64)] = &[
    ("smart_presence_sip_requests_total{method=\"SUBSCRIBE\",code=\"200\",transport=\"udp\"}", 1.0),
    ("smart_presence_sip_requests_total{method=\"SUBSCRIBE\",code=\"489\",transport=\"udp\"}", 1.0),
    ("smart_presence_notify_sent_total", 2.0),
    ("smart_presence_subscriptions{kind=\"list\"}", 1.0),
    ("smart_presence_list_entries", 2.0),
    ("smart_presence_bindings", 2.0),
    ("smart_presence_subscribe_first_notify_seconds_count", 1.0),
    ("smart_presence_binding_notify_seconds_count", 1.0),
    ("smart_presence_change_feed_lag_seconds_count", 1.0),
    ("histogram_quantile(0.5, sum by (le) (smart_presence_subscribe_first_notify_seconds_bucket))", 0.0),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_sees_the_counters_and_histograms_move() {
    let s = TestServer::start_with(|c| c.admin.listen = Some("127.0.0.1:0".parse().unwrap())).await;
    let admin = s.server.admin_addr().expect("the admin listener");
    let prometheus = Prometheus::start(s.dir.path(), admin).await;
    let before = prometheus.value("smart_presence_notify_sent_total").await;
    assert_eq!(before, Some(0.0), "scraped before any traffic, at zero");

    drive_traffic(&s).await;

    for (query, least) in EXPECTED {
        prometheus.wait_for(query, *least).await;
    }
    let exposition = get(admin, "/metrics").await;
    promtool_accepts(&exposition);
    dashboard_queries_exist(&exposition);
}

/// A list SUBSCRIBE of two numbers (one a user), the other number bound (a live NOTIFY),
/// and a SUBSCRIBE refused with 489 (unknown event package).
async fn drive_traffic(s: &TestServer) {
    let bob = "sip:+33612345678@example.org;user=phone".to_string();
    let carol = "sip:+33698765432@example.org;user=phone".to_string();
    s.server.index().bind("+33612345678".parse().unwrap(), "sip:bob@example.org", Source::Admin).unwrap();
    let mut p = Peer::udp(s.udp()).await;
    let local = p.local();
    p.send(list_subscribe("UDP", local, "m1", "Expires: 600\r\n", &resource_list(&[bob, carol])).as_bytes()).await;
    let (ok, first) = p.accepted().await;
    assert_eq!(ok.status(), Some(200));
    assert!(first.is_some(), "the first NOTIFY");
    s.server.index().bind("+33698765432".parse().unwrap(), "sip:carol@example.org", Source::Admin).unwrap();
    let live = p.notify(200).await;
    assert!(live.body().contains("fullState=\"false\""), "a partial NOTIFY for the new user");
    let refused = request("SUBSCRIBE", "UDP", local, "m2", &format!("Contact: <sip:alice@{local}>\r\nEvent: dialog\r\n"), "");
    p.send(refused.as_bytes()).await;
    assert_eq!(p.recv().await.status(), Some(489));
}

/// Rate limiting and the delivery gateways, read straight from `/metrics`: a burst of
/// OPTIONS over the source's rate is partly rejected (503) and partly dropped; a one-time
/// code goes out through the `log` SMS gateway.
#[tokio::test]
async fn rate_limits_and_gateways_are_counted() {
    let s = TestServer::start_with(|c| {
        c.admin.listen = Some("127.0.0.1:0".parse().unwrap());
        c.provisioning.listen = Some("127.0.0.1:0".parse().unwrap());
        (c.limits.requests_per_second, c.limits.request_burst, c.limits.rejects_per_second) = (1, 1, 1);
    })
    .await;
    let admin = s.server.admin_addr().unwrap();
    let client = UdpClient::new(s.udp()).await;
    for i in 0..10 {
        client.send(request("OPTIONS", "UDP", client.local(), &format!("o{i}"), "", "").as_bytes()).await;
    }
    let mut statuses = Vec::new();
    while let Some(m) = client.recv_within(Duration::from_millis(500)).await {
        statuses.push(status(&m).to_string());
    }
    assert!(statuses.iter().any(|s| s.contains(" 503 ")), "{statuses:?}");
    let api = s.server.provisioning_addr().unwrap();
    let (code, body) = http(api, "POST", "/v1/verifications", r#"{"number": "+33612345678", "device_id": "d1"}"#).await;
    assert!((200..300).contains(&code), "{code} {body}");

    let text = get(admin, "/metrics").await;
    let count = |series: &str| sample(&text, series).unwrap_or_else(|| panic!("{series} in:\n{text}"));
    assert!(count("smart_presence_sip_rate_limited_total{action=\"rejected\"}") >= 1.0);
    assert!(count("smart_presence_sip_rate_limited_total{action=\"dropped\"}") >= 1.0);
    assert!(count("smart_presence_sip_requests_total{method=\"OPTIONS\",code=\"503\",transport=\"udp\"}") >= 1.0);
    assert_eq!(count("smart_presence_gateway_messages_total{channel=\"sms\",gateway=\"log\",outcome=\"sent\"}"), 1.0);
    assert_eq!(count("smart_presence_gateway_messages_total{channel=\"sms\",gateway=\"log\",outcome=\"failed\"}"), 0.0);
    assert!(!text.contains("33612345678"), "no number in a label");
}

/// `metrics.enabled = false`: nothing served (and nothing counted).
#[tokio::test]
async fn metrics_off_serves_nothing() {
    let s = TestServer::start_with(|c| {
        c.admin.listen = Some("127.0.0.1:0".parse().unwrap());
        c.metrics.enabled = false;
    })
    .await;
    let (code, _) = http(s.server.admin_addr().unwrap(), "GET", "/metrics", "").await;
    assert_eq!(code, 404);
}

/// `promtool check metrics` (format and naming lint) passes on the exposition.
fn promtool_accepts(exposition: &str) {
    use std::io::Write;
    let mut child = Command::new(PROMTOOL)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{PROMTOOL}: {e} (apt-get install prometheus)"));
    child.stdin.take().unwrap().write_all(exposition.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool check metrics: {said}\n---\n{exposition}");
}

/// Every `smart_presence_*` series name in the dashboard's queries is a sample name in the
/// exposition.
fn dashboard_queries_exist(exposition: &str) {
    let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(DASHBOARD).unwrap()).expect("dashboard JSON");
    assert!(dashboard["schemaVersion"].as_u64().is_some(), "a Grafana dashboard");
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(target["expr"].as_str().unwrap().to_string());
        }
    }
    assert!(exprs.len() >= 10, "the dashboard's queries: {exprs:?}");
    let sampled: Vec<&str> = exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    for expr in &exprs {
        for name in metric_names(expr) {
            assert!(sampled.contains(&name), "the dashboard queries {name}, which the exposition lacks ({expr})");
        }
    }
}

fn metric_names(expr: &str) -> Vec<&str> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("smart_presence_") {
        let tail = &rest[at..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        names.push(&tail[..end]);
        rest = &tail[end..];
    }
    names
}

/// A Prometheus of the test's own: its config, storage and port, stopped on drop.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
}

impl Prometheus {
    async fn start(dir: &Path, target: SocketAddr) -> Prometheus {
        assert!(Path::new(PROMETHEUS).exists(), "{PROMETHEUS} is missing: apt-get install prometheus");
        let config = dir.join("prometheus.yml");
        let text = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: smart-presence\n    static_configs:\n      - targets: ['{target}']\n"
        );
        std::fs::write(&config, text).unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{PROMETHEUS}: {e} (apt-get install prometheus)"));
        let p = Prometheus { child, addr };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !get(addr, "/-/ready").await.contains("Ready") {
            assert!(Instant::now() < deadline, "Prometheus not ready: {}", std::fs::read_to_string(dir.join("prometheus.log")).unwrap());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        p.wait_for("up{job=\"smart-presence\"}", 1.0).await;
        p
    }

    /// The first value `query` gives now (None: no series).
    async fn value(&self, query: &str) -> Option<f64> {
        let q: String = form_urlencoded::byte_serialize(query.as_bytes()).collect();
        let body = get(self.addr, &format!("/api/v1/query?query={q}")).await;
        let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
        assert_eq!(json["status"], "success", "{query}: {body}");
        json["data"]["result"][0]["value"][1].as_str().and_then(|v| v.parse().ok())
    }

    /// Waits (generously: Prometheus scrapes every second) until `query` is at least `least`.
    async fn wait_for(&self, query: &str, least: f64) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let v = self.value(query).await;
            if v.is_some_and(|v| v >= least) {
                return;
            }
            assert!(Instant::now() < deadline, "{query} is {v:?}, expected at least {least}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The body of `GET path`; empty when unreachable or not 200.
async fn get(addr: SocketAddr, path: &str) -> String {
    match http(addr, "GET", path, "").await {
        (200, body) => body,
        _ => String::new(),
    }
}

/// One HTTP/1.0 exchange (the server closes when done; a JSON body when given): the status
/// (0 when unreachable) and the body.
async fn http(addr: SocketAddr, method: &str, path: &str, json: &str) -> (u16, String) {
    let Ok(Ok(mut s)) = tokio::time::timeout(WAIT, tokio::net::TcpStream::connect(addr)).await else { return (0, String::new()) };
    let ask = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{json}", json.len());
    if s.write_all(ask.as_bytes()).await.is_err() {
        return (0, String::new());
    }
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, text.split_once("\r\n\r\n").map(|(_, body)| body.to_string()).unwrap_or_default())
}

/// The value of one series in the exposition (`series` as written there, labels included).
fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}
