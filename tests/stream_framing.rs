//! Issue 19: what the stream transports do with messages they cannot take, over real
//! loopback sockets. An unparseable message is answered 400 when its Via, From, To,
//! Call-ID and CSeq can be read, else a TCP/TLS connection is closed (UDP drops it); one
//! over `sip.max_message_size` gets 413 or 513 before the close; a folded Content-Length
//! frames like any other. Each case is logged. The log capture is this binary's global
//! subscriber, shared by its tests.

mod common;

use common::*;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// A request whose start line is `start` and whose headers are `request`'s.
fn with_start_line(start: &str, proto: &str, local: SocketAddr, branch: &str) -> String {
    let good = request("OPTIONS", proto, local, branch, "", "");
    let headers = good.split_once("\r\n").unwrap().1;
    format!("{start}\r\n{headers}")
}

/// Reads until the server closes: what came before the close, or None if it stayed open.
async fn until_closed<S: AsyncRead + Unpin>(stream: &mut S) -> Option<String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(WAIT, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(String::from_utf8_lossy(&got).into_owned()),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Bad start line, readable headers: 400 naming the problem; the connection serves on.
async fn bad_start_line_gets_400<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, proto: &str, local: SocketAddr) {
    let bad = with_start_line("OPTIONS sip:rls@example.org SIP/2.0 trailing-junk", proto, local, "bsl");
    write_all(stream, bad.as_bytes()).await;
    let mut pending = Vec::new();
    let resp = read_message(stream, &mut pending).await.expect("an answer to the bad start line");
    assert_eq!(status(&resp), "SIP/2.0 400 Bad Request Line", "{proto}");
    assert_eq!(header(&resp, "Call-ID"), Some("call-bsl"));
    assert_eq!(header(&resp, "CSeq"), Some("1 OPTIONS"));
    assert!(header(&resp, "Via").unwrap().contains("branch=z9hG4bKbsl"));
    write_all(stream, request("OPTIONS", proto, local, "after", "", "").as_bytes()).await;
    let resp = read_message(stream, &mut pending).await.expect("the connection still serves");
    assert_eq!((status(&resp), header(&resp, "Call-ID")), ("SIP/2.0 200 OK", Some("call-after")));
}

#[tokio::test]
async fn bad_start_line_over_tcp_and_tls_is_answered_400() {
    let s = TestServer::start().await;
    let mut tcp = tcp_connect(s.tcp()).await;
    let local = tcp.local_addr().unwrap();
    bad_start_line_gets_400(&mut tcp, "TCP", local).await;
    let mut tls = tls_connect(&s).await;
    bad_start_line_gets_400(&mut tls, "TLS", local).await;
}

#[tokio::test]
async fn unreadable_message_over_tcp_and_tls_closes_the_connection() {
    let s = TestServer::start().await;
    let junk = b"HELLO WORLD\r\nNo-Via: here\r\nContent-Length: 0\r\n\r\n";
    let mut tcp = tcp_connect(s.tcp()).await;
    write_all(&mut tcp, junk).await;
    assert_eq!(until_closed(&mut tcp).await.as_deref(), Some(""), "closed without an answer");
    let mut tls = tls_connect(&s).await;
    write_all(&mut tls, junk).await;
    assert_eq!(until_closed(&mut tls).await.as_deref(), Some(""), "TLS: closed without an answer");
    // A bad header line and no CSeq: nothing to answer with either.
    let mut tcp = tcp_connect(s.tcp()).await;
    let local = tcp.local_addr().unwrap();
    let bad = request("OPTIONS", "TCP", local, "bh", "", "").replace("CSeq: 1 OPTIONS\r\n", "no colon here\r\n");
    write_all(&mut tcp, bad.as_bytes()).await;
    assert_eq!(until_closed(&mut tcp).await.as_deref(), Some(""));
}

#[tokio::test]
async fn bad_start_line_over_udp_is_answered_when_its_headers_read() {
    let s = TestServer::start().await;
    let c = UdpClient::new(s.udp()).await;
    c.send(with_start_line("OPTIONS  sip:rls@example.org SIP/2.0", "UDP", c.local(), "u1").as_bytes()).await;
    let resp = c.recv().await;
    assert_eq!(status(&resp), "SIP/2.0 400 Bad Request Line");
    assert!(header(&resp, "Via").unwrap().contains(&format!("rport={}", c.local().port())));
    // A response, an ACK, or no Call-ID: not answered.
    let no_call_id = with_start_line("BAD", "UDP", c.local(), "u2").replace("Call-ID: call-u2\r\n", "");
    let ack = with_start_line("ACK sip:x", "UDP", c.local(), "u3").replace("1 OPTIONS", "1 ACK");
    let response = with_start_line("SIP/2.0 2000 OK", "UDP", c.local(), "u4");
    for unanswerable in [no_call_id, ack, response] {
        c.send(unanswerable.as_bytes()).await;
    }
    assert_eq!(c.recv_within(Duration::from_millis(300)).await, None);
    c.send(request("OPTIONS", "UDP", c.local(), "u5", "", "").as_bytes()).await;
    assert_eq!(header(&c.recv().await, "Call-ID"), Some("call-u5"));
}

#[tokio::test]
async fn too_large_body_gets_413_and_too_large_head_513_before_the_close() {
    let s = TestServer::start_with(|c| c.sip.max_message_size = 4096).await;
    let mut tcp = tcp_connect(s.tcp()).await;
    let local = tcp.local_addr().unwrap();
    let big_body = request("OPTIONS", "TCP", local, "big", "Content-Type: text/plain\r\n", &"x".repeat(100_000));
    let _ = tcp.write_all(big_body.as_bytes()).await; // the server may close before it all went
    let got = until_closed(&mut tcp).await.expect("closed, not hung");
    assert_eq!(status(&got), "SIP/2.0 413 Request Entity Too Large");
    assert_eq!(header(&got, "Call-ID"), Some("call-big"));

    let mut tcp = tcp_connect(s.tcp()).await;
    let big_head = request("OPTIONS", "TCP", local, "head", &format!("Subject: {}\r\n", "y".repeat(8000)), "");
    let _ = tcp.write_all(big_head.as_bytes()).await;
    let got = until_closed(&mut tcp).await.expect("closed, not hung");
    assert_eq!(status(&got), "SIP/2.0 513 Message Too Large");
    assert_eq!(header(&got, "Call-ID"), Some("call-head"));

    let mut tls = tls_connect(&s).await;
    let _ = tls.write_all(big_body.replace("call-big", "call-tls").as_bytes()).await;
    let got = until_closed(&mut tls).await.expect("closed, not hung");
    assert_eq!(status(&got), "SIP/2.0 413 Request Entity Too Large");
    assert_eq!(header(&got, "Call-ID"), Some("call-tls"));

    // Garbage over the limit: nothing to answer, only the close.
    let mut tcp = tcp_connect(s.tcp()).await;
    let _ = tcp.write_all(&[b'z'; 10_000]).await;
    assert_eq!(until_closed(&mut tcp).await.as_deref(), Some(""));
}

#[tokio::test]
async fn folded_compact_and_any_case_content_length_frame_the_stream() {
    let s = TestServer::start().await;
    let mut tcp = tcp_connect(s.tcp()).await;
    let local = tcp.local_addr().unwrap();
    let lengths = ["Content-Length:\r\n 5", "l:\r\n\t5", "CONTENT-length :\r\n  \r\n 5", "L: 5"];
    let mut all = String::new();
    for (i, length) in lengths.iter().enumerate() {
        let req = request("OPTIONS", "TCP", local, &format!("f{i}"), "Content-Type: text/plain\r\n", "hello");
        all.push_str(&req.replace("Content-Length: 5", length));
    }
    // One write: each body must be cut at its length for the next message to be found.
    write_all(&mut tcp, all.as_bytes()).await;
    let mut pending = Vec::new();
    for (i, length) in lengths.iter().enumerate() {
        let resp = read_message(&mut tcp, &mut pending).await.expect("answered, not closed");
        assert_eq!(status(&resp), "SIP/2.0 200 OK", "{length:?}");
        assert_eq!(header(&resp, "Call-ID"), Some(format!("call-f{i}").as_str()));
    }
}


/// The log of this test binary, at info level.
fn log() -> &'static Capture {
    static LOG: OnceLock<Capture> = OnceLock::new();
    LOG.get_or_init(|| {
        let capture = Capture::default();
        let subscriber = tracing_subscriber::fmt().with_writer(capture.clone()).with_ansi(false).with_max_level(tracing::Level::INFO).finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
        capture
    })
}

/// Waits for a log line naming `remote` and holding every one of `words`.
async fn logged(remote: SocketAddr, words: &[&str]) -> String {
    let remote = remote.to_string();
    for _ in 0..50 {
        let text = String::from_utf8_lossy(&log().0.lock().unwrap()).into_owned();
        if let Some(line) = text.lines().find(|l| l.contains(&remote) && words.iter().all(|w| l.contains(w))) {
            return line.to_string();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no log line for {remote} with {words:?}");
}

#[tokio::test]
async fn each_refusal_and_drop_is_logged() {
    log();
    let s = TestServer::start_with(|c| c.sip.max_message_size = 4096).await;
    let mut tcp = tcp_connect(s.tcp()).await;
    write_all(&mut tcp, b"HELLO\r\nContent-Length: 0\r\n\r\n").await;
    let line = logged(tcp.local_addr().unwrap(), &["WARN", "malformed message", "bad start line", "closing the connection"]).await;
    assert!(!line.contains("HELLO"), "the message itself is not logged: {line}");

    let mut tcp = tcp_connect(s.tcp()).await;
    let local = tcp.local_addr().unwrap();
    let _ = tcp.write_all(request("OPTIONS", "TCP", local, "l413", "", &"x".repeat(5000)).as_bytes()).await;
    logged(local, &["WARN", "413", "Request Entity Too Large"]).await;

    // Another server: its log lines are throttled apart from the first one's.
    let s = TestServer::start().await;
    let c = UdpClient::new(s.udp()).await;
    c.send(b"\x00\x01 not sip\r\n\r\n").await;
    logged(c.local(), &["INFO", "malformed message", "dropped"]).await;
}
