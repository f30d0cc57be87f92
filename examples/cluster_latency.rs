//! Binding-to-NOTIFY latency across cluster nodes, for `benches/cluster.sh`: one list
//! subscriber at node B (`--target`) listing `--count` numbers; each number in turn is bound
//! through node A's admin endpoint (`--admin`), and the time from the start of that PUT to
//! the NOTIFY at B that carries the new URI is recorded. Prints p50, p99 and max.
//!
//! ```sh
//! cargo run --release --example cluster_latency -- --target 127.0.0.1:5060 --admin 127.0.0.1:5081 --count 300
//! ```

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned()).unwrap_or_else(|| default.to_string())
}

fn number(i: usize) -> String {
    format!("+3369{:07}", 1_000_000 + i)
}

fn subscribe(local: SocketAddr, count: usize) -> String {
    let entries: String = (0..count).map(|i| format!("<entry uri=\"sip:{}@example.org;user=phone\"/>", number(i))).collect();
    let body = format!("<?xml version=\"1.0\"?><resource-lists xmlns=\"urn:ietf:params:xml:ns:resource-lists\"><list>{entries}</list></resource-lists>");
    format!(
        "SUBSCRIBE sip:rls@example.org SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKlat1;rport\r\nMax-Forwards: 70\r\n\
         From: <sip:alice@example.org>;tag=lat\r\nTo: <sip:rls@example.org>\r\nCall-ID: latency-{}\r\nCSeq: 1 SUBSCRIBE\r\n\
         Contact: <sip:alice@{local}>\r\nEvent: presence\r\nSupported: eventlist\r\nRequire: recipient-list-subscribe\r\n\
         Content-Type: application/resource-lists+xml\r\nContent-Disposition: recipient-list\r\nExpires: 3600\r\n\
         Content-Length: {}\r\n\r\n{body}",
        std::process::id(),
        body.len()
    )
}

/// A 200 to a NOTIFY (its Via, From, To, Call-ID and CSeq copied).
fn ok_to(req: &str) -> String {
    let keep = ["via:", "from:", "to:", "call-id:", "cseq:", "v:", "f:", "t:", "i:"];
    let head: String = req
        .split("\r\n\r\n")
        .next()
        .unwrap_or("")
        .lines()
        .skip(1)
        .filter(|l| keep.iter().any(|k| l.to_ascii_lowercase().starts_with(k)))
        .map(|l| format!("{l}\r\n"))
        .collect();
    format!("SIP/2.0 200 OK\r\n{head}Content-Length: 0\r\n\r\n")
}

async fn put(admin: SocketAddr, number: &str, uri: &str) -> std::io::Result<bool> {
    let body = format!("{{\"sip_uri\":\"{uri}\"}}");
    let req = format!(
        "PUT /bindings/{number} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut s = TcpStream::connect(admin).await?;
    s.write_all(req.as_bytes()).await?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).await?;
    Ok(answer.starts_with("HTTP/1.1 200"))
}

/// Receives until a NOTIFY containing `what` (answering every NOTIFY), or `wait` passed.
async fn notify_with(sock: &UdpSocket, what: &str, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    let mut buf = vec![0u8; 65_535];
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let Ok(Ok((n, from))) = tokio::time::timeout(left, sock.recv_from(&mut buf)).await else { return false };
        let msg = String::from_utf8_lossy(&buf[..n]);
        if msg.starts_with("NOTIFY") {
            let _ = sock.send_to(ok_to(&msg).as_bytes(), from).await;
            if msg.contains(what) {
                return true;
            }
        }
    }
    false
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let target: SocketAddr = arg("--target", "127.0.0.1:5060").parse()?;
    let admin: SocketAddr = arg("--admin", "127.0.0.1:5080").parse()?;
    let count: usize = arg("--count", "300").parse()?;
    let run = std::process::id();
    let sock = UdpSocket::bind("127.0.0.1:0").await?;
    sock.send_to(subscribe(sock.local_addr()?, count).as_bytes(), target).await?;
    if !notify_with(&sock, "fullState=\"true\"", Duration::from_secs(10)).await {
        return Err("no first NOTIFY from the target node".into());
    }
    let mut samples = Vec::with_capacity(count);
    for i in 0..count {
        let uri = format!("sip:lat{run}x{i}@example.org");
        let started = Instant::now();
        if !put(admin, &number(i), &uri).await? {
            return Err(format!("bind {i} refused").into());
        }
        if !notify_with(&sock, &uri, Duration::from_secs(5)).await {
            return Err(format!("no NOTIFY for bind {i} within 5 s").into());
        }
        samples.push(started.elapsed());
    }
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)].as_secs_f64() * 1000.0;
    println!("binding-to-NOTIFY across nodes: n={} p50={:.2} ms p99={:.2} ms max={:.2} ms", samples.len(), at(0.5), at(0.99), at(1.0));
    Ok(())
}
