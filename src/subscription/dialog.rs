//! The dialog a subscription lives in (RFC 3261 §12, RFC 6665 §4.1.2): what our NOTIFYs
//! must carry to reach the subscriber and match his dialog.
//!
//! Held for the whole life of a subscription, so its texts share one allocation, and what
//! can be derived (our From with our tag, our Contact) is written when a NOTIFY is.

use crate::sip::{new_tag, HeaderName, NameAddr, Request};
use crate::transport::{Source, Target};

/// The texts of `Dialog::text`, in order.
#[derive(Clone, Copy)]
enum Part {
    CallId,
    /// Our tag: the To tag of the 200 and the From tag of our NOTIFYs.
    LocalTag,
    /// The SUBSCRIBE's To, without our tag.
    To,
    /// Our To: the SUBSCRIBE's From, verbatim (his tag included).
    Remote,
    /// The Request-URI of our NOTIFYs: the subscriber's Contact.
    RemoteTarget,
    /// Our Via sent-by and Contact host:port, as the subscriber reaches us.
    SentBy,
}

const PARTS: usize = 6;

#[derive(Debug, Clone)]
pub struct Dialog {
    /// The texts of every `Part`, one after another.
    text: Box<str>,
    /// Where each part ends in `text`.
    ends: [u32; PARTS],
    /// Record-Route of the SUBSCRIBE, as our Route set.
    route: Box<[Box<str>]>,
    /// Where NOTIFYs are sent: back along the flow the SUBSCRIBE came on.
    pub target: Target,
    /// CSeq of our next NOTIFY.
    pub next_cseq: u32,
}

impl Dialog {
    /// The dialog an initial SUBSCRIBE creates; `host` is how the subscriber reaches us.
    pub fn from_subscribe(req: &Request, source: &Source, host: &str) -> Option<Dialog> {
        let call_id = req.headers.get(&HeaderName::CallId)?;
        let to = req.headers.get(&HeaderName::To)?;
        let remote = req.headers.get(&HeaderName::From)?;
        let contact = req.headers.get(&HeaderName::Contact)?;
        let remote_target = NameAddr::parse(crate::sip::message::split_list(&contact).first()?).ok()?.uri_text;
        let route = req.headers.list(&HeaderName::RecordRoute).map(|r| r.into()).collect();
        let sent_by = format!("{host}:{}", source.local.port());
        let local_tag = new_tag();
        let parts: [&str; PARTS] = [call_id.trim(), &local_tag, &to, &remote, &remote_target, &sent_by];
        let mut text = String::with_capacity(parts.iter().map(|p| p.len()).sum());
        let mut ends = [0; PARTS];
        for (end, part) in ends.iter_mut().zip(parts) {
            text.push_str(part);
            *end = u32::try_from(text.len()).ok()?;
        }
        Some(Dialog { text: text.into(), ends, route, target: source.reply_target(), next_cseq: 1 })
    }

    fn part(&self, part: Part) -> &str {
        let i = part as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.text[start..self.ends[i] as usize]
    }

    pub fn call_id(&self) -> &str {
        self.part(Part::CallId)
    }

    /// Our tag: the To tag of the 200 and the From tag of our NOTIFYs.
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

    /// The Request-URI of our NOTIFYs: the subscriber's Contact.
    pub fn remote_target(&self) -> &str {
        self.part(Part::RemoteTarget)
    }

    /// Our Via sent-by and Contact host:port, as the subscriber reaches us.
    pub fn sent_by(&self) -> &str {
        self.part(Part::SentBy)
    }

    /// Our Contact header value.
    pub fn contact(&self) -> String {
        format!("<sip:rls@{};transport={}>", self.sent_by(), self.target.protocol.param_name())
    }

    /// Record-Route of the SUBSCRIBE, as our Route set.
    pub fn route(&self) -> impl Iterator<Item = &str> {
        self.route.iter().map(|r| &**r)
    }
}

/// How the subscriber reaches us: the local address the request arrived on, or `fallback`
/// (the service domain) when we listen on a wildcard address.
pub fn local_host(source: &Source, fallback: &str) -> String {
    let ip = source.local.ip();
    if ip.is_unspecified() {
        fallback.to_string()
    } else if ip.is_ipv6() {
        format!("[{ip}]")
    } else {
        ip.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::{parse_message, Message};
    use crate::transport::Protocol;
    use bytes::Bytes;

    #[test]
    fn parts_come_back_as_written() {
        let raw = "SUBSCRIBE sip:rls@example.org SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.1:5060;branch=z9hG4bKa\r\n\
From: <sip:alice@example.org>;tag=abc\r\nTo: <sip:rls@example.org>\r\nCall-ID:  c1@host \r\nCSeq: 1 SUBSCRIBE\r\n\
Contact: <sip:alice@10.0.0.1:5060;transport=tcp>\r\nRecord-Route: <sip:p1;lr>, <sip:p2;lr>\r\n\r\n";
        let Ok(Message::Request(req)) = parse_message(Bytes::from(raw)) else { panic!("parses") };
        let source = Source {
            protocol: Protocol::Tcp,
            remote: "10.0.0.1:5060".parse().unwrap(),
            local: "192.0.2.1:5070".parse().unwrap(),
            conn: None,
        };
        let d = Dialog::from_subscribe(&req, &source, "192.0.2.1").expect("a dialog");
        assert_eq!(d.call_id(), "c1@host");
        assert_eq!(d.local_tag().len(), 10);
        assert_eq!(d.local(), format!("<sip:rls@example.org>;tag={}", d.local_tag()));
        assert_eq!(d.remote(), "<sip:alice@example.org>;tag=abc");
        assert_eq!(d.remote_target(), "sip:alice@10.0.0.1:5060;transport=tcp");
        assert_eq!(d.sent_by(), "192.0.2.1:5070");
        assert_eq!(d.contact(), "<sip:rls@192.0.2.1:5070;transport=tcp>");
        assert_eq!(d.route().collect::<Vec<_>>(), ["<sip:p1;lr>", "<sip:p2;lr>"]);
    }
}
