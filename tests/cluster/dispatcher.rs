//! A real Kamailio in front of the test's nodes, configured by the shipped
//! `examples/cluster/kamailio.cfg` (its placeholders filled with the test's ports) and a
//! dispatcher list of the nodes. Missing `kamailio` fails the test: `scripts/test.sh`
//! installs it.
#![allow(dead_code)]

use crate::common::{free_port, request, UdpClient};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Dispatcher {
    pub addr: SocketAddr,
    child: Child,
    log: std::path::PathBuf,
}

impl Dispatcher {
    /// Starts Kamailio on a free loopback port, dispatching to `nodes` (UDP), and waits
    /// until it answers OPTIONS.
    pub async fn start(dir: &Path, nodes: &[SocketAddr]) -> Dispatcher {
        std::fs::create_dir_all(dir).unwrap();
        let found = Command::new("kamailio").arg("-v").output().is_ok();
        assert!(found, "kamailio not found: install Debian's kamailio (scripts/test.sh does)");
        let port = free_port();
        let list = dir.join("dispatcher.list");
        let lines: String = nodes.iter().map(|n| format!("1 sip:{n}\n")).collect();
        std::fs::write(&list, lines).unwrap();
        let template = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/cluster/kamailio.cfg")).unwrap();
        let cfg = template
            .replace("@@LB_ADDR@@", "127.0.0.1")
            .replace("@@LB_PORT@@", &port.to_string())
            .replace("@@DISPATCHER_LIST@@", &list.display().to_string());
        let cfg_path = dir.join("kamailio.cfg");
        std::fs::write(&cfg_path, cfg).unwrap();
        let log = dir.join("kamailio.log");
        let child = Command::new("kamailio")
            .arg("-f")
            .arg(&cfg_path)
            .args(["-DD", "-E", "-n", "1", "-m", "32", "-M", "4", "-P"])
            .arg(dir.join("kamailio.pid"))
            .arg("-Y")
            .arg(dir)
            .arg("-w")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("kamailio starts");
        let d = Dispatcher { addr: SocketAddr::from(([127, 0, 0, 1], port)), child, log };
        let probe = UdpClient::new(d.addr).await;
        let started = Instant::now();
        for i in 0.. {
            probe.send(request("OPTIONS", "UDP", probe.local(), &format!("lb-up{i}"), "", "").replace("sip:rls@example.org", &format!("sip:{}", d.addr)).as_bytes()).await;
            if probe.recv_within(Duration::from_millis(200)).await.is_some() {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(15), "kamailio did not come up:\n{}", d.log());
        }
        d
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Dispatcher {
    /// SIGTERM: Kamailio's main process then stops the workers it forked. A SIGKILL left
    /// them running, and they went on probing (OPTIONS) ports that later tests reused.
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(5) {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
