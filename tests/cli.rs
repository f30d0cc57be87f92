//! The binary: `serve` with a config file answers SIP and stops cleanly on SIGTERM; a bad
//! config is refused with a message naming the problem.

mod common;

use common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test]
async fn serve_answers_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_udp_port();
    let config = dir.path().join("sp.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\n[sip]\nudp = [\"127.0.0.1:{port}\"]\ntcp = []\ntls = []\n[admin]\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_smart-presence"))
        .args(["serve", "--config"])
        .arg(&config)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let c = UdpClient::new(format!("127.0.0.1:{port}").parse().unwrap()).await;
    let mut answered = false;
    for i in 0..50 {
        c.send(request("OPTIONS", "UDP", c.local(), &format!("cli{i}"), "", "").as_bytes()).await;
        if c.recv_within(Duration::from_millis(100)).await.is_some() {
            answered = true;
            break;
        }
    }
    assert!(answered, "the server answered OPTIONS");
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
