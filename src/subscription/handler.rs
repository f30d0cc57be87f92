//! The SUBSCRIBE handler: initial list subscriptions, refreshes and unsubscribes.

use super::actor::{self, Command, Shared, Subscription};
use super::dialog::{local_host, Dialog};
use super::request::{self, ListRequest};
use crate::config::Config;
use crate::core::{Handler, HandlerFuture, ServerTx};
use crate::notification::{Format, SubState};
use crate::numbers::{parse_region, Region};
use crate::resolution;
use crate::sip::{HeaderName, NameAddr, Request, Response};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

pub struct SubscribeHandler {
    shared: Arc<Shared>,
    config: Arc<Config>,
    default_region: Option<Region>,
}

impl SubscribeHandler {
    pub fn new(shared: Arc<Shared>, config: Arc<Config>) -> anyhow::Result<Arc<SubscribeHandler>> {
        let default_region = match config.numbers.default_region.trim() {
            "" => None,
            r => Some(parse_region(r).map_err(|e| anyhow::anyhow!("numbers.default_region: {e}"))?),
        };
        Ok(Arc::new(SubscribeHandler { shared, config, default_region }))
    }
}

impl Handler for SubscribeHandler {
    fn handle(&self, req: Request, tx: ServerTx) -> HandlerFuture {
        let (shared, config, region) = (self.shared.clone(), self.config.clone(), self.default_region);
        Box::pin(async move {
            match serve(&req, &tx, &shared, &config, region) {
                Ok(accepted) => accepted.finish(tx, shared).await,
                Err(resp) => tx.respond(resp).await,
            }
        })
    }
}

/// What is left to do once the request is accepted: answer 200, then notify.
enum Accepted {
    New(Response, Subscription, Arc<std::sync::atomic::AtomicBool>, tokio::sync::mpsc::Receiver<Command>),
    Fetch(Response, Subscription),
    InDialog(Response, tokio::sync::mpsc::OwnedPermit<Command>, Command),
}

impl Accepted {
    async fn finish(self, tx: ServerTx, shared: Arc<Shared>) {
        match self {
            Accepted::New(resp, sub, resync, rx) => {
                tx.respond(resp).await;
                tokio::spawn(actor::run(sub, shared, rx, resync));
            }
            Accepted::Fetch(resp, sub) => {
                tx.respond(resp).await;
                actor::fetch(sub, &shared).await;
            }
            Accepted::InDialog(resp, permit, cmd) => {
                tx.respond(resp).await;
                permit.send(cmd);
            }
        }
    }
}

fn serve(req: &Request, tx: &ServerTx, shared: &Shared, config: &Config, region: Option<Region>) -> Result<Accepted, Response> {
    let expires = request::check_common(req, &config.subscription)?;
    if let Some(tag) = to_tag(req) {
        return in_dialog(req, tx, shared, &tag, expires);
    }
    request::check_require(req)?;
    if !request::is_list_subscribe(req) {
        return Err(Response::with_reason(req, 501, "Only List Subscriptions Are Served"));
    }
    let list = request::check_list(req, expires, &config.subscription)?;
    new_subscription(req, tx, shared, config, region, list)
}

fn to_tag(req: &Request) -> Option<String> {
    let to = req.headers.get(&HeaderName::To)?;
    NameAddr::parse(&to).ok()?.tag().map(str::to_string)
}

fn from_uri(req: &Request) -> String {
    req.headers
        .get(&HeaderName::From)
        .and_then(|f| NameAddr::parse(&f).ok())
        .map(|a| a.uri_text)
        .unwrap_or_default()
}

fn new_subscription(
    req: &Request,
    tx: &ServerTx,
    shared: &Shared,
    config: &Config,
    region: Option<Region>,
    list: ListRequest,
) -> Result<Accepted, Response> {
    let permit = tx.core().limits().subscribe(&from_uri(req), tx.source().remote.ip(), list.entries.len()).map_err(|r| r.response(req))?;
    let region = resolution::subscriber_region(&shared.index, &from_uri(req), region);
    let entries = resolution::classify(list.entries, region);
    let source = tx.source();
    let host = local_host(source, &config.domain);
    let dialog = Dialog::from_subscribe(req, source, &host).ok_or_else(|| Response::with_reason(req, 400, "Missing Contact"))?;
    let ua = req.headers.get(&HeaderName::UserAgent);
    let format = Format::choose(&config.notify, ua.as_deref(), list.accepts_deflate, source.protocol.is_reliable());
    let mut resp = Response::to(req, 200)
        .header(HeaderName::Contact, dialog.contact.clone())
        .header(HeaderName::Expires, list.expires.to_string())
        .header(HeaderName::Require, "eventlist");
    resp.set_to_tag(&dialog.local_tag);
    let mut sub = Subscription {
        id: 0,
        list_uri: req.uri.clone(),
        entries,
        version: 0,
        expires_at: Instant::now() + Duration::from_secs(list.expires.into()),
        format,
        dialog,
    };
    if list.expires == 0 {
        return Ok(Accepted::Fetch(resp, sub));
    }
    let (id, handle, rx) = shared.table.insert(&sub.dialog.call_id, &sub.dialog.local_tag, sub.keys());
    sub.id = id;
    shared.table.hold(id, permit);
    Ok(Accepted::New(resp, sub, handle.resync, rx))
}

fn in_dialog(req: &Request, tx: &ServerTx, shared: &Shared, tag: &str, expires: u32) -> Result<Accepted, Response> {
    let call_id = req.headers.get(&HeaderName::CallId).unwrap_or_default();
    let handle = shared.table.find(call_id.trim(), tag).ok_or_else(|| Response::to(req, 481))?;
    if !req.body.is_empty() {
        return Err(Response::with_reason(req, 415, "List Body In A Refresh").header(HeaderName::Accept, "multipart/related"));
    }
    let permit = handle.tx.clone().try_reserve_owned().map_err(|_| Response::to(req, 481))?;
    let host = local_host(tx.source(), "localhost");
    let contact = format!("<sip:rls@{host}:{};transport={}>", tx.source().local.port(), tx.source().protocol.param_name());
    let resp = Response::to(req, 200)
        .header(HeaderName::Contact, contact)
        .header(HeaderName::Expires, expires.to_string())
        .header(HeaderName::Require, "eventlist");
    let cmd = if expires == 0 { Command::Unsubscribe } else { Command::Refresh { expires } };
    Ok(Accepted::InDialog(resp, permit, cmd))
}

/// The Subscription-State of a one-shot fetch (Expires: 0 on a new subscription).
pub const FETCH_STATE: SubState = SubState::Terminated { reason: "timeout" };
