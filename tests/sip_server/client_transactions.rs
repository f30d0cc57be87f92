//! Client transactions (our NOTIFYs): Timer E retransmission over UDP, Timer F timeout,
//! no retransmission over TCP, the final response reported to the owner.


use bytes::Bytes;
use crate::common::*;
use smart_presence::sip::{parse_message, Message, Request};
use smart_presence::transaction::{ClientTransactions, Outcome, Timers};
use smart_presence::transport::{Inbound, Protocol, Source, StreamLimits, Target, Transports};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;

struct ToClientTx(Arc<ClientTransactions>);

impl Inbound for ToClientTx {
    fn receive(&self, data: Bytes, _source: Source) {
        if let Ok(Message::Response(r)) = parse_message(data) {
            self.0.on_response(r);
        }
    }
}

async fn client(timers: Timers) -> (Arc<ClientTransactions>, std::net::SocketAddr, tokio::sync::watch::Sender<bool>) {
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let any = "127.0.0.1:0".parse().unwrap();
    let limits = StreamLimits {
        max_message: 65_535,
        idle_timeout: Duration::from_secs(10),
        read_timeout: Duration::from_secs(10),
        max_connections: 10,
        sources: smart_presence::limits::Limits::unlimited(),
    };
    let t = Transports::bind(&[any], &[], &[], None, limits, stop_rx).await.unwrap();
    let local = t.local_addrs().udp[0];
    let tx = Arc::new(ClientTransactions::new(timers, t.sender()));
    t.run(Arc::new(ToClientTx(tx.clone())));
    (tx, local, stop)
}

fn notify(to: std::net::SocketAddr) -> Request {
    let raw = format!("NOTIFY sip:alice@{to} SIP/2.0\r\nFrom: <sip:rls@example.org>;tag=a\r\nTo: <sip:alice@example.org>;tag=b\r\nCall-ID: n1\r\nCSeq: 1 NOTIFY\r\nContent-Length: 0\r\n\r\n");
    match parse_message(Bytes::from(raw)) {
        Ok(Message::Request(r)) => r,
        _ => unreachable!(),
    }
}

const FAST: Timers = Timers { t1: Duration::from_millis(20), t2: Duration::from_millis(160) };

#[tokio::test]
async fn udp_request_is_retransmitted_then_times_out() {
    let (tx, local, _stop) = client(FAST).await;
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let target = Target { protocol: Protocol::Udp, remote: peer.local_addr().unwrap(), conn: None };
    let started = Instant::now();
    let task = tokio::spawn(async move { tx.request(notify(target.remote), target, &local.to_string()).await });
    let mut copies = 0;
    let mut buf = vec![0u8; 65_535];
    while let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(600), peer.recv_from(&mut buf)).await {
        copies += 1;
    }
    let outcome = task.await.unwrap();
    assert!(matches!(outcome, Outcome::Timeout), "{outcome:?}");
    // Sends at 0, 20, 60, 140, 300, then every 160 ms up to F = 1280 ms: 11 in all.
    assert!((9..=12).contains(&copies), "{copies} copies");
    assert!(started.elapsed() >= Duration::from_millis(1280));
}

#[tokio::test]
async fn final_response_ends_the_transaction() {
    let (tx, local, _stop) = client(FAST).await;
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let target = Target { protocol: Protocol::Udp, remote: peer.local_addr().unwrap(), conn: None };
    let task = tokio::spawn(async move { tx.request(notify(target.remote), target, &local.to_string()).await });
    let mut buf = vec![0u8; 65_535];
    // Ignore the first copy; answer the retransmission with 481.
    peer.recv_from(&mut buf).await.unwrap();
    let (n, from) = peer.recv_from(&mut buf).await.unwrap();
    let req = String::from_utf8_lossy(&buf[..n]).into_owned();
    let head: Vec<&str> = req.lines().filter(|l| ["Via:", "From:", "To:", "Call-ID:", "CSeq:"].iter().any(|h| l.starts_with(h))).collect();
    let resp = format!("SIP/2.0 481 Call/Transaction Does Not Exist\r\n{}\r\nContent-Length: 0\r\n\r\n", head.join("\r\n"));
    peer.send_to(resp.as_bytes(), from).await.unwrap();
    match task.await.unwrap() {
        Outcome::Response(r) => assert_eq!(r.status, 481),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn tcp_request_is_not_retransmitted() {
    let (tx, local, _stop) = client(FAST).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = Target { protocol: Protocol::Tcp, remote: listener.local_addr().unwrap(), conn: None };
    let task = tokio::spawn(async move { tx.request(notify(target.remote), target, &local.to_string()).await });
    let (mut conn, _) = listener.accept().await.unwrap();
    let mut pending = Vec::new();
    let first = read_message(&mut conn, &mut pending).await.expect("the NOTIFY");
    assert!(first.starts_with("NOTIFY "));
    assert!(header(&first, "Via").unwrap().starts_with("SIP/2.0/TCP "));
    let outcome = task.await.unwrap();
    assert!(matches!(outcome, Outcome::Timeout));
    assert_eq!(read_message(&mut conn, &mut pending).await, None, "no second copy over TCP");
}
