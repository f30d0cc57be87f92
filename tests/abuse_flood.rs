//! Issue 8: floods do not stop the server from answering well-behaved clients.
//!
//! One server on loopback; a flooder on 127.0.0.1 and a well-behaved client on another
//! loopback source address (127.0.0.2, so both hit the same sockets but count as different
//! sources; ::1 where 127.0.0.2 cannot be bound). Each phase is bounded in time and count:
//! a UDP flood of garbage (and of valid requests past the rate limit), a TCP connection
//! flood, and slow-loris TCP clients. The client's latencies are printed (`--nocapture`).

mod common;

use common::peer::Peer;
use common::*;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::net::{TcpSocket, UdpSocket};

const PHASE: Duration = Duration::from_secs(3);

/// The well-behaved client's source address and the server addresses it uses.
struct Client {
    ip: IpAddr,
    udp: SocketAddr,
    tcp: SocketAddr,
}

fn options(proto: &str, local: SocketAddr, branch: &str) -> String {
    request("OPTIONS", proto, local, branch, "", "")
}

#[derive(Default)]
struct Latencies(Vec<Duration>, usize);

impl Latencies {
    fn report(&mut self, what: &str) {
        self.0.sort();
        let n = self.0.len();
        let at = |q: f64| self.0.get(((n as f64 - 1.0) * q).round() as usize).copied().unwrap_or_default();
        eprintln!(
            "flood latency [{what}]: {n} answered, {} lost; p50 {:.2?}, p95 {:.2?}, max {:.2?}",
            self.1,
            at(0.5),
            at(0.95),
            at(1.0)
        );
    }

    fn assert_served(&self, what: &str) {
        assert_eq!(self.1, 0, "{what}: every request of the well-behaved client answered");
        let max = self.0.iter().max().copied().unwrap_or_default();
        assert!(max < Duration::from_secs(5), "{what}: max latency {max:?}");
    }
}

/// OPTIONS over UDP every `gap` while `until`; retransmitted like RFC 3261 Timer E (500 ms).
async fn probe_udp(c: &Client, until: Instant, gap: Duration) -> Latencies {
    let sock = UdpSocket::bind(SocketAddr::new(c.ip, 0)).await.unwrap();
    let local = sock.local_addr().unwrap();
    let mut lat = Latencies::default();
    let mut i = 0;
    while Instant::now() < until || i < 5 {
        i += 1;
        let branch = format!("probe{i}");
        let msg = options("UDP", local, &branch);
        let started = Instant::now();
        let mut answered = false;
        'tries: for _ in 0..6 {
            sock.send_to(msg.as_bytes(), c.udp).await.unwrap();
            let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
            let mut buf = vec![0u8; 65_535];
            while let Ok(Ok((n, _))) = tokio::time::timeout_at(deadline, sock.recv_from(&mut buf)).await {
                let text = String::from_utf8_lossy(&buf[..n]);
                if text.starts_with("SIP/2.0 200") && text.contains(&format!("branch=z9hG4bK{branch};")) {
                    answered = true;
                    break 'tries;
                }
            }
        }
        if answered {
            lat.0.push(started.elapsed());
        } else {
            lat.1 += 1;
        }
        tokio::time::sleep(gap).await;
    }
    lat
}

/// A new TCP connection and one OPTIONS on it, every `gap` while `until`.
async fn probe_tcp(c: &Client, until: Instant, gap: Duration) -> Latencies {
    let mut lat = Latencies::default();
    let mut i = 0;
    while Instant::now() < until || i < 5 {
        i += 1;
        let started = Instant::now();
        let attempt = async {
            let sock = if c.ip.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }.ok()?;
            sock.bind(SocketAddr::new(c.ip, 0)).ok()?;
            let stream = sock.connect(c.tcp).await.ok()?;
            let local = stream.local_addr().ok()?;
            let mut p = Peer::stream(stream, local);
            p.send(options("TCP", local, &format!("tprobe{i}")).as_bytes()).await;
            p.recv_within(WAIT).await.filter(|m| m.status() == Some(200))
        };
        match tokio::time::timeout(WAIT, attempt).await {
            Ok(Some(_)) => lat.0.push(started.elapsed()),
            _ => lat.1 += 1,
        }
        tokio::time::sleep(gap).await;
    }
    lat
}

/// A list SUBSCRIBE: time to the 200 and to the first NOTIFY.
async fn subscribe_once(c: &Client, branch: &str) -> (Duration, Duration) {
    let socket = UdpSocket::bind(SocketAddr::new(c.ip, 0)).await.unwrap();
    let mut p = Peer::Udp { socket, server: c.udp };
    let local = p.local();
    let body = "<?xml version=\"1.0\"?><resource-lists xmlns=\"urn:ietf:params:xml:ns:resource-lists\"><list>\
                <entry uri=\"sip:+33612345678@example.org;user=phone\"/></list></resource-lists>";
    let extra = format!(
        "Contact: <sip:alice@{local}>\r\nEvent: presence\r\nSupported: eventlist\r\nRequire: recipient-list-subscribe\r\n\
         Content-Type: application/resource-lists+xml\r\nContent-Disposition: recipient-list\r\nExpires: 0\r\n"
    );
    let started = Instant::now();
    p.send(request("SUBSCRIBE", "UDP", local, branch, &extra, body).as_bytes()).await;
    let (mut ok, mut notified) = (None, None);
    while ok.is_none() || notified.is_none() {
        let m = p.recv().await;
        if m.status().is_some() {
            assert_eq!(m.status(), Some(200), "{}", m.start_line());
            ok = Some(started.elapsed());
        } else {
            p.send(&m.response(200, "OK")).await;
            notified = Some(started.elapsed());
        }
    }
    (ok.unwrap(), notified.unwrap())
}

/// Tiny deterministic generator for garbage bytes.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Garbage datagrams (one in four a well-formed OPTIONS) from 127.0.0.1, as fast as one
/// thread can, for `dur` or `max` datagrams. Returns how many were sent.
fn udp_flood(target: SocketAddr, dur: Duration, max: u64) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let socks: Vec<std::net::UdpSocket> = (0..4).map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let started = Instant::now();
        let mut sent = 0u64;
        let mut buf = Vec::with_capacity(1500);
        while sent < max && started.elapsed() < dur {
            buf.clear();
            let sock = &socks[(sent % 4) as usize];
            if sent.is_multiple_of(4) {
                let local = sock.local_addr().unwrap();
                buf.extend_from_slice(options("UDP", local, &format!("flood{sent}")).as_bytes());
            } else {
                let len = 64 + (rng.next() % 1200) as usize;
                buf.extend((0..len).map(|_| rng.next() as u8));
            }
            if sock.send_to(&buf, target).is_ok() {
                sent += 1;
            }
        }
        sent
    })
}

/// Opens TCP connections from 127.0.0.1 as fast as it can, for `dur` or `max`, and holds
/// them open until `dur` has passed. Returns how many connects succeeded.
fn tcp_connection_flood(target: SocketAddr, dur: Duration, max: usize) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let started = Instant::now();
        let mut held = Vec::new();
        while held.len() < max && started.elapsed() < dur {
            if let Ok(s) = std::net::TcpStream::connect_timeout(&target, Duration::from_secs(1)) {
                held.push(s);
            }
        }
        let opened = held.len();
        std::thread::sleep(dur.saturating_sub(started.elapsed()));
        opened
    })
}

/// `n` slow-loris connections from 127.0.0.1: each starts a request and trickles one byte
/// every 250 ms for `dur`. Returns how many the server had closed by then.
fn slow_loris(target: SocketAddr, n: usize, dur: Duration) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut socks: Vec<Option<std::net::TcpStream>> = (0..n)
            .map(|_| {
                let mut s = std::net::TcpStream::connect(target).ok()?;
                s.write_all(b"OPTIONS sip:rls@example.org SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:1").ok()?;
                s.set_nonblocking(true).ok()?;
                Some(s)
            })
            .collect();
        let started = Instant::now();
        let mut closed = 0;
        while started.elapsed() < dur {
            std::thread::sleep(Duration::from_millis(250));
            for slot in socks.iter_mut() {
                let Some(s) = slot else { continue };
                let mut buf = [0u8; 64];
                let gone = match s.read(&mut buf) {
                    Ok(0) => true,
                    Ok(_) => false,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => s.write_all(b"1").is_err(),
                    Err(_) => true,
                };
                if gone {
                    *slot = None;
                    closed += 1;
                }
            }
        }
        closed
    })
}

/// 127.0.0.2 when it can be bound (Linux routes all of 127/8 to lo), else ::1.
async fn client_ip() -> IpAddr {
    let two: IpAddr = "127.0.0.2".parse().unwrap();
    if UdpSocket::bind(SocketAddr::new(two, 0)).await.is_ok() {
        two
    } else {
        "::1".parse().unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_do_not_stop_well_behaved_clients() {
    let ip = client_ip().await;
    let s = TestServer::start_with(|c| {
        let v4: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let v6: SocketAddr = "[::1]:0".parse().unwrap();
        c.sip.udp = vec![v4, v6];
        c.sip.tcp = vec![v4, v6];
        c.sip.read_timeout_secs = 2;
        c.sip.max_connections = 300;
        c.limits.max_connections_per_source = 64;
    })
    .await;
    let pick = |addrs: &[SocketAddr]| *addrs.iter().find(|a| a.is_ipv4() == ip.is_ipv4()).unwrap();
    let client = Client { ip, udp: pick(&s.server.addrs().udp), tcp: pick(&s.server.addrs().tcp) };
    let flood_udp = s.server.addrs().udp[0];
    let flood_tcp = s.server.addrs().tcp[0];
    eprintln!("flood test: well-behaved client at {ip}, flooders at 127.0.0.1");
    let gap = Duration::from_millis(20);

    // Baseline.
    let until = Instant::now() + Duration::from_secs(1);
    let mut base = probe_udp(&client, until, gap).await;
    base.report("baseline, UDP OPTIONS");
    base.assert_served("baseline");
    let mut base_tcp = probe_tcp(&client, Instant::now() + Duration::from_secs(1), gap).await;
    base_tcp.report("baseline, TCP connect + OPTIONS");
    base_tcp.assert_served("baseline TCP");
    let (ok, notify) = subscribe_once(&client, "sub0").await;
    eprintln!("flood latency [baseline, list SUBSCRIBE]: 200 after {ok:.2?}, NOTIFY after {notify:.2?}");

    // 1. UDP flood of garbage and of requests far over the rate limit.
    let flood = udp_flood(flood_udp, PHASE, 1_000_000);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let until = Instant::now() + PHASE - Duration::from_millis(600);
    let mut udp_lat = probe_udp(&client, until, gap).await;
    let (ok, notify) = subscribe_once(&client, "sub1").await;
    let sent = tokio::task::spawn_blocking(move || flood.join().unwrap()).await.unwrap();
    eprintln!("flood: {sent} datagrams in {PHASE:?} ({:.0}/s) from 127.0.0.1", sent as f64 / PHASE.as_secs_f64());
    udp_lat.report("UDP garbage flood, UDP OPTIONS");
    eprintln!("flood latency [UDP garbage flood, list SUBSCRIBE]: 200 after {ok:.2?}, NOTIFY after {notify:.2?}");
    udp_lat.assert_served("UDP flood");
    assert!(s.server.limits().tracked_sources() <= 4, "per-source state stays small");

    // 2. TCP connection flood: one source tries to take every connection slot.
    let flood = tcp_connection_flood(flood_tcp, PHASE, 2000);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut tcp_lat = probe_tcp(&client, Instant::now() + PHASE - Duration::from_millis(800), gap).await;
    let held = s.server.limits().connections();
    let opened = tokio::task::spawn_blocking(move || flood.join().unwrap()).await.unwrap();
    eprintln!("flood: {opened} TCP connects from 127.0.0.1 in {PHASE:?}; server held {held} open (cap 64 per source)");
    tcp_lat.report("TCP connection flood, TCP connect + OPTIONS");
    tcp_lat.assert_served("TCP connection flood");
    assert!(held <= 64 + 2, "the flooder holds at most its per-source share: {held}");

    // 3. Slow-loris: 60 connections trickling a request that never completes.
    let loris = slow_loris(flood_tcp, 60, Duration::from_secs(4));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut loris_lat = probe_tcp(&client, Instant::now() + Duration::from_secs(3), gap).await;
    let closed = tokio::task::spawn_blocking(move || loris.join().unwrap()).await.unwrap();
    eprintln!("flood: slow-loris connections closed by the server within 4 s: {closed}/60 (read timeout 2 s)");
    loris_lat.report("slow-loris, TCP connect + OPTIONS");
    loris_lat.assert_served("slow-loris");
    assert_eq!(closed, 60, "incomplete messages are cut at sip.read_timeout_secs");
}
