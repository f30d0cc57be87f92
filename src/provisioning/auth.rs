//! Authentication of the account routes: which account a request speaks for.
//!
//! Accepted, in the `Authorization` header:
//!
//! - `Bearer <token>`: the token issued at provisioning; it does not expire, it is replaced
//!   by the next provisioning of the number (stored as a SHA-256 hash only);
//! - `Digest` (RFC 7616, `qop=auth`, `MD5` or `SHA-256`) with the SIP credentials, checked
//!   against the HA1s of the account store by the same verifier as SIP (`auth::digest`):
//!   nonces expire after `digest_nonce_secs` and a nonce count is accepted once;
//! - `Basic` with the SIP credentials, only when the listener is on loopback: the service
//!   does not serve TLS itself, so elsewhere Basic would send the password in clear.
//!
//! Owns nonces and header parsing; reads accounts, never writes them.

use crate::accounts::{Account, Accounts};
use crate::auth::digest::{parse_params, Digest, DigestError};
use crate::storage::nonces::{MemoryNonces, NonceStore};
use base64::Engine;
use std::sync::Arc;

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
    digest: Digest,
    basic_allowed: bool,
}

impl Auth {
    pub fn new(accounts: Accounts, nonce_secs: u64, loopback: bool) -> Auth {
        Auth::with_nonces(accounts, nonce_secs, loopback, Arc::new(MemoryNonces::default()))
    }

    /// Digest nonces kept by `nonces` (shared by a cluster).
    pub fn with_nonces(accounts: Accounts, nonce_secs: u64, loopback: bool, nonces: Arc<dyn NonceStore>) -> Auth {
        let digest = Digest::with_store(accounts.realm(), nonce_secs, nonces);
        Auth { accounts, digest, basic_allowed: loopback }
    }

    /// The `WWW-Authenticate` values of a 401.
    pub fn challenges(&self, stale: bool) -> Vec<String> {
        let realm = self.accounts.realm();
        let mut out = self.digest.challenges(stale);
        out.push(format!("Bearer realm=\"{realm}\""));
        if self.basic_allowed {
            out.push(format!("Basic realm=\"{realm}\""));
        }
        out
    }

    /// The account `authorization` (the header value) authenticates, for `method` and `uri`.
    pub fn authenticate(&self, authorization: Option<&str>, method: &str, uri: &str) -> Result<Account, AuthError> {
        let value = authorization.ok_or(AuthError::Missing)?.trim();
        let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
        match scheme.to_ascii_lowercase().as_str() {
            "bearer" => self.bearer(rest.trim()),
            "basic" if !self.basic_allowed => Err(AuthError::BasicRefused),
            "basic" => self.basic(rest.trim()),
            "digest" => self.digest(value, rest, method, uri),
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
        if !self.accounts.password_matches(user, password).map_err(|e| AuthError::Storage(e.to_string()))? {
            return Err(AuthError::Invalid("wrong username or password".into()));
        }
        self.account(user)
    }

    fn digest(&self, value: &str, params: &str, method: &str, uri: &str) -> Result<Account, AuthError> {
        if parse_params(params).get("uri").map(String::as_str) != Some(uri) {
            return Err(AuthError::Invalid("Digest uri does not match the request".into()));
        }
        let user = self.digest.verify(value, method, |u, alg| self.accounts.digest_ha1(u, alg)).map_err(|e| match e {
            DigestError::Stale => AuthError::Stale,
            DigestError::Replay => AuthError::Invalid("nonce count already used".into()),
            DigestError::Missing => AuthError::Invalid("wrong realm".into()),
            DigestError::Invalid(_) => AuthError::Invalid("wrong username or password".into()),
            DigestError::Unavailable(e) => AuthError::Storage(e),
        })?;
        self.account(&user)
    }

    fn account(&self, user: &str) -> Result<Account, AuthError> {
        self.accounts
            .get(user)
            .map_err(|e| AuthError::Storage(e.to_string()))?
            .ok_or_else(|| AuthError::Invalid("wrong username or password".into()))
    }

}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_round_trip_and_replay() {
        let dir = tempfile::tempdir().unwrap();
        let accounts = Accounts::open(dir.path(), "example.org").unwrap();
        accounts.create("alice", "pw", &[]).unwrap();
        let auth = Auth::new(accounts, 300, false);
        for (nc, offer) in auth.challenges(false).iter().filter(|c| c.starts_with("Digest")).enumerate() {
            let h = crate::auth::digest::answer(offer, "alice", "pw", "GET", "/v1/account", nc as u32 + 1);
            assert!(matches!(auth.authenticate(Some(&h), "POST", "/v1/account"), Err(AuthError::Invalid(_))));
            assert_eq!(auth.authenticate(Some(&h), "GET", "/v1/account").unwrap().username, "alice");
            assert!(matches!(auth.authenticate(Some(&h), "GET", "/v1/account"), Err(AuthError::Invalid(_))), "replay");
        }
        assert_eq!(auth.authenticate(Some("Basic YWxpY2U6cHc="), "GET", "/"), Err(AuthError::BasicRefused));
    }
}
