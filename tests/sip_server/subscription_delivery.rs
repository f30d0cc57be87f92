//! Issue 19: a phone must never believe it is subscribed when it is not. NOTIFYs follow a
//! phone that moved (target refresh), a slow phone on a live connection keeps its
//! subscription, an unreachable one is counted, a list that cannot be served over UDP is
//! refused up front, and a big state goes out in small steps.


use crate::common::peer::{Msg, Peer};
use crate::common::*;
use smart_presence::index::Source;
use smart_presence::subscription::table::DeliveryStats;
use std::time::{Duration, Instant};

const BOB: &str = "sip:+33612345678@example.org;user=phone";

fn bind(s: &TestServer, number: &str, uri: &str) {
    s.server.index().bind(number.parse().unwrap(), uri, Source::Admin).unwrap();
}

async fn wait_until(what: &str, limit: Duration, cond: impl Fn() -> bool) {
    let started = Instant::now();
    while !cond() {
        assert!(started.elapsed() < limit, "not reached within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn rlmi(msg: &Msg) -> String {
    let body = msg.body();
    let start = body.find("<list").expect("an RLMI list");
    body[start..body[start..].find("</list>").map_or(body.len(), |e| start + e + 7)].to_string()
}

#[tokio::test]
async fn a_refresh_from_a_new_udp_port_moves_the_notifies_there() {
    let s = TestServer::start_with(|c| c.notify.min_interval_ms = 100).await;
    bind(&s, "+33612345678", "sip:bob@example.org");
    let mut old = Peer::udp(s.udp()).await;
    let body = resource_list(&[BOB.to_string(), "sip:+33698765432@example.org;user=phone".into()]);
    old.send(list_subscribe("UDP", old.local(), "mv", "", &body).as_bytes()).await;
    let (ok, first) = old.accepted().await;
    assert!(first.is_some());
    let tag = ok.tag("To").unwrap();

    let mut new = Peer::udp(s.udp()).await;
    new.send(refresh("UDP", new.local(), "mv", &tag, 2).as_bytes()).await;
    let (ok, full) = new.accepted().await;
    assert_eq!(ok.status(), Some(200));
    let full = full.expect("the refresh's full state, at the new port");
    assert!(full.start_line().contains(&new.local().to_string()), "{}", full.start_line());
    bind(&s, "+33698765432", "sip:carol@example.org");
    let live = new.notify(200).await;
    assert!(rlmi(&live).contains("+33698765432"), "the live update at the new port");
    assert!(old.recv_within(Duration::from_millis(300)).await.is_none(), "nothing more to the old port");
}

#[tokio::test]
async fn a_refresh_over_a_new_tcp_connection_moves_the_notifies_there() {
    let s = TestServer::start_with(|c| c.notify.min_interval_ms = 100).await;
    let mut old = Peer::tcp(s.tcp()).await;
    let body = resource_list(&[BOB.to_string()]);
    old.send(list_subscribe("TCP", old.local(), "mvt", "", &body).as_bytes()).await;
    let (ok, _) = old.accepted().await;
    let tag = ok.tag("To").unwrap();
    drop(old); // the phone lost its connection (Wi-Fi to mobile data)

    let mut new = Peer::tcp(s.tcp()).await;
    new.send(refresh("TCP", new.local(), "mvt", &tag, 2).as_bytes()).await;
    let (ok, full) = new.accepted().await;
    assert_eq!(ok.status(), Some(200));
    assert!(full.is_some(), "the refresh's full state on the new connection");
    bind(&s, "+33612345678", "sip:bob@example.org");
    let live = new.notify(200).await;
    assert!(rlmi(&live).contains("+33612345678"));
    assert_eq!(s.server.subscriptions().len(), 1);
}

#[tokio::test]
async fn the_refresh_200_names_us_as_the_initial_200_did() {
    // On a wildcard address we are named by the service domain, in every Contact.
    let s = TestServer::start_with(|c| c.sip.udp = vec!["0.0.0.0:0".parse().unwrap()]).await;
    let server = std::net::SocketAddr::from(([127, 0, 0, 1], s.udp().port()));
    let mut p = Peer::udp(server).await;
    p.send(list_subscribe("UDP", p.local(), "ct", "", &resource_list(&[BOB.to_string()])).as_bytes()).await;
    let (ok, _) = p.accepted().await;
    let contact = ok.header("Contact").unwrap().to_string();
    assert_eq!(contact, format!("<sip:rls@example.org:{};transport=udp>", server.port()));
    p.send(refresh("UDP", p.local(), "ct", &ok.tag("To").unwrap(), 2).as_bytes()).await;
    let (again, notify) = p.accepted().await;
    assert_eq!(again.header("Contact"), Some(contact.as_str()), "not 'localhost'");
    assert_eq!(notify.unwrap().header("Contact"), Some(contact.as_str()));
}

#[tokio::test]
async fn a_slow_phone_on_an_open_connection_keeps_its_subscription() {
    // Timer F = 64 x 50 ms = 3.2 s.
    let s = TestServer::start_with(|c| {
        c.sip.t1_ms = 50;
        c.notify.min_interval_ms = 100;
    })
    .await;
    let mut p = Peer::tcp(s.tcp()).await;
    p.send(list_subscribe("TCP", p.local(), "slow", "", &resource_list(&[BOB.to_string()])).as_bytes()).await;
    let ok = p.recv().await;
    let ok = if ok.status().is_some() { ok } else { p.recv().await };
    assert_eq!(ok.status(), Some(200));
    // The first NOTIFY is never answered: the phone is busy taking it.
    let stats = s.server.subscriptions().stats();
    wait_until("Timer F", Duration::from_secs(8), || DeliveryStats::get(&stats.unanswered_kept) == 1).await;
    assert_eq!(s.server.subscriptions().len(), 1, "still subscribed");
    while p.recv_within(Duration::from_millis(50)).await.is_some() {}
    bind(&s, "+33612345678", "sip:bob@example.org");
    let live = p.notify(200).await;
    assert!(rlmi(&live).contains("+33612345678"), "later updates still reach it");
}

#[tokio::test]
async fn an_unreachable_udp_phone_is_counted_and_its_subscription_ends() {
    let s = TestServer::start_with(|c| c.sip.t1_ms = 50).await;
    let mut p = Peer::udp(s.udp()).await;
    p.send(list_subscribe("UDP", p.local(), "gone", "", &resource_list(&[BOB.to_string()])).as_bytes()).await;
    let first = p.recv().await;
    assert!(first.status() == Some(200) || first.is_request("NOTIFY"));
    // Nothing is ever answered again.
    let stats = s.server.subscriptions().stats();
    wait_until("the subscription ends", Duration::from_secs(8), || s.server.subscriptions().is_empty()).await;
    assert_eq!(DeliveryStats::get(&stats.unreachable), 1);
}

fn numbers(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("sip:+336{:08}@example.org;user=phone", 10_000_000 + i * 7)).collect()
}

#[tokio::test]
async fn a_list_too_big_for_udp_is_refused_up_front() {
    let s = TestServer::start().await;
    let uris = numbers(1_500);
    let mut p = Peer::udp(s.udp()).await;
    p.send(&deflated_list_subscribe("UDP", p.local(), "big", "", &uris)).await;
    let resp = p.recv().await;
    assert_eq!(resp.status(), Some(413), "{}", resp.start_line());
    assert!(resp.start_line().contains("UDP"), "the reason names the way out: {}", resp.start_line());
    assert!(p.recv_within(Duration::from_millis(300)).await.is_none(), "no NOTIFY");
    assert!(s.server.subscriptions().is_empty());

    // The same list from a client that takes deflated NOTIFYs fits, and is served.
    p.send(&deflated_list_subscribe("UDP", p.local(), "big2", "Accept-Encoding: deflate\r\n", &uris)).await;
    let (ok, first) = p.accepted().await;
    assert_eq!(ok.status(), Some(200));
    assert_eq!(rlmi(&first.unwrap()).matches("<resource ").count(), 1_500);
}

#[tokio::test]
async fn a_big_state_goes_out_in_steps_of_at_most_max_users() {
    let s = TestServer::start_with(|c| c.notify.max_users_per_notify = 40).await;
    let uris = numbers(100);
    for (i, uri) in uris.iter().enumerate() {
        let number = &uri[4..uri.find('@').unwrap()];
        bind(&s, number, &format!("sip:u{i}@example.org"));
    }
    let mut p = Peer::tcp(s.tcp()).await;
    p.send(&deflated_list_subscribe("TCP", p.local(), "steps", "Accept-Encoding: deflate\r\n", &uris)).await;
    let (ok, first) = p.accepted().await;
    assert_eq!(ok.status(), Some(200));
    let mut users = vec![rlmi(&first.unwrap()).matches("<instance ").count()];
    while users.iter().sum::<usize>() < 100 {
        users.push(rlmi(&p.notify(200).await).matches("<instance ").count());
    }
    assert_eq!(users, [40, 40, 20]);
}
