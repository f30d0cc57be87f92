//! `smart-presence bindings ...`: manage the index, through the running server's admin
//! endpoint when one answers, else directly on the data directory. Uses the `Index`
//! handle and the admin routes' contract only; it must not know how bindings are stored.

use crate::admin::bindings::SERVICE_NAME;
use crate::admin::ChannelBody;
use crate::index::{dir_in, parse_number, Format, ImportOptions, ImportSummary, Index, IndexError, Source};
use crate::config::Config;
use crate::numbers::Region;
use anyhow::{anyhow, bail, Context as _};
use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, clap::Subcommand)]
pub enum BindingsCommand {
    /// Bind a number to a SIP URI (replacing its binding to any other URI).
    Add {
        /// The number: +33612345678, national (with the default region), tel: or sip: URI.
        number: String,
        /// The SIP user it belongs to, e.g. sip:alice@example.com.
        sip_uri: String,
    },
    /// Remove a number's binding.
    Remove { number: String },
    /// Show a number's binding (exit status 1 if not bound).
    Get { number: String },
    /// Import bindings from a CSV (`number,sip_uri`) or JSON-lines file.
    Import {
        file: PathBuf,
        /// Default: from the file extension (.csv, .jsonl/.ndjson).
        #[arg(long, value_enum)]
        format: Option<Format>,
        /// Abort, importing nothing, if any line is bad.
        #[arg(long)]
        strict: bool,
    },
    /// Export every binding (to FILE, or stdout).
    Export {
        file: Option<PathBuf>,
        /// Default: from the file extension, else csv.
        #[arg(long, value_enum)]
        format: Option<Format>,
    },
    /// Counts of the index.
    Stats,
}

/// Runs a `bindings` command.
pub async fn run(cmd: BindingsCommand, config: &Config) -> anyhow::Result<()> {
    let region = config.numbers.default_region;
    if let Some(addr) = config.admin.listen {
        let token = crate::admin::auth::configured_token(&config.admin)?;
        match Client::connect(addr, token).await {
            Ok(Some(client)) => return remote(client, cmd, region).await,
            Ok(None) => {} // nothing listens: work directly
            Err(e) => return Err(e),
        }
    }
    if config.cluster.enabled() {
        // The bindings live in Redis: a local sled index would be a silent fork.
        bail!("cluster mode ([cluster] is set): bindings live in Redis and are changed through a running node's admin endpoint, and none answers at [admin] listen; start a node, or point the command at one");
    }
    let dir = dir_in(&config.data_dir);
    let listen = config.admin.listen;
    let index = tokio::task::spawn_blocking(move || Index::open(&dir))
        .await?
        .map_err(|e| match e {
            IndexError::Locked { path } => match listen {
                Some(a) => anyhow!(
                    "the index at {} is locked by another process (a running smart-presence server?), \
                     and no admin endpoint answers at {a}: enable [admin] listen in that server's \
                     configuration, or stop it to work on the data directory directly",
                    path.display()
                ),
                None => anyhow!(
                    "the index at {} is locked by another process (a running smart-presence server?), \
                     and [admin] listen is not configured, so it cannot be reached",
                    path.display()
                ),
            },
            other => anyhow::Error::new(other),
        })?;
    direct(index, cmd, region).await
}

fn import_format(file: &Path, format: Option<Format>) -> anyhow::Result<Format> {
    format.or_else(|| Format::from_path(file)).ok_or_else(|| {
        anyhow!("cannot tell the format of {} from its extension: pass --format csv|jsonl", file.display())
    })
}

fn progress_bar(len: u64) -> indicatif::ProgressBar {
    // Hidden by indicatif itself when stderr is not a terminal.
    let pb = indicatif::ProgressBar::with_draw_target(Some(len), indicatif::ProgressDrawTarget::stderr());
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})",
    ) {
        pb.set_style(style);
    }
    pb
}

fn print_summary(s: &ImportSummary) {
    for r in &s.rejections {
        eprintln!("line {}: {}", r.line, r.reason);
    }
    if s.rejected as usize > s.rejections.len() {
        eprintln!("... and {} more rejected lines", s.rejected as usize - s.rejections.len());
    }
    println!("imported {}, replaced {}, unchanged {}, rejected {}", s.imported, s.replaced, s.unchanged, s.rejected);
}

fn print_binding(b: &crate::index::Binding) {
    print_binding_fields(&b.number, &b.sip_uri, b.bound_at, b.source);
}

fn print_binding_fields(number: &dyn std::fmt::Display, sip_uri: &str, bound_at: u64, source: Source) {
    println!("{number} {sip_uri} (bound at {bound_at} by {source:?})");
}

/// A binding as the admin endpoint sends it, its number kept as the server wrote it:
/// reading it as an `E164` would check it again with phonenumber's metadata, whose lazy
/// build (~100 ms) made `bindings get` and `remove` through the server take 100-400 ms.
#[derive(serde::Deserialize)]
struct RemoteBinding {
    number: String,
    sip_uri: String,
    bound_at: u64,
    source: Source,
}

fn open_output(file: &Option<PathBuf>) -> anyhow::Result<Box<dyn std::io::Write + Send>> {
    Ok(match file {
        Some(p) => Box::new(std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?),
        None => Box::new(std::io::stdout()),
    })
}

/// Works on the data directory directly (no server holds it).
async fn direct(index: Index, cmd: BindingsCommand, region: Option<Region>) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        match cmd {
            BindingsCommand::Add { number, sip_uri } => {
                let n = parse_number(&number, region)?;
                let outcome = index.bind(n, &sip_uri, Source::Cli)?;
                println!("{n}: {}", serde_json::to_string(&outcome)?);
            }
            BindingsCommand::Remove { number } => {
                let n = parse_number(&number, region)?;
                match index.unbind(n)? {
                    Some(b) => println!("removed {} {}", b.number, b.sip_uri),
                    None => println!("{n} was not bound"),
                }
            }
            BindingsCommand::Get { number } => {
                let n = parse_number(&number, region)?;
                match index.lookup(n)? {
                    Some(b) => print_binding(&b),
                    None => bail!("{n} is not bound"),
                }
            }
            BindingsCommand::Import { file, format, strict } => {
                let format = import_format(&file, format)?;
                let f = std::fs::File::open(&file).with_context(|| format!("opening {}", file.display()))?;
                let pb = progress_bar(f.metadata().map(|m| m.len()).unwrap_or(0));
                let reader = std::io::BufReader::with_capacity(1 << 16, pb.wrap_read(f));
                let mut opts = ImportOptions::new(format);
                opts.strict = strict;
                opts.region = region;
                let result = index.import(reader, &opts);
                pb.finish_and_clear();
                match result {
                    Ok(s) => print_summary(&s),
                    Err(IndexError::StrictRejected(rej)) => {
                        for r in &rej {
                            eprintln!("line {}: {}", r.line, r.reason);
                        }
                        bail!("strict import: {} bad line(s), nothing imported", rej.len());
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            BindingsCommand::Export { file, format } => {
                let format = format.or_else(|| file.as_deref().and_then(Format::from_path)).unwrap_or(Format::Csv);
                let out = open_output(&file)?;
                let n = index.export(out, format)?;
                if file.is_some() {
                    println!("exported {n} bindings");
                }
            }
            BindingsCommand::Stats => {
                let s = index.stats()?;
                println!("{}", serde_json::to_string_pretty(&s)?);
            }
        }
        Ok(())
    })
    .await?
}

pub(super) fn encode_path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn region_query(region: Option<Region>) -> String {
    region.map(|r| format!("region={}", r.as_ref())).unwrap_or_default()
}

type ReqBody = BoxBody<Bytes, std::io::Error>;

/// A minimal HTTP/1.1 client for the admin endpoint (one connection per request), sending
/// the configured bearer token (`[admin] token`) when there is one.
pub(super) struct Client {
    addr: SocketAddr,
    token: Option<String>,
}

impl Client {
    /// `Ok(None)` when nothing listens (connection refused); an error when something
    /// answers that is not our admin endpoint.
    pub(super) async fn connect(addr: SocketAddr, token: Option<String>) -> anyhow::Result<Option<Client>> {
        let probe = tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect(addr)).await;
        match probe {
            Ok(Ok(_)) => {}
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Ok(None),
            Ok(Err(e)) => {
                tracing::debug!("admin endpoint {addr}: {e}");
                return Ok(None);
            }
            Err(_) => return Ok(None),
        }
        let c = Client { addr, token };
        let (status, body) = c.request("GET", "/health", None, Self::empty()).await?;
        let ok = status == 200
            && serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("service").and_then(|s| s.as_str()).map(|s| s == SERVICE_NAME))
                .unwrap_or(false);
        if !ok {
            bail!("something listens on {addr} (the configured admin endpoint) but it is not a smart-presence admin endpoint");
        }
        Ok(Some(c))
    }

    fn empty() -> ReqBody {
        Full::new(Bytes::new()).map_err(|never| match never {}).boxed()
    }

    pub(super) fn full(b: impl Into<Bytes>) -> ReqBody {
        Full::new(b.into()).map_err(|never| match never {}).boxed()
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: ReqBody,
    ) -> anyhow::Result<hyper::Response<hyper::body::Incoming>> {
        let stream = tokio::net::TcpStream::connect(self.addr)
            .await
            .with_context(|| format!("connecting to the admin endpoint {}", self.addr))?;
        // A request's head and body may go out in two writes: no Nagle wait between them.
        let _ = stream.set_nodelay(true);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("admin connection: {e}");
            }
        });
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, self.addr.to_string());
        if let Some(ct) = content_type {
            req = req.header(hyper::header::CONTENT_TYPE, ct);
        }
        if let Some(t) = &self.token {
            req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req.body(body)?;
        sender.send_request(req).await.with_context(|| format!("{method} {path} on {}", self.addr))
    }

    pub(super) async fn request(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: ReqBody,
    ) -> anyhow::Result<(u16, Bytes)> {
        let resp = self.send(method, path, content_type, body).await?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

pub(super) fn api_error(status: u16, body: &[u8]) -> anyhow::Error {
    let msg = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    if status == 401 {
        return anyhow!(
            "admin endpoint answered 401: {msg}; set admin.token (or admin.token_file) in the configuration \
             given with --config to the server's token"
        );
    }
    anyhow!("admin endpoint answered {status}: {msg}")
}

/// Works through the running server's admin endpoint.
async fn remote(c: Client, cmd: BindingsCommand, region: Option<Region>) -> anyhow::Result<()> {
    let rq = region_query(region);
    match cmd {
        BindingsCommand::Add { number, sip_uri } => {
            let path = format!("/bindings/{}?{rq}", encode_path_segment(&number));
            let body = serde_json::to_vec(&serde_json::json!({"sip_uri": sip_uri}))?;
            let (st, b) = c.request("PUT", &path, Some("application/json"), Client::full(body)).await?;
            if st != 200 {
                return Err(api_error(st, &b));
            }
            let v: serde_json::Value = serde_json::from_slice(&b)?;
            let n = v["binding"]["number"].as_str().unwrap_or(&number).to_string();
            let mut outcome = v.clone();
            if let Some(o) = outcome.as_object_mut() {
                o.remove("binding");
            }
            println!("{n}: {outcome}");
        }
        BindingsCommand::Remove { number } => {
            let path = format!("/bindings/{}?{rq}", encode_path_segment(&number));
            let (st, b) = c.request("DELETE", &path, None, Client::empty()).await?;
            match st {
                200 => {
                    let b: RemoteBinding = serde_json::from_slice(&b)?;
                    println!("removed {} {}", b.number, b.sip_uri);
                }
                404 => println!("{number} was not bound"),
                _ => return Err(api_error(st, &b)),
            }
        }
        BindingsCommand::Get { number } => {
            let path = format!("/bindings/{}?{rq}", encode_path_segment(&number));
            let (st, b) = c.request("GET", &path, None, Client::empty()).await?;
            match st {
                200 => {
                    let b: RemoteBinding = serde_json::from_slice(&b)?;
                    print_binding_fields(&b.number, &b.sip_uri, b.bound_at, b.source);
                }
                404 => bail!("{number} is not bound"),
                _ => return Err(api_error(st, &b)),
            }
        }
        BindingsCommand::Import { file, format, strict } => {
            let format = import_format(&file, format)?;
            let mut f = tokio::fs::File::open(&file).await.with_context(|| format!("opening {}", file.display()))?;
            let len = f.metadata().await.map(|m| m.len()).unwrap_or(0);
            let pb = progress_bar(len);
            let (tx, rx) = tokio::sync::mpsc::channel(8);
            let pb2 = pb.clone();
            let reader = tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                loop {
                    let mut buf = vec![0u8; 1 << 16];
                    match f.read(&mut buf).await {
                        Ok(0) => break,
                        Ok(n) => {
                            buf.truncate(n);
                            pb2.inc(n as u64);
                            if tx.send(Ok(Bytes::from(buf))).await.is_err() {
                                break;
                            }
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e)).await;
                            break;
                        }
                    }
                }
            });
            let path = format!("/import?format={}&strict={strict}&{rq}", format.name());
            let body = ChannelBody { rx }.boxed();
            let result = c.request("POST", &path, Some(format.mime()), body).await;
            reader.abort();
            pb.finish_and_clear();
            let (st, b) = result?;
            match st {
                200 => print_summary(&serde_json::from_slice(&b)?),
                _ => return Err(api_error(st, &b)),
            }
        }
        BindingsCommand::Export { file, format } => {
            let format = format.or_else(|| file.as_deref().and_then(Format::from_path)).unwrap_or(Format::Csv);
            let resp = c.send("GET", &format!("/export?format={}", format.name()), None, Client::empty()).await?;
            let status = resp.status().as_u16();
            let mut body = resp.into_body();
            if status != 200 {
                let b = body.collect().await?.to_bytes();
                return Err(api_error(status, &b));
            }
            // A CLI writing its output: plain blocking writes are fine here.
            let mut out = open_output(&file)?;
            let mut lines = 0u64;
            while let Some(frame) = body.frame().await {
                let frame = frame.context("export interrupted")?;
                if let Ok(data) = frame.into_data() {
                    lines += data.iter().filter(|&&b| b == b'\n').count() as u64;
                    out.write_all(&data)?;
                }
            }
            out.flush()?;
            if file.is_some() {
                let n = if format == Format::Csv { lines.saturating_sub(1) } else { lines };
                println!("exported {n} bindings");
            }
        }
        BindingsCommand::Stats => {
            let (st, b) = c.request("GET", "/stats", None, Client::empty()).await?;
            if st != 200 {
                return Err(api_error(st, &b));
            }
            let v: serde_json::Value = serde_json::from_slice(&b)?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
    }
    let _ = std::io::stdout().flush();
    Ok(())
}
