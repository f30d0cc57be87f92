//! The SUBSCRIBE handler: initial list subscriptions, refreshes and unsubscribes.

use super::actor::{self, Shared};
use super::mailbox::Posted;
use super::record::{Handle, Names, Subscription, Woken};
use super::request::{self, ListRequest};
use super::watched::WatchedList;
use crate::auth::Identity;
use crate::config::SubscribeSettings;
use crate::core::{Handler, HandlerFuture, ServerTx};
use crate::dialog::{self, Dialog, Retarget};
use crate::discovery::{self, Seeker};
use crate::notification::{self, Format};
use crate::resolution;
use crate::sip::{HeaderName, NameAddr, Request, Response};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

pub struct SubscribeHandler {
    shared: Arc<Shared>,
    config: Arc<SubscribeSettings>,
}

impl SubscribeHandler {
    pub fn new(shared: Arc<Shared>, config: SubscribeSettings) -> Arc<SubscribeHandler> {
        Arc::new(SubscribeHandler { shared, config: Arc::new(config) })
    }
}

impl Handler for SubscribeHandler {
    fn handle(&self, req: Request, tx: ServerTx) -> HandlerFuture {
        let (shared, config) = (self.shared.clone(), self.config.clone());
        Box::pin(async move {
            match serve(&req, &tx, &shared, &config).await {
                Ok(accepted) => accepted.finish(tx, shared).await,
                Err(resp) => tx.respond(resp).await,
            }
        })
    }

    fn capabilities(&self) -> crate::sip::Capabilities {
        request::CAPABILITIES
    }
}

/// What is left to do once the request is accepted: answer 200, then notify.
enum Accepted {
    New(Response, Subscription, Handle),
    Fetch(Response, Subscription),
    /// A refresh (Some(expires)) or an unsubscribe (None), and where it came from.
    InDialog(Response, Handle, Option<u32>, Retarget),
}

impl Accepted {
    async fn finish(self, tx: ServerTx, shared: Arc<Shared>) {
        match self {
            Accepted::New(resp, sub, mailbox) => {
                let received = tx.received();
                tx.respond(resp).await;
                actor::start(sub, shared, mailbox, received);
            }
            Accepted::Fetch(resp, sub) => {
                tx.respond(resp).await;
                actor::fetch(sub, &shared).await;
            }
            Accepted::InDialog(resp, mailbox, refresh, retarget) => {
                tx.respond(resp).await;
                let posted = mailbox.post(|i| {
                    match refresh {
                        Some(expires) => i.refresh = Some(expires),
                        None => i.unsubscribe = true,
                    }
                    i.retarget = Some(retarget);
                });
                if let Posted::Woken(sub) = posted {
                    actor::resume(vec![Woken { sub, mailbox }], &shared);
                }
            }
        }
    }
}

async fn serve(req: &Request, tx: &ServerTx, shared: &Arc<Shared>, config: &SubscribeSettings) -> Result<Accepted, Response> {
    let expires = request::check_common(req, &config.subscription)?;
    if let Some(tag) = to_tag(req) {
        wait_if_not_loaded(req, shared, &tag).await;
        return in_dialog(req, tx, shared, &config.domain, &tag, expires);
    }
    request::check_require(req)?;
    let identity = shared.auth.identify(req, tx.source())?;
    let list = if request::is_list_subscribe(req) {
        request::check_list(req, expires, &config.subscription)?
    } else if shared.lists.is_list_uri(req.uri.as_str()) {
        stored_list(req, shared, &identity, expires).await?
    } else {
        // RFC 3856: the Request-URI names the one presentity watched.
        ListRequest { entries: vec![req.uri.clone()], expires, accepts_deflate: request::accepts_deflate(req), single: true, book: None }
    };
    new_subscription(req, tx, shared, config, identity, list).await
}

/// Right after a start, a dialog may be stored and not read back yet: wait for the load
/// before looking it up (see `loading.rs`).
async fn wait_if_not_loaded(req: &Request, shared: &Shared, tag: &str) {
    if !shared.loading.is_on() {
        return;
    }
    let call_id = req.headers.get(&HeaderName::CallId).unwrap_or_default();
    if shared.loading.may_hold(&shared.table, &shared.store, call_id.trim(), tag) {
        shared.loading.finished().await;
    }
}

fn to_tag(req: &Request) -> Option<String> {
    let to = req.headers.get(&HeaderName::To)?;
    NameAddr::parse(&to).ok()?.tag().map(str::to_string)
}

async fn new_subscription(
    req: &Request,
    tx: &ServerTx,
    shared: &Arc<Shared>,
    config: &SubscribeSettings,
    identity: Identity,
    mut list: ListRequest,
) -> Result<Accepted, Response> {
    let book = list.book.take();
    let source = tx.source();
    let ua = req.headers.get(&HeaderName::UserAgent);
    let format = Format::choose(&config.notify, ua.as_deref(), list.accepts_deflate, source.protocol.is_reliable());
    if !list.single {
        check_fits(req, format, &list.entries)?;
    }
    let permit = shared.limits.subscribe(&identity.uri, source.remote.ip(), list.entries.len()).map_err(|r| crate::core::refused(req, &r))?.marked_single(list.single);
    let dialog = Dialog::from_subscribe(req, source, &config.domain).map_err(|why| Response::with_reason(req, 400, why))?;
    let names = Names::new(req.uri.as_str(), identity.uri.as_str());
    let entries = discover(shared, identity, list.entries).await.ok_or_else(|| Response::to(req, 500))?;
    let mut resp = Response::to(req, 200)
        .header(HeaderName::Contact, dialog.contact())
        .header(HeaderName::Expires, list.expires.to_string());
    if !list.single {
        resp = resp.header(HeaderName::Require, "eventlist");
    }
    resp.set_to_tag(dialog.local_tag());
    // RFC 3261 §12.1.1: the phone's route set is the Record-Route a proxy (the cluster's
    // load balancer) put in, so its refreshes go back through it.
    for rr in req.headers.iter().filter(|h| h.name == HeaderName::RecordRoute) {
        resp.headers.0.push(rr.clone());
    }
    let mut sub = Subscription {
        id: 0,
        names,
        entries: WatchedList::new(entries),
        version: 0,
        expires_at: Instant::now() + Duration::from_secs(list.expires.into()),
        last_sent: Instant::now(),
        format,
        dialog,
        single: list.single,
        permit: None,
        version_limit: 0,
        cseq_limit: 0,
    };
    if list.expires == 0 {
        // A fetch ends with its one NOTIFY: never recorded.
        (sub.version_limit, sub.cseq_limit) = (u32::MAX, u32::MAX);
        return Ok(Accepted::Fetch(resp, sub));
    }
    let (id, mailbox) = shared.table.insert(sub.dialog.call_id(), sub.dialog.local_tag(), sub.keys(), sub.expires_at);
    sub.id = id;
    sub.permit = Some(permit);
    if let Some((owner, generation)) = book {
        shared.table.follow_book(id, &owner);
        catch_up(shared, owner, generation);
    }
    Ok(Accepted::New(resp, sub, mailbox))
}

/// A body-less SUBSCRIBE to the list URI: the subscriber's stored book is the list
/// (`books.rs`); 404 when he has none.
async fn stored_list(req: &Request, shared: &Shared, identity: &Identity, expires: u32) -> Result<ListRequest, Response> {
    request::check_stored(req)?;
    let no_list = || Response::with_reason(req, 404, "No Stored List");
    let owner = shared.lists.owner(identity.account.as_deref(), &identity.uri).ok_or_else(no_list)?;
    let generation = shared.lists.books.feed().generation();
    let (books, who) = (shared.lists.books.clone(), owner.clone());
    let numbers = match discovery::blocking(move || books.numbers(&who)).await {
        Some(Ok(Some(numbers))) => numbers,
        Some(Ok(None)) => return Err(no_list()),
        Some(Err(e)) => {
            tracing::error!("stored list not read: {e}");
            return Err(Response::to(req, 503).header(HeaderName::RetryAfter, crate::auth::RETRY_AFTER_SECS.to_string()));
        }
        None => return Err(Response::to(req, 500)),
    };
    let entries = shared.lists.entry_uris(numbers.into_iter());
    Ok(ListRequest { entries, expires, accepts_deflate: request::accepts_deflate(req), single: false, book: Some((owner, generation)) })
}

/// Some book changed between the reading of this one (at `generation`) and the
/// subscription's registration: it may have been this one, so its change is handed on as
/// if it came now (at worst a reading for nothing).
fn catch_up(shared: &Shared, owner: String, generation: u64) {
    let feed = shared.lists.books.feed();
    if feed.generation() != generation {
        shared.lists.books.touch(&owner);
    }
}

/// Lists up to this size are read and charged on the worker: a 100-number list costs tens
/// of microseconds, less than the two thread switches of a hop to the blocking pool.
const INLINE_ENTRIES: usize = 256;

/// The list's entries as `discovery` reads and charges them; big lists on the blocking pool
/// (the budget is stored); None if that failed outright.
async fn discover(shared: &Shared, identity: Identity, uris: Vec<String>) -> Option<Vec<resolution::Entry>> {
    let discovery = shared.discovery.clone();
    if uris.len() <= INLINE_ENTRIES {
        let who = Seeker { budget_key: identity.budget_key(), sip_uri: &identity.uri, numbers: &identity.numbers };
        return Some(discovery.entries(&who, uris));
    }
    discovery::blocking(move || {
        let who = Seeker { budget_key: identity.budget_key(), sip_uri: &identity.uri, numbers: &identity.numbers };
        discovery.entries(&who, uris)
    })
    .await
}

/// Never accept what cannot be served: a list whose full state cannot reach the phone
/// over UDP (no deflate, or too big even deflated) is refused with 413, naming the way out.
fn check_fits(req: &Request, format: Format, entries: &[String]) -> Result<(), Response> {
    let Err(size) = notification::check_fits(format, req.uri.as_str(), entries) else { return Ok(()) };
    let from = req.headers.get(&HeaderName::From).unwrap_or_default();
    tracing::warn!(entries = entries.len(), size, %from, "list refused: its full state ({size} bytes) cannot be sent over UDP");
    let reason = if format.compress { "List Too Large For UDP, Use TCP" } else { "List Too Large For UDP, Use TCP Or Accept-Encoding: deflate" };
    Err(Response::with_reason(req, 413, reason))
}

/// A refresh or an unsubscribe: also a target refresh (RFC 6665 §4.1.2.1), so the dialog
/// follows a phone that changed address or connection.
fn in_dialog(req: &Request, tx: &ServerTx, shared: &Shared, domain: &str, tag: &str, expires: u32) -> Result<Accepted, Response> {
    let call_id = req.headers.get(&HeaderName::CallId).unwrap_or_default();
    let handle = shared.table.find(call_id.trim(), tag).ok_or_else(|| Response::to(req, 481))?;
    if !req.body.is_empty() {
        return Err(Response::with_reason(req, 415, "List Body In A Refresh").header(HeaderName::Accept, "multipart/related"));
    }
    if handle.is_closed() {
        return Err(Response::to(req, 481));
    }
    let contact = dialog::contact_for(tx.source(), domain);
    let mut resp = Response::to(req, 200).header(HeaderName::Contact, contact).header(HeaderName::Expires, expires.to_string());
    if req.headers.has_token(&HeaderName::Supported, "eventlist") {
        resp = resp.header(HeaderName::Require, "eventlist");
    }
    let retarget = Retarget::from_request(req, tx.source(), domain);
    Ok(Accepted::InDialog(resp, handle, (expires > 0).then_some(expires), retarget))
}
