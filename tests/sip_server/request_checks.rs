//! Issue 12: the shared SIP request checks, over real loopback sockets. The core routes
//! to and advertises (OPTIONS, 405) what the handlers declare; SUBSCRIBE, PUBLISH and
//! REGISTER each grant Expires by their own config section's policy.


use crate::common::peer::{Msg, Peer};
use crate::common::*;
use smart_presence::core::{Core, CoreSink, Handler, HandlerFuture, Handlers, ServerTx};
use smart_presence::limits::Limits;
use smart_presence::sip::{Capabilities, Method, Request, Response};
use smart_presence::transaction::{ClientTransactions, Timers};
use smart_presence::transport::{StreamLimits, Transports};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

async fn send(p: &mut Peer, text: &str) -> Msg {
    p.send(text.as_bytes()).await;
    p.response(&mut Vec::new()).await
}

fn options(local: SocketAddr, branch: &str) -> String {
    request("OPTIONS", "UDP", local, branch, "", "")
}

fn register(local: SocketAddr, branch: &str, expires: &str) -> String {
    request("REGISTER", "UDP", local, branch, &format!("Contact: <sip:alice@{local}>{expires}"), "")
        .replace("REGISTER sip:rls@example.org", "REGISTER sip:example.org")
        .replace("To: <sip:rls@example.org>", "To: <sip:alice@example.org>")
}

const OPEN: &str = r#"<?xml version="1.0" encoding="UTF-8"?><presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:alice@example.org"><tuple id="t1"><status><basic>open</basic></status></tuple></presence>"#;

fn publish(local: SocketAddr, branch: &str, expires: u32) -> String {
    let extra = format!("Event: presence\r\nContent-Type: application/pidf+xml\r\nExpires: {expires}\r\n");
    request("PUBLISH", "UDP", local, branch, &extra, OPEN).replace("PUBLISH sip:rls@example.org", "PUBLISH sip:alice@example.org")
}

fn subscribe(local: SocketAddr, branch: &str, expires: u32) -> String {
    presentity_subscribe("sip:bob@example.org", local, branch, &format!("Expires: {expires}\r\n"))
}

fn list(value: Option<&str>) -> Vec<&str> {
    value.map(|v| v.split(',').map(str::trim).collect()).unwrap_or_default()
}

#[tokio::test]
async fn options_and_405_advertise_what_the_handlers_declare() {
    let s = TestServer::start().await;
    let mut p = Peer::udp(s.udp()).await;
    let l = p.local();
    let ok = send(&mut p, &options(l, "o1")).await;
    assert_eq!(ok.status(), Some(200));
    assert_eq!(ok.header("Allow-Events"), Some("presence"));
    let accept = list(ok.header("Accept"));
    assert!(accept.contains(&"application/resource-lists+xml") && accept.contains(&"application/pidf+xml"), "{accept:?}");
    assert_eq!(ok.header("Accept-Encoding"), Some("deflate"));
    assert_eq!(ok.header("Supported"), Some("eventlist, recipient-list-subscribe"));
    let allow = list(ok.header("Allow"));
    for m in ["OPTIONS", "ACK", "SUBSCRIBE", "PUBLISH", "REGISTER"] {
        assert!(allow.contains(&m), "{m} in {allow:?}");
    }
    assert!(!allow.contains(&"NOTIFY"), "no NOTIFY handler: {allow:?}");
    let refused = send(&mut p, &request("INVITE", "UDP", l, "i1", "", "")).await;
    assert_eq!(refused.status(), Some(405));
    assert_eq!(refused.header("Allow"), ok.header("Allow"), "405 and OPTIONS agree");

    // Without the registrar, nothing advertises REGISTER and nothing serves it.
    let s = TestServer::start_with(|c| c.registrar.enabled = false).await;
    let mut p = Peer::udp(s.udp()).await;
    let l = p.local();
    let ok = send(&mut p, &options(l, "o2")).await;
    assert!(!list(ok.header("Allow")).contains(&"REGISTER"), "{:?}", ok.header("Allow"));
    assert_eq!(ok.header("Allow-Events"), Some("presence"));
    assert_eq!(send(&mut p, &register(l, "r0", "\r\nExpires: 600\r\n")).await.status(), Some(501));
}

#[tokio::test]
async fn each_method_grants_expires_by_its_own_policy() {
    let s = TestServer::start_with(|c| {
        c.registrar.min_expires = 30;
        c.registrar.max_expires = 900;
        c.presence.min_expires = 20;
        c.presence.max_expires = 1200;
        c.subscription.min_expires = 40;
    })
    .await;
    let mut p = Peer::udp(s.udp()).await;
    let l = p.local();
    let too_brief = [
        (register(l, "r1", "\r\nExpires: 10\r\n"), "30"),
        (register(l, "r2", ";expires=10\r\nExpires: 600\r\n"), "30"),
        (publish(l, "p1", 10), "20"),
        (subscribe(l, "s1", 10), "40"),
    ];
    for (req, min) in too_brief {
        let resp = send(&mut p, &req).await;
        assert_eq!(resp.status(), Some(423), "{}", req.lines().next().unwrap_or(""));
        assert_eq!(resp.header("Min-Expires"), Some(min), "{}", req.lines().next().unwrap_or(""));
    }

    let registered = send(&mut p, &register(l, "r3", "\r\nExpires: 99999\r\n")).await;
    assert_eq!(registered.status(), Some(200));
    assert!(registered.header("Contact").is_some_and(|c| c.ends_with(";expires=900")), "{:?}", registered.header("Contact"));
    let published = send(&mut p, &publish(l, "p2", 99999)).await;
    assert_eq!((published.status(), published.header("Expires")), (Some(200), Some("1200")));
    let bad = send(&mut p, &register(l, "r4", "\r\nExpires: soon\r\n")).await;
    assert_eq!(bad.start_line(), "SIP/2.0 400 Bad Expires");
}

/// A handler the core has never heard of: it serves MESSAGE as it declares.
struct MessageHandler;

impl Handler for MessageHandler {
    fn handle(&self, req: Request, tx: ServerTx) -> HandlerFuture {
        Box::pin(tx.respond(Response::to(&req, 200)))
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { methods: &[Method::Message], events: &["message-summary"], accept: &["text/plain"], ..Capabilities::NONE }
    }
}

/// A core on a loopback UDP socket serving only `handlers`.
async fn core_with(handlers: Handlers) -> (SocketAddr, tokio::sync::watch::Sender<bool>) {
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let limits = StreamLimits {
        max_message: 65_535,
        idle_timeout: Duration::from_secs(10),
        read_timeout: Duration::from_secs(10),
        max_connections: 10,
        sources: Limits::unlimited(),
    };
    let any = "127.0.0.1:0".parse().unwrap();
    let transports = Transports::bind(&[any], &[], &[], None, limits, stop_rx).await.expect("bind");
    let addr = transports.local_addrs().udp[0];
    let sender = transports.sender();
    let timers = Timers::default();
    let client_tx = Arc::new(ClientTransactions::new(timers, sender.clone()));
    let core = Core::new(sender, client_tx, timers, handlers, false, Limits::unlimited(), None);
    transports.run(Arc::new(CoreSink(core)));
    (addr, stop)
}

#[tokio::test]
async fn the_router_serves_and_advertises_what_a_new_handler_declares() {
    let (addr, _stop) = core_with(Handlers { extra: vec![Arc::new(MessageHandler)], ..Handlers::default() }).await;
    let mut p = Peer::udp(addr).await;
    let l = p.local();
    let ok = send(&mut p, &options(l, "o1")).await;
    assert_eq!(ok.header("Allow"), Some("OPTIONS, ACK, MESSAGE"));
    assert_eq!(ok.header("Allow-Events"), Some("message-summary"));
    assert_eq!(ok.header("Accept"), Some("text/plain"));
    assert_eq!(ok.header("Supported"), None, "nothing declared, nothing advertised");
    assert_eq!(send(&mut p, &request("MESSAGE", "UDP", l, "m1", "", "")).await.status(), Some(200));
    assert_eq!(send(&mut p, &subscribe(l, "s1", 600)).await.status(), Some(501));
    let refused = send(&mut p, &request("INVITE", "UDP", l, "i1", "", "")).await;
    assert_eq!((refused.status(), refused.header("Allow")), (Some(405), Some("OPTIONS, ACK, MESSAGE")));
}
