//! The real liblinphone 5.1 client (`tests/interop/linphone_smart_client.c`, built against
//! Debian's `liblinphone-dev`): building it once per test run, and running it against a
//! server. Its output lines are described in the C file.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Instant;
use tokio::io::{AsyncBufReadExt, BufReader};

/// Builds the client once per test run (tests run in parallel).
pub fn build_client() -> PathBuf {
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

/// Runs the client against `server` in a task of its own, with the account's arguments
/// given (`--register`, `--identity`, `--password`, `--publish` ...); its stdout lines come
/// back with when they were read (ms since `t0`).
pub fn spawn_client_with(server: std::net::SocketAddr, transport: &'static str, args: Vec<String>, numbers: Vec<String>, duration: u32, t0: Instant) -> tokio::task::JoinHandle<Vec<(u128, String)>> {
    let client = build_client();
    tokio::spawn(async move {
        let work = tempfile::tempdir().unwrap();
        let mut child = tokio::process::Command::new(client)
            .args(["--server", &server.to_string(), "--transport", transport])
            .args(&args)
            .args(["--rls", "sip:rls@example.org", "--dial-prefix", "33", "--duration", &duration.to_string(), "--workdir"])
            .arg(work.path())
            .args(&numbers)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("client starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut out = Vec::new();
        while let Ok(Some(l)) = lines.next_line().await {
            out.push((t0.elapsed().as_millis(), l));
        }
        let status = child.wait().await.unwrap();
        assert!(status.success(), "liblinphone client exited with {status:?}\n{out:?}");
        out
    })
}

