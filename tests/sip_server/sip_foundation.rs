//! Issue 2: the SIP foundation over real loopback sockets (UDP, TCP, TLS).


use crate::common::*;
use std::time::Duration;

#[tokio::test]
async fn options_over_udp() {
    let s = TestServer::start().await;
    let c = UdpClient::new(s.udp()).await;
    c.send(request("OPTIONS", "UDP", c.local(), "o1", "", "").as_bytes()).await;
    let resp = c.recv().await;
    assert_eq!(status(&resp), "SIP/2.0 200 OK");
    assert!(header(&resp, "Allow").unwrap().contains("OPTIONS"));
    assert_eq!(header(&resp, "Supported"), Some("eventlist, recipient-list-subscribe"));
    assert_eq!(header(&resp, "Allow-Events"), Some("presence"));
    assert!(header(&resp, "Accept").unwrap().contains("application/resource-lists+xml"));
    let via = header(&resp, "Via").unwrap();
    assert!(via.contains(&format!(";rport={}", c.local().port())), "{via}");
    assert!(via.contains(";received=127.0.0.1"), "{via}");
    assert!(header(&resp, "To").unwrap().contains(";tag="));
}

#[tokio::test]
async fn options_over_tcp_and_tls() {
    let s = TestServer::start().await;
    let mut tcp = tcp_connect(s.tcp()).await;
    let local = tcp.local_addr().unwrap();
    write_all(&mut tcp, request("OPTIONS", "TCP", local, "t1", "", "").as_bytes()).await;
    let resp = read_message(&mut tcp, &mut Vec::new()).await.expect("response");
    assert_eq!(status(&resp), "SIP/2.0 200 OK");

    let mut tls = tls_connect(&s).await;
    write_all(&mut tls, request("OPTIONS", "TLS", local, "s1", "", "").as_bytes()).await;
    let resp = read_message(&mut tls, &mut Vec::new()).await.expect("response over TLS");
    assert_eq!(status(&resp), "SIP/2.0 200 OK");
}

#[tokio::test]
async fn udp_retransmission_is_answered_from_the_transaction() {
    let s = TestServer::start().await;
    let c = UdpClient::new(s.udp()).await;
    let req = request("OPTIONS", "UDP", c.local(), "rtx", "", "");
    c.send(req.as_bytes()).await;
    let first = c.recv().await;
    c.send(req.as_bytes()).await;
    let again = c.recv().await;
    // The To tag is random per execution: equal bytes prove the handler did not run twice.
    assert_eq!(first, again);
    let fresh = request("OPTIONS", "UDP", c.local(), "rtx2", "", "");
    c.send(fresh.as_bytes()).await;
    assert_ne!(header(&c.recv().await, "To"), header(&first, "To"));
}

#[tokio::test]
async fn tcp_two_messages_in_one_segment_and_one_split_byte_by_byte() {
    let s = TestServer::start().await;
    let mut tcp = tcp_connect(s.tcp()).await;
    let local = tcp.local_addr().unwrap();
    let a = request("OPTIONS", "TCP", local, "a", "", "");
    let b = request("OPTIONS", "TCP", local, "b", "", "");
    write_all(&mut tcp, format!("{a}{b}").as_bytes()).await;
    let mut pending = Vec::new();
    let r1 = read_message(&mut tcp, &mut pending).await.unwrap();
    let r2 = read_message(&mut tcp, &mut pending).await.unwrap();
    assert!(header(&r1, "Call-ID") == Some("call-a") && header(&r2, "Call-ID") == Some("call-b"));

    let c = request("OPTIONS", "TCP", local, "c", "", "");
    for byte in c.as_bytes() {
        write_all(&mut tcp, &[*byte]).await;
        tcp.flush().await.unwrap();
    }
    let r3 = read_message(&mut tcp, &mut pending).await.unwrap();
    assert_eq!(header(&r3, "Call-ID"), Some("call-c"));
}

#[tokio::test]
async fn tcp_keepalive_ping_gets_pong() {
    let s = TestServer::start().await;
    let mut tcp = tcp_connect(s.tcp()).await;
    write_all(&mut tcp, b"\r\n\r\n").await;
    let mut buf = [0u8; 2];
    tokio::time::timeout(WAIT, tcp.read_exact(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf, b"\r\n");
}

#[tokio::test]
async fn oversized_tcp_message_gets_413_and_the_connection_is_closed() {
    let s = TestServer::start_with(|c| c.sip.max_message_size = 4096).await;
    let mut tcp = tcp_connect(s.tcp()).await;
    let local = tcp.local_addr().unwrap();
    let big = request("OPTIONS", "TCP", local, "big", "", &"x".repeat(10_000));
    let _ = tcp.write_all(big.as_bytes()).await;
    let mut pending = Vec::new();
    let resp = read_message(&mut tcp, &mut pending).await.expect("an answer before the close");
    assert_eq!(status(&resp), "SIP/2.0 413 Request Entity Too Large");
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(WAIT, tcp.read(&mut buf)).await.expect("closed, not hung");
    assert!(matches!(read, Ok(0) | Err(_)), "then the connection is closed");
}

#[tokio::test]
async fn idle_tcp_connection_is_closed() {
    let s = TestServer::start_with(|c| c.sip.idle_timeout_secs = 1).await;
    let mut tcp = tcp_connect(s.tcp()).await;
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "closed after the idle timeout");
}

#[tokio::test]
async fn garbage_and_truncated_input_is_dropped_and_the_server_keeps_serving() {
    let s = TestServer::start().await;
    let c = UdpClient::new(s.udp()).await;
    let truncated = request("OPTIONS", "UDP", c.local(), "tr", "", "");
    let truncated = &truncated[..truncated.len() / 2];
    for junk in [&b"\x00\xff\xfegarbage"[..], b"", b"\r\n", b"INVITE\r\n\r\n", truncated.as_bytes()] {
        c.send(junk).await;
    }
    assert_eq!(c.recv_within(Duration::from_millis(300)).await, None, "nothing answers garbage");
    c.send(request("OPTIONS", "UDP", c.local(), "after", "", "").as_bytes()).await;
    assert_eq!(status(&c.recv().await), "SIP/2.0 200 OK");
}

#[tokio::test]
async fn unsupported_methods_get_405_with_allow_and_routed_ones_501() {
    let s = TestServer::start().await;
    let c = UdpClient::new(s.udp()).await;
    c.send(request("INVITE", "UDP", c.local(), "inv", "", "").as_bytes()).await;
    let resp = c.recv().await;
    assert_eq!(status(&resp), "SIP/2.0 405 Method Not Allowed");
    assert!(header(&resp, "Allow").unwrap().contains("OPTIONS"));
    c.send(request("FROBNICATE", "UDP", c.local(), "frob", "", "").as_bytes()).await;
    assert_eq!(status(&c.recv().await), "SIP/2.0 405 Method Not Allowed");
    for method in ["NOTIFY"] {
        c.send(request(method, "UDP", c.local(), method, "", "").as_bytes()).await;
        assert_eq!(status(&c.recv().await), "SIP/2.0 501 Not Implemented", "{method}");
    }
    c.send(request("ACK", "UDP", c.local(), "ack", "", "").as_bytes()).await;
    assert_eq!(c.recv_within(Duration::from_millis(300)).await, None, "ACK is absorbed");
}

#[tokio::test]
async fn invalid_requests_get_400_naming_the_problem() {
    let s = TestServer::start().await;
    let c = UdpClient::new(s.udp()).await;
    let good = request("OPTIONS", "UDP", c.local(), "bad", "", "");
    let cases = [
        (good.replace("Call-ID: call-bad\r\n", ""), "400 Missing Call-ID"),
        (good.replace("CSeq: 1 OPTIONS", "CSeq: 1 INVITE"), "400 CSeq Method Does Not Match Request"),
        (good.replace("From: <sip:alice@example.org>;tag=frombad\r\n", ""), "400 Missing From"),
        (good.replace("To: <sip:rls@example.org>\r\n", ""), "400 Missing To"),
        (good.replace("CSeq: 1 OPTIONS\r\n", ""), "400 Missing CSeq"),
        (good.replace("Content-Length: 0", "Content-Length: 99"), "400 Content-Length Exceeds Body"),
        (good.replace("Content-Length: 0", "Content-Length: zero"), "400 Bad Content-Length"),
    ];
    for (i, (text, expected)) in cases.iter().enumerate() {
        let text = text.replace("z9hG4bKbad", &format!("z9hG4bKbad{i}"));
        c.send(text.as_bytes()).await;
        let resp = c.recv().await;
        assert_eq!(status(&resp), format!("SIP/2.0 {expected}"));
    }
}

#[tokio::test]
async fn legal_but_unusual_sip_is_served() {
    let s = TestServer::start().await;
    let c = UdpClient::new(s.udp()).await;
    let local = c.local();
    // Compact forms, space before the colon, folding, a tel: Request-URI, an IPv6 URI in To.
    let text = format!(
        "OPTIONS tel:+4930123456 SIP/2.0\r\nv: SIP/2.0/UDP {local};branch=z9hG4bKodd;rport\r\n\
         f : <sip:alice@example.org>;tag=x\r\nt: <sip:bob@[2001:db8::1]:5060>\r\ni: odd-call\r\n\
         CSeq: 5\r\n  OPTIONS\r\nl: 0\r\nSubject: caf\u{e9}\r\n\r\n"
    );
    let mut bytes = text.into_bytes();
    let pos = find(&bytes, "caf\u{e9}".as_bytes()).unwrap() + 3;
    bytes.splice(pos..pos + 2, [0xe9]); // a Latin-1 byte: not UTF-8
    c.send(&bytes).await;
    let resp = c.recv().await;
    assert_eq!(status(&resp), "SIP/2.0 200 OK");
    assert_eq!(header(&resp, "Call-ID"), Some("odd-call"));
}

#[tokio::test]
async fn udp_accepts_large_datagrams() {
    let s = TestServer::start().await;
    let c = UdpClient::new(s.udp()).await;
    let body = "x".repeat(60_000);
    c.send(request("OPTIONS", "UDP", c.local(), "large", "Content-Type: text/plain\r\n", &body).as_bytes()).await;
    assert_eq!(status(&c.recv().await), "SIP/2.0 200 OK");
}

use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn ipv6_loopback_udp_and_tcp() {
    let v6: std::net::SocketAddr = "[::1]:0".parse().unwrap();
    let s = TestServer::start_with(|c| {
        c.sip.udp = vec![v6];
        c.sip.tcp = vec![v6];
        c.sip.tls = vec![];
    })
    .await;
    let socket = tokio::net::UdpSocket::bind("[::1]:0").await.unwrap();
    let local = socket.local_addr().unwrap();
    socket.send_to(request("OPTIONS", "UDP", local, "v6", "", "").as_bytes(), s.udp()).await.unwrap();
    let mut buf = vec![0u8; 65_535];
    let (n, _) = tokio::time::timeout(WAIT, socket.recv_from(&mut buf)).await.unwrap().unwrap();
    let resp = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert_eq!(status(&resp), "SIP/2.0 200 OK");
    assert!(header(&resp, "Via").unwrap().starts_with("SIP/2.0/UDP [::1]:"));
    let mut tcp = tcp_connect(s.tcp()).await;
    write_all(&mut tcp, request("OPTIONS", "TCP", local, "v6t", "", "").as_bytes()).await;
    assert_eq!(status(&read_message(&mut tcp, &mut Vec::new()).await.unwrap()), "SIP/2.0 200 OK");
}
