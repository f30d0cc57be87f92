//! Runs the scripts against a target: one socket (UDP) or connection (TCP) per client of
//! the trace and per copy, requests sent at the trace's times divided by the speed (each
//! after the previous one's final response, so in-dialog requests carry the live To tag),
//! UDP requests retransmitted RFC 3261 style, and server requests answered as the trace's
//! client answered them.
//!
//! Owns sockets, timing and the per-session state; rewriting is `rewrite.rs`'s, counting
//! `report.rs`'s.

use super::trace::Proto;
use super::report::Report;
use super::rewrite::{param, Rewriter};
use super::script::{Answer, Script, Step};
use crate::sip::framing::{Frame, Framer};
use crate::sip::{self, HeaderName, Message, Method, Request, Response};
use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How to run the copies.
#[derive(Debug, Clone)]
pub struct Plan {
    pub target: SocketAddr,
    /// Local address to bind (port 0).
    pub bind: IpAddr,
    /// Trace time is divided by this; 0 sends each request as soon as the previous is done.
    pub speed: f64,
    pub timeout: Duration,
    pub proto: Option<Proto>,
    pub number_step: u64,
    pub run_id: String,
}

/// One client of the trace, replayed as one copy.
pub async fn run_session(script: Script, copy: u64, plan: Arc<Plan>, progress: indicatif::ProgressBar) -> Report {
    let mut report = Report { sessions: 1, ..Report::default() };
    let proto = plan.proto.unwrap_or(script.proto);
    let (link, inbox, reader) = match open(proto, plan.bind, plan.target).await {
        Ok(v) => v,
        Err(e) => {
            report.count(format!("connect error: {e}"));
            report.timeouts += script.steps.len() as u64;
            return report;
        }
    };
    let mut rw = Rewriter::new(&plan.run_id, copy, plan.number_step);
    rw.map_addr(script.client, link.local);
    rw.map_addr(script.server, plan.target);
    let answers = script.answers.iter().cloned().collect();
    let mut s = Session { rw, link, inbox, proto, answers, answered: HashMap::new(), report, last_sent: None, timeout: plan.timeout };
    let start = Instant::now();
    for step in &script.steps {
        if plan.speed > 0.0 {
            let due = start + step.at.div_f64(plan.speed);
            s.idle_until(due).await;
        }
        s.transact(step).await;
        progress.inc(1);
    }
    let linger = Instant::now() + s.timeout;
    while !s.answers.is_empty() && Instant::now() < linger {
        s.idle_until((Instant::now() + Duration::from_millis(50)).min(linger)).await;
    }
    // Late retransmissions of the last NOTIFY still get their answer for a moment.
    s.idle_until(Instant::now() + Duration::from_millis(20)).await;
    s.report.missing += s.answers.len() as u64;
    reader.abort();
    s.report
}

struct Link {
    local: SocketAddr,
    out: Out,
}

enum Out {
    Udp(Arc<UdpSocket>, SocketAddr),
    Tcp(tokio::net::tcp::OwnedWriteHalf),
}

impl Link {
    async fn send(&mut self, data: &[u8]) -> std::io::Result<()> {
        match &mut self.out {
            Out::Udp(socket, target) => socket.send_to(data, *target).await.map(|_| ()),
            Out::Tcp(w) => w.write_all(data).await,
        }
    }
}

async fn open(proto: Proto, bind: IpAddr, target: SocketAddr) -> std::io::Result<(Link, mpsc::Receiver<Message>, JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel(256);
    match proto {
        Proto::Udp => {
            // The server's own binding: 8 MiB buffers, so a burst of copies is not dropped by
            // the kernel on our side and then counted as the server's retransmissions.
            let socket = Arc::new(crate::transport::udp::bind(SocketAddr::new(bind, 0))?);
            let local = socket.local_addr()?;
            let reader = tokio::spawn(read_udp(socket.clone(), tx));
            Ok((Link { local, out: Out::Udp(socket, target) }, rx, reader))
        }
        Proto::Tcp => {
            let socket = if bind.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
            socket.bind(SocketAddr::new(bind, 0))?;
            let stream: TcpStream = socket.connect(target).await?;
            let local = stream.local_addr()?;
            let (read, write) = stream.into_split();
            let reader = tokio::spawn(read_tcp(read, tx));
            Ok((Link { local, out: Out::Tcp(write) }, rx, reader))
        }
    }
}

async fn read_udp(socket: Arc<UdpSocket>, tx: mpsc::Sender<Message>) {
    let mut buf = vec![0u8; 65_535];
    while let Ok((n, _)) = socket.recv_from(&mut buf).await {
        if let Ok(m) = sip::parse_message(Bytes::copy_from_slice(&buf[..n])) {
            if tx.send(m).await.is_err() {
                return;
            }
        }
    }
}

async fn read_tcp(mut read: tokio::net::tcp::OwnedReadHalf, tx: mpsc::Sender<Message>) {
    let mut framer = Framer::new(1 << 20);
    let mut buf = vec![0u8; 16 << 10];
    loop {
        let n = match read.read(&mut buf).await {
            Ok(n) if n > 0 => n,
            _ => return,
        };
        framer.push(&buf[..n]);
        while let Ok(Some(frame)) = framer.next_frame() {
            let Frame::Message(bytes) = frame else { continue };
            if let Ok(m) = sip::parse_message(bytes) {
                if tx.send(m).await.is_err() {
                    return;
                }
            }
        }
    }
}

struct Session {
    rw: Rewriter,
    link: Link,
    inbox: mpsc::Receiver<Message>,
    proto: Proto,
    /// How the trace's client answered the server requests still to come, in order.
    answers: VecDeque<Answer>,
    /// Our answer per server branch, re-sent when the server retransmits.
    answered: HashMap<String, Option<Bytes>>,
    report: Report,
    /// When the last client request left, until a server request is timed against it.
    last_sent: Option<Instant>,
    timeout: Duration,
}

impl Session {
    /// Answers server requests until `deadline`.
    async fn idle_until(&mut self, deadline: Instant) {
        loop {
            tokio::select! {
                m = self.inbox.recv() => match m {
                    Some(Message::Request(req)) => self.on_request(req).await,
                    Some(Message::Response(r)) => self.report.count(format!("recv {} (stray)", r.status)),
                    None => return tokio::time::sleep_until(deadline).await,
                },
                _ = tokio::time::sleep_until(deadline) => return,
            }
        }
    }

    /// Sends one trace request and waits for its final response.
    async fn transact(&mut self, step: &Step) {
        let req = self.rw.request(&step.request);
        let method = req.method.as_str().to_string();
        let branch = sip::top_via(&req.headers).ok().and_then(|v| v.branch().map(str::to_string)).unwrap_or_default();
        let bytes = req.to_bytes();
        let sent = Instant::now();
        if let Err(e) = self.link.send(&bytes).await {
            self.report.count(format!("send error: {}", e.kind()));
            self.report.timeouts += 1;
            return;
        }
        self.report.count(format!("sent {method}"));
        self.last_sent = Some(sent);
        if req.method == Method::Ack {
            return;
        }
        match self.await_final(&branch, &bytes, sent).await {
            Some(resp) => self.on_final(step, &method, resp, sent),
            None => self.report.timeouts += 1,
        }
    }

    /// The final response to our request with `branch`, retransmitting over UDP (T1 = 500 ms).
    async fn await_final(&mut self, branch: &str, bytes: &Bytes, sent: Instant) -> Option<Response> {
        let give_up = sent + self.timeout;
        let mut interval = Duration::from_millis(500);
        let mut resend = sent + interval;
        loop {
            let wake = if self.proto == Proto::Udp { resend.min(give_up) } else { give_up };
            tokio::select! {
                m = self.inbox.recv() => match m {
                    Some(Message::Response(r)) if branch_of(&r.headers) == branch => {
                        if r.status >= 200 {
                            return Some(r);
                        }
                        self.report.count(format!("recv {} {}", r.status, cseq_method(&r)));
                    }
                    Some(Message::Response(r)) => self.report.count(format!("recv {} (stray)", r.status)),
                    Some(Message::Request(req)) => self.on_request(req).await,
                    None => return None,
                },
                _ = tokio::time::sleep_until(wake) => {
                    if Instant::now() >= give_up {
                        return None;
                    }
                    let _ = self.link.send(bytes).await;
                    self.report.count("retransmitted".into());
                    interval = (interval * 2).min(Duration::from_secs(4));
                    resend = Instant::now() + interval;
                }
            }
        }
    }

    fn on_final(&mut self, step: &Step, method: &str, resp: Response, sent: Instant) {
        self.report.count(format!("recv {} {method}", resp.status));
        self.report.latency(method, sent.elapsed());
        if let Some(expected) = step.expected {
            if expected != resp.status {
                self.report.differ(method, expected, resp.status);
            }
        }
        let live_tag = resp.headers.get(&HeaderName::To).and_then(|to| param(&to, "tag"));
        if let (Some(trace), Some(live)) = (&step.server_tag, live_tag) {
            self.rw.learn_tag(trace, &live);
        }
    }

    /// Answers a server request as the trace's client did (200 when the trace has no such request).
    async fn on_request(&mut self, req: Request) {
        let branch = branch_of(&req.headers);
        if let Some(previous) = self.answered.get(&branch) {
            if let Some(bytes) = previous.clone() {
                let _ = self.link.send(&bytes).await;
            }
            return;
        }
        let method = req.method.as_str().to_string();
        self.report.count(format!("recv {method}"));
        if let Some(sent) = self.last_sent.take() {
            self.report.latency(&format!("{method} after request"), sent.elapsed());
        }
        let status = match self.answers.iter().position(|a| a.method == req.method) {
            Some(i) => self.answers.remove(i).and_then(|a| a.status),
            None => {
                self.report.unexpected += 1;
                Some((200, "OK".to_string()))
            }
        };
        let bytes = status.map(|(code, reason)| Response::with_reason(&req, code, &reason).to_bytes());
        if let Some(b) = &bytes {
            if self.link.send(b).await.is_ok() {
                self.report.count(format!("sent {} {method}", status_of(b)));
            }
        }
        if req.method != Method::Ack {
            self.answered.insert(branch, bytes);
        }
    }
}

fn branch_of(headers: &sip::Headers) -> String {
    sip::top_via(headers).ok().and_then(|v| v.branch().map(str::to_string)).unwrap_or_default()
}

fn cseq_method(r: &Response) -> String {
    r.headers.get(&HeaderName::CSeq).and_then(|c| c.split_whitespace().nth(1).map(str::to_string)).unwrap_or_default()
}

fn status_of(response: &[u8]) -> &str {
    std::str::from_utf8(response.get(8..11).unwrap_or(b"???")).unwrap_or("???")
}
