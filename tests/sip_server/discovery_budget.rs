//! Issue 8: the per-account discovery budget on SIP list subscriptions. A scraper account
//! submitting 50 lists of 5,000 fresh numbers is cut off at the budget (default burst
//! 5,000) while a normal account syncing 2,000 contacts is served in full; re-subscribing
//! with the same list costs nothing.


use crate::common::peer::Peer;
use crate::common::*;
use smart_presence::index::Source;
use std::io::Write;

fn number(list: u32, i: u32) -> String {
    format!("+3362{list:03}{i:04}")
}

/// A compressed list SUBSCRIBE from `who`, one-shot (Expires 0: one NOTIFY, nothing kept).
fn fetch(local: std::net::SocketAddr, who: &str, branch: &str, numbers: &[String]) -> Vec<u8> {
    let entries: String = numbers.iter().map(|n| format!("<entry uri=\"sip:{n}@example.org;user=phone\"/>")).collect();
    let xml = format!("<resource-lists xmlns=\"urn:ietf:params:xml:ns:resource-lists\"><list>{entries}</list></resource-lists>");
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(xml.as_bytes()).unwrap();
    let body = z.finish().unwrap();
    let head = format!(
        "SUBSCRIBE sip:rls@example.org SIP/2.0\r\nVia: SIP/2.0/TCP {local};branch=z9hG4bK{branch}\r\nFrom: <sip:{who}@example.org>;tag={branch}\r\n\
         To: <sip:rls@example.org>\r\nCall-ID: {branch}\r\nCSeq: 1 SUBSCRIBE\r\nContact: <sip:{who}@{local};transport=tcp>\r\nEvent: presence\r\n\
         Expires: 0\r\nSupported: eventlist\r\nRequire: recipient-list-subscribe\r\nContent-Type: application/resource-lists+xml\r\n\
         Content-Encoding: deflate\r\nAccept-Encoding: deflate\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    [head.into_bytes(), body].concat()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scraper_is_cut_off_while_a_normal_address_book_is_served() {
    let s = TestServer::start_with(|c| c.subscription.max_body_bytes = 1 << 20).await;
    // One number in a hundred is a user, in every list.
    for list in 0..51 {
        for i in (0..5000).step_by(100) {
            s.server.index().bind(number(list, i).parse().unwrap(), &format!("sip:u{list}x{i}@example.org"), Source::Import).unwrap();
        }
    }
    let mut p = Peer::tcp(s.tcp()).await;
    let l = p.local();

    let normal: Vec<String> = (0..2000).map(|i| number(50, i)).collect();
    assert_eq!(p.users_seen(&fetch(l, "normal", "n1", &normal)).await, 20, "2,000 contacts served in full");
    assert_eq!(p.users_seen(&fetch(l, "normal", "n2", &normal)).await, 20, "re-subscribing costs nothing");

    let mut seen = Vec::new();
    for list in 0..50 {
        let numbers: Vec<String> = (0..5000).map(|i| number(list, i)).collect();
        seen.push(p.users_seen(&fetch(l, "scraper", &format!("s{list}"), &numbers)).await);
    }
    assert_eq!(seen[0], 50, "the first 5,000 fit the burst");
    // Then nothing more, but for the budget's 4-byte hashes (`storage::budgets::Hash`): a
    // new number whose hash is one of the 5,000 charged passes as charged, once in ~860,000
    // (0.3 of the 245,000 here, a user one time in a hundred of those).
    assert!(seen[1..].iter().sum::<usize>() <= 1, "then nothing more is revealed: {seen:?}");
    let status = s.server.budget().status("scraper").unwrap();
    eprintln!("scraper budget after 50 lists: {status:?}; refused in all: {}", s.server.budget().refused_total());
    assert!(s.server.budget().refused_total() >= 49 * 5000 - 5);
}

#[tokio::test]
async fn operator_sees_and_resets_a_budget_on_the_admin_endpoint() {
    let s = TestServer::start_with(|c| {
        c.admin.listen = Some("127.0.0.1:0".parse().unwrap());
        c.budget.burst = 3;
    })
    .await;
    let admin = s.server.admin_addr().unwrap();
    let numbers: Vec<_> = (0..5).map(|i| number(0, i).parse().unwrap()).collect();
    let charged = s.server.budget().charge("sip:eve@example.org", &numbers).unwrap();
    assert_eq!(charged.over_budget, 2);
    let show = http_admin(admin, "GET", "/budget/sip:eve@example.org").await;
    assert!(show.starts_with("HTTP/1.1 200") && show.contains("\"tokens\":0"), "{show}");
    let reset = http_admin(admin, "DELETE", "/budget/sip:eve@example.org").await;
    assert!(reset.starts_with("HTTP/1.1 204"), "{reset}");
    assert_eq!(s.server.budget().charge("sip:eve@example.org", &numbers).unwrap().over_budget, 2, "full bucket again");
}

async fn http_admin(addr: std::net::SocketAddr, method: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}
