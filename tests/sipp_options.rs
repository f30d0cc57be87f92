//! SIPp (Debian `sip-tester`) runs our shipped scenarios (`examples/sipp/`) against the
//! server over UDP and TCP; every call must succeed.

mod common;

use common::*;
use std::process::Command;

fn sipp_path() -> String {
    let path = std::env::var("SIPP").unwrap_or_else(|_| "sipp".into());
    let found = Command::new(&path).arg("-v").output().is_ok();
    assert!(found, "sipp not found: install Debian's sip-tester (scripts/test.sh does) or set SIPP");
    path
}

fn run_sipp(transport: &str, target: std::net::SocketAddr, calls: u32) -> std::process::Output {
    run_scenario("options.xml", &[], transport, target, calls)
}

/// Runs `examples/sipp/<scenario>` with `extra` arguments, 200 calls/s at most.
fn run_scenario(scenario: &str, extra: &[&str], transport: &str, target: std::net::SocketAddr, calls: u32) -> std::process::Output {
    let scenario = format!("{}/examples/sipp/{scenario}", env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().to_string();
    let mut out = Command::new(sipp_path())
        .args(["-sf", &scenario, "-t", transport, "-m", &calls.to_string(), "-r", "200", "-l", "50"])
        .args(["-i", "127.0.0.1", "-p", &port, "-timeout", "20s", "-timeout_error", "-nostdin"])
        .args(["-buff_size", "4194304", "-trace_err"])
        .args(extra)
        .arg(target.to_string())
        .current_dir(dir.path())
        .output()
        .expect("sipp runs");
    // SIPp's own account of failed calls, for the assertion message.
    for entry in std::fs::read_dir(dir.path()).unwrap().flatten() {
        if entry.file_name().to_string_lossy().ends_with("_errors.log") {
            out.stderr.extend(std::fs::read(entry.path()).unwrap_or_default());
        }
    }
    out
}

/// SIPp exits 0 only when every call succeeded; its summary must show them all.
fn assert_all_succeeded(out: &std::process::Output, calls: u32) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "sipp exit {:?}\n{stdout}\n{stderr}", out.status.code());
    let line = stdout.lines().find(|l| l.contains("Successful call")).unwrap_or("");
    let counted = line.split('|').filter_map(|f| f.trim().parse::<u32>().ok()).max();
    assert_eq!(counted, Some(calls), "summary: {line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_options_over_udp_and_tcp() {
    let s = TestServer::start().await;
    let (udp, tcp) = (s.udp(), s.tcp());
    let out = tokio::task::spawn_blocking(move || run_sipp("u1", udp, 100)).await.unwrap();
    assert_all_succeeded(&out, 100);
    let out = tokio::task::spawn_blocking(move || run_sipp("t1", tcp, 100)).await.unwrap();
    assert_all_succeeded(&out, 100);
}

/// The scenarios benches/load.sh and operators use: single-presentity, 100-number list,
/// PUBLISH and REGISTER cycles, each over UDP and TCP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_scenarios_over_udp_and_tcp() {
    // SIPp takes one full-state NOTIFY: a 100-number state must fit one datagram.
    // All calls come from 127.0.0.1: no per-source rate cap.
    let s = TestServer::start_with(|c| {
        c.notify.max_body_udp = 65000;
        c.limits.requests_per_second = 0;
    })
    .await;
    let root = env!("CARGO_MANIFEST_DIR");
    let lists = tempfile::tempdir().unwrap();
    let made = Command::new("python3")
        .arg(format!("{root}/examples/sipp/make_lists.py"))
        .args(["--entries", "100", "--lines", "20", "--bound-every", "5", "--out"])
        .arg(lists.path())
        .status()
        .expect("python3 runs make_lists.py");
    assert!(made.success());
    let lists100 = lists.path().join("lists100.csv").to_string_lossy().into_owned();
    let watchers = format!("{root}/examples/sipp/watchers.csv");
    let cases: Vec<(&str, Vec<&str>)> = vec![
        ("subscribe_single.xml", vec!["-inf", &watchers, "-s", "+33612345678"]),
        ("list_subscribe_100.xml", vec!["-inf", &lists100]),
        ("publish.xml", vec!["-s", "alice"]),
        ("register.xml", vec!["-s", "alice", "-key", "expires", "60"]),
    ];
    for (scenario, extra) in cases {
        for (transport, target) in [("u1", s.udp()), ("t1", s.tcp())] {
            let extra: Vec<String> = extra.iter().map(|a| a.to_string()).collect();
            let calls = if scenario == "register.xml" { 1 } else { 20 };
            let out = tokio::task::spawn_blocking(move || {
                let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
                run_scenario(scenario, &extra, transport, target, calls)
            })
            .await
            .unwrap();
            eprintln!("{scenario} over {transport}");
            assert_all_succeeded(&out, calls);
        }
    }
}

/// Issue 17: a BLF-style phone that can only subscribe to a list URI. Its book is stored
/// (Contact Sync); SIPp's body-less SUBSCRIBE to `sip:contacts@example.org` must see the
/// users of that book (the scenario checks a full state with a user in it), over UDP and TCP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_stored_list_subscription_sees_the_users_of_its_book() {
    use smart_presence::address_books::Contact;
    let s = TestServer::start_with(|c| c.limits.requests_per_second = 0).await;
    let numbers = ["+33612345678", "+33698765432", "+4915100000001", "+33655443322"];
    let book: Vec<Contact> = numbers.iter().map(|n| Contact { e164: n.parse().unwrap(), number: n.to_string(), name: None }).collect();
    s.server.address_books().replace("alice", book).unwrap();
    for (n, user) in [(numbers[0], "bob"), (numbers[2], "carol")] {
        s.server.index().bind(n.parse().unwrap(), &format!("sip:{user}@example.org"), smart_presence::index::Source::Admin).unwrap();
    }
    for (transport, target) in [("u1", s.udp()), ("t1", s.tcp())] {
        let extra = ["-s", "alice", "-key", "domain", "example.org"];
        let out = tokio::task::spawn_blocking(move || run_scenario("stored_list_subscribe.xml", &extra, transport, target, 10)).await.unwrap();
        eprintln!("stored_list_subscribe.xml over {transport}");
        assert_all_succeeded(&out, 10);
    }
}
