//! The SIP core: parses what the transports hand in, absorbs retransmissions through the
//! server transactions, answers what needs no handler (OPTIONS, 400, 405, 501, ACK) and
//! routes each request to the handler that declares its method; responses go to the
//! client transactions. OPTIONS and 405 advertise what the handlers declare.
//!
//! Owns routing and the response path. It must not know what a subscription or a binding
//! is: that is the handlers' business.

use crate::limits::{Limits, Refusal, Verdict};
use crate::metrics::{MethodLabel, Metrics, RateLimited, Transport};
use crate::sip::{self, check_request, top_via, Advertised, Capabilities, HeaderName, Message, Method, ParseError, Request, Response};
use crate::transaction::{Begin, ClientTransactions, ServerKey, ServerTransactions, Timers};
use crate::transport::{Inbound, Protocol, Sender, Source, Target};
use bytes::Bytes;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

/// What a handler returns: the work of answering one request.
pub type HandlerFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Serves the methods it declares. It must call `tx.respond` exactly once with a final
/// response.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, req: Request, tx: ServerTx) -> HandlerFuture;

    /// What it serves: the core routes the declared methods to it and advertises the
    /// declaration in OPTIONS and 405. Declaring nothing means it is never routed to.
    fn capabilities(&self) -> Capabilities {
        Capabilities::NONE
    }
}

/// The handlers the core routes to. Each serves the methods it declares in
/// [`Handler::capabilities`]; the slots only say which handlers exist (the first to
/// declare a method gets it). SUBSCRIBE, PUBLISH, REGISTER or NOTIFY without a handler
/// declaring it gets 501, any other method 405.
#[derive(Default, Clone)]
pub struct Handlers {
    pub subscribe: Option<Arc<dyn Handler>>,
    pub publish: Option<Arc<dyn Handler>>,
    pub register: Option<Arc<dyn Handler>>,
    pub notify: Option<Arc<dyn Handler>>,
    /// Handlers for methods without a slot of their own.
    pub extra: Vec<Arc<dyn Handler>>,
}

impl Handlers {
    fn present(&self) -> impl Iterator<Item = &Arc<dyn Handler>> {
        [&self.subscribe, &self.notify, &self.publish, &self.register].into_iter().flatten().chain(&self.extra)
    }
}

/// What the core answers itself, whatever the handlers.
const CORE_CAPABILITIES: Capabilities = Capabilities { methods: &[Method::Options, Method::Ack], ..Capabilities::NONE };

/// Each method to the handler that declares it, and the union of the declarations.
struct Router {
    routes: Vec<(Method, Arc<dyn Handler>)>,
    advertised: Advertised,
}

impl Router {
    fn new(handlers: &Handlers) -> Router {
        let declared: Vec<(Capabilities, &Arc<dyn Handler>)> = handlers.present().map(|h| (h.capabilities(), h)).collect();
        let mut routes: Vec<(Method, Arc<dyn Handler>)> = Vec::new();
        for (caps, h) in &declared {
            for m in caps.methods {
                if !routes.iter().any(|(have, _)| have == m) {
                    routes.push((m.clone(), Arc::clone(h)));
                }
            }
        }
        let all = std::iter::once(&CORE_CAPABILITIES).chain(declared.iter().map(|(c, _)| c));
        Router { routes, advertised: Advertised::of(all) }
    }

    fn for_method(&self, m: &Method) -> Option<&Arc<dyn Handler>> {
        self.routes.iter().find(|(have, _)| have == m).map(|(_, h)| h)
    }
}

/// A refusal by a limit ([`crate::limits`]): 503 with its reason and Retry-After.
pub fn refused(req: &Request, refusal: &Refusal) -> Response {
    Response::with_reason(req, 503, refusal.reason).header(HeaderName::RetryAfter, refusal.retry_after.to_string())
}

pub struct Core {
    sender: Arc<Sender>,
    server_tx: ServerTransactions,
    client_tx: Arc<ClientTransactions>,
    router: Router,
    log_messages: bool,
    limits: Arc<Limits>,
    /// Requests counted by method, final code and transport (None: metrics off).
    metrics: Option<Arc<Metrics>>,
}

impl Core {
    /// Handlers that send requests (NOTIFY) share `client_tx`, built from the same sender.
    /// With `metrics`, what it receives and answers is counted.
    pub fn new(
        sender: Arc<Sender>,
        client_tx: Arc<ClientTransactions>,
        timers: Timers,
        handlers: Handlers,
        log_messages: bool,
        limits: Arc<Limits>,
        metrics: Option<Arc<Metrics>>,
    ) -> Arc<Core> {
        Arc::new(Core {
            server_tx: ServerTransactions::new(timers.f()),
            client_tx,
            router: Router::new(&handlers),
            sender,
            log_messages,
            limits,
            metrics,
        })
    }

    pub fn limits(&self) -> &Arc<Limits> {
        &self.limits
    }

    /// Forgets expired server transactions (see `ServerTransactions::sweep`); until the
    /// core is dropped or `shutdown` fires.
    pub async fn sweep_transactions(core: std::sync::Weak<Core>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tick.tick() => match core.upgrade() {
                    Some(core) => core.server_tx.sweep(),
                    None => return,
                },
                _ = shutdown.changed() => return,
            }
        }
    }

    pub fn client_transactions(&self) -> Arc<ClientTransactions> {
        self.client_tx.clone()
    }

    /// `throttled`: the source is over its rate; a request gets 503 with this Retry-After.
    /// `received`: when it arrived (kept only when metrics are on).
    async fn process(self: Arc<Self>, data: Bytes, source: Source, throttled: Option<u32>, received: Option<Instant>) {
        self.log_received(&data, &source);
        match sip::parse_message(data.clone()) {
            Ok(Message::Request(req)) => self.on_request(req, source, throttled, received).await,
            Ok(Message::Response(resp)) => self.on_response(resp, &source),
            // A datagram of CRLFs is a keep-alive (streams take theirs out before this).
            Err(ParseError::Empty) => tracing::trace!(remote = %source.remote, "empty message"),
            Err(e) => self.on_unparseable(&data, e, source).await,
        }
    }

    fn log_received(&self, data: &[u8], source: &Source) {
        if self.log_messages {
            tracing::info!(remote = %source.remote, "recv {:?}:\n{}", source.protocol, String::from_utf8_lossy(data));
        }
    }

    fn on_response(&self, resp: Response, source: &Source) {
        if !self.client_tx.on_response(resp) {
            tracing::debug!(remote = %source.remote, "response matches no transaction");
        }
    }

    /// A response to one of our requests (a phone's 200 to a NOTIFY, two per list cycle)
    /// is routed on the reading task: parsing and routing it costs less than a task of its
    /// own. False when `data` is not a response that parses (the task path handles it).
    fn route_response_here(&self, data: &Bytes, source: &Source) -> bool {
        if !data.starts_with(b"SIP/2.0 ") {
            return false;
        }
        let Ok(Message::Response(resp)) = sip::parse_message(data.clone()) else { return false };
        self.log_received(data, source);
        self.on_response(resp, source);
        true
    }

    /// A message that does not parse gets 400 when it is a request whose Via, From, To,
    /// Call-ID and CSeq can be read (RFC 3261 §8.2.6); else it is dropped, and on TCP/TLS,
    /// whose stream is then likely out of step, the connection is closed. Logged either way.
    async fn on_unparseable(self: Arc<Self>, data: &[u8], error: ParseError, source: Source) {
        let Some(mut req) = sip::salvage::answerable(data) else {
            let action = if source.conn.is_some() { "closing the connection" } else { "dropped" };
            self.limits.log_malformed(source.remote, source.protocol.via_name(), &error.to_string(), action);
            if let Some(conn) = source.conn {
                self.sender.close(conn);
            }
            return;
        };
        let reason = match error {
            ParseError::StartLine => "Bad Request Line",
            ParseError::HeaderLine => "Bad Header Line",
            _ => "Bad Request",
        };
        self.limits.log_malformed(source.remote, source.protocol.via_name(), &error.to_string(), "answered 400");
        stamp_via(&mut req, &source);
        self.server_tx(None, &req, source, None).respond(Response::with_reason(&req, 400, reason)).await
    }

    async fn on_request(self: Arc<Self>, mut req: Request, source: Source, throttled: Option<u32>, received: Option<Instant>) {
        stamp_via(&mut req, &source);
        let key = ServerKey::of(&req);
        if let Err(bad) = check_request(&mut req, source.protocol.is_reliable()) {
            let tx = self.server_tx(None, &req, source, received);
            return tx.respond(Response::with_reason(&req, 400, bad.0)).await;
        }
        if let Some(secs) = throttled.filter(|_| req.method != Method::Ack) {
            let resp = refused(&req, &Refusal { reason: "Rate Limit Exceeded", retry_after: secs });
            return self.server_tx(None, &req, source, received).respond(resp).await;
        }
        let key = if source.protocol == Protocol::Udp { key } else { None };
        if let Some(k) = &key {
            match self.server_tx.begin(k) {
                Begin::New => {}
                Begin::InProgress => return,
                Begin::Answered(bytes, target) => {
                    let _ = self.sender.send(&target, bytes).await;
                    return;
                }
            }
        }
        let tx = self.server_tx(key, &req, source, received);
        match &req.method {
            Method::Ack => tx.count(None),
            Method::Options => tx.respond(self.options(&req)).await,
            Method::Cancel => tx.respond(Response::to(&req, 481)).await,
            m => match self.router.for_method(m) {
                Some(h) => h.handle(req, tx).await,
                None if is_known_routed(m) => tx.respond(Response::to(&req, 501)).await,
                None => {
                    let resp = Response::to(&req, 405).header(HeaderName::Allow, self.router.advertised.allow());
                    tx.respond(resp).await
                }
            },
        }
    }

    fn server_tx(self: &Arc<Self>, key: Option<ServerKey>, req: &Request, source: Source, received: Option<Instant>) -> ServerTx {
        let method = MethodLabel::of(&req.method);
        ServerTx { core: self.clone(), key, target: response_target(req, &source), source, method, received }
    }

    /// Allow, Accept, Accept-Encoding, Supported and Allow-Events as the handlers declare.
    fn options(&self, req: &Request) -> Response {
        self.router.advertised.write(Response::to(req, 200))
    }

    pub fn sender(&self) -> &Arc<Sender> {
        &self.sender
    }
}

fn transport_label(p: Protocol) -> Transport {
    match p {
        Protocol::Udp => Transport::Udp,
        Protocol::Tcp => Transport::Tcp,
        Protocol::Tls => Transport::Tls,
    }
}

fn is_known_routed(m: &Method) -> bool {
    matches!(m, Method::Subscribe | Method::Publish | Method::Register | Method::Notify)
}

/// The transports' sink: hands each request to the core on a task of its own; responses
/// are routed at once.
pub struct CoreSink(pub Arc<Core>);

impl Inbound for CoreSink {
    fn receive(&self, data: Bytes, source: Source) {
        let metrics = self.0.metrics.as_deref();
        let throttled = match self.0.limits.admit(source.remote.ip()) {
            Verdict::Admit => None,
            Verdict::Reject { retry_after } => {
                metrics.inspect(|m| m.rate_limited(RateLimited::Rejected));
                Some(retry_after)
            }
            Verdict::Drop => {
                metrics.inspect(|m| m.rate_limited(RateLimited::Dropped));
                return;
            }
        };
        if self.0.route_response_here(&data, &source) {
            return;
        }
        let received = metrics.map(|_| Instant::now());
        tokio::spawn(self.0.clone().process(data, source, throttled, received));
    }
}

/// One request being answered: where the response goes, and its transaction.
pub struct ServerTx {
    core: Arc<Core>,
    key: Option<ServerKey>,
    target: Target,
    source: Source,
    method: MethodLabel,
    received: Option<Instant>,
}

impl ServerTx {
    /// Sends the final response and stores it for retransmissions.
    pub async fn respond(self, resp: Response) {
        if matches!(resp.status, 413 | 503) {
            self.core.limits.log_refusal(self.target.remote, resp.status, &resp.reason);
        }
        self.count(Some(resp.status));
        let bytes = resp.to_bytes();
        if self.core.log_messages {
            tracing::info!(remote = %self.target.remote, "send:\n{}", String::from_utf8_lossy(&bytes));
        }
        if let Some(key) = &self.key {
            self.core.server_tx.complete(key, &bytes, self.target);
        }
        if let Err(e) = self.core.sender.send(&self.target, bytes).await {
            tracing::debug!(remote = %self.target.remote, "response not sent: {e}");
        }
    }

    pub fn source(&self) -> &Source {
        &self.source
    }

    /// When the request arrived; None when metrics are off.
    pub fn received(&self) -> Option<Instant> {
        self.received
    }

    /// Counts the request as answered with `code` (None: an ACK, never answered).
    fn count(&self, code: Option<u16>) {
        if let Some(m) = &self.core.metrics {
            m.request(self.method, code, transport_label(self.source.protocol));
        }
    }

    pub fn core(&self) -> &Arc<Core> {
        &self.core
    }
}

/// RFC 3261 §18.2.1 and RFC 3581: note in the top Via where the request really came from.
fn stamp_via(req: &mut Request, source: &Source) {
    let Some(header) = req.headers.0.iter_mut().find(|h| h.name == HeaderName::Via) else { return };
    let text = header.text().into_owned();
    let elements = sip::message::split_list(&text);
    let Some(top) = elements.first() else { return };
    let Ok(via) = sip::Via::parse(top) else { return };
    let ip = source.remote.ip().to_string();
    let host_is_ip = via.host.trim_matches(['[', ']']) == ip;
    let wants_rport = via.param("rport").is_some();
    if host_is_ip && !wants_rport {
        return;
    }
    let mut stamped = split_off_params(top, &["received", "rport"]);
    if wants_rport {
        stamped.push_str(&format!(";rport={}", source.remote.port()));
    }
    stamped.push_str(&format!(";received={ip}"));
    for other in &elements[1..] {
        stamped.push_str(", ");
        stamped.push_str(other);
    }
    header.value = Bytes::from(stamped);
}

/// A Via element without the named parameters.
fn split_off_params(via: &str, drop: &[&str]) -> String {
    let mut parts = via.split(';');
    let mut out = parts.next().unwrap_or("").to_string();
    for p in parts {
        let name = p.split('=').next().unwrap_or("").trim();
        if !drop.iter().any(|d| d.eq_ignore_ascii_case(name)) {
            out.push(';');
            out.push_str(p);
        }
    }
    out
}

/// Where a response goes (RFC 3261 §18.2.2, RFC 3581 §4): back on the connection over
/// streams; over UDP to the source address when rport was asked, else to the source IP
/// and the Via port.
fn response_target(req: &Request, source: &Source) -> Target {
    let mut target = source.reply_target();
    if source.protocol == Protocol::Udp {
        if let Ok(via) = top_via(&req.headers) {
            let rport = via.param("rport").is_some();
            if !rport {
                let port = via.port.unwrap_or(5060);
                target.remote = SocketAddr::new(source.remote.ip(), port);
            }
        }
    }
    target
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(via: &str) -> Request {
        let raw = format!("OPTIONS sip:x SIP/2.0\r\nVia: {via}\r\nCall-ID: c\r\n\r\n");
        match sip::parse_message(Bytes::from(raw)) {
            Ok(Message::Request(r)) => r,
            _ => panic!(),
        }
    }

    fn source() -> Source {
        let remote = "192.0.2.7:40791".parse().unwrap();
        Source { protocol: Protocol::Udp, remote, local: "127.0.0.1:5060".parse().unwrap(), conn: None }
    }

    #[test]
    fn rport_is_filled_and_received_added() {
        let mut r = req("SIP/2.0/UDP 10.0.0.1:5062;branch=z9hG4bKa;rport, SIP/2.0/UDP p:5060;branch=z9hG4bKb");
        stamp_via(&mut r, &source());
        let via = r.headers.get(&HeaderName::Via).unwrap().to_string();
        assert_eq!(via, "SIP/2.0/UDP 10.0.0.1:5062;branch=z9hG4bKa;rport=40791;received=192.0.2.7, SIP/2.0/UDP p:5060;branch=z9hG4bKb");
        assert_eq!(response_target(&r, &source()).remote, source().remote);
    }

    #[test]
    fn without_rport_response_goes_to_via_port() {
        let mut r = req("SIP/2.0/UDP 10.0.0.1:5062;branch=z9hG4bKa");
        stamp_via(&mut r, &source());
        assert!(r.headers.get(&HeaderName::Via).unwrap().ends_with(";received=192.0.2.7"));
        assert_eq!(response_target(&r, &source()).remote, "192.0.2.7:5062".parse().unwrap());
    }
}
