//! The dialog a subscription lives in (RFC 3261 §12, RFC 6665 §4.1.2): what our NOTIFYs
//! must carry to reach the subscriber and match his dialog.

use crate::sip::{new_tag, HeaderName, NameAddr, Request};
use crate::transport::{Source, Target};

#[derive(Debug, Clone)]
pub struct Dialog {
    pub call_id: String,
    /// Our tag: the To tag of the 200 and the From tag of our NOTIFYs.
    pub local_tag: String,
    /// Our From: the SUBSCRIBE's To with our tag.
    pub local: String,
    /// Our To: the SUBSCRIBE's From, verbatim (his tag included).
    pub remote: String,
    /// The Request-URI of our NOTIFYs: the subscriber's Contact.
    pub remote_target: String,
    /// Record-Route of the SUBSCRIBE, as our Route set.
    pub route: Vec<String>,
    /// Where NOTIFYs are sent: back along the flow the SUBSCRIBE came on.
    pub target: Target,
    /// Our Via sent-by and Contact host:port, as the subscriber reaches us.
    pub sent_by: String,
    /// Our Contact header value.
    pub contact: String,
    /// CSeq of our next NOTIFY.
    pub next_cseq: u32,
}

impl Dialog {
    /// The dialog an initial SUBSCRIBE creates; `host` is how the subscriber reaches us.
    pub fn from_subscribe(req: &Request, source: &Source, host: &str) -> Option<Dialog> {
        let call_id = req.headers.get(&HeaderName::CallId)?.trim().to_string();
        let to = req.headers.get(&HeaderName::To)?.to_string();
        let remote = req.headers.get(&HeaderName::From)?.to_string();
        let contact = req.headers.get(&HeaderName::Contact)?;
        let remote_target = NameAddr::parse(crate::sip::message::split_list(&contact).first()?).ok()?.uri_text;
        let local_tag = new_tag();
        let route = req.headers.list(&HeaderName::RecordRoute).map(|r| r.into_owned()).collect();
        let sent_by = format!("{host}:{}", source.local.port());
        let contact = format!("<sip:rls@{sent_by};transport={}>", source.protocol.param_name());
        Some(Dialog {
            call_id,
            local: format!("{to};tag={local_tag}"),
            local_tag,
            remote,
            remote_target,
            route,
            target: source.reply_target(),
            sent_by,
            contact,
            next_cseq: 1,
        })
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
