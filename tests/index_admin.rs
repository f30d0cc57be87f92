//! The admin HTTP API and the `bindings` CLI, over real loopback sockets.

mod common;

use smart_presence::config::Config;
use smart_presence::admin::bindings as admin;
use smart_presence::cli::bindings::{run, BindingsCommand};
use smart_presence::index::{dir_in, Index, Source};
use smart_presence::numbers::{normalize, E164};
use std::io::{Read, Write};
use std::net::SocketAddr;

fn n(s: &str) -> E164 {
    normalize(s, None).unwrap()
}

struct Server {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(index: Index) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(admin::serve_on(listener, index, async {
            let _ = rx.await;
        }));
        Server { addr, stop: Some(tx), task }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
    }
}

/// A raw HTTP/1.1 exchange (Connection: close), from a blocking thread.
async fn http(addr: SocketAddr, method: &str, path: &str, ct: Option<&str>, body: &[u8]) -> (u16, String) {
    let req = {
        let mut r = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
        if let Some(ct) = ct {
            r.push_str(&format!("Content-Type: {ct}\r\n"));
        }
        r.push_str("\r\n");
        let mut v = r.into_bytes();
        v.extend_from_slice(body);
        v
    };
    tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(&req).unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        let text = String::from_utf8_lossy(&out).into_owned();
        let status: u16 = text[9..12].parse().unwrap();
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        (status, body)
    })
    .await
    .unwrap()
}

/// An admin port outside the ephemeral range, never handed out twice (see `common::free_port`).
fn free_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], common::free_port()))
}

fn config(data_dir: &std::path::Path, listen: SocketAddr) -> Config {
    let mut c = Config { data_dir: data_dir.to_path_buf(), ..Config::default() };
    c.admin.listen = Some(listen);
    c.numbers.default_region = Some(smart_presence::numbers::Region::FR);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_over_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let idx = Index::open(&dir_in(dir.path())).unwrap();
    let mut feed = idx.changes();
    let srv = Server::start(idx.clone()).await;
    let a = srv.addr;

    let (st, body) = http(a, "GET", "/health", None, b"").await;
    assert_eq!((st, body.as_str()), (200, "{\"service\":\"smart-presence-index\"}"));

    let (st, body) = http(a, "PUT", "/bindings/%2B33612345678", Some("application/json"), br#"{"sip_uri":"sip:alice@example.com"}"#).await;
    assert_eq!(st, 200, "{body}");
    assert!(body.contains("\"outcome\":\"new\""), "{body}");
    // National form with a region, literal '+' in a path, tel: URI.
    let (st, body) = http(a, "GET", "/bindings/0612345678?region=FR", None, b"").await;
    assert_eq!(st, 200, "{body}");
    assert!(body.contains("sip:alice@example.com") && body.contains("\"source\":\"admin\""), "{body}");
    assert_eq!(http(a, "GET", "/bindings/+33612345678", None, b"").await.0, 200);
    assert_eq!(http(a, "GET", "/bindings/tel:+33612345678", None, b"").await.0, 200);
    assert_eq!(http(a, "GET", "/bindings/0612345678", None, b"").await.0, 400); // no region
    assert_eq!(http(a, "GET", "/bindings/%2B33612345679", None, b"").await.0, 404);
    assert_eq!(http(a, "GET", "/bindings/garbage", None, b"").await.0, 400);
    let (st, _) = http(a, "PUT", "/bindings/%2B33612345679", None, br#"{"sip_uri":"tel:+1"}"#).await;
    assert_eq!(st, 400);

    let (st, body) = http(a, "PUT", "/bindings/%2B33612345678", None, br#"{"sip_uri":"sip:bob@example.com"}"#).await;
    assert_eq!(st, 200);
    assert!(body.contains("\"outcome\":\"rebound\"") && body.contains("\"old_uri\":\"sip:alice@example.com\""), "{body}");
    let (st, body) = http(a, "GET", "/numbers?sip_uri=sip:bob@example.com", None, b"").await;
    assert_eq!(st, 200);
    assert!(body.contains("+33612345678"), "{body}");

    // Import by content type; summary with line numbers of rejects.
    let csv = "number,sip_uri\n06 12 34 56 70,sip:c@example.com\nnope,sip:d@example.com\n+14155552671,sip:e@example.com\n";
    let (st, body) = http(a, "POST", "/import?region=FR", Some("text/csv"), csv.as_bytes()).await;
    assert_eq!(st, 200, "{body}");
    let s: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!((s["imported"].as_u64(), s["rejected"].as_u64()), (Some(2), Some(1)));
    assert_eq!(s["rejections"][0]["line"].as_u64(), Some(3));
    let jsonl = "{\"number\":\"+447400123456\",\"sip_uri\":\"sip:f@example.com\"}\n{\"oops\":1}\n";
    let (st, body) = http(a, "POST", "/import?strict=true", Some("application/x-ndjson"), jsonl.as_bytes()).await;
    assert_eq!(st, 422, "{body}");
    assert!(idx.lookup(n("+447400123456")).unwrap().is_none());
    assert_eq!(http(a, "POST", "/import", Some("text/plain"), b"x").await.0, 400);

    let (st, body) = http(a, "GET", "/export?format=csv", None, b"").await;
    assert_eq!(st, 200);
    // Chunked body: look for the lines inside it.
    assert!(body.contains("number,sip_uri") && body.contains("+14155552671,sip:e@example.com"), "{body}");
    let (st, body) = http(a, "GET", "/stats", None, b"").await;
    assert_eq!(st, 200);
    let s: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(s["numbers"].as_u64(), Some(3));

    let (st, _) = http(a, "DELETE", "/bindings/%2B33612345678", None, b"").await;
    assert_eq!(st, 200);
    assert_eq!(http(a, "DELETE", "/bindings/%2B33612345678", None, b"").await.0, 404);

    // Every change made through the API reached the feed, in order.
    let mut news = Vec::new();
    while let Ok(c) = feed.try_recv() {
        news.push((c.number.to_string(), c.old, c.new));
    }
    assert_eq!(news.len(), 5, "{news:?}");
    assert_eq!(news[4], ("+33612345678".into(), Some("sip:bob@example.com".into()), None));
    assert!(idx.check_consistency().unwrap().is_empty());
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_talks_to_the_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let idx = Index::open(&dir_in(dir.path())).unwrap();
    let mut feed = idx.changes();
    let srv = Server::start(idx.clone()).await;
    let cfg = config(dir.path(), srv.addr);

    run(BindingsCommand::Add { number: "06 12 34 56 78".into(), sip_uri: "sip:alice@example.com".into() }, &cfg).await.unwrap();
    let b = idx.lookup(n("+33612345678")).unwrap().unwrap();
    assert_eq!((b.sip_uri.as_str(), b.source), ("sip:alice@example.com", Source::Admin));
    run(BindingsCommand::Get { number: "+33612345678".into() }, &cfg).await.unwrap();
    assert!(run(BindingsCommand::Get { number: "+33612345679".into() }, &cfg).await.is_err());

    let file = dir.path().join("in.csv");
    let mut csv = String::from("number,sip_uri\n");
    for i in 0..5000 {
        csv.push_str(&format!("+4474001{i:05},sip:u{}@example.com\n", i % 100));
    }
    csv.push_str("bad line\n");
    std::fs::write(&file, &csv).unwrap();
    run(BindingsCommand::Import { file: file.clone(), format: None, strict: false }, &cfg).await.unwrap();
    assert_eq!(idx.len(), 5001);
    assert!(run(BindingsCommand::Import { file: file.clone(), format: None, strict: true }, &cfg).await.is_err());

    let out = dir.path().join("out.jsonl");
    run(BindingsCommand::Export { file: Some(out.clone()), format: None }, &cfg).await.unwrap();
    let text = std::fs::read_to_string(&out).unwrap();
    assert_eq!(text.lines().count(), 5001);
    assert!(text.contains("{\"number\":\"+33612345678\",\"sip_uri\":\"sip:alice@example.com\"}"));
    run(BindingsCommand::Stats, &cfg).await.unwrap();
    run(BindingsCommand::Remove { number: "tel:+33612345678".into() }, &cfg).await.unwrap();
    assert!(idx.lookup(n("+33612345678")).unwrap().is_none());

    // The feed saw the CLI's changes (they went through the server's Index).
    let mut count = 0;
    while feed.try_recv().is_ok() {
        count += 1;
    }
    assert_eq!(count, 1 + 5000 + 1);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_works_directly_when_no_server_runs() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), free_port());
    run(BindingsCommand::Add { number: "+1 (415) 555-2671".into(), sip_uri: "sip:carol@example.com".into() }, &cfg).await.unwrap();
    let file = dir.path().join("in.jsonl");
    std::fs::write(&file, "{\"number\":\"06 12 34 56 78\",\"sip_uri\":\"sip:alice@example.com\"}\n").unwrap();
    run(BindingsCommand::Import { file, format: None, strict: true }, &cfg).await.unwrap();
    let out = dir.path().join("out.csv");
    run(BindingsCommand::Export { file: Some(out.clone()), format: None }, &cfg).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "number,sip_uri\n+14155552671,sip:carol@example.com\n+33612345678,sip:alice@example.com\n"
    );
    run(BindingsCommand::Stats, &cfg).await.unwrap();
    let idx = Index::open(&dir_in(dir.path())).unwrap();
    assert_eq!(idx.lookup(n("+14155552671")).unwrap().unwrap().source, Source::Cli);
    assert_eq!(idx.lookup(n("+33612345678")).unwrap().unwrap().source, Source::Import);

    // Locked by "a server" (this process) with no admin endpoint answering: a clear error.
    let err = run(BindingsCommand::Stats, &cfg).await.unwrap_err().to_string();
    assert!(err.contains("locked by another process") && err.contains("no admin endpoint answers"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_refuses_a_foreign_listener() {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route("/health", axum::routing::get(|| async { "hello" }));
    let task = tokio::spawn(async move { axum::serve(listener, app).await });
    let err = run(BindingsCommand::Stats, &config(dir.path(), addr)).await.unwrap_err().to_string();
    assert!(err.contains("not a smart-presence admin endpoint"), "{err}");
    task.abort();
}

#[test]
fn bindings_command_parses_as_a_clap_subcommand() {
    use clap::Parser;
    #[derive(clap::Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: BindingsCommand,
    }
    let c = Cli::try_parse_from(["bindings", "import", "users.jsonl", "--strict"]).unwrap();
    assert!(matches!(c.cmd, BindingsCommand::Import { strict: true, format: None, .. }));
    let c = Cli::try_parse_from(["bindings", "export", "--format", "jsonl"]).unwrap();
    assert!(matches!(c.cmd, BindingsCommand::Export { file: None, format: Some(smart_presence::index::Format::Jsonl) }));
    let c = Cli::try_parse_from(["bindings", "add", "+33612345678", "sip:a@example.com"]).unwrap();
    assert!(matches!(c.cmd, BindingsCommand::Add { .. }));
    assert!(Cli::try_parse_from(["bindings", "import", "x.csv", "--format", "xml"]).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_that_breaks_off_imports_no_truncated_line() {
    let dir = tempfile::tempdir().unwrap();
    let idx = Index::open(&dir_in(dir.path())).unwrap();
    let srv = Server::start(idx.clone()).await;
    let addr = srv.addr;
    let answer = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        let body = b"+33612345670,sip:whole@example.com\n+33612345678,sip:truncated@exam";
        let head = format!("POST /import?format=csv HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", body.len() + 100);
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(body).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    })
    .await
    .unwrap();
    assert!(!answer.starts_with("HTTP/1.1 200"), "{answer}");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(idx.is_empty(), "a partial upload was imported");
    srv.stop().await;
}
