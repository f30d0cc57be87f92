//! Typed views of the headers the server acts on: Via, name-addr headers (From, To, Contact)
//! and CSeq. Parsed on demand from the raw values in `Headers`.

use super::message::{list_elements, HeaderName, Headers, Method};
use super::uri::{split_hostport, split_params, Uri, UriError};

/// One Via entry (RFC 3261 §20.42, RFC 3581 rport).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// `UDP`, `TCP`, `TLS`, ... upper-cased.
    pub transport: String,
    pub host: String,
    pub port: Option<u16>,
    /// The parameters as written (`;branch=z9hG4bK..;rport`), read by [`Via::param`]: a
    /// Via is parsed several times a request, and most of its parameters are never asked.
    params: String,
}

impl Via {
    pub fn parse(text: &str) -> Result<Via, UriError> {
        let (proto, rest) = text.trim().split_once([' ', '\t']).ok_or(UriError("Via without sent-by"))?;
        let mut proto_parts = proto.split('/').map(str::trim);
        let (Some(name), Some(_version), Some(transport)) =
            (proto_parts.next(), proto_parts.next(), proto_parts.next())
        else {
            return Err(UriError("bad Via protocol"));
        };
        if !name.eq_ignore_ascii_case("SIP") {
            return Err(UriError("bad Via protocol"));
        }
        let (sent_by, params) = rest.split_once(';').unwrap_or((rest, ""));
        let (host, port) = split_hostport(sent_by)?;
        Ok(Via { transport: transport.to_ascii_uppercase(), host, port, params: params.to_string() })
    }

    /// A parameter: Some(None) when it has no value (`rport`), None when absent.
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        self.params.split(';').find_map(|p| {
            let (n, v) = p.split_once('=').map_or((p, None), |(n, v)| (n, Some(v.trim())));
            n.trim().eq_ignore_ascii_case(name).then_some(v)
        })
    }

    pub fn branch(&self) -> Option<&str> {
        self.param("branch").flatten()
    }

    /// `host:port` as written, the sent-by used for transaction matching.
    pub fn sent_by(&self) -> String {
        match self.port {
            Some(p) => format!("{}:{p}", self.host),
            None => self.host.clone(),
        }
    }
}

/// The top Via of a message, parsed.
pub fn top_via(headers: &Headers) -> Result<Via, UriError> {
    let first = headers.get(&HeaderName::Via).ok_or(UriError("missing Via"))?;
    let top = list_elements(&first).next().ok_or(UriError("empty Via"))?;
    Via::parse(top)
}

/// A name-addr or addr-spec with header parameters: From, To, Contact (RFC 3261 §20.10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    pub display: Option<String>,
    /// The URI text exactly as written.
    pub uri_text: String,
    pub params: Vec<(String, Option<String>)>,
}

impl NameAddr {
    pub fn parse(text: &str) -> Result<NameAddr, UriError> {
        let text = text.trim();
        if text == "*" {
            return Ok(NameAddr { display: None, uri_text: "*".into(), params: Vec::new() });
        }
        let (display, uri_text, rest) = match find_angle(text) {
            Some((open, close)) => {
                let display = text[..open].trim().trim_matches('"').trim();
                let display = (!display.is_empty()).then(|| display.to_string());
                (display, text[open + 1..close].trim(), &text[close + 1..])
            }
            // addr-spec form: parameters after the URI belong to the header (RFC 3261 §20).
            None => match text.find(';') {
                Some(semi) => (None, &text[..semi], &text[semi..]),
                None => (None, text, ""),
            },
        };
        if uri_text.is_empty() || !uri_text.contains(':') {
            return Err(UriError("bad address"));
        }
        let (_, params) = split_params(rest);
        Ok(NameAddr { display, uri_text: uri_text.to_string(), params })
    }

    pub fn uri(&self) -> Result<Uri, UriError> {
        Uri::parse(&self.uri_text)
    }

    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_deref())
    }

    pub fn tag(&self) -> Option<&str> {
        self.param("tag").flatten()
    }
}

/// Finds `<` and its `>` outside a quoted display name.
fn find_angle(text: &str) -> Option<(usize, usize)> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '<' if !quoted => return text[i..].find('>').map(|c| (i, i + c)),
            _ => {}
        }
    }
    None
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    pub seq: u32,
    pub method: Method,
}

impl CSeq {
    pub fn parse(text: &str) -> Result<CSeq, UriError> {
        let mut parts = text.split_whitespace();
        let (Some(seq), Some(method), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(UriError("bad CSeq"));
        };
        let seq = seq.parse().map_err(|_| UriError("bad CSeq number"))?;
        Ok(CSeq { seq, method: Method::parse(method) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn via_with_rport_and_alias() {
        let v = Via::parse("SIP/2.0/TCP 127.0.0.1:39618;alias;branch=z9hG4bK.s4h;rport").unwrap();
        assert_eq!(v.transport, "TCP");
        assert_eq!(v.sent_by(), "127.0.0.1:39618");
        assert_eq!(v.branch(), Some("z9hG4bK.s4h"));
        assert_eq!(v.param("rport"), Some(None));
        assert_eq!(v.param("alias"), Some(None));
    }

    #[test]
    fn via_ipv6() {
        let v = Via::parse("SIP/2.0/UDP [2001:db8::9]:5070;branch=z9hG4bKx").unwrap();
        assert_eq!((v.host.as_str(), v.port), ("[2001:db8::9]", Some(5070)));
    }

    #[test]
    fn name_addr_forms() {
        let a = NameAddr::parse(r#""Doe, <J>" <sip:j@x;transport=tcp>;tag=abc"#).unwrap();
        assert_eq!(a.display.as_deref(), Some("Doe, <J>"));
        assert_eq!(a.uri_text, "sip:j@x;transport=tcp");
        assert_eq!(a.tag(), Some("abc"));
        let b = NameAddr::parse("sip:rls@example.org;tag=t1").unwrap();
        assert_eq!((b.uri_text.as_str(), b.tag()), ("sip:rls@example.org", Some("t1")));
        let c = NameAddr::parse("<tel:+4930123456>").unwrap();
        assert_eq!(c.uri().unwrap().user.as_deref(), Some("+4930123456"));
    }

    #[test]
    fn cseq() {
        assert_eq!(CSeq::parse("20 SUBSCRIBE").unwrap(), CSeq { seq: 20, method: Method::Subscribe });
        assert!(CSeq::parse("x SUBSCRIBE").is_err());
        assert!(CSeq::parse("20").is_err());
    }
}
