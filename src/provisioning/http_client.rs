//! The HTTP client of the delivery gateways: hyper-util's pooled client, so messages reuse a
//! kept-alive connection (and its TLS session) instead of a handshake each; http or https
//! with rustls (ring), trusting the platform's roots (`rustls-native-certs`) or a configured
//! PEM bundle; `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY` honoured (hyper-util's
//! matcher, curl's rules) through an HTTP CONNECT tunnel; a time limit per request.
//!
//! Owns only the transport; templating and status handling are in `sms.rs`.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, Request, Uri};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpStream;
use tower_service::Service;

/// Most bytes of a gateway answer we read.
const MAX_ANSWER: usize = 64 * 1024;
/// How long an unused connection stays in the pool.
const IDLE: Duration = Duration::from_secs(60);

pub struct HttpRequest {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

pub struct HttpAnswer {
    pub status: u16,
    pub body: String,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A pooled client for one gateway.
pub struct HttpClient {
    client: Box<Client<HttpsConnector<Connector>, Full<Bytes>>>,
    timeout: Duration,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient").field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

impl HttpClient {
    /// `ca_file`: PEM bundle of the CAs to trust (None: the platform's roots). `timeout`
    /// bounds each request, from connecting to the end of the answer.
    pub fn new(ca_file: Option<&Path>, timeout: Duration) -> Result<HttpClient, BoxError> {
        let mut direct = HttpConnector::new();
        direct.enforce_http(false);
        direct.set_nodelay(true);
        direct.set_connect_timeout(Some(timeout));
        let proxies = Arc::new(Matcher::from_env());
        let connector =
            HttpsConnectorBuilder::new().with_tls_config(tls_config(ca_file)?).https_or_http().enable_http1().wrap_connector(Connector { direct, proxies });
        let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(IDLE).build(connector);
        Ok(HttpClient { client: Box::new(client), timeout })
    }

    /// Sends the request and reads the answer (at most 64 KiB of it).
    pub async fn send(&self, req: &HttpRequest) -> Result<HttpAnswer, BoxError> {
        let request = build(req)?;
        let exchange = async {
            let answer = self.client.request(request).await.map_err(describe)?;
            let status = answer.status().as_u16();
            let body = Limited::new(answer.into_body(), MAX_ANSWER).collect().await?.to_bytes();
            Ok::<_, BoxError>(HttpAnswer { status, body: String::from_utf8_lossy(&body).into_owned() })
        };
        tokio::time::timeout(self.timeout, exchange).await.map_err(|_| format!("no answer within {:?}", self.timeout))?
    }
}

fn build(req: &HttpRequest) -> Result<Request<Full<Bytes>>, BoxError> {
    let uri: Uri = req.url.parse()?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err("the URL must be http:// or https:// with a host".into());
    }
    let method = Method::from_bytes(req.method.as_bytes())?;
    let mut request = Request::builder().method(method).uri(uri);
    for (k, v) in &req.headers {
        request = request.header(HeaderName::from_bytes(k.as_bytes())?, HeaderValue::from_str(v)?);
    }
    Ok(request.body(Full::new(Bytes::from(req.body.clone())))?)
}

/// The error and its causes on one line (the client's own message says little).
fn describe(e: hyper_util::client::legacy::Error) -> BoxError {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text.into()
}

fn tls_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, BoxError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| format!("CA file {}: {e}", path.display()))?;
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                roots.add(cert?)?;
            }
            if roots.is_empty() {
                return Err(format!("CA file {}: no certificate in it", path.display()).into());
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::warn!("platform CA roots: {e}");
            }
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                tracing::warn!("no platform CA roots found: https gateways will fail (set ca_file)");
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider).with_safe_default_protocol_versions()?.with_root_certificates(roots).with_no_client_auth())
}

/// TCP to the gateway, or through a CONNECT tunnel of the proxy the environment names for it.
#[derive(Clone)]
struct Connector {
    direct: HttpConnector,
    proxies: Arc<Matcher>,
}

type Connecting = Pin<Box<dyn Future<Output = Result<TokioIo<TcpStream>, BoxError>> + Send>>;

impl Service<Uri> for Connector {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = Connecting;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.direct.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> Connecting {
        let Some(proxy) = self.proxies.intercept(&dst) else {
            let connecting = self.direct.call(dst);
            return Box::pin(async move { Ok(connecting.await?) });
        };
        if proxy.uri().scheme_str() != Some("http") {
            let refused = format!("proxy {}: only http:// proxies are supported", proxy.uri());
            return Box::pin(async move { Err(refused.into()) });
        }
        let mut tunnel = Tunnel::new(proxy.uri().clone(), self.direct.clone());
        if let Some(auth) = proxy.basic_auth() {
            tunnel = tunnel.with_auth(auth.clone());
        }
        let target = with_port(dst);
        Box::pin(async move { Ok(tunnel.call(target?).await?) })
    }
}

/// The URI with its port written out (the tunnel would take 443 for a plain http URL).
fn with_port(uri: Uri) -> Result<Uri, BoxError> {
    if uri.port().is_some() {
        return Ok(uri);
    }
    let port = if uri.scheme_str() == Some("https") { 443 } else { 80 };
    let host = uri.host().ok_or("URL without host")?;
    let mut parts = uri.clone().into_parts();
    parts.authority = Some(format!("{host}:{port}").parse()?);
    Ok(Uri::from_parts(parts)?)
}
