//! The binary: `serve` with a config file answers SIP and stops cleanly on SIGTERM; a bad
//! config is refused with a message naming the problem.

mod common;

use common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Starts `serve` with UDP and the admin endpoint on free ports and TLS on `tls` (a TOML
/// list's items), stderr to a pipe; returns once it answers OPTIONS over UDP.
async fn serve_answering(dir: &std::path::Path, tls: &str) -> std::process::Child {
    let port = free_port();
    let admin = free_port();
    let config = dir.join("sp.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\n[sip]\nudp = [\"127.0.0.1:{port}\"]\ntcp = []\ntls = [{tls}]\n\
             [admin]\nlisten = \"127.0.0.1:{admin}\"\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_smart-presence"))
        .args(["serve", "--config"])
        .arg(&config)
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let c = UdpClient::new(format!("127.0.0.1:{port}").parse().unwrap()).await;
    for i in 0..50 {
        c.send(request("OPTIONS", "UDP", c.local(), &format!("cli{i}"), "", "").as_bytes()).await;
        if c.recv_within(Duration::from_millis(100)).await.is_some() {
            return child;
        }
    }
    panic!("the server did not answer OPTIONS");
}

/// Sends SIGTERM and waits (10 s at most) for a clean exit; returns what it logged.
fn stop(mut child: std::process::Child) -> String {
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "still running 10 s after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "clean exit: {status:?}");
    let mut log = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut log).unwrap();
    log
}

#[tokio::test]
async fn serve_answers_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let child = serve_answering(dir.path(), "").await;
    let log = stop(child);
    assert!(log.contains("open-file limit (RLIMIT_NOFILE): "), "the limit it runs with is logged:\n{log}");
}

/// Logs to a pipe (journald, a file) carry no ANSI colour codes.
#[tokio::test]
async fn logs_to_a_pipe_are_not_coloured() {
    let dir = tempfile::tempdir().unwrap();
    let log = stop(serve_answering(dir.path(), "").await);
    assert!(log.contains("smart-presence listening"), "{log}");
    assert!(!log.contains('\x1b'), "no escape byte in piped logs:\n{log:?}");
}

/// `bindings add`, `get` and `remove` through the running server. The CLI reads the answer
/// without checking its number again with phonenumber's metadata, whose lazy build took
/// 360-560 ms per command here (debug build; ~100 ms in release); the time is printed, not
/// asserted (speed is for benchmarks: this machine is shared and noisy).
#[tokio::test]
async fn bindings_through_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let child = serve_answering(dir.path(), "").await;
    let config = dir.path().join("sp.toml");
    let bindings = |args: &[&str]| {
        let started = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_smart-presence"))
            .arg("bindings")
            .arg("--config")
            .arg(&config)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        (started.elapsed(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let mut fastest = Duration::MAX;
    for i in 0..3 {
        let number = format!("+3361234567{i}");
        bindings(&["add", &number, "sip:bob@example.org"]);
        let (took, out) = bindings(&["get", &number]);
        assert!(out.starts_with(&format!("{number} sip:bob@example.org (bound at ")), "{out}");
        fastest = fastest.min(took);
        let (took, out) = bindings(&["remove", &number]);
        assert_eq!(out, format!("removed {number} sip:bob@example.org\n"));
        fastest = fastest.min(took);
    }
    stop(child);
    eprintln!("fastest get/remove through the server: {fastest:?}");
}

/// A ClientHello (TLS 1.2 and 1.3 suites) whose SNI is an IP address, as liblinphone sends.
fn client_hello_with_ip_sni(ip: &str) -> Vec<u8> {
    let name = ip.as_bytes();
    let mut sni = vec![0x00, 0x00]; // extension type: server_name
    let list_len = 3 + name.len();
    sni.extend_from_slice(&((list_len + 2) as u16).to_be_bytes());
    sni.extend_from_slice(&(list_len as u16).to_be_bytes());
    sni.push(0x00); // host_name
    sni.extend_from_slice(&(name.len() as u16).to_be_bytes());
    sni.extend_from_slice(name);
    let mut body = vec![0x03, 0x03];
    body.extend_from_slice(&[7u8; 32]); // random
    body.push(0); // no session id
    body.extend_from_slice(&[0x00, 0x04, 0x13, 0x01, 0xc0, 0x2f]); // cipher suites
    body.extend_from_slice(&[0x01, 0x00]); // null compression
    body.extend_from_slice(&(sni.len() as u16).to_be_bytes());
    body.extend_from_slice(&sni);
    let mut hs = vec![0x01, 0x00];
    hs.extend_from_slice(&(body.len() as u16).to_be_bytes());
    hs.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    record.extend_from_slice(&hs);
    record
}

/// rustls's "Illegal SNI extension" warning (an IP address as SNI, on every liblinphone TLS
/// connection) is not logged at the default level.
#[tokio::test]
async fn ip_address_sni_is_not_logged() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let tls_port = free_port();
    let child = serve_answering(dir.path(), &format!("\"127.0.0.1:{tls_port}\"")).await;
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", tls_port)).await.unwrap();
    s.write_all(&client_hello_with_ip_sni("127.0.0.1")).await.unwrap();
    let mut buf = [0u8; 4096];
    let answered = tokio::time::timeout(WAIT, s.read(&mut buf)).await;
    assert!(answered.is_ok(), "the server dealt with the ClientHello (alert or close) in time");
    let log = stop(child);
    assert!(log.contains("smart-presence listening"), "{log}");
    assert!(!log.contains("SNI"), "no SNI warning:\n{log}");
}

#[test]
fn bad_config_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "[sip]\nudpp = []\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_smart-presence")).args(["serve", "--config"]).arg(&config).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("udpp"), "{err}");
}

#[test]
fn accounts_add_and_list_on_the_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sp.toml");
    std::fs::write(&config, format!("domain = \"example.org\"\ndata_dir = \"{}\"\n", dir.path().join("data").display())).unwrap();
    let bin = env!("CARGO_BIN_EXE_smart-presence");
    let add = Command::new(bin).args(["accounts", "--config"]).arg(&config).args(["add", "alice", "secret", "06 12 34 56 78"]).output().unwrap();
    assert!(add.status.success(), "{}", String::from_utf8_lossy(&add.stderr));
    let again = Command::new(bin).args(["accounts", "--config"]).arg(&config).args(["add", "alice", "x"]).output().unwrap();
    assert!(!again.status.success(), "a taken username is refused");
    let list = Command::new(bin).args(["accounts", "--config"]).arg(&config).arg("list").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&list.stdout), "sip:alice@example.org\t+33612345678\n");
    // No server (no admin endpoint configured): on the data directory.
    let share = Command::new(bin).args(["accounts", "--config"]).arg(&config).args(["share-status", "alice", "off"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&share.stdout), "alice: share status off\n", "{}", String::from_utf8_lossy(&share.stderr));
    let unknown = Command::new(bin).args(["accounts", "--config"]).arg(&config).args(["share-status", "bob", "off"]).output().unwrap();
    assert!(!unknown.status.success(), "no such account");
}

#[test]
fn check_config_passes_the_example_and_names_a_wrong_key() {
    let bin = env!("CARGO_BIN_EXE_smart-presence");
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/smart-presence.toml");
    let ok = Command::new(bin).args(["check-config", example]).output().unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let out = String::from_utf8_lossy(&ok.stdout);
    assert!(out.starts_with("ok\n") && out.contains("notify.format auto") && out.contains("numbers.default_region FR"), "{out}");

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "domain = \"example.org\"\n[notify]\nformat = \"RFC\"\n").unwrap();
    let out = Command::new(bin).args(["check-config"]).arg(&bad).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("notify.format") && err.contains("auto, linphone, rfc"), "{err}");
    // A region the SIP path refused and the HTTP path silently ignored: refused at start.
    std::fs::write(&bad, "[numbers]\ndefault_region = \"FRA\"\n").unwrap();
    let out = Command::new(bin).args(["serve", "--config"]).arg(&bad).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("numbers.default_region"));
}
