//! Issue 8: subscribers' address books stay out of the logs, even at trace level, unless
//! `sip.log_messages` is turned on. One test in its own binary: it installs the global
//! tracing subscriber and reads everything the server logs.

mod common;

use common::peer::Peer;
use common::*;
use smart_presence::index::Source;
use std::time::Duration;

/// What an address book holds; none of these may reach the logs.
const SECRETS: &[&str] = &["655501234", "655509876", "0655507777", "secret.contact", "755501111"];

fn entries() -> Vec<String> {
    vec![
        "sip:+33655501234@example.org;user=phone".into(), // bound below: a user
        "sip:+33655509876@example.org;user=phone".into(), // matches nobody
        "tel:0655507777".into(),                          // national, matches nobody
        "sip:secret.contact@example.org".into(),          // a SIP user who is nobody
        "sip:+33755501111@@bad;user=phone".into(),        // not even a valid URI
    ]
}

fn list_body(uris: &[String]) -> String {
    resource_list(uris)
}

fn subscribe(local: std::net::SocketAddr, branch: &str, extra: &str, body: &[u8]) -> Vec<u8> {
    list_subscribe_raw("UDP", local, branch, extra, body)
}

/// Every path a list can take: accepted (plain and deflated), live update, rejected
/// NOTIFY, too many entries, bad XML, bad deflate, rate limited, unparseable.
async fn exercise(s: &TestServer) {
    let mut p = Peer::udp(s.udp()).await;
    let local = p.local();
    let list = list_body(&entries());
    let deflated = smart_presence::body::deflate_zlib(list.as_bytes());
    p.send(&subscribe(local, "ok1", "", list.as_bytes())).await;
    p.send(&subscribe(local, "ok2", "Content-Encoding: deflate\r\nAccept-Encoding: deflate\r\n", &deflated)).await;
    // A listed number becomes a user while subscribed: live NOTIFYs.
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.server.index().bind("+33655509876".parse().unwrap(), "sip:carol@example.org", Source::Admin).unwrap();
    let bad_xml = format!("<resource-lists><list><entry uri=\"{}\">", entries()[1]);
    p.send(&subscribe(local, "bad1", "", bad_xml.as_bytes())).await;
    p.send(&subscribe(local, "bad2", "Content-Encoding: deflate\r\n", &deflated[..deflated.len() / 2])).await;
    let many: Vec<String> = (0..20).map(|i| format!("sip:+336555{i:05}@example.org")).collect();
    p.send(&subscribe(local, "many", "", list_body(&many).replace("</list>", &format!("<entry uri=\"{}\"/></list>", entries()[0])).as_bytes())).await;
    p.send(format!("GARBAGE {}\r\n\r\n", entries()[1]).as_bytes()).await;
    // Answer every NOTIFY: the first ones 200, then reject to end the subscriptions.
    let mut answered = 0;
    while let Some(m) = p.recv_within(Duration::from_millis(1500)).await {
        if m.is_request("NOTIFY") {
            answered += 1;
            let status = if answered > 2 { 481 } else { 200 };
            p.send(&m.response(status, "X")).await;
        }
    }
    // Past the rate limit: 503s, then dropped datagrams.
    for i in 0..40 {
        p.send(&subscribe(local, &format!("flood{i}"), "", list.as_bytes())).await;
    }
    while p.recv_within(Duration::from_millis(500)).await.is_some() {}
}

#[tokio::test]
async fn address_books_stay_out_of_the_logs_unless_message_logging_is_on() {
    let capture = Capture::default();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(capture.clone())
        .init();
    let tune = |c: &mut smart_presence::config::Config| {
        c.limits.requests_per_second = 10;
        c.limits.request_burst = 20;
        c.subscription.max_entries = 10;
    };
    let s = TestServer::start_with(tune).await;
    s.server.index().bind("+33655501234".parse().unwrap(), "sip:bob@example.org", Source::Admin).unwrap();
    exercise(&s).await;
    s.server.shutdown(Duration::from_millis(200)).await;
    let logs = capture.text();
    assert!(logs.contains("request refused by a limit"), "refusals are logged:\n{logs}");
    for secret in SECRETS {
        assert!(!logs.contains(secret), "{secret} leaked into the logs:\n{logs}");
    }
    let lines = logs.lines().count();

    // With sip.log_messages on, messages (and so the lists) are logged: the capture works.
    let s = TestServer::start_with(|c| {
        tune(c);
        c.sip.log_messages = true;
    })
    .await;
    exercise(&s).await;
    let logs = capture.text();
    assert!(logs.contains(SECRETS[0]) && logs.contains(SECRETS[3]), "message logging shows lists");
    eprintln!("{lines} log lines at trace level without message logging, none with a list entry");
}
