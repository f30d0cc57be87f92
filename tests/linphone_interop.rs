//! Interop with the real client: liblinphone 5.1 (Debian `liblinphone-dev`) subscribes a
//! friend list of phone numbers; we check which friends it sees as users, with which SIP
//! URI, over UDP and TCP, and that a binding made while it is subscribed reaches it live.
//! The client program is `tests/interop/linphone_smart_client.c` (see its README).

mod common;

use common::*;
use smart_presence::index::Source;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};

/// Builds the client once per test run (tests run in parallel).
fn build_client() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(build_client_now).clone()
}

fn build_client_now() -> PathBuf {
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("linphone_smart_client");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/build.sh");
    let status = std::process::Command::new("sh").arg(script).arg(&out).status().expect("sh runs");
    assert!(status.success(), "building the liblinphone client failed: install liblinphone-dev (scripts/test.sh does)");
    out
}

/// Runs the client for `duration`, binding `late` once it has been running `late_after`.
/// Returns its stdout lines, each with when we read it (ms since start, our clock), and when
/// the late binding was made (same clock).
async fn run_client(s: &TestServer, transport: &str, duration: u32, late: Option<(&str, &str, Duration)>) -> (Vec<(u128, String)>, u128) {
    let client = build_client();
    let work = tempfile::tempdir().unwrap();
    let server = if transport == "udp" { s.udp() } else { s.tcp() };
    let mut child = tokio::process::Command::new(client)
        .args(["--server", &server.to_string(), "--transport", transport, "--register", "no"])
        .args(["--identity", "sip:alice@example.org", "--rls", "sip:rls@example.org", "--dial-prefix", "33"])
        .args(["--duration", &duration.to_string(), "--workdir"])
        .arg(work.path())
        .args(["0612345678", "06 98 76 54 32", "+14155550100"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("client starts");
    let started = Instant::now();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut out = Vec::new();
    let mut late = late;
    let mut late_at = 0;
    loop {
        let wait = tokio::time::sleep(Duration::from_millis(50));
        tokio::select! {
            line = lines.next_line() => match line.unwrap() {
                Some(l) => out.push((started.elapsed().as_millis(), l)),
                None => break,
            },
            _ = wait => {}
        }
        if let Some((number, uri, after)) = late {
            if started.elapsed() >= after {
                s.server.index().bind(number.parse().unwrap(), uri, Source::Admin).unwrap();
                late_at = started.elapsed().as_millis();
                late = None;
            }
        }
        assert!(started.elapsed() < Duration::from_secs(duration as u64 + 20), "client did not exit");
    }
    let status = child.wait().await.unwrap();
    assert!(status.success(), "liblinphone client exited with {status:?} (134/139 = it crashed on our NOTIFY)\n{out:?}");
    (out, late_at)
}

fn final_of<'a>(lines: &'a [(u128, String)], number: &str) -> &'a str {
    let prefix = format!("FINAL {number} ");
    lines.iter().find_map(|(_, l)| l.strip_prefix(&prefix)).unwrap_or_else(|| panic!("no FINAL line for {number}: {lines:?}"))
}

async fn interop(transport: &str) {
    let s = TestServer::start().await;
    s.server.index().bind("+33612345678".parse().unwrap(), "sip:bob@example.org", Source::Admin).unwrap();
    let (lines, late_at) = run_client(&s, transport, 7, Some(("+33698765432", "sip:carol@example.org", Duration::from_secs(3)))).await;
    assert_eq!(final_of(&lines, "0612345678"), "USER sip:bob@example.org");
    assert_eq!(final_of(&lines, "06 98 76 54 32"), "USER sip:carol@example.org", "the live binding reached the client");
    assert_eq!(final_of(&lines, "+14155550100"), "NOTUSER");
    // Carol was seen without a re-subscribe, after the binding was made.
    let carol_seen = lines
        .iter()
        .find(|(_, l)| l.starts_with("PRESENCE 06 98 76 54 32 open sip:carol@example.org "))
        .map(|(at, _)| *at)
        .expect("a PRESENCE line for carol");
    assert!(carol_seen >= late_at, "carol seen at {carol_seen} ms, bound at {late_at} ms");
    eprintln!("{transport}: carol bound at {late_at} ms, reported by liblinphone at {carol_seen} ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liblinphone_sees_users_over_udp_and_live_updates() {
    interop("udp").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liblinphone_sees_users_over_tcp_and_live_updates() {
    interop("tcp").await;
}
