//! SIPp (Debian `sip-tester`) sends OPTIONS over UDP and TCP; every call must succeed.

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
    let scenario = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/sipp/options.xml");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().to_string();
    Command::new(sipp_path())
        .args(["-sf", scenario, "-t", transport, "-m", &calls.to_string(), "-r", "200", "-l", "50"])
        .args(["-i", "127.0.0.1", "-p", &port, "-timeout", "20s", "-timeout_error", "-nostdin"])
        .arg(target.to_string())
        .current_dir(dir.path())
        .output()
        .expect("sipp runs")
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
