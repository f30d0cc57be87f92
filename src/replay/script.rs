//! What one client of the trace did, as a script to replay: the requests it sent (with their
//! time and the final status the trace's server gave), and how it answered each request
//! the server sent it (NOTIFYs).
//!
//! Owns splitting a trace by client and pairing requests with responses. Retransmissions
//! in the trace (same branch and CSeq) count once.

use super::trace::Proto;
use super::rewrite::param;
use super::trace::{Trace, TraceMessage};
use crate::sip::{top_via, HeaderName, Message, Method, Request, Response};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

/// A request the client sent.
#[derive(Debug, Clone)]
pub struct Step {
    pub at: Duration,
    pub request: Request,
    /// The trace's final response status, if it has one.
    pub expected: Option<u16>,
    /// The To tag the trace's server put in that response.
    pub server_tag: Option<String>,
}

/// How the client answered one request from the server (None: it did not answer).
#[derive(Debug, Clone)]
pub struct Answer {
    pub method: Method,
    pub status: Option<(u16, String)>,
}

#[derive(Debug, Clone)]
pub struct Script {
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub proto: Proto,
    pub steps: Vec<Step>,
    pub answers: Vec<Answer>,
}

/// The server: `given`, else where the trace's first request went.
pub fn server_of(trace: &Trace, given: Option<SocketAddr>) -> Option<SocketAddr> {
    given.or_else(|| trace.messages.iter().find(|m| matches!(m.message, Message::Request(_))).map(|m| m.dst))
}

/// One script per client that talked to `server`, in order of first appearance.
pub fn scripts(trace: &Trace, server: SocketAddr) -> Vec<Script> {
    let mut clients: Vec<(SocketAddr, Proto)> = Vec::new();
    for m in &trace.messages {
        let peer = if m.dst == server { m.src } else if m.src == server { m.dst } else { continue };
        if !clients.iter().any(|(c, _)| *c == peer) {
            clients.push((peer, m.proto));
        }
    }
    clients.into_iter().map(|(client, proto)| script(trace, server, client, proto)).collect()
}

fn script(trace: &Trace, server: SocketAddr, client: SocketAddr, proto: Proto) -> Script {
    let sent: Vec<&TraceMessage> = trace.messages.iter().filter(|m| m.src == client && m.dst == server).collect();
    let received: Vec<&TraceMessage> = trace.messages.iter().filter(|m| m.src == server && m.dst == client).collect();
    let mut seen = HashSet::new();
    let mut steps = Vec::new();
    for m in &sent {
        let Message::Request(req) = &m.message else { continue };
        if !seen.insert(transaction_key(&req.headers, &req.method)) {
            continue;
        }
        let response = final_response(&received, req);
        let server_tag = response.and_then(|r| r.headers.get(&HeaderName::To)).and_then(|to| param(&to, "tag"));
        steps.push(Step { at: m.at, request: req.clone(), expected: response.map(|r| r.status), server_tag });
    }
    let mut answers = Vec::new();
    for m in &received {
        let Message::Request(req) = &m.message else { continue };
        if !seen.insert(transaction_key(&req.headers, &req.method)) {
            continue;
        }
        let status = final_response(&sent, req).map(|r| (r.status, r.reason.clone()));
        answers.push(Answer { method: req.method.clone(), status });
    }
    Script { client, server, proto, steps, answers }
}

/// Branch, Call-ID and CSeq: what identifies a transaction and its retransmissions.
pub fn transaction_key(headers: &crate::sip::Headers, method: &Method) -> (String, String, String, String) {
    let branch = top_via(headers).ok().and_then(|v| v.branch().map(str::to_string)).unwrap_or_default();
    let call_id = headers.get(&HeaderName::CallId).unwrap_or_default().trim().to_string();
    let cseq = headers.get(&HeaderName::CSeq).unwrap_or_default().split_whitespace().next().unwrap_or("").to_string();
    (branch, call_id, cseq, method.as_str().to_string())
}

/// The first final response among `msgs` to `req`.
fn final_response<'a>(msgs: &[&'a TraceMessage], req: &Request) -> Option<&'a Response> {
    let key = transaction_key(&req.headers, &req.method);
    msgs.iter().find_map(|m| match &m.message {
        Message::Response(r) if r.status >= 200 && response_key(r) == key => Some(r),
        _ => None,
    })
}

fn response_key(r: &Response) -> (String, String, String, String) {
    let method = r.headers.get(&HeaderName::CSeq).and_then(|c| c.split_whitespace().nth(1).map(Method::parse)).unwrap_or(Method::Other("".into()));
    transaction_key(&r.headers, &method)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::trace::sip_message;

    fn msg(at: u64, src: &str, dst: &str, text: &str) -> TraceMessage {
        let message = sip_message(text.as_bytes()).unwrap();
        TraceMessage { at: Duration::from_millis(at), proto: Proto::Udp, src: src.parse().unwrap(), dst: dst.parse().unwrap(), message, offset: 0 }
    }

    const C: &str = "127.0.0.1:5090";
    const S: &str = "127.0.0.1:5060";

    #[test]
    fn pairs_requests_responses_and_answers() {
        let sub = "SUBSCRIBE sip:rls@x SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bK1\r\nCall-ID: c\r\nCSeq: 1 SUBSCRIBE\r\n\r\n";
        let ok = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bK1\r\nTo: <sip:rls@x>;tag=t9\r\nCall-ID: c\r\nCSeq: 1 SUBSCRIBE\r\n\r\n";
        let notify = "NOTIFY sip:a@x SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKn\r\nCall-ID: c\r\nCSeq: 1 NOTIFY\r\n\r\n";
        let ok_n = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKn\r\nCall-ID: c\r\nCSeq: 1 NOTIFY\r\n\r\n";
        let trace = Trace {
            messages: vec![msg(0, C, S, sub), msg(500, C, S, sub), msg(501, S, C, ok), msg(502, S, C, notify), msg(503, C, S, ok_n)],
        };
        let server = server_of(&trace, None).unwrap();
        assert_eq!(server.to_string(), S);
        let s = &scripts(&trace, server)[0];
        assert_eq!(s.steps.len(), 1, "the retransmission counts once");
        assert_eq!(s.steps[0].expected, Some(200));
        assert_eq!(s.steps[0].server_tag.as_deref(), Some("t9"));
        assert_eq!(s.answers.len(), 1);
        assert_eq!(s.answers[0].status.as_ref().map(|s| s.0), Some(200));
    }
}
