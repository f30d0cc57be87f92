//! SIP, SIPS and tel URIs (RFC 3261 §19.1, RFC 3966), parsed into parts.
//!
//! IPv6 references (`[2001:db8::1]`) and URI headers (`?Subject=hi`) are kept apart from the
//! host, which rsip 0.4 gets wrong. The original text is kept too: resource URIs are echoed
//! to clients byte for byte.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Sip,
    Sips,
    Tel,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uri {
    pub scheme: Scheme,
    /// User part (SIP) or the number (tel), still percent-encoded.
    pub user: Option<String>,
    /// Host as written; IPv6 keeps its brackets. Empty for tel.
    pub host: String,
    pub port: Option<u16>,
    /// `;name[=value]` parameters in order, names as written.
    pub params: Vec<(String, Option<String>)>,
    /// The text after `?`, if any.
    pub headers: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad URI: {0}")]
pub struct UriError(pub &'static str);

impl Uri {
    pub fn parse(text: &str) -> Result<Uri, UriError> {
        let (scheme, rest) = text.split_once(':').ok_or(UriError("no scheme"))?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "sip" => Scheme::Sip,
            "sips" => Scheme::Sips,
            "tel" => Scheme::Tel,
            _ => return Err(UriError("unsupported scheme")),
        };
        let (rest, headers) = match rest.split_once('?') {
            Some((r, h)) => (r, Some(h.to_string())),
            None => (rest, None),
        };
        if scheme == Scheme::Tel {
            return parse_tel(rest, headers);
        }
        let (user, hostport_params) = match rest.rfind('@') {
            Some(at) => (Some(rest[..at].to_string()), &rest[at + 1..]),
            None => (None, rest),
        };
        let (hostport, params) = split_params(hostport_params);
        let (host, port) = split_hostport(hostport)?;
        Ok(Uri { scheme, user, host, port, params, headers })
    }

    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_deref())
    }

    /// The transport parameter, lower-cased.
    pub fn transport(&self) -> Option<String> {
        self.param("transport").flatten().map(|t| t.to_ascii_lowercase())
    }

    /// Whether `user=phone` says the user part is a telephone number (RFC 3261 §19.1.1).
    pub fn is_user_phone(&self) -> bool {
        self.param("user").flatten().is_some_and(|v| v.eq_ignore_ascii_case("phone"))
    }

    /// The canonical address of record of the SIP user this URI names: `sip:user@host`.
    /// The rule, and why, is [`crate::identity`]'s; a tel URI or one without a user part
    /// names no user.
    pub fn aor(&self) -> Result<String, UriError> {
        if self.scheme == Scheme::Tel {
            return Err(UriError("a tel URI names a number, not a SIP user"));
        }
        let userinfo = self.user.as_deref().ok_or(UriError("no user part"))?;
        // userinfo = user [":" password]
        let user = percent_decode(userinfo.split(':').next().unwrap_or(""));
        if user.is_empty() {
            return Err(UriError("empty user part"));
        }
        if user.chars().any(|c| c.is_control() || c.is_whitespace() || c == '@') {
            return Err(UriError("bad character in user part"));
        }
        if self.host.chars().any(|c| c.is_control() || matches!(c, '<' | '>' | '"')) {
            return Err(UriError("bad character in host"));
        }
        Ok(format!("sip:{user}@{}", self.host.to_ascii_lowercase()))
    }
}

/// Decodes `%XX` escapes (RFC 3261 §19.1.4: an escaped character equals its unescaped
/// form); a `%` not followed by two hex digits stays as written.
pub fn percent_decode(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains('%') {
        return s.into();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(v) = hex {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned().into()
}

fn parse_tel(rest: &str, headers: Option<String>) -> Result<Uri, UriError> {
    let (number, params) = split_params(rest);
    if number.is_empty() {
        return Err(UriError("empty tel number"));
    }
    Ok(Uri {
        scheme: Scheme::Tel,
        user: Some(number.to_string()),
        host: String::new(),
        port: None,
        params,
        headers,
    })
}

/// Splits `a;b=c;d` into `a` and the parameter list.
pub fn split_params(text: &str) -> (&str, Vec<(String, Option<String>)>) {
    let mut parts = text.split(';');
    let head = parts.next().unwrap_or("").trim();
    let params = parts
        .filter(|p| !p.trim().is_empty())
        .map(|p| match p.split_once('=') {
            Some((n, v)) => (n.trim().to_string(), Some(v.trim().to_string())),
            None => (p.trim().to_string(), None),
        })
        .collect();
    (head, params)
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`.
pub fn split_hostport(text: &str) -> Result<(String, Option<u16>), UriError> {
    let text = text.trim();
    let (host, port) = if text.starts_with('[') {
        let close = text.find(']').ok_or(UriError("unclosed IPv6 reference"))?;
        let after = &text[close + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(UriError("junk after IPv6 reference")),
        };
        (&text[..=close], port)
    } else {
        match text.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (text, None),
        }
    };
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '@') {
        return Err(UriError("bad host"));
    }
    let port = match port {
        Some(p) => Some(p.parse::<u16>().map_err(|_| UriError("bad port"))?),
        None => None,
    };
    Ok((host.to_string(), port))
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.scheme {
            Scheme::Sip => "sip",
            Scheme::Sips => "sips",
            Scheme::Tel => "tel",
        };
        write!(f, "{scheme}:")?;
        match (&self.user, self.scheme) {
            (Some(u), Scheme::Tel) => f.write_str(u)?,
            (Some(u), _) => write!(f, "{u}@")?,
            (None, _) => {}
        }
        f.write_str(&self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        for (n, v) in &self.params {
            match v {
                Some(v) => write!(f, ";{n}={v}")?,
                None => write!(f, ";{n}")?,
            }
        }
        if let Some(h) = &self.headers {
            write!(f, "?{h}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sip_with_user_phone() {
        let u = Uri::parse("sip:+33612345678@example.org;user=phone").unwrap();
        assert_eq!(u.user.as_deref(), Some("+33612345678"));
        assert_eq!(u.host, "example.org");
        assert_eq!(u.param("user"), Some(Some("phone")));
    }

    #[test]
    fn ipv6_host_and_port() {
        let u = Uri::parse("sip:alice@[2001:db8::1]:5070;transport=TCP").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("[2001:db8::1]", Some(5070)));
        assert_eq!(u.transport().as_deref(), Some("tcp"));
        let u = Uri::parse("sip:[::1]").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("[::1]", None));
    }

    #[test]
    fn uri_headers_are_not_the_host() {
        let u = Uri::parse("sip:a@example.org?Subject=hi").unwrap();
        assert_eq!(u.host, "example.org");
        assert_eq!(u.headers.as_deref(), Some("Subject=hi"));
    }

    #[test]
    fn tel_uri() {
        let u = Uri::parse("tel:0612345678;phone-context=+33").unwrap();
        assert_eq!(u.scheme, Scheme::Tel);
        assert_eq!(u.user.as_deref(), Some("0612345678"));
        assert_eq!(u.param("phone-context"), Some(Some("+33")));
        assert_eq!(u.to_string(), "tel:0612345678;phone-context=+33");
    }

    #[test]
    fn bad_uris() {
        for bad in ["nourl", "http://x", "sip:", "sip:a@[::1", "sip:a@h:99999", "tel:"] {
            assert!(Uri::parse(bad).is_err(), "{bad}");
        }
    }
}
