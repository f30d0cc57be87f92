//! Who is asking: authentication of SUBSCRIBE, PUBLISH and REGISTER.
//!
//! Digest against the account store (401, never 407: RFC 6665 §4.2.1.3), or trust by source
//! address for configured proxies, or (mode `none`) the From URI as given. Owns the policy
//! and the nonces; it reads accounts, never writes them, and decides nothing about what an
//! identity may do (the handlers do).

pub mod digest;

use crate::accounts::Accounts;
use crate::config::{AuthConfig, AuthMode};
use crate::numbers::E164;
use crate::sip::{HeaderName, Request, Response};
use crate::transport::Source;
use digest::{Digest, DigestError};
use crate::storage::nonces::{MemoryNonces, NonceStore};
use std::net::IpAddr;
use std::sync::Arc;

/// The identity a request speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Canonical `sip:user@host` ([`crate::identity`]): the key of the per-account caps,
    /// the presence store and the index alike.
    pub uri: String,
    /// The account's verified numbers, when an account proved it.
    pub numbers: Vec<E164>,
    /// A trusted proxy vouched for it (it may act for others, e.g. publish for its users).
    pub trusted: bool,
    /// The account name when an account proved it (the discovery budget's key, shared
    /// with the HTTP address-book query).
    pub account: Option<String>,
}

impl Identity {
    /// Whose discovery budget a lookup is charged to.
    pub fn budget_key(&self) -> &str {
        self.account.as_deref().unwrap_or(&self.uri)
    }
}

pub struct Authenticator {
    digest: Option<Digest>,
    accounts: Accounts,
    trusted: Vec<IpAddr>,
}

impl Authenticator {
    pub fn new(config: &AuthConfig, accounts: Accounts) -> anyhow::Result<Authenticator> {
        Authenticator::with_nonces(config, accounts, Arc::new(MemoryNonces::default()))
    }

    /// An authenticator whose digest nonces are kept by `nonces` (shared by a cluster).
    pub fn with_nonces(config: &AuthConfig, accounts: Accounts, nonces: Arc<dyn NonceStore>) -> anyhow::Result<Authenticator> {
        let digest = match config.mode {
            AuthMode::Digest => Some(Digest::with_store(accounts.realm(), config.nonce_secs, nonces)),
            AuthMode::None => None,
        };
        if digest.is_none() {
            tracing::warn!("auth.mode = \"none\": subscribers and publishers are not authenticated");
        }
        Ok(Authenticator { digest, accounts, trusted: config.trusted_proxies.clone() })
    }

    /// The identity of `req`, or the response to send (401 challenge, 403).
    pub fn identify(&self, req: &Request, source: &Source) -> Result<Identity, Response> {
        if self.trusted.contains(&source.remote.ip()) {
            let asserted = req.headers.get(&HeaderName::PAssertedIdentity).or_else(|| req.headers.get(&HeaderName::From));
            let uri = asserted.as_deref().and_then(canonical).ok_or_else(|| Response::with_reason(req, 403, "No Identity"))?;
            return Ok(Identity { uri, numbers: Vec::new(), trusted: true, account: None });
        }
        let Some(digest) = &self.digest else {
            let from = req.headers.get(&HeaderName::From);
            let uri = from.as_deref().and_then(canonical).ok_or_else(|| Response::with_reason(req, 403, "No Identity"))?;
            return Ok(Identity { uri, numbers: Vec::new(), trusted: false, account: None });
        };
        let answer = req
            .headers
            .all(&HeaderName::Authorization)
            .map(|h| h.text().into_owned())
            .find(|v| v.contains(&format!("realm=\"{}\"", digest.realm())));
        let Some(answer) = answer else { return Err(self.challenge(req, digest, false)) };
        match digest.verify(&answer, req.method.as_str(), |user, alg| self.accounts.digest_ha1(user, alg)) {
            Ok(user) => self.account_identity(req, &user),
            Err(DigestError::Stale) => Err(self.challenge(req, digest, true)),
            Err(DigestError::Unavailable(e)) => {
                tracing::warn!(method = %req.method, "digest not checked, store unavailable: {e}");
                Err(unavailable(req))
            }
            Err(e) => {
                tracing::debug!(method = %req.method, "digest refused: {e:?}");
                Err(self.challenge(req, digest, false))
            }
        }
    }

    fn account_identity(&self, req: &Request, user: &str) -> Result<Identity, Response> {
        match self.accounts.get(user) {
            Ok(Some(a)) => {
                let uri = crate::identity::aor(&a.sip_uri()).unwrap_or_else(|_| a.sip_uri());
                Ok(Identity { uri, numbers: a.numbers, trusted: false, account: Some(a.username) })
            }
            Err(crate::accounts::AccountError::Storage(e)) => {
                tracing::warn!(method = %req.method, "account not read, store unavailable: {e}");
                Err(unavailable(req))
            }
            _ => Err(Response::to(req, 403)),
        }
    }

    fn challenge(&self, req: &Request, digest: &Digest, stale: bool) -> Response {
        let mut resp = Response::to(req, 401);
        for c in digest.challenges(stale) {
            resp = resp.header(HeaderName::WwwAuthenticate, c);
        }
        resp
    }
}

/// 503 with `Retry-After`: the store that holds accounts or nonces did not answer.
fn unavailable(req: &Request) -> Response {
    Response::to(req, 503).header(HeaderName::RetryAfter, RETRY_AFTER_SECS.to_string())
}

/// The `Retry-After` of a 503 for a store that did not answer (Redis down: its connection
/// backs off for half a second, a new primary is usually found within seconds).
pub const RETRY_AFTER_SECS: u32 = 5;

/// The canonical address of record of a name-addr header value. A user part that is a
/// number (`sip:+4915100000001@example.org`) is a user like any other.
fn canonical(value: &str) -> Option<String> {
    crate::identity::of_header(value).ok()
}
