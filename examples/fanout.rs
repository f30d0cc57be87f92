//! Load tool for two figures `benches/load.sh` reports, against a running server on loopback:
//!
//! - `fanout`: N subscribers (default 10,000) all list one number, from a few UDP sockets;
//!   once every first NOTIFY is in and the coalescing interval has passed, the number is
//!   bound through the admin endpoint, and the tool measures how long until every
//!   subscriber got the NOTIFY that says so.
//! - `hold`: N list subscriptions of E numbers (default 20,000 x 100) are opened and kept;
//!   with `--server-pid`, the server's RSS before and after gives the memory per subscription.
//!   Each address book is one of realistic shape: a fifth of its numbers are users drawn
//!   from `make_lists.py`'s bound numbers (`--lines L`, shared with other subscribers, as
//!   users are), the rest French mobiles scattered at random (distinct per subscriber).
//! - `latency`: N list subscriptions of E numbers numbered as `examples/sipp/make_lists.py`
//!   does (`--lines L`: subscription i lists line i mod L, so 20% are users once its
//!   bindings are imported), sent at `--rate`, offering deflate; prints the time from each
//!   SUBSCRIBE to its first NOTIFY (p50, p99). SIPp cannot take a 500-number state: it
//!   reads at most 64 KB and cannot inflate.
//!
//! - `resume`: holds subscriptions as `hold` does, then waits while the server restarts
//!   and reports when the first and the last resumed NOTIFY came (`benches/restart.sh`).
//!
//! ```sh
//! cargo run --release --example fanout -- fanout --target 127.0.0.1:5060 --admin 127.0.0.1:5080
//! cargo run --release --example fanout -- hold --target 127.0.0.1:5060 --server-pid PID --settle 35
//! ```

use bytes::Bytes;
use smart_presence::sip::{self, HeaderName, Message, Response};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;

struct Opts {
    mode: String,
    target: SocketAddr,
    admin: SocketAddr,
    count: usize,
    entries: usize,
    sockets: usize,
    rate: u64,
    number: String,
    server_pid: Option<u32>,
    settle: u64,
    lines: usize,
}

fn parse_opts() -> Result<Opts, String> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().ok_or("usage: fanout fanout|hold|latency --target HOST:PORT [options]")?;
    let hold = mode == "hold" || mode == "resume";
    let mut o = Opts {
        mode,
        target: "127.0.0.1:5060".parse().unwrap(),
        admin: "127.0.0.1:5080".parse().unwrap(),
        count: if hold { 20_000 } else { 10_000 },
        entries: if hold { 100 } else { 1 },
        sockets: 8,
        rate: 4000,
        number: "+33699999999".into(),
        server_pid: None,
        settle: 0,
        lines: 200,
    };
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        let bad = |_| format!("bad value for {flag}: {value}");
        match flag.as_str() {
            "--target" => o.target = value.parse().map_err(|_| bad(()))?,
            "--admin" => o.admin = value.parse().map_err(|_| bad(()))?,
            "--count" => o.count = value.parse().map_err(|_| bad(()))?,
            "--entries" => o.entries = value.parse().map_err(|_| bad(()))?,
            "--sockets" => o.sockets = value.parse().map_err(|_| bad(()))?,
            "--rate" => o.rate = value.parse().map_err(|_| bad(()))?,
            "--number" => o.number = value,
            "--server-pid" => o.server_pid = Some(value.parse().map_err(|_| bad(()))?),
            "--settle" => o.settle = value.parse().map_err(|_| bad(()))?,
            "--lines" => o.lines = value.parse().map_err(|_| bad(()))?,
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    if !o.target.ip().is_loopback() || !o.admin.ip().is_loopback() {
        return Err("this tool only talks to loopback addresses".into());
    }
    Ok(o)
}

/// What each subscription got, as nanoseconds since the start (0 = not yet).
struct Book {
    start: Instant,
    sent: Vec<AtomicU64>,
    accepted: Vec<AtomicU64>,
    first: Vec<AtomicU64>,
    second: Vec<AtomicU64>,
    rejected: AtomicU64,
}

impl Book {
    fn new(n: usize) -> Book {
        let zeros = || (0..n).map(|_| AtomicU64::new(0)).collect();
        Book { start: Instant::now(), sent: zeros(), accepted: zeros(), first: zeros(), second: zeros(), rejected: AtomicU64::new(0) }
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64 + 1
    }

    fn count(v: &[AtomicU64]) -> usize {
        v.iter().filter(|a| a.load(Ordering::Relaxed) != 0).count()
    }
}

fn call_id(run: u32, i: usize) -> String {
    format!("fan-{run:08x}-{i}")
}

fn index_of(call_id: &str) -> Option<usize> {
    call_id.trim().rsplit('-').next()?.parse().ok()
}

/// A list SUBSCRIBE for subscription `i` with `numbers`.
fn subscribe(o: &Opts, run: u32, i: usize, local: SocketAddr, numbers: &[String]) -> Vec<u8> {
    let mut body = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<resource-lists xmlns=\"urn:ietf:params:xml:ns:resource-lists\"><list>\n");
    for n in numbers {
        body.push_str(&format!("<entry uri=\"sip:{n}@example.org;user=phone\"/>\n"));
    }
    body.push_str("</list></resource-lists>\n");
    format!(
        "SUBSCRIBE sip:rls@{t} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{id};rport\r\n\
From: <sip:w{i}@example.org>;tag=f{i}\r\nTo: <sip:rls@example.org>\r\nCall-ID: {id}\r\nCSeq: 1 SUBSCRIBE\r\n\
Max-Forwards: 70\r\nContact: <sip:w{i}@{local}>\r\nEvent: presence\r\nExpires: 3600\r\nSupported: eventlist\r\n\
Require: recipient-list-subscribe\r\nAccept: multipart/related, application/rlmi+xml, application/pidf+xml\r\n\
Accept-Encoding: deflate\r\n\
Content-Type: application/resource-lists+xml\r\nContent-Disposition: recipient-list\r\nUser-Agent: fanout\r\n\
Content-Length: {len}\r\n\r\n{body}",
        t = o.target,
        id = call_id(run, i),
        len = body.len()
    )
    .into_bytes()
}

async fn bind_socket() -> std::io::Result<UdpSocket> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
    let _ = s.set_recv_buffer_size(8 << 20);
    s.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())?;
    s.set_nonblocking(true)?;
    UdpSocket::from_std(s.into())
}

/// Answers NOTIFYs with 200 and notes what each subscription received.
async fn read_loop(socket: Arc<UdpSocket>, book: Arc<Book>) {
    let mut buf = vec![0u8; 65_535];
    while let Ok((n, from)) = socket.recv_from(&mut buf).await {
        let Ok(msg) = sip::parse_message(Bytes::copy_from_slice(&buf[..n])) else { continue };
        let id = msg.headers().get(&HeaderName::CallId).and_then(|c| index_of(&c));
        let Some(i) = id.filter(|i| *i < book.first.len()) else { continue };
        match msg {
            Message::Request(req) => {
                let _ = socket.send_to(&Response::to(&req, 200).to_bytes(), from).await;
                let now = book.now();
                if book.first[i].compare_exchange(0, now, Ordering::AcqRel, Ordering::Relaxed).is_err() {
                    let _ = book.second[i].compare_exchange(0, now, Ordering::AcqRel, Ordering::Relaxed);
                }
            }
            Message::Response(r) if r.status >= 200 => {
                if r.status < 300 {
                    book.accepted[i].store(book.now(), Ordering::Release);
                } else {
                    book.rejected.fetch_add(1, Ordering::Relaxed);
                }
            }
            Message::Response(_) => {}
        }
    }
}

/// Opens every subscription, paced at `o.rate`, re-sending those without a first NOTIFY.
async fn open_all(o: &Opts, run: u32, sockets: &[Arc<UdpSocket>], book: &Book, numbers: impl Fn(usize) -> Vec<String>) {
    for pass in 0..3 {
        let pending: Vec<usize> = (0..o.count).filter(|i| book.first[*i].load(Ordering::Relaxed) == 0).collect();
        if pending.is_empty() {
            return;
        }
        if pass > 0 {
            eprintln!("re-sending {} subscriptions", pending.len());
        }
        let started = Instant::now();
        for (k, i) in pending.iter().enumerate() {
            let socket = &sockets[i % sockets.len()];
            let msg = subscribe(o, run, *i, socket.local_addr().unwrap(), &numbers(*i));
            let _ = book.sent[*i].compare_exchange(0, book.now(), Ordering::AcqRel, Ordering::Relaxed);
            let _ = socket.send_to(&msg, o.target).await;
            let due = started + Duration::from_secs_f64((k + 1) as f64 / o.rate as f64);
            tokio::time::sleep_until(due.into()).await;
        }
        wait_for(|| Book::count(&book.first) >= o.count, Duration::from_secs(3)).await;
    }
}

async fn wait_for(done: impl Fn() -> bool, limit: Duration) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    done()
}

/// PUT /bindings/{number} on the admin endpoint, by hand (HTTP/1.1, one request).
async fn bind_number(admin: SocketAddr, number: &str, uri: &str) -> std::io::Result<String> {
    let mut s = tokio::net::TcpStream::connect(admin).await?;
    let body = format!("{{\"sip_uri\":\"{uri}\"}}");
    let path = number.replace('+', "%2B");
    let req = format!(
        "PUT /bindings/{path} HTTP/1.1\r\nHost: {admin}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).await?;
    Ok(answer.lines().next().unwrap_or("").to_string())
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")?.trim().trim_end_matches("kB").trim().parse().ok())
}

/// CPU seconds (user + system) a process has used, from /proc (ticks of 1/100 s).
fn cpu_secs(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank] as f64 / 1e6
}

async fn fanout(o: &Opts, run: u32, sockets: &[Arc<UdpSocket>], book: &Book) {
    let number = o.number.clone();
    open_all(o, run, sockets, book, |_| vec![number.clone()]).await;
    let subscribed = Book::count(&book.first);
    println!("fanout: {subscribed}/{} subscribers got their first NOTIFY ({} rejected)", o.count, book.rejected.load(Ordering::Relaxed));
    // Past the coalescing interval (notify.min_interval_ms, 1 s by default) of the last one.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let t0 = book.now();
    match bind_number(o.admin, &o.number, "sip:fanout@example.org").await {
        Ok(status) => eprintln!("bind {}: {status}", o.number),
        Err(e) => eprintln!("bind {}: {e}", o.number),
    }
    wait_for(|| Book::count(&book.second) >= subscribed, Duration::from_secs(10)).await;
    let mut delays: Vec<u64> = book.second.iter().map(|a| a.load(Ordering::Relaxed)).filter(|t| *t != 0).map(|t| t.saturating_sub(t0)).collect();
    delays.sort_unstable();
    let all = delays.last().map_or(0.0, |d| *d as f64 / 1e6);
    println!(
        "fanout: {}/{subscribed} notified; last after {all:.1} ms (p50 {:.1} ms, p99 {:.1} ms)",
        delays.len(),
        percentile(&delays, 50.0),
        percentile(&delays, 99.0)
    );
}

/// Entry `e` of held address book `i`: every fifth a bound number of `make_lists.py`
/// (line chosen at random among `lines`, entry `e`), the others random `+337` mobiles.
fn held_number(i: usize, e: usize, lines: usize) -> String {
    let r = mix((i as u64) << 16 | e as u64);
    if e.is_multiple_of(5) {
        format!("+3361{:04}{:03}", r % lines as u64, e)
    } else {
        format!("+337{:08}", r % 100_000_000)
    }
}

/// splitmix64: a cheap, well-spread hash.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

async fn hold(o: &Opts, run: u32, sockets: &[Arc<UdpSocket>], book: &Book) {
    let before = o.server_pid.and_then(rss_kib);
    let entries = o.entries;
    let started = Instant::now();
    let lines = o.lines.max(1);
    open_all(o, run, sockets, book, |i| (0..entries).map(|e| held_number(i, e, lines)).collect()).await;
    let held = Book::count(&book.first);
    println!("hold: {held}/{} subscriptions of {entries} numbers active after {:.1} s", o.count, started.elapsed().as_secs_f64());
    let (Some(pid), Some(before)) = (o.server_pid, before) else { return };
    // Once after a second, and again after --settle seconds, when the transactions of the
    // first NOTIFYs (Timer K) and SUBSCRIBEs (Timer J, 32 s) are gone.
    for wait in [1, o.settle] {
        if wait == 0 {
            continue;
        }
        tokio::time::sleep(Duration::from_secs(wait)).await;
        let after = rss_kib(pid).unwrap_or(before);
        let per = (after.saturating_sub(before) * 1024) as f64 / held.max(1) as f64;
        println!("hold: server RSS {before} KiB -> {after} KiB: {per:.0} bytes per subscription");
    }
}

/// Holds the subscriptions as `hold` does, then waits (up to `--settle` seconds) while the
/// server is restarted, until every one has had its next NOTIFY (the resumed full state);
/// prints when the first and the last came, as Unix times, for `benches/restart.sh`.
async fn resume(o: &Opts, run: u32, sockets: &[Arc<UdpSocket>], book: &Book) {
    let (entries, lines) = (o.entries, o.lines.max(1));
    let before = o.server_pid.and_then(rss_kib);
    open_all(o, run, sockets, book, |i| (0..entries).map(|e| held_number(i, e, lines)).collect()).await;
    let held = Book::count(&book.first);
    if let (Some(pid), Some(before)) = (o.server_pid, before) {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after = rss_kib(pid).unwrap_or(before);
        let per = (after.saturating_sub(before) * 1024) as f64 / held.max(1) as f64;
        println!("resume: server RSS {before} KiB -> {after} KiB: {per:.0} bytes per subscription (2 s after the last)");
    }
    // A NOTIFY that came while they were opened (a binding catching up) is not the resumed one.
    book.second.iter().for_each(|t| t.store(0, Ordering::Relaxed));
    println!("resume: held {held}/{} subscriptions of {entries} numbers; restart the server now", o.count);
    let limit = Duration::from_secs(if o.settle == 0 { 300 } else { o.settle });
    let cpu_before = cpu_secs("self");
    wait_for(|| Book::count(&book.second) >= held, limit).await;
    println!("resume: client CPU while they resumed: {:.1} s", cpu_secs("self") - cpu_before);
    let unix_at = |ns: u64| {
        let now_unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        now_unix - (book.now().saturating_sub(ns)) as f64 / 1e9
    };
    let times: Vec<u64> = book.second.iter().map(|a| a.load(Ordering::Relaxed)).filter(|t| *t != 0).collect();
    let (first, last) = (times.iter().min().copied().unwrap_or(0), times.iter().max().copied().unwrap_or(0));
    println!("resume: {}/{held} resumed; first NOTIFY at {:.3}, last at {:.3} (unix s)", times.len(), unix_at(first), unix_at(last));
}

async fn latency(o: &Opts, run: u32, sockets: &[Arc<UdpSocket>], book: &Book) {
    let (entries, lines) = (o.entries, o.lines.max(1));
    open_all(o, run, sockets, book, |i| (0..entries).map(|e| format!("+3361{:04}{e:03}", i % lines)).collect()).await;
    let mut delays: Vec<u64> = (0..o.count)
        .filter_map(|i| {
            let (sent, first) = (book.sent[i].load(Ordering::Relaxed), book.first[i].load(Ordering::Relaxed));
            (sent != 0 && first != 0).then(|| first.saturating_sub(sent))
        })
        .collect();
    delays.sort_unstable();
    println!(
        "latency: {}/{} subscriptions of {entries} numbers at {}/s: first NOTIFY p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        delays.len(),
        o.count,
        o.rate,
        percentile(&delays, 50.0),
        percentile(&delays, 99.0),
        percentile(&delays, 100.0)
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> std::process::ExitCode {
    let o = match parse_opts() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("fanout: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let run: u32 = rand::random();
    let book = Arc::new(Book::new(o.count));
    let mut sockets = Vec::new();
    for _ in 0..o.sockets.max(1) {
        let s = Arc::new(bind_socket().await.expect("a loopback UDP socket"));
        tokio::spawn(read_loop(s.clone(), book.clone()));
        sockets.push(s);
    }
    match o.mode.as_str() {
        "fanout" => fanout(&o, run, &sockets, &book).await,
        "hold" => hold(&o, run, &sockets, &book).await,
        "latency" => latency(&o, run, &sockets, &book).await,
        "resume" => resume(&o, run, &sockets, &book).await,
        other => {
            eprintln!("fanout: unknown mode {other} (fanout, hold or latency)");
            return std::process::ExitCode::FAILURE;
        }
    }
    std::process::ExitCode::SUCCESS
}
