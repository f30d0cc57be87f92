//! HTTP/SIP Digest (RFC 7616, RFC 8760 for SIP): challenges, nonces and response checks.
//!
//! Nonces are stateless to issue (time + keyed hash) and expire after `nonce_secs`. To stop
//! replays, each nonce's highest nonce-count is remembered while it lives: a request that
//! reuses a count is refused. The secret and the counts are kept by a [`NonceStore`]: in
//! memory for one process (pruned as nonces expire, so bounded by the nonces in use), in
//! Redis for a cluster (a nonce issued by one node is accepted once by any). Owns no
//! accounts: the caller supplies the HA1.

use crate::clock::unix_now;
use crate::accounts::{constant_time_eq, Algorithm};
use crate::storage::nonces::{MemoryNonces, NonceStore};
use crate::storage::StorageError;
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Debug, PartialEq, Eq)]
pub enum DigestError {
    /// No credentials for our realm.
    Missing,
    /// Malformed, wrong user or wrong password: the reason is for logs only.
    Invalid(&'static str),
    /// A correct answer to an expired nonce: challenge again with `stale=true`.
    Stale,
    /// A nonce-count already used with this nonce.
    Replay,
    /// The store of accounts or nonces did not answer: try again later.
    Unavailable(String),
}

impl From<StorageError> for DigestError {
    fn from(e: StorageError) -> DigestError {
        DigestError::Unavailable(e.to_string())
    }
}

pub struct Digest {
    realm: String,
    secret: [u8; 32],
    nonce_secs: u64,
    store: Arc<dyn NonceStore>,
}

/// The HA1 of a user for an algorithm (None: no such user), or the store's failure.
pub type Ha1 = Result<Option<String>, StorageError>;

impl Digest {
    /// A verifier with its nonces in this process's memory.
    pub fn new(realm: &str, nonce_secs: u64) -> Digest {
        Digest::with_store(realm, nonce_secs, Arc::new(MemoryNonces::default()))
    }

    /// A verifier with its nonces (secret, counts) in `store`.
    pub fn with_store(realm: &str, nonce_secs: u64, store: Arc<dyn NonceStore>) -> Digest {
        Digest { realm: realm.to_string(), secret: store.secret(), nonce_secs, store }
    }

    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// `WWW-Authenticate` values: SHA-256 first (RFC 8760 §2.4), then MD5 for older clients.
    pub fn challenges(&self, stale: bool) -> Vec<String> {
        let nonce = self.nonce(unix_now());
        let stale = if stale { ", stale=true" } else { "" };
        ["SHA-256", "MD5"]
            .iter()
            .map(|alg| format!("Digest realm=\"{}\", nonce=\"{nonce}\", qop=\"auth\", algorithm={alg}{stale}", self.realm))
            .collect()
    }

    /// Checks an `Authorization` value for `method`; returns the username it proves.
    pub fn verify(&self, authorization: &str, method: &str, ha1: impl Fn(&str, Algorithm) -> Ha1) -> Result<String, DigestError> {
        let rest = strip_scheme(authorization).ok_or(DigestError::Missing)?;
        let p = parse_params(rest);
        let get = |k: &str| p.get(k).map(String::as_str).ok_or(DigestError::Invalid("missing parameter"));
        let (user, realm, nonce, uri, response) = (get("username")?, get("realm")?, get("nonce")?, get("uri")?, get("response")?);
        if realm != self.realm {
            return Err(DigestError::Missing);
        }
        let algorithm = Algorithm::from_name(p.get("algorithm").map_or("MD5", String::as_str))
            .ok_or(DigestError::Invalid("unsupported algorithm"))?;
        let ha1 = ha1(user, algorithm)?.ok_or(DigestError::Invalid("unknown user"))?;
        let ha2 = algorithm.hex(&format!("{method}:{uri}"));
        let nc = match p.get("qop").map(String::as_str) {
            Some("auth") => Some((get("nc")?, get("cnonce")?)),
            None => None,
            Some(_) => return Err(DigestError::Invalid("unsupported qop")),
        };
        let expected = match nc {
            Some((nc, cnonce)) => algorithm.hex(&format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")),
            None => algorithm.hex(&format!("{ha1}:{nonce}:{ha2}")),
        };
        if !constant_time_eq(expected.as_bytes(), response.to_ascii_lowercase().as_bytes()) {
            return Err(DigestError::Invalid("wrong response"));
        }
        let issued = self.nonce_issued(nonce).ok_or(DigestError::Invalid("forged nonce"))?;
        let now = unix_now();
        if now > issued.saturating_add(self.nonce_secs) {
            return Err(DigestError::Stale);
        }
        let count = match nc {
            Some((nc, _)) => u32::from_str_radix(nc, 16).map_err(|_| DigestError::Invalid("bad nc"))?,
            None => 1,
        };
        self.use_count(nonce, issued, count, now)?;
        Ok(user.to_string())
    }

    /// Records `count` for `nonce`; a count not above the last one is a replay.
    fn use_count(&self, nonce: &str, issued: u64, count: u32, now: u64) -> Result<(), DigestError> {
        match self.store.record(nonce, count, issued.saturating_add(self.nonce_secs), now)? {
            true => Ok(()),
            false => Err(DigestError::Replay),
        }
    }

    fn nonce(&self, now: u64) -> String {
        let salt: u32 = rand::random();
        format!("{now:x}.{salt:x}.{}", self.mac(now, salt))
    }

    fn mac(&self, t: u64, salt: u32) -> String {
        let secret: String = self.secret.iter().map(|b| format!("{b:02x}")).collect();
        Algorithm::Sha256.hex(&format!("{secret}:{t}:{salt}"))[..32].to_string()
    }

    /// When a nonce of ours was issued; None for one we did not make.
    fn nonce_issued(&self, nonce: &str) -> Option<u64> {
        let mut parts = nonce.split('.');
        let (t, salt, mac) = (parts.next()?, parts.next()?, parts.next()?);
        let (t, salt) = (u64::from_str_radix(t, 16).ok()?, u32::from_str_radix(salt, 16).ok()?);
        constant_time_eq(mac.as_bytes(), self.mac(t, salt).as_bytes()).then_some(t)
    }
}

fn strip_scheme(value: &str) -> Option<&str> {
    let v = value.trim();
    let (scheme, rest) = v.split_once([' ', '\t'])?;
    scheme.eq_ignore_ascii_case("digest").then_some(rest)
}

/// `k=v, k="v", ...` with quoted values unescaped; keys lower-cased.
pub fn parse_params(text: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for part in crate::sip::message::split_list(text) {
        if let Some((k, v)) = part.split_once('=') {
            let v = v.trim();
            let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).map_or(v.to_string(), |q| q.replace("\\\"", "\"").replace("\\\\", "\\"));
            out.insert(k.trim().to_ascii_lowercase(), v);
        }
    }
    out
}

/// A client's answer to a challenge (used by tests and tools).
pub fn answer(challenge: &str, user: &str, password: &str, method: &str, uri: &str, nc: u32) -> String {
    let p = parse_params(strip_scheme(challenge).unwrap_or(""));
    let realm = p.get("realm").cloned().unwrap_or_default();
    let nonce = p.get("nonce").cloned().unwrap_or_default();
    let algorithm = Algorithm::from_name(p.get("algorithm").map_or("MD5", String::as_str)).unwrap_or(Algorithm::Md5);
    let alg_name = if algorithm == Algorithm::Md5 { "MD5" } else { "SHA-256" };
    let ha1 = algorithm.hex(&format!("{user}:{realm}:{password}"));
    let ha2 = algorithm.hex(&format!("{method}:{uri}"));
    let cnonce = "0a4f113b";
    let nc = format!("{nc:08x}");
    let response = algorithm.hex(&format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}"));
    format!(
        "Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{response}\", algorithm={alg_name}, qop=auth, nc={nc}, cnonce=\"{cnonce}\""
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ha1_for(pw: &'static str) -> impl Fn(&str, Algorithm) -> Ha1 {
        move |user, alg| Ok(Some(alg.hex(&format!("{user}:example.org:{pw}"))))
    }

    #[test]
    fn right_password_passes_once_per_count() {
        let d = Digest::new("example.org", 300);
        // Both offers carry one nonce, so counts go on from one algorithm to the next.
        for (i, challenge) in d.challenges(false).iter().enumerate() {
            let nc = i as u32 * 2 + 1;
            let auth = answer(challenge, "alice", "secret", "SUBSCRIBE", "sip:rls@example.org", nc);
            assert_eq!(d.verify(&auth, "SUBSCRIBE", ha1_for("secret")), Ok("alice".into()));
            assert_eq!(d.verify(&auth, "SUBSCRIBE", ha1_for("secret")), Err(DigestError::Replay));
            let next = answer(challenge, "alice", "secret", "SUBSCRIBE", "sip:rls@example.org", nc + 1);
            assert_eq!(d.verify(&next, "SUBSCRIBE", ha1_for("secret")), Ok("alice".into()));
        }
    }

    #[test]
    fn wrong_password_forged_and_stale_nonces() {
        let d = Digest::new("example.org", 300);
        let challenge = &d.challenges(false)[0];
        let wrong = answer(challenge, "alice", "guess", "SUBSCRIBE", "sip:x", 1);
        assert!(matches!(d.verify(&wrong, "SUBSCRIBE", ha1_for("secret")), Err(DigestError::Invalid(_))));
        let forged = answer(&challenge.replace("nonce=\"", "nonce=\"1"), "alice", "secret", "SUBSCRIBE", "sip:x", 1);
        assert!(matches!(d.verify(&forged, "SUBSCRIBE", ha1_for("secret")), Err(DigestError::Invalid(_))));
        let expired = Digest::new("example.org", 0);
        let old = format!("1.2.{}", expired.mac(1, 2));
        let auth = answer(&format!("Digest realm=\"example.org\", nonce=\"{old}\", algorithm=MD5"), "alice", "secret", "SUBSCRIBE", "sip:x", 1);
        assert_eq!(expired.verify(&auth, "SUBSCRIBE", ha1_for("secret")), Err(DigestError::Stale));
    }
}
