//! Issue 19: the SMS/voice HTTP gateways go through the proxy that `HTTP_PROXY` and
//! `HTTPS_PROXY` name, by an HTTP CONNECT tunnel, and keep reusing the tunnelled connection.
//! A test binary of its own: the variables are process-wide, so they are set before the
//! runtime starts. The proxy and both gateways (plain and TLS) are real loopback servers.

use smart_presence::config::{GatewayConfig, GatewayKind};
use smart_presence::provisioning::sms::{Gateway, Outgoing};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(5);

/// Reads up to the end of a head (the CONNECT request, or a request with its body).
async fn read_head<S: AsyncRead + Unpin>(conn: &mut S) -> Option<String> {
    let mut data = Vec::new();
    loop {
        let text = String::from_utf8_lossy(&data).into_owned();
        if let Some((head, rest)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if rest.len() >= len {
                return Some(text);
            }
        }
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(WAIT, conn.read(&mut buf)).await.ok()?.ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&buf[..n]);
    }
}

/// A CONNECT proxy: reports each tunnel's request head, then relays bytes both ways.
async fn connect_proxy(listener: TcpListener) -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let Some(head) = read_head(&mut client).await else { return };
                let target = head.split(' ').nth(1).unwrap_or("").to_string();
                let _ = tx.send(head);
                let Ok(mut upstream) = TcpStream::connect(target).await else { return };
                if client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await.is_ok() {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                }
            });
        }
    });
    rx
}

/// Answers 200 to every request of every connection (kept alive) and reports each head.
fn serve<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(mut conn: S, tx: mpsc::UnboundedSender<String>) {
    tokio::spawn(async move {
        while let Some(head) = read_head(&mut conn).await {
            let _ = tx.send(head);
            if conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}").await.is_err() {
                return;
            }
        }
    });
}

async fn http_gateway_receiver() -> (SocketAddr, mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            serve(conn, tx.clone());
        }
    });
    (addr, rx)
}

/// The same over TLS with a generated certificate for `localhost`, written to `cert_file`.
async fn https_gateway_receiver(cert_file: &std::path::Path) -> (SocketAddr, mpsc::UnboundedReceiver<String>) {
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(cert_file, generated.cert.pem()).unwrap();
    let key_pem = generated.key_pair.serialize_pem();
    let key = rustls_pemfile::private_key(&mut key_pem.as_bytes()).unwrap().unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![generated.cert.der().clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            if let Ok(tls) = acceptor.accept(conn).await {
                serve(tls, tx.clone());
            }
        }
    });
    (addr, rx)
}

fn message(to: &str) -> Outgoing {
    Outgoing { to: to.into(), from: "Acme".into(), text: "Your code is 1234".into(), reference: "r1".into() }
}

async fn next(rx: &mut mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(WAIT, rx.recv()).await.expect("in time").expect("open")
}

#[test]
fn gateways_go_through_the_environment_proxy() {
    let proxy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy_url = format!("http://alice:secret@{}", proxy.local_addr().unwrap());
    for name in ["http_proxy", "https_proxy", "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY", "REQUEST_METHOD"] {
        std::env::remove_var(name);
    }
    std::env::set_var("HTTP_PROXY", &proxy_url);
    std::env::set_var("HTTPS_PROXY", &proxy_url);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async move {
        proxy.set_nonblocking(true).unwrap();
        let mut tunnels = connect_proxy(TcpListener::from_std(proxy).unwrap()).await;
        let dir = tempfile::tempdir().unwrap();

        // Plain http: two messages, one tunnel, with the proxy's credentials.
        let (plain, mut plain_requests) = http_gateway_receiver().await;
        let config = GatewayConfig { kind: GatewayKind::Http, url: format!("http://{plain}/sms?to={{to}}"), ..GatewayConfig::default() };
        let gateway = Gateway::from_config(&config, dir.path()).unwrap();
        for to in ["+33612345678", "+33612345679"] {
            gateway.send(&message(to)).await.unwrap();
            let head = next(&mut plain_requests).await;
            assert!(head.starts_with(&format!("POST /sms?to={} HTTP/1.1", &to[1..])), "{head}");
        }
        let connect = next(&mut tunnels).await;
        assert!(connect.starts_with(&format!("CONNECT {plain} HTTP/1.1")), "{connect}");
        assert!(connect.to_lowercase().contains("proxy-authorization: basic ywxpy2u6c2vjcmv0"), "alice:secret: {connect}");

        // https: TLS inside the tunnel, to the name of the URL.
        let cert_file = dir.path().join("gateway-cert.pem");
        let (tls, mut tls_requests) = https_gateway_receiver(&cert_file).await;
        let url = format!("https://localhost:{}/calls", tls.port());
        let config = GatewayConfig { kind: GatewayKind::Http, url, ca_file: Some(cert_file), ..GatewayConfig::default() };
        Gateway::from_config(&config, dir.path()).unwrap().send(&message("+33612345678")).await.unwrap();
        assert!(next(&mut tls_requests).await.starts_with("POST /calls HTTP/1.1"));
        let connect = next(&mut tunnels).await;
        assert!(connect.starts_with(&format!("CONNECT localhost:{} HTTP/1.1", tls.port())), "{connect}");
        assert!(tunnels.try_recv().is_err(), "one tunnel per gateway");
    });
}
