//! The admin endpoint's bearer token: read from the config (`[admin] token` or
//! `token_file`), checked in constant time on every guarded request, and the rule that an
//! endpoint off loopback must have one. The CLI reads the same token to send it.
//!
//! Owns the token and its check only; which routes are guarded is `admin/mod.rs`'s choice.

use crate::config::AdminConfig;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use sha2::{Digest, Sha256};

/// The configured token, or None when neither key is set; an error names the key.
pub fn configured_token(a: &AdminConfig) -> anyhow::Result<Option<String>> {
    let token = match (&a.token, &a.token_file) {
        (Some(_), Some(_)) => anyhow::bail!("admin.token and admin.token_file are both set: keep one"),
        (Some(t), None) => t.expose().to_string(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("admin.token_file {}: {e}", path.display()))?
            .trim()
            .to_string(),
        (None, None) => return Ok(None),
    };
    if token.is_empty() {
        let key = if a.token.is_some() { "admin.token" } else { "admin.token_file" };
        anyhow::bail!("{key} is empty: a token must have at least one character");
    }
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        anyhow::bail!("admin.token: must not contain spaces or control characters (it is sent in an HTTP header)");
    }
    Ok(Some(token))
}

/// The token the server checks: the configured one's SHA-256, so that comparing digests
/// takes the same time whatever the request sends.
#[derive(Clone)]
pub struct Token([u8; 32]);

impl Token {
    pub fn new(token: &str) -> Token {
        Token(Sha256::digest(token.as_bytes()).into())
    }

    /// Whether `headers` carry `Authorization: Bearer <this token>`.
    pub fn allows(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        let value = headers.get(header::AUTHORIZATION).ok_or(Refusal::Missing)?;
        let presented = bearer(value).ok_or(Refusal::Missing)?;
        let digest: [u8; 32] = Sha256::digest(presented).into();
        let differs = digest.iter().zip(self.0.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if differs == 0 { Ok(()) } else { Err(Refusal::Wrong) }
    }
}

/// The credentials of an `Authorization: Bearer ...` value (scheme in any case).
fn bearer(value: &HeaderValue) -> Option<&[u8]> {
    let v = value.as_bytes();
    let (scheme, rest) = v.split_at(v.iter().position(|&b| b == b' ')?);
    scheme.eq_ignore_ascii_case(b"bearer").then(|| rest.trim_ascii()).filter(|t| !t.is_empty())
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Missing,
    Wrong,
}

impl IntoResponse for Refusal {
    /// 401 with `WWW-Authenticate: Bearer` (RFC 6750 §3: `invalid_token` when one was sent).
    fn into_response(self) -> Response {
        let (challenge, message) = match self {
            Refusal::Missing => ("Bearer realm=\"smart-presence admin\"", "a bearer token is required (Authorization: Bearer <admin.token>)"),
            Refusal::Wrong => ("Bearer realm=\"smart-presence admin\", error=\"invalid_token\"", "wrong bearer token"),
        };
        let mut r = (StatusCode::UNAUTHORIZED, Json(json!({"error": message}))).into_response();
        r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        r
    }
}

/// Refuses to serve the admin API off loopback without a token (it changes bindings).
pub fn check_exposure(a: &AdminConfig, token: Option<&str>) -> anyhow::Result<()> {
    match a.listen {
        Some(listen) if token.is_none() && !listen.ip().is_loopback() => anyhow::bail!(
            "admin.listen = {listen} is not a loopback address and neither admin.token nor admin.token_file is set: \
             set one (anyone who reaches the admin API can change bindings), or listen on 127.0.0.1"
        ),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(auth).unwrap());
        h
    }

    #[test]
    fn only_the_right_bearer_token_passes() {
        let t = Token::new("s3cret");
        assert_eq!(t.allows(&headers("Bearer s3cret")), Ok(()));
        assert_eq!(t.allows(&headers("bearer  s3cret ")), Ok(()));
        assert_eq!(t.allows(&headers("Bearer s3cre")), Err(Refusal::Wrong));
        assert_eq!(t.allows(&headers("Bearer s3cretx")), Err(Refusal::Wrong));
        assert_eq!(t.allows(&headers("Basic czNjcmV0")), Err(Refusal::Missing));
        assert_eq!(t.allows(&headers("Bearer")), Err(Refusal::Missing));
        assert_eq!(t.allows(&HeaderMap::new()), Err(Refusal::Missing));
    }

    #[test]
    fn the_token_comes_from_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "from-file\n").unwrap();
        let mut a = AdminConfig::default();
        assert_eq!(configured_token(&a).unwrap(), None);
        a.token_file = Some(file);
        assert_eq!(configured_token(&a).unwrap().as_deref(), Some("from-file"), "trailing newline trimmed");
        a.token = Some(crate::config::Secret::from("inline"));
        assert!(configured_token(&a).unwrap_err().to_string().contains("both set"));
        a.token_file = None;
        assert_eq!(configured_token(&a).unwrap().as_deref(), Some("inline"));
        a.token = Some(crate::config::Secret::from(""));
        assert!(configured_token(&a).unwrap_err().to_string().contains("admin.token is empty"));
        a.token = None;
        a.token_file = Some(dir.path().join("missing"));
        assert!(configured_token(&a).unwrap_err().to_string().contains("admin.token_file"));
    }

    #[test]
    fn off_loopback_needs_a_token() {
        let mut a = AdminConfig::default();
        assert!(check_exposure(&a, None).is_ok());
        a.listen = Some("0.0.0.0:5080".parse().unwrap());
        let e = check_exposure(&a, None).unwrap_err().to_string();
        assert!(e.contains("admin.token") && e.contains("0.0.0.0:5080"), "{e}");
        assert!(check_exposure(&a, Some("t")).is_ok());
    }
}
