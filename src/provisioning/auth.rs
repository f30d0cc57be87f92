//! Authentication of the account routes: which account a request speaks for.
//!
//! Accepted, in the `Authorization` header:
//!
//! - `Bearer <token>`: the token issued at provisioning; it does not expire, it is replaced
//!   by the next provisioning of the number (stored as a SHA-256 hash only);
//! - `Digest` (RFC 7616, `qop=auth`, `MD5` or `SHA-256`) with the SIP credentials, checked
//!   against the HA1s of the account store. Nonces are stateless (time + keyed hash) and
//!   expire after `digest_nonce_secs`; nonce counts are not tracked, so a captured request
//!   can be replayed while its nonce lives (the API serves no TLS: use a TLS proxy);
//! - `Basic` with the SIP credentials, only when the listener is on loopback: the service
//!   does not serve TLS itself, so elsewhere Basic would send the password in clear.
//!
//! Owns nonces and header parsing; reads accounts, never writes them.

use crate::accounts::{constant_time_eq, Account, Accounts, Algorithm};
use base64::Engine;
use std::collections::HashMap;

/// Why a request is not authenticated.
#[derive(Debug, PartialEq, Eq)]
pub enum AuthError {
    Missing,
    /// Bad credentials or a malformed header; the message says which.
    Invalid(String),
    /// A good Digest answer to an expired nonce: the client should retry with a new one.
    Stale,
    /// Basic over a non-loopback listener.
    BasicRefused,
    Storage(String),
}

pub struct Auth {
    accounts: Accounts,
    secret: [u8; 32],
    nonce_secs: u64,
    basic_allowed: bool,
}

impl Auth {
    pub fn new(accounts: Accounts, nonce_secs: u64, loopback: bool) -> Auth {
        Auth { accounts, secret: rand::random(), nonce_secs, basic_allowed: loopback }
    }

    /// The `WWW-Authenticate` values of a 401.
    pub fn challenges(&self, now: u64, stale: bool) -> Vec<String> {
        let realm = self.accounts.realm();
        let nonce = self.nonce(now);
        let stale = if stale { ", stale=true" } else { "" };
        let mut out: Vec<String> = ["SHA-256", "MD5"]
            .iter()
            .map(|alg| format!("Digest realm=\"{realm}\", qop=\"auth\", algorithm={alg}, nonce=\"{nonce}\"{stale}"))
            .collect();
        out.push(format!("Bearer realm=\"{realm}\""));
        if self.basic_allowed {
            out.push(format!("Basic realm=\"{realm}\""));
        }
        out
    }

    /// The account `authorization` (the header value) authenticates, for `method` and `uri`.
    pub fn authenticate(&self, authorization: Option<&str>, method: &str, uri: &str, now: u64) -> Result<Account, AuthError> {
        let value = authorization.ok_or(AuthError::Missing)?.trim();
        let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
        match scheme.to_ascii_lowercase().as_str() {
            "bearer" => self.bearer(rest.trim()),
            "basic" if !self.basic_allowed => Err(AuthError::BasicRefused),
            "basic" => self.basic(rest.trim()),
            "digest" => self.digest(rest, method, uri, now),
            _ => Err(AuthError::Invalid(format!("unsupported scheme {scheme:?}"))),
        }
    }

    fn bearer(&self, token: &str) -> Result<Account, AuthError> {
        self.accounts
            .by_token(token)
            .map_err(|e| AuthError::Storage(e.to_string()))?
            .ok_or_else(|| AuthError::Invalid("unknown or revoked token".into()))
    }

    fn basic(&self, b64: &str) -> Result<Account, AuthError> {
        let bad = || AuthError::Invalid("malformed Basic credentials".into());
        let raw = base64::engine::general_purpose::STANDARD.decode(b64).map_err(|_| bad())?;
        let text = String::from_utf8(raw).map_err(|_| bad())?;
        let (user, password) = text.split_once(':').ok_or_else(bad)?;
        if !self.accounts.check_password(user, password) {
            return Err(AuthError::Invalid("wrong username or password".into()));
        }
        self.account(user)
    }

    fn digest(&self, params: &str, method: &str, uri: &str, now: u64) -> Result<Account, AuthError> {
        let p = parse_params(params);
        let get = |k: &str| p.get(k).map(String::as_str).ok_or_else(|| AuthError::Invalid(format!("Digest without {k}")));
        let (user, realm, nonce, digest_uri, response) = (get("username")?, get("realm")?, get("nonce")?, get("uri")?, get("response")?);
        let algorithm = Algorithm::from_name(p.get("algorithm").map(String::as_str).unwrap_or("MD5"))
            .ok_or_else(|| AuthError::Invalid("algorithm must be MD5 or SHA-256".into()))?;
        if realm != self.accounts.realm() {
            return Err(AuthError::Invalid("wrong realm".into()));
        }
        if digest_uri != uri {
            return Err(AuthError::Invalid("Digest uri does not match the request".into()));
        }
        if get("qop")? != "auth" {
            return Err(AuthError::Invalid("qop must be auth".into()));
        }
        let (nc, cnonce) = (get("nc")?, get("cnonce")?);
        let ha1 = self.accounts.ha1(user, algorithm).ok_or_else(|| AuthError::Invalid("wrong username or password".into()))?;
        let ha2 = algorithm.hex(&format!("{method}:{digest_uri}"));
        let expected = algorithm.hex(&format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}"));
        if !constant_time_eq(expected.as_bytes(), response.to_ascii_lowercase().as_bytes()) {
            return Err(AuthError::Invalid("wrong username or password".into()));
        }
        if !self.nonce_fresh(nonce, now) {
            return Err(AuthError::Stale);
        }
        self.account(user)
    }

    fn account(&self, user: &str) -> Result<Account, AuthError> {
        self.accounts
            .get(user)
            .map_err(|e| AuthError::Storage(e.to_string()))?
            .ok_or_else(|| AuthError::Invalid("wrong username or password".into()))
    }

    fn nonce(&self, now: u64) -> String {
        format!("{now:x}.{}", self.nonce_mac(now))
    }

    fn nonce_mac(&self, t: u64) -> String {
        let secret: String = self.secret.iter().map(|b| format!("{b:02x}")).collect();
        Algorithm::Sha256.hex(&format!("{secret}:{t}"))[..32].to_string()
    }

    fn nonce_fresh(&self, nonce: &str, now: u64) -> bool {
        let Some((t, mac)) = nonce.split_once('.') else { return false };
        let Ok(t) = u64::from_str_radix(t, 16) else { return false };
        constant_time_eq(mac.as_bytes(), self.nonce_mac(t).as_bytes()) && now <= t.saturating_add(self.nonce_secs)
    }
}

/// `k=v, k="quoted \" v"` → map (keys lowercased).
fn parse_params(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect::<String>().trim().to_ascii_lowercase();
        if key.is_empty() {
            return out;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = chars.by_ref().take_while(|c| *c != ',').collect::<String>().trim().to_string();
        }
        out.insert(key, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_with_quotes_and_commas() {
        let p = parse_params(r#"username="a\"b", realm="x,y", nc=00000001 , qop=auth"#);
        assert_eq!(p["username"], "a\"b");
        assert_eq!(p["realm"], "x,y");
        assert_eq!(p["nc"], "00000001");
        assert_eq!(p["qop"], "auth");
    }

    #[test]
    fn digest_round_trip_and_stale_nonce() {
        let dir = tempfile::tempdir().unwrap();
        let accounts = Accounts::open(dir.path(), "example.org").unwrap();
        accounts.create("alice", "pw", &[]).unwrap();
        let auth = Auth::new(accounts, 300, false);
        let nonce = auth.nonce(1000);
        let header = |alg: Algorithm, name: &str| {
            let ha1 = alg.hex("alice:example.org:pw");
            let ha2 = alg.hex("GET:/v1/account");
            let resp = alg.hex(&format!("{ha1}:{nonce}:00000001:c:auth:{ha2}"));
            format!("Digest username=\"alice\", realm=\"example.org\", nonce=\"{nonce}\", uri=\"/v1/account\", algorithm={name}, qop=auth, nc=00000001, cnonce=\"c\", response=\"{resp}\"")
        };
        for (alg, name) in [(Algorithm::Md5, "MD5"), (Algorithm::Sha256, "SHA-256")] {
            let h = header(alg, name);
            assert_eq!(auth.authenticate(Some(&h), "GET", "/v1/account", 1100).unwrap().username, "alice");
            assert_eq!(auth.authenticate(Some(&h), "GET", "/v1/account", 1301), Err(AuthError::Stale));
            assert!(matches!(auth.authenticate(Some(&h), "POST", "/v1/account", 1100), Err(AuthError::Invalid(_))));
        }
        assert_eq!(auth.authenticate(Some("Basic YWxpY2U6cHc="), "GET", "/", 0), Err(AuthError::BasicRefused));
    }
}
