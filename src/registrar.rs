//! The embedded registrar (RFC 3261 §10.3) for one-box deployments: REGISTER, challenged
//! against the account store, keeps each account's contacts with their expiry, and turns
//! registration state into presence (online while a contact is registered, with the
//! capabilities its contacts announce in `+org.linphone.specs`, as liblinphone does).
//!
//! Owns contact bindings only, in memory and recorded in a [`RegistrationStore`] so that a
//! restart keeps registered phones registered (and online) until their next REGISTER. It
//! publishes into the presence store like any publisher and knows nothing of watchers.

use crate::auth::Authenticator;
use crate::config::RegistrarConfig;
use crate::core::{Handler, HandlerFuture, ServerTx};
use crate::body::rich::{self, Capability, Doc};
use crate::presence::{PresenceStore, Published};
use crate::sip::{message::split_list, Capabilities, ExpiryPolicy, HeaderName, Method, NameAddr, Request, Response};
use crate::storage::registrations::{Registration, RegistrationStore};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The Contact parameter in which liblinphone announces its capabilities.
const LINPHONE_SPECS: &str = "+org.linphone.specs";

/// What the registrar serves: REGISTER, with no body read.
pub const CAPABILITIES: Capabilities = Capabilities { methods: &[Method::Register], ..Capabilities::NONE };

struct Contact {
    uri: String,
    expires_at: Instant,
    /// What the device can do (`+org.linphone.specs`; empty for a contact restored from
    /// the store until its next REGISTER, while the stored publication keeps them).
    capabilities: Vec<Capability>,
}

#[derive(Default)]
struct Aor {
    contacts: Vec<Contact>,
    /// Our publication for this AOR, while it has contacts.
    etag: Option<String>,
}

pub struct Registrar {
    auth: Arc<Authenticator>,
    presence: Arc<PresenceStore>,
    config: RegistrarConfig,
    aors: Mutex<HashMap<String, Aor>>,
    store: Option<Arc<dyn RegistrationStore>>,
}

/// One Contact of a REGISTER: its URI, the expiry asked for it, its capabilities.
struct Asked {
    uri: String,
    expires: u32,
    capabilities: Vec<Capability>,
}

impl Registrar {
    /// A registrar; with a `store`, the registrations it holds are put back from it.
    pub fn new(auth: Arc<Authenticator>, presence: Arc<PresenceStore>, config: RegistrarConfig, store: Option<Arc<dyn RegistrationStore>>) -> Registrar {
        // A shared store is read at each REGISTER instead.
        let aors = store.as_ref().filter(|s| !s.shared()).map(|s| restore(s.as_ref())).unwrap_or_default();
        Registrar { auth, presence, config, aors: Mutex::new(aors), store }
    }

    /// Records `aor`'s registration as it now is (removed when it has no contact); false
    /// if the store failed.
    fn record(&self, aor: &str, entry: &Aor, now: Instant) -> bool {
        let Some(store) = &self.store else { return true };
        let written = if entry.contacts.is_empty() {
            store.remove(aor)
        } else {
            let unix = crate::clock::unix_now();
            let contacts = entry.contacts.iter().map(|c| (c.uri.clone(), unix + c.expires_at.saturating_duration_since(now).as_secs())).collect();
            store.save(aor, &Registration { contacts, etag: entry.etag.clone() })
        };
        if let Err(e) = &written {
            tracing::warn!(aor, "registration not recorded (lost on restart): {e}");
        }
        written.is_ok()
    }

    /// In a cluster, `aor`'s registration as the shared store has it now: any node may
    /// have changed it. 503 if it cannot be read.
    fn shared_entry(&self, req: &Request, store: &dyn RegistrationStore, aor: &str, now: Instant) -> Result<Aor, Response> {
        match store.get(aor) {
            Ok(r) => Ok(r.and_then(|r| live_aor(r, crate::clock::unix_now(), now)).unwrap_or_default()),
            Err(e) => {
                tracing::warn!(aor, "registration store: {e}");
                Err(crate::presence::publish::unavailable(req))
            }
        }
    }

    fn serve(&self, req: &Request, tx: &ServerTx) -> Response {
        self.register(req, tx).unwrap_or_else(|r| r)
    }

    fn register(&self, req: &Request, tx: &ServerTx) -> Result<Response, Response> {
        let identity = self.auth.identify(req, tx.source())?;
        let aor = aor_of(req).ok_or_else(|| Response::with_reason(req, 400, "Bad To"))?;
        if !identity.trusted && identity.uri != aor {
            return Err(Response::with_reason(req, 403, "Not Your Address Of Record"));
        }
        let asked = self.asked(req)?;
        match self.store.as_ref().filter(|s| s.shared()) {
            Some(store) => self.register_shared(req, store.as_ref(), &aor, asked),
            None => Ok(self.register_local(req, &aor, asked)),
        }
    }

    /// One process: this registrar's map is the registration. Its lock is held across the
    /// (local, quick) store calls so that one AOR's writes land in the order of its changes.
    fn register_local(&self, req: &Request, aor: &str, asked: Option<Vec<Asked>>) -> Response {
        let now = Instant::now();
        let mut aors = self.aors.lock();
        let entry = aors.entry(aor.to_string()).or_default();
        change(entry, asked, now);
        // A failed write is logged; the registration holds in memory until a restart.
        self.publish(aor, entry, now);
        self.record(aor, entry, now);
        let resp = with_contacts(Response::to(req, 200), &entry.contacts, now);
        if entry.contacts.is_empty() {
            aors.remove(aor);
        }
        resp
    }

    /// In a cluster the shared store's record is the registration. Its lock on `aor`
    /// serialises the nodes' read, publication and write of it (so that neither a contact
    /// nor the publication's entity-tag another node wrote meanwhile is lost); this
    /// process's lock is taken only around its map (the contacts' capabilities), never
    /// across a Redis call.
    fn register_shared(&self, req: &Request, store: &dyn RegistrationStore, aor: &str, asked: Option<Vec<Asked>>) -> Result<Response, Response> {
        let _held = store.hold(aor).map_err(|e| {
            tracing::warn!(aor, "registration store: {e}");
            crate::presence::publish::unavailable(req)
        })?;
        let now = Instant::now();
        let mut entry = self.shared_entry(req, store, aor, now)?;
        keep_capabilities(&mut entry, self.aors.lock().get(aor));
        change(&mut entry, asked, now);
        let written = self.publish(aor, &mut entry, now) & self.record(aor, &entry, now);
        let resp = with_contacts(Response::to(req, 200), &entry.contacts, now);
        {
            let mut aors = self.aors.lock();
            match entry.contacts.is_empty() {
                true => drop(aors.remove(aor)),
                false => drop(aors.insert(aor.to_string(), entry)),
            }
        }
        if !written {
            // The record is the registration: not kept, not acknowledged.
            return Err(crate::presence::publish::unavailable(req));
        }
        Ok(resp)
    }

    /// The contacts asked for; None for `Contact: *` with Expires 0 (remove all). A
    /// contact's own `expires` wins over the Expires header; both go through the policy.
    fn asked(&self, req: &Request) -> Result<Option<Vec<Asked>>, Response> {
        let header_expires = req.headers.expires().map_err(|bad| bad.response(req))?;
        let policy = self.expiry();
        let mut asked = Vec::new();
        for value in req.headers.list(&HeaderName::Contact) {
            if value.trim() == "*" {
                return if header_expires == Some(0) { Ok(None) } else { Err(Response::with_reason(req, 400, "Star Contact Needs Expires 0")) };
            }
            let addr = NameAddr::parse(&value).map_err(|_| Response::with_reason(req, 400, "Bad Contact"))?;
            let own = addr.param("expires").flatten().map(str::parse::<u32>).transpose();
            let own = own.map_err(|_| Response::with_reason(req, 400, "Bad Contact Expires"))?;
            let expires = policy.grant_asked(req, own.or(header_expires))?;
            let capabilities = addr.param(LINPHONE_SPECS).flatten().map(rich::capabilities_of_specs).unwrap_or_default();
            asked.push(Asked { uri: addr.uri_text, expires, capabilities });
        }
        Ok(Some(asked))
    }

    /// The bindings' expiry policy.
    fn expiry(&self) -> ExpiryPolicy {
        ExpiryPolicy { default: self.config.default_expires, min: self.config.min_expires, max: self.config.max_expires }
    }

    /// Online while a contact is registered, until the last one expires, with the union of
    /// the contacts' capabilities (the newest contact's first). False if the presence
    /// store failed.
    fn publish(&self, aor: &str, entry: &mut Aor, now: Instant) -> bool {
        let last = entry.contacts.iter().map(|c| c.expires_at).max();
        match (last, entry.etag.take()) {
            (Some(until), etag) => {
                let life = until.saturating_duration_since(now);
                let docs: Vec<Doc> = entry.contacts.iter().rev().map(|c| Doc { capabilities: c.capabilities.clone(), ..Doc::default() }).collect();
                let open = Published::with_doc(true, rich::compose(docs.iter()));
                let renewed = etag.and_then(|e| self.presence.update(aor, &e, Some(open.clone()), life).ok());
                entry.etag = renewed.or_else(|| match self.presence.publish(aor, open, life) {
                    Ok(etag) => Some(etag),
                    Err(e) => {
                        tracing::warn!(aor, "presence not published for a registration: {e}");
                        None
                    }
                });
                entry.etag.is_some()
            }
            (None, Some(etag)) => !matches!(self.presence.remove(aor, &etag), Err(crate::presence::store::PublishError::Storage(_))),
            (None, None) => true,
        }
    }
}

/// `entry` with its expired contacts dropped and the REGISTER's asked ones applied (None:
/// all removed).
fn change(entry: &mut Aor, asked: Option<Vec<Asked>>, now: Instant) {
    entry.contacts.retain(|c| c.expires_at > now);
    match asked {
        None => entry.contacts.clear(),
        Some(list) => apply(&mut entry.contacts, list, now),
    }
}

fn apply(contacts: &mut Vec<Contact>, asked: Vec<Asked>, now: Instant) {
    for a in asked {
        contacts.retain(|c| c.uri != a.uri);
        if a.expires > 0 {
            contacts.push(Contact { uri: a.uri, expires_at: now + Duration::from_secs(a.expires.into()), capabilities: a.capabilities });
        }
    }
}

/// The registrations of `store` whose contacts have not expired.
fn restore(store: &dyn RegistrationStore) -> HashMap<String, Aor> {
    let (unix, now) = (crate::clock::unix_now(), Instant::now());
    let mut aors = HashMap::new();
    for (aor, r) in store.load() {
        match live_aor(r, unix, now) {
            Some(entry) => drop(aors.insert(aor, entry)),
            None => drop(store.remove(&aor)),
        }
    }
    aors
}

/// What this node knew of the contacts' capabilities (the store does not keep them), for
/// the same contacts read back from a shared store.
fn keep_capabilities(entry: &mut Aor, known: Option<&Aor>) {
    let Some(known) = known else { return };
    for c in &mut entry.contacts {
        if let Some(k) = known.contacts.iter().find(|k| k.uri == c.uri) {
            c.capabilities = k.capabilities.clone();
        }
    }
}

/// A stored registration's contacts that have not expired at `unix` (None: none left).
fn live_aor(r: Registration, unix: u64, now: Instant) -> Option<Aor> {
    let contacts: Vec<Contact> = r
        .contacts
        .into_iter()
        .filter(|(_, until)| *until > unix)
        .map(|(uri, until)| Contact { uri, expires_at: now + Duration::from_secs(until - unix), capabilities: Vec::new() })
        .collect();
    (!contacts.is_empty()).then_some(Aor { contacts, etag: r.etag })
}

/// The 200 lists every current contact with its remaining time (RFC 3261 §10.3 step 8).
fn with_contacts(mut resp: Response, contacts: &[Contact], now: Instant) -> Response {
    for c in contacts {
        let left = c.expires_at.saturating_duration_since(now).as_secs();
        resp = resp.header(HeaderName::Contact, format!("<{}>;expires={left}", c.uri));
    }
    resp
}

fn aor_of(req: &Request) -> Option<String> {
    let to = req.headers.get(&HeaderName::To)?;
    let first = split_list(&to).into_iter().next()?.to_string();
    crate::identity::of_header(&first).ok()
}

impl Handler for Registrar {
    fn handle(&self, req: Request, tx: ServerTx) -> HandlerFuture {
        let resp = self.serve(&req, &tx);
        Box::pin(tx.respond(resp))
    }

    fn capabilities(&self) -> Capabilities {
        CAPABILITIES
    }
}
