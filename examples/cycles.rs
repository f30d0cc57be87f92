//! A load client for list-subscription cycles that is not the bottleneck (SIPp saturates
//! first on a 2-core machine): each cycle is a new list SUBSCRIBE of `--entries` numbers,
//! its 200 and first NOTIFY, an un-SUBSCRIBE, its 200 and the `terminated` NOTIFY, every
//! NOTIFY answered 200. Cycles start at `--rate` per second for `--seconds`, spread over
//! `--connections` UDP sockets or TCP connections; at the end it prints the achieved rate,
//! first-NOTIFY and whole-cycle latency percentiles, its own CPU per cycle and, with
//! `--server-pid`, the server's.
//!
//! The numbers are those of `examples/sipp/make_lists.py` (`--lines L`: cycle i lists line
//! i mod L, so a fifth are users once its bindings are imported). `benches/ceiling.sh`
//! ramps the rate with it.
//!
//! ```sh
//! cargo run --release --example cycles -- --target 127.0.0.1:5060 --transport tcp --rate 3000 --seconds 5
//! ```

use bytes::Bytes;
use smart_presence::sip::framing::{Frame, Framer};
use smart_presence::sip::{self, HeaderName, Message, Response};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::Mutex;

struct Opts {
    target: SocketAddr,
    tcp: bool,
    connections: usize,
    rate: u64,
    seconds: u64,
    entries: usize,
    lines: usize,
    deflate: bool,
    server_pid: Option<u32>,
}

const USAGE: &str = "usage: cycles --target HOST:PORT [--transport udp|tcp] [--connections N] [--rate R] \
[--seconds S] [--entries E] [--lines L] [--deflate yes|no] [--server-pid PID]";

fn parse_opts() -> Result<Opts, String> {
    let mut o = Opts {
        target: SocketAddr::from(([127, 0, 0, 1], 5060)),
        tcp: false,
        connections: 8,
        rate: 1000,
        seconds: 5,
        entries: 100,
        lines: 1000,
        deflate: true,
        server_pid: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value\n{USAGE}"))?;
        let bad = || format!("bad value for {flag}: {value}");
        match flag.as_str() {
            "--target" => o.target = value.parse().map_err(|_| bad())?,
            "--transport" => o.tcp = matches!(value.as_str(), "tcp" | "TCP"),
            "--connections" => o.connections = value.parse().map_err(|_| bad())?,
            "--rate" => o.rate = value.parse().map_err(|_| bad())?,
            "--seconds" => o.seconds = value.parse().map_err(|_| bad())?,
            "--entries" => o.entries = value.parse().map_err(|_| bad())?,
            "--lines" => o.lines = value.parse().map_err(|_| bad())?,
            "--deflate" => o.deflate = value == "yes",
            "--server-pid" => o.server_pid = Some(value.parse().map_err(|_| bad())?),
            _ => return Err(format!("unknown option {flag}\n{USAGE}")),
        }
    }
    if !o.target.ip().is_loopback() {
        return Err("this tool only talks to loopback addresses".into());
    }
    if o.rate == 0 || o.seconds == 0 || o.connections == 0 || o.lines == 0 {
        return Err("--rate, --seconds, --connections and --lines must be above 0".into());
    }
    Ok(o)
}

/// When each cycle reached each step, in nanoseconds since the start (0 = not yet).
struct Book {
    start: Instant,
    sent: Vec<AtomicU64>,
    first: Vec<AtomicU64>,
    ended: Vec<AtomicU64>,
    refused: AtomicU64,
}

impl Book {
    fn new(n: usize) -> Book {
        let zeros = || (0..n).map(|_| AtomicU64::new(0)).collect();
        Book { start: Instant::now(), sent: zeros(), first: zeros(), ended: zeros(), refused: AtomicU64::new(0) }
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64 + 1
    }

    fn done(&self) -> usize {
        self.ended.iter().filter(|a| a.load(Ordering::Relaxed) != 0).count()
    }
}

/// One UDP socket or TCP connection to the server.
enum Conn {
    Udp(Arc<UdpSocket>, SocketAddr),
    Tcp(Mutex<OwnedWriteHalf>),
}

impl Conn {
    async fn send(&self, bytes: &[u8]) {
        match self {
            Conn::Udp(s, to) => drop(s.send_to(bytes, to).await),
            Conn::Tcp(w) => drop(w.lock().await.write_all(bytes).await),
        }
    }
}

/// What every message of one connection shares.
struct Link {
    conn: Conn,
    local: SocketAddr,
    transport: &'static str,
    run: u32,
}

impl Link {
    fn call_id(&self, i: usize) -> String {
        format!("cyc-{:08x}-{i}", self.run)
    }

    /// The headers both SUBSCRIBEs of cycle `i` carry.
    fn head(&self, i: usize, cseq: u32, to_tag: &str) -> String {
        let (t, local) = (self.transport, self.local);
        format!(
            "Via: SIP/2.0/{t} {local};branch=z9hG4bKc{run:x}-{i}-{cseq};rport\r\nFrom: <sip:w{i}@example.org>;tag=f{i}\r\n\
To: <sip:rls@example.org>{to_tag}\r\nCall-ID: {id}\r\nCSeq: {cseq} SUBSCRIBE\r\nMax-Forwards: 70\r\n\
Contact: <sip:w{i}@{local};transport={lower}>\r\nEvent: presence\r\nUser-Agent: cycles\r\n",
            run = self.run,
            id = self.call_id(i),
            lower = t.to_ascii_lowercase()
        )
    }

    fn subscribe(&self, o: &Opts, i: usize) -> Vec<u8> {
        let mut body = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<resource-lists xmlns=\"urn:ietf:params:xml:ns:resource-lists\"><list>\n");
        for e in 0..o.entries {
            body.push_str(&format!("<entry uri=\"sip:+3361{:04}{e:03}@example.org;user=phone\"/>\n", i % o.lines));
        }
        body.push_str("</list></resource-lists>\n");
        let deflate = if o.deflate { "Accept-Encoding: deflate\r\n" } else { "" };
        format!(
            "SUBSCRIBE sip:rls@{target} SIP/2.0\r\n{head}Expires: 3600\r\nSupported: eventlist\r\nRequire: recipient-list-subscribe\r\n\
Accept: multipart/related, application/rlmi+xml, application/pidf+xml\r\n{deflate}Content-Type: application/resource-lists+xml\r\n\
Content-Disposition: recipient-list\r\nContent-Length: {len}\r\n\r\n{body}",
            target = o.target,
            head = self.head(i, 1, ""),
            len = body.len()
        )
        .into_bytes()
    }

    fn unsubscribe(&self, target: &str, i: usize, remote_tag: &str) -> Vec<u8> {
        let head = self.head(i, 2, &format!(";tag={remote_tag}"));
        format!("SUBSCRIBE {target} SIP/2.0\r\n{head}Expires: 0\r\nContent-Length: 0\r\n\r\n").into_bytes()
    }
}

fn index_of(call_id: &str) -> Option<usize> {
    call_id.trim().rsplit('-').next()?.parse().ok()
}

fn tag_of(from: &str) -> Option<&str> {
    let rest = &from[from.find(";tag=")? + 5..];
    Some(rest.split([';', '>', ' ']).next().unwrap_or(rest))
}

/// Answers a NOTIFY, notes the step it marks, and ends the cycle after its first NOTIFY.
async fn on_message(link: &Link, book: &Book, raw: Bytes) {
    let Ok(msg) = sip::parse_message(raw) else { return };
    let call_id = msg.headers().get(&HeaderName::CallId).and_then(|c| index_of(&c));
    let Some(i) = call_id.filter(|i| *i < book.sent.len()) else { return };
    let req = match msg {
        Message::Request(req) => req,
        Message::Response(r) => {
            if r.status >= 300 {
                book.refused.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
    };
    link.conn.send(&Response::to(&req, 200).to_bytes()).await;
    let h = &req.headers;
    let terminated = h.get(&HeaderName::SubscriptionState).is_some_and(|s| s.starts_with("terminated"));
    if terminated {
        let _ = book.ended[i].compare_exchange(0, book.now(), Ordering::AcqRel, Ordering::Relaxed);
        return;
    }
    if book.first[i].compare_exchange(0, book.now(), Ordering::AcqRel, Ordering::Relaxed).is_err() {
        return;
    }
    let from = h.get(&HeaderName::From).unwrap_or_default();
    let contact = h.get(&HeaderName::Contact).unwrap_or_default();
    let target = contact.trim().trim_start_matches('<').split('>').next().unwrap_or_default().to_string();
    if let Some(tag) = tag_of(&from) {
        link.conn.send(&link.unsubscribe(&target, i, tag)).await;
    }
}

async fn read_udp(link: Arc<Link>, socket: Arc<UdpSocket>, book: Arc<Book>) {
    let mut buf = vec![0u8; 65_535];
    while let Ok((n, _)) = socket.recv_from(&mut buf).await {
        on_message(&link, &book, Bytes::copy_from_slice(&buf[..n])).await;
    }
}

async fn read_tcp(link: Arc<Link>, mut read: tokio::net::tcp::OwnedReadHalf, book: Arc<Book>) {
    let mut framer = Framer::new(1 << 20);
    loop {
        while let Ok(Some(frame)) = framer.next_frame() {
            if let Frame::Message(raw) = frame {
                on_message(&link, &book, raw).await;
            }
        }
        match read.read_buf(framer.buffer()).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

async fn connect(o: &Opts, run: u32, book: &Arc<Book>) -> std::io::Result<Arc<Link>> {
    if o.tcp {
        let stream = TcpStream::connect(o.target).await?;
        stream.set_nodelay(true)?;
        let local = stream.local_addr()?;
        let (read, write) = stream.into_split();
        let link = Arc::new(Link { conn: Conn::Tcp(Mutex::new(write)), local, transport: "TCP", run });
        tokio::spawn(read_tcp(link.clone(), read, book.clone()));
        return Ok(link);
    }
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
    let _ = s.set_recv_buffer_size(8 << 20);
    s.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
    s.set_nonblocking(true)?;
    let socket = Arc::new(UdpSocket::from_std(s.into())?);
    let local = socket.local_addr()?;
    let link = Arc::new(Link { conn: Conn::Udp(socket.clone(), o.target), local, transport: "UDP", run });
    tokio::spawn(read_udp(link.clone(), socket, book.clone()));
    Ok(link)
}

/// Starts every cycle on time: each millisecond, those due by then.
async fn send_all(o: &Opts, links: &[Arc<Link>], book: &Book) {
    let total = book.sent.len();
    let mut next = 0;
    while next < total {
        let due = ((book.start.elapsed().as_secs_f64() * o.rate as f64) as usize + 1).min(total);
        while next < due {
            let link = &links[next % links.len()];
            let msg = link.subscribe(o, next);
            book.sent[next].store(book.now(), Ordering::Release);
            link.conn.send(&msg).await;
            next += 1;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// CPU seconds used so far by this process.
fn own_cpu() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(u.ru_utime) + secs(u.ru_stime)
}

/// CPU seconds used so far by process `pid` (user + system, from /proc).
fn process_cpu(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    Some(ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64)
}

fn percentile_ms(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((p / 100.0) * (sorted.len() - 1) as f64).round() as usize] as f64 / 1e6
}

/// Sorted delays from `from` to `to` of the cycles that reached both.
fn delays(from: &[AtomicU64], to: &[AtomicU64]) -> Vec<u64> {
    let mut d: Vec<u64> = from
        .iter()
        .zip(to)
        .filter_map(|(a, b)| {
            let (a, b) = (a.load(Ordering::Relaxed), b.load(Ordering::Relaxed));
            (a != 0 && b != 0).then(|| b.saturating_sub(a))
        })
        .collect();
    d.sort_unstable();
    d
}

fn report(o: &Opts, book: &Book, elapsed: f64, cpu: f64, server_cpu: Option<f64>) {
    let done = book.done();
    let first = delays(&book.sent, &book.first);
    let whole = delays(&book.sent, &book.ended);
    let per = |secs: f64| secs * 1e6 / done.max(1) as f64;
    println!(
        "cycles: {} {} of {} numbers asked at {}/s: {done}/{} done ({} refused) in {elapsed:.1} s = {:.0}/s",
        o.connections,
        if o.tcp { "TCP connections" } else { "UDP sockets" },
        o.entries,
        o.rate,
        book.sent.len(),
        book.refused.load(Ordering::Relaxed),
        done as f64 / elapsed
    );
    println!(
        "cycles: first NOTIFY p50 {:.2} ms p99 {:.2} ms max {:.2} ms; whole cycle p50 {:.2} ms p99 {:.2} ms",
        percentile_ms(&first, 50.0),
        percentile_ms(&first, 99.0),
        percentile_ms(&first, 100.0),
        percentile_ms(&whole, 50.0),
        percentile_ms(&whole, 99.0)
    );
    let server = server_cpu.map_or("not measured (no --server-pid)".to_string(), |s| format!("{:.0} µs", per(s)));
    println!("cycles: CPU per cycle: client {:.0} µs, server {server}", per(cpu));
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> std::process::ExitCode {
    let o = match parse_opts() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("cycles: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let run: u32 = rand::random();
    let book = Arc::new(Book::new((o.rate * o.seconds) as usize));
    let mut links = Vec::new();
    for _ in 0..o.connections {
        match connect(&o, run, &book).await {
            Ok(link) => links.push(link),
            Err(e) => {
                eprintln!("cycles: cannot reach {}: {e}", o.target);
                return std::process::ExitCode::FAILURE;
            }
        }
    }
    let (cpu0, server0) = (own_cpu(), o.server_pid.and_then(process_cpu));
    send_all(&o, &links, &book).await;
    let total = book.sent.len();
    let end = Instant::now() + Duration::from_secs(5);
    while book.done() < total && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let last = book.ended.iter().map(|a| a.load(Ordering::Relaxed)).max().unwrap_or(0);
    let elapsed = (last as f64 / 1e9).max(1e-3);
    let server = o.server_pid.and_then(process_cpu).zip(server0).map(|(b, a)| b - a);
    report(&o, &book, elapsed, own_cpu() - cpu0, server);
    std::process::ExitCode::SUCCESS
}
