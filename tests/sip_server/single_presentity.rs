//! Issue 5: single-presentity SUBSCRIBE (RFC 3856), for a phone-number URI or a SIP URI:
//! PIDF NOTIFYs with the same lifecycle as list subscriptions.


use crate::common::peer::Peer;
use crate::common::*;
use smart_presence::index::Source;

#[tokio::test]
async fn phone_number_presentity_lifecycle_and_live_binding() {
    let s = TestServer::start_with(|c| c.notify.min_interval_ms = 100).await;
    let mut p = Peer::udp(s.udp()).await;
    let l = p.local();
    let target = "sip:+33612345678@example.org;user=phone";
    p.send(presentity_subscribe(target, l, "s1", "").as_bytes()).await;
    let mut early = Vec::new();
    let ok = p.response(&mut early).await;
    assert_eq!(ok.status(), Some(200));
    assert_eq!(ok.header("Require"), None, "not a list subscription");
    let tag = ok.tag("To").unwrap();
    let first = match early.pop() {
        Some(n) => n,
        None => p.notify(200).await,
    };
    assert_eq!(first.header("Content-Type"), Some("application/pidf+xml"));
    let body = first.body();
    assert!(body.contains(&format!("entity=\"{target}\"")) && !body.contains("<tuple"), "nothing said of a non-user: {body}");
    xmllint("pidf.xsd", body.as_bytes());

    s.server.index().bind("+33612345678".parse().unwrap(), "sip:bob@example.org", Source::Admin).unwrap();
    let live = p.notify(200).await;
    let body = live.body();
    assert!(body.contains("<basic>open</basic>") && body.contains(">sip:bob@example.org</contact>"), "{body}");
    xmllint("pidf-with-extensions.xsd", body.as_bytes());

    let unsub = presentity_subscribe(target, l, "s2", "Expires: 0\r\n").replace("call-s2", "call-s1").replace(&format!("To: <{target}>"), &format!("To: <{target}>;tag={tag}"));
    p.send(unsub.as_bytes()).await;
    let mut early = Vec::new();
    assert_eq!(p.response(&mut early).await.status(), Some(200));
    let last = match early.pop() {
        Some(n) => n,
        None => p.notify(200).await,
    };
    assert_eq!(last.header("Subscription-State"), Some("terminated"), "an un-SUBSCRIBE is no timeout (RFC 6665)");
}

#[tokio::test]
async fn sip_uri_presentity_follows_publish() {
    let s = TestServer::start_with(|c| {
        c.notify.min_interval_ms = 100;
        c.presence.notify_interval_secs = 1;
    })
    .await;
    s.server.index().bind("+33612345678".parse().unwrap(), "sip:bob@example.org", Source::Admin).unwrap();
    let mut p = Peer::udp(s.udp()).await;
    let l = p.local();
    p.send(presentity_subscribe("sip:bob@example.org", l, "s3", "").as_bytes()).await;
    let mut early = Vec::new();
    assert_eq!(p.response(&mut early).await.status(), Some(200));
    let first = match early.pop() {
        Some(n) => n,
        None => p.notify(200).await,
    };
    assert!(first.body().contains("away"), "offline: long-term presence");
    let pidf = r#"<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:bob@example.org"><tuple id="a"><status><basic>open</basic></status></tuple></presence>"#;
    let mut publisher = Peer::udp(s.udp()).await;
    let pl = publisher.local();
    let publish = request("PUBLISH", "UDP", pl, "pub", "Event: presence\r\nContent-Type: application/pidf+xml\r\n", pidf)
        .replace("PUBLISH sip:rls@example.org", "PUBLISH sip:bob@example.org")
        .replace("<sip:alice@example.org>", "<sip:bob@example.org>");
    publisher.send(publish.as_bytes()).await;
    assert_eq!(publisher.recv().await.status(), Some(200));
    let online = p.notify(200).await;
    assert!(!online.body().contains("away") && online.body().contains("<basic>open</basic>"));
}
