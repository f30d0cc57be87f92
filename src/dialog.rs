//! Dialogs (RFC 3261 §12, RFC 6665 §4.1.2): what our in-dialog requests must carry to reach
//! the peer and match his dialog, and the only place that writes them.
//!
//! Owns the dialog's identity (Call-ID, tags), its route set, the remote target and the flow
//! it is reached on, our Contact, and the CSeq of our requests. An event package
//! (`notification`) asks it for a request and adds only its own headers and body. It must
//! not know any event package, nor send anything: sending is the client transactions'.
//!
//! A dialog lives as long as its subscription, so its texts share one allocation, and
//! what can be derived (our From with our tag, our Contact) is written when a request is.
//! It serialises (serde) so that a subscription can be stored and resumed; the connection
//! it was reached on is not stored: it does not outlive the process.

use crate::sip::{new_tag, HeaderName, Headers, Method, NameAddr, Request};
use crate::transport::{Protocol, Source, Target};
use serde::{Deserialize, Serialize};

/// The texts of `Dialog::text`, in order.
#[derive(Clone, Copy)]
enum Part {
    CallId,
    /// Our tag: the To tag of the 200 and the From tag of our requests.
    LocalTag,
    /// The SUBSCRIBE's To, without our tag.
    To,
    /// Our To: the SUBSCRIBE's From, verbatim (his tag included).
    Remote,
    /// The Request-URI of our requests: the peer's Contact.
    RemoteTarget,
    /// Our Via sent-by and Contact host:port, as the peer reaches us.
    SentBy,
}

const PARTS: usize = 6;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Dialog {
    /// The texts of every `Part`, one after another.
    text: Box<str>,
    /// Where each part ends in `text` (at most 64 KiB of them: a dialog needs far less).
    ends: [u16; PARTS],
    /// Record-Route of the SUBSCRIBE, as our Route set.
    route: Box<[Box<str>]>,
    /// Where requests are sent: back along the flow the peer last used.
    pub target: Target,
    /// CSeq of our next request.
    pub next_cseq: u32,
}

/// Where the peer now is, from an in-dialog request (a target refresh, RFC 6665 §4.1.2.1).
#[derive(Debug, Clone)]
pub struct Retarget {
    /// Its Contact URI, when the request had one.
    pub remote_target: Option<String>,
    /// The flow it came on.
    pub target: Target,
    /// How it reached us (our sent-by and Contact host:port).
    pub sent_by: String,
}

impl Retarget {
    /// The target refresh an in-dialog `req` from `source` carries; `domain` stands for us
    /// when we listen on a wildcard address.
    pub fn from_request(req: &Request, source: &Source, domain: &str) -> Retarget {
        Retarget { remote_target: contact_uri(req), target: source.reply_target(), sent_by: sent_by(source, domain) }
    }
}

impl Dialog {
    /// The dialog an initial SUBSCRIBE from `source` creates; `domain` stands for us when we
    /// listen on a wildcard address. Err (the reason of a 400) without Call-ID, To, From or
    /// Contact, or when their texts take more than 64 KiB.
    pub fn from_subscribe(req: &Request, source: &Source, domain: &str) -> Result<Dialog, &'static str> {
        let header = |name, why| req.headers.get(&name).ok_or(why);
        let call_id = header(HeaderName::CallId, "Missing Call-ID")?;
        let to = header(HeaderName::To, "Missing To")?;
        let remote = header(HeaderName::From, "Missing From")?;
        let remote_target = contact_uri(req).ok_or("Missing Contact")?;
        let route = req.headers.list(&HeaderName::RecordRoute).map(|r| r.into()).collect();
        let local_tag = new_tag();
        let parts: [&str; PARTS] = [call_id.trim(), &local_tag, &to, &remote, &remote_target, &sent_by(source, domain)];
        let (text, ends) = join(parts).ok_or("Dialog Headers Too Long")?;
        Ok(Dialog { text, ends, route, target: source.reply_target(), next_cseq: 1 })
    }

    /// Follows the peer to where an in-dialog request came from (RFC 6665 §4.1.2.1: a
    /// refreshing SUBSCRIBE is a target refresh; a phone moving from Wi-Fi to mobile data
    /// keeps its NOTIFYs). False if the new texts are too long to hold (nothing changes).
    pub fn retarget(&mut self, to: &Retarget) -> bool {
        let remote_target = to.remote_target.as_deref().unwrap_or(self.remote_target()).to_string();
        let mut parts = [Part::CallId, Part::LocalTag, Part::To, Part::Remote, Part::RemoteTarget, Part::SentBy].map(|p| self.part(p));
        parts[Part::RemoteTarget as usize] = &remote_target;
        parts[Part::SentBy as usize] = &to.sent_by;
        let Some((text, ends)) = join(parts) else { return false };
        self.text = text;
        self.ends = ends;
        self.target = to.target;
        true
    }

    fn part(&self, part: Part) -> &str {
        let i = part as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        self.text.get(start..self.ends[i] as usize).unwrap_or("")
    }

    pub fn call_id(&self) -> &str {
        self.part(Part::CallId)
    }

    /// Our tag: the To tag of the 200 and the From tag of our requests.
    pub fn local_tag(&self) -> &str {
        self.part(Part::LocalTag)
    }

    /// Our From: the SUBSCRIBE's To with our tag.
    pub fn local(&self) -> String {
        format!("{};tag={}", self.part(Part::To), self.local_tag())
    }

    /// Our To: the SUBSCRIBE's From, verbatim (his tag included).
    pub fn remote(&self) -> &str {
        self.part(Part::Remote)
    }

    /// The Request-URI of our requests: the peer's Contact.
    pub fn remote_target(&self) -> &str {
        self.part(Part::RemoteTarget)
    }

    /// Our Via sent-by and Contact host:port, as the peer reaches us.
    pub fn sent_by(&self) -> &str {
        self.part(Part::SentBy)
    }

    /// Our Contact header value (in our requests and in the 200s to the peer's).
    pub fn contact(&self) -> String {
        contact(self.sent_by(), self.target.protocol)
    }

    /// Record-Route of the SUBSCRIBE, as our Route set.
    pub fn route(&self) -> impl Iterator<Item = &str> {
        self.route.iter().map(|r| &**r)
    }

    /// A request in this dialog, with the next CSeq: Request-URI, Max-Forwards, From, To,
    /// Call-ID, CSeq, Route and Contact. The caller adds its package's headers and body;
    /// the client transaction adds the Via.
    pub fn request(&mut self, method: Method) -> Request {
        let mut h = Headers(Vec::with_capacity(14));
        h.push(HeaderName::MaxForwards, "70");
        h.push(HeaderName::From, self.local());
        h.push(HeaderName::To, self.remote().to_string());
        h.push(HeaderName::CallId, self.call_id().to_string());
        h.push(HeaderName::CSeq, format!("{} {}", self.next_cseq, method.as_str()));
        self.next_cseq = self.next_cseq.wrapping_add(1);
        for r in self.route() {
            h.push(HeaderName::Route, r.to_string());
        }
        h.push(HeaderName::Contact, self.contact());
        Request { method, uri: self.remote_target().to_string(), headers: h, body: bytes::Bytes::new() }
    }
}

/// Our Contact for a dialog reached at `sent_by` over `protocol`.
fn contact(sent_by: &str, protocol: Protocol) -> String {
    format!("<sip:rls@{sent_by};transport={}>", protocol.param_name())
}

/// The first Contact URI of a request.
fn contact_uri(req: &Request) -> Option<String> {
    let contact = req.headers.get(&HeaderName::Contact)?;
    Some(NameAddr::parse(crate::sip::message::split_list(&contact).first()?).ok()?.uri_text)
}

/// Our host:port as `source` reached us.
fn sent_by(source: &Source, domain: &str) -> String {
    format!("{}:{}", local_host(source, domain), source.local.port())
}

/// Our Contact for a request that came from `source`: what `Dialog::contact` says of the
/// dialog it creates or refreshes.
pub fn contact_for(source: &Source, domain: &str) -> String {
    contact(&sent_by(source, domain), source.protocol)
}

/// How the peer reaches us: the local address the request arrived on, or `domain` when we
/// listen on a wildcard address.
fn local_host(source: &Source, domain: &str) -> String {
    let ip = source.local.ip();
    if ip.is_unspecified() {
        domain.to_string()
    } else if ip.is_ipv6() {
        format!("[{ip}]")
    } else {
        ip.to_string()
    }
}

fn join(parts: [&str; PARTS]) -> Option<(Box<str>, [u16; PARTS])> {
    let mut text = String::with_capacity(parts.iter().map(|p| p.len()).sum());
    let mut ends = [0; PARTS];
    for (end, part) in ends.iter_mut().zip(parts) {
        text.push_str(part);
        *end = u16::try_from(text.len()).ok()?;
    }
    Some((text.into(), ends))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::{parse_message, Message};
    use crate::transport::{ConnId, Protocol};
    use bytes::Bytes;

    /// A dialog as stored before its part ends were narrowed to u16 (the records of
    /// earlier builds): postcard writes both as varints, so those records still decode.
    #[derive(Serialize)]
    struct StoredBefore {
        text: Box<str>,
        ends: [u32; PARTS],
        route: Box<[Box<str>]>,
        target: TargetBefore,
        next_cseq: u32,
    }

    #[derive(Serialize)]
    struct TargetBefore {
        protocol: Protocol,
        remote: std::net::SocketAddr,
    }

    #[test]
    fn a_dialog_stored_with_u32_part_ends_still_decodes() {
        let texts = ["call-1", "tag-1", "<sip:rls@example.org>", "<sip:alice@example.org>;tag=a", "sip:alice@10.0.0.1:5060", "10.0.0.2:5060"];
        let mut ends = [0u32; PARTS];
        let mut at = 0;
        for (end, t) in ends.iter_mut().zip(texts) {
            at += t.len() as u32;
            *end = at;
        }
        let old = StoredBefore {
            text: texts.concat().into(),
            ends,
            route: Box::new(["<sip:proxy.example.org;lr>".into()]),
            target: TargetBefore { protocol: Protocol::Tcp, remote: "10.0.0.1:5060".parse().unwrap() },
            next_cseq: 7,
        };
        let d: Dialog = postcard::from_bytes(&postcard::to_allocvec(&old).unwrap()).unwrap();
        assert_eq!((d.call_id(), d.local_tag(), d.remote_target()), ("call-1", "tag-1", "sip:alice@10.0.0.1:5060"));
        assert_eq!((d.target.protocol, d.target.remote, d.target.conn, d.next_cseq), (Protocol::Tcp, old.target.remote, None, 7));
    }

    fn subscribe() -> Request {
        let raw = "SUBSCRIBE sip:rls@example.org SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.1:5060;branch=z9hG4bKa\r\n\
From: <sip:alice@example.org>;tag=abc\r\nTo: <sip:rls@example.org>\r\nCall-ID:  c1@host \r\nCSeq: 1 SUBSCRIBE\r\n\
Contact: <sip:alice@10.0.0.1:5060;transport=tcp>\r\nRecord-Route: <sip:p1;lr>, <sip:p2;lr>\r\n\r\n";
        let Ok(Message::Request(req)) = parse_message(Bytes::from(raw)) else { panic!("parses") };
        req
    }

    fn source(local: &str, conn: u64) -> Source {
        Source { protocol: Protocol::Tcp, remote: "10.0.0.1:5060".parse().unwrap(), local: local.parse().unwrap(), conn: Some(ConnId::new(conn)) }
    }

    #[test]
    fn a_subscribe_without_contact_or_with_texts_over_64_kib_makes_no_dialog() {
        let raw = |to: &str, contact: &str| {
            let raw = format!("SUBSCRIBE sip:rls@example.org SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.1:5060;branch=z9hG4bKa\r\nFrom: <sip:alice@example.org>;tag=abc\r\nTo: {to}\r\nCall-ID: c1\r\nCSeq: 1 SUBSCRIBE\r\n{contact}\r\n");
            let Ok(Message::Request(req)) = parse_message(Bytes::from(raw)) else { panic!("parses") };
            req
        };
        let contact = "Contact: <sip:alice@10.0.0.1:5060>\r\n";
        let at = source("192.0.2.1:5070", 1);
        assert_eq!(Dialog::from_subscribe(&raw("<sip:rls@example.org>", ""), &at, "example.org").err(), Some("Missing Contact"));
        let long = format!("<sip:rls@example.org;x={}>", "a".repeat(70_000));
        assert_eq!(Dialog::from_subscribe(&raw(&long, contact), &at, "example.org").err(), Some("Dialog Headers Too Long"));
        assert!(Dialog::from_subscribe(&raw(&long[..60_000], contact), &at, "example.org").is_ok());
    }

    #[test]
    fn parts_come_back_as_written() {
        let d = Dialog::from_subscribe(&subscribe(), &source("192.0.2.1:5070", 1), "example.org").expect("a dialog");
        assert_eq!(d.call_id(), "c1@host");
        assert_eq!(d.local_tag().len(), 10);
        assert_eq!(d.local(), format!("<sip:rls@example.org>;tag={}", d.local_tag()));
        assert_eq!(d.remote(), "<sip:alice@example.org>;tag=abc");
        assert_eq!(d.remote_target(), "sip:alice@10.0.0.1:5060;transport=tcp");
        assert_eq!(d.sent_by(), "192.0.2.1:5070");
        assert_eq!(d.contact(), "<sip:rls@192.0.2.1:5070;transport=tcp>");
        assert_eq!(d.route().collect::<Vec<_>>(), ["<sip:p1;lr>", "<sip:p2;lr>"]);
    }

    #[test]
    fn wildcard_listener_names_the_domain_in_every_contact() {
        let s = source("0.0.0.0:5060", 1);
        let d = Dialog::from_subscribe(&subscribe(), &s, "example.org").expect("a dialog");
        assert_eq!(d.contact(), "<sip:rls@example.org:5060;transport=tcp>");
        assert_eq!(contact_for(&s, "example.org"), d.contact());
    }

    #[test]
    fn requests_count_cseq_and_carry_the_route() {
        let mut d = Dialog::from_subscribe(&subscribe(), &source("192.0.2.1:5070", 1), "example.org").expect("a dialog");
        let first = d.request(Method::Notify);
        let second = d.request(Method::Notify);
        assert_eq!(first.uri, "sip:alice@10.0.0.1:5060;transport=tcp");
        assert_eq!(first.headers.get(&HeaderName::CSeq).as_deref(), Some("1 NOTIFY"));
        assert_eq!(second.headers.get(&HeaderName::CSeq).as_deref(), Some("2 NOTIFY"));
        assert_eq!(first.headers.list(&HeaderName::Route).count(), 2);
    }

    #[test]
    fn retarget_follows_the_peer_and_keeps_the_rest() {
        let mut d = Dialog::from_subscribe(&subscribe(), &source("192.0.2.1:5070", 1), "example.org").expect("a dialog");
        let tag = d.local_tag().to_string();
        let moved = Retarget { remote_target: Some("sip:alice@10.9.9.9:6000;transport=tcp".into()), target: source("192.0.2.1:5070", 7).reply_target(), sent_by: "192.0.2.1:5070".into() };
        assert!(d.retarget(&moved));
        assert_eq!(d.remote_target(), "sip:alice@10.9.9.9:6000;transport=tcp");
        assert_eq!(d.target.conn, Some(ConnId::new(7)));
        assert_eq!((d.call_id(), d.local_tag()), ("c1@host", tag.as_str()));
        let json = serde_json::to_string(&d).expect("serialises");
        let back: Dialog = serde_json::from_str(&json).expect("deserialises");
        assert_eq!(back.remote_target(), d.remote_target());
        assert_eq!(back.target.conn, None, "a connection does not outlive the process");
    }
}
