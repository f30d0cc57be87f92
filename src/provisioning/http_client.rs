//! A minimal HTTP/1.1 client for gateways (hyper 1 + hyper-util): one request per
//! connection, http or https (rustls, CAs from a PEM file or the system bundle).
//!
//! Owns only the transport of one request; templating and status handling are in `sms.rs`.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderName, HeaderValue, HOST};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use std::path::Path;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// System CA bundle (Debian and derivatives) used when no `ca_file` is configured.
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// Most bytes of a gateway answer we read.
const MAX_ANSWER: usize = 64 * 1024;

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

/// Sends the request and reads the answer.
pub async fn send(req: &HttpRequest, ca_file: Option<&Path>) -> Result<HttpAnswer, BoxError> {
    let uri: Uri = req.url.parse()?;
    let host = uri.host().ok_or("URL without host")?.trim_matches(['[', ']']).to_string();
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err("URL scheme must be http or https".into()),
    };
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let request = build(req, &uri)?;
    let tcp = TcpStream::connect((host.as_str(), port)).await?;
    if https {
        let tls = tls_connector(ca_file)?;
        let name = rustls::pki_types::ServerName::try_from(host)?;
        exchange(tls.connect(name, tcp).await?, request).await
    } else {
        exchange(tcp, request).await
    }
}

fn build(req: &HttpRequest, uri: &Uri) -> Result<Request<Full<Bytes>>, BoxError> {
    let method = Method::from_bytes(req.method.as_bytes())?;
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let authority = uri.authority().ok_or("URL without host")?.as_str();
    let mut request = Request::builder().method(method).uri(path).header(HOST, authority);
    for (k, v) in &req.headers {
        request = request.header(HeaderName::from_bytes(k.as_bytes())?, HeaderValue::from_str(v)?);
    }
    Ok(request.body(Full::new(Bytes::from(req.body.clone())))?)
}

async fn exchange<S>(stream: S, request: Request<Full<Bytes>>) -> Result<HttpAnswer, BoxError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!("gateway connection: {e}");
        }
    });
    let answer = sender.send_request(request).await?;
    let status = answer.status().as_u16();
    let body = Limited::new(answer.into_body(), MAX_ANSWER).collect().await?.to_bytes();
    Ok(HttpAnswer { status, body: String::from_utf8_lossy(&body).into_owned() })
}

fn tls_connector(ca_file: Option<&Path>) -> Result<tokio_rustls::TlsConnector, BoxError> {
    let path = ca_file.unwrap_or(Path::new(SYSTEM_CA_BUNDLE));
    let pem = std::fs::read(path).map_err(|e| format!("CA file {}: {e}", path.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}
