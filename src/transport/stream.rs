//! TCP and TLS connections: accept, frame by Content-Length, answer keep-alives, write
//! queued messages, close on idle, oversize input or errors. A message that cannot be
//! framed gets its error response (413, 513, 400) before the close, when its head says
//! enough to answer it.

use super::connections::ConnHandle;
use super::{Protocol, SendError, Sender, Source};
use crate::sip::framing::{Frame, Framer, FramingError};
use bytes::Bytes;
use socket2::{Domain, Socket, Type};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const WRITE_QUEUE: usize = 1024;
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a closing connection may take to write what is queued (an error response).
const LINGER: Duration = Duration::from_secs(2);
/// The most a closing connection reads and drops (see `drain`).
const DRAIN_MAX: usize = 1 << 20;

pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

pub async fn accept_loop(listener: TcpListener, tls: Option<tokio_rustls::TlsAcceptor>, sender: Arc<Sender>) {
    let mut shutdown = sender.shutdown.clone();
    let protocol = if tls.is_some() { Protocol::Tls } else { Protocol::Tcp };
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.changed() => return,
        };
        let (tcp, remote) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!("{protocol:?} accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(slot) = sender.limits.sources.open_connection(remote.ip(), sender.limits.max_connections) else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let sender = sender.clone();
        match tls.clone() {
            None => {
                tokio::spawn(async move { serve(tcp, Protocol::Tcp, remote, sender).await; drop(slot) });
            }
            Some(acceptor) => {
                tokio::spawn(async move {
                    let _slot = slot;
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => serve(stream, Protocol::Tls, remote, sender).await,
                        Ok(Err(e)) => tracing::debug!(%remote, "TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!(%remote, "TLS handshake timed out"),
                    }
                });
            }
        }
    }
}

/// Opens a TCP connection to a client that has none open (its Contact, say).
pub async fn connect(remote: SocketAddr, sender: &Arc<Sender>) -> Result<ConnHandle, SendError> {
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(remote))
        .await
        .map_err(|_| SendError::NoConnection(remote))??;
    let _ = tcp.set_nodelay(true);
    let local = tcp.local_addr()?;
    let (handle, rx) = register(sender, Protocol::Tcp, remote);
    let (id, sender) = (handle.id, sender.clone());
    tokio::spawn(async move { run_connection(tcp, id, rx, Protocol::Tcp, remote, local, sender).await });
    Ok(handle)
}

fn register(sender: &Sender, protocol: Protocol, remote: SocketAddr) -> (ConnHandle, mpsc::Receiver<Bytes>) {
    let (tx, rx) = mpsc::channel(WRITE_QUEUE);
    let handle = sender.connections.insert(protocol, remote, tx);
    (handle, rx)
}

async fn serve<S>(stream: S, protocol: Protocol, remote: SocketAddr, sender: Arc<Sender>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let local = match local_addr_of(&stream) {
        Some(a) => a,
        None => return,
    };
    let (handle, rx) = register(&sender, protocol, remote);
    let id = handle.id;
    drop(handle); // the writer ends once the table's copy goes too
    run_connection(stream, id, rx, protocol, remote, local, sender).await;
}

/// The local address; TLS wraps TCP, so both expose it through this trait.
fn local_addr_of<S: 'static>(stream: &S) -> Option<SocketAddr> {
    let any = stream as &dyn std::any::Any;
    if let Some(tcp) = any.downcast_ref::<TcpStream>() {
        return tcp.local_addr().ok();
    }
    any.downcast_ref::<tokio_rustls::server::TlsStream<TcpStream>>()
        .and_then(|tls| tls.get_ref().0.local_addr().ok())
}

async fn run_connection<S>(
    stream: S,
    id: super::ConnId,
    rx: mpsc::Receiver<Bytes>,
    protocol: Protocol,
    remote: SocketAddr,
    local: SocketAddr,
    sender: Arc<Sender>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut reader, writer) = tokio::io::split(stream);
    let mut writer_task = tokio::spawn(write_loop(writer, rx));
    let source = Source { protocol, remote, local, conn: Some(id) };
    let (end, writer_done) = tokio::select! {
        end = read_loop(&mut reader, source, &sender) => (end, false),
        end = &mut writer_task => (end.unwrap_or(End::quiet("writer failed")), true),
    };
    tracing::debug!(%remote, "{protocol:?} connection closed: {}", end.reason);
    sender.connections.remove(id, protocol, remote);
    // Out of the table, the writer sees its queue end once it is written, and shuts down.
    if !writer_done && tokio::time::timeout(LINGER, &mut writer_task).await.is_err() {
        writer_task.abort();
    } else if end.refused {
        drain(&mut reader).await;
    }
}

/// Why a connection ends. `refused`: on input we refused, while the peer may still be
/// sending; the close then lingers so that our error response is not lost.
struct End {
    reason: String,
    refused: bool,
}

impl End {
    fn quiet(reason: impl Into<String>) -> End {
        End { reason: reason.into(), refused: false }
    }
}

/// A lingering close: reads and drops what the peer still sends, until it closes, LINGER
/// passes or DRAIN_MAX bytes went, so that unread input does not make the kernel reset the
/// connection, which would discard the error response not yet delivered.
async fn drain<R: AsyncRead + Unpin>(reader: &mut R) {
    let mut buf = vec![0u8; 8192];
    let mut left = DRAIN_MAX;
    let _ = tokio::time::timeout(LINGER, async {
        while left > 0 {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}

async fn read_loop<R: AsyncRead + Unpin>(reader: &mut R, source: Source, sender: &Sender) -> End {
    let mut framer = Framer::new(sender.limits.max_message);
    let mut shutdown = sender.shutdown.clone();
    let mut started: Option<tokio::time::Instant> = None; // when the pending partial message began
    loop {
        loop {
            match framer.next_frame() {
                Ok(Some(Frame::Message(data))) => {
                    started = None;
                    if let Some(sink) = sender.sink.get() {
                        sink.receive(data, source);
                    }
                }
                Ok(Some(Frame::Ping)) => {
                    if let Some(conn) = source.conn.and_then(|id| sender.connections.get(id)) {
                        let _ = conn.try_send(Bytes::from_static(b"\r\n"));
                    }
                }
                Ok(None) => break,
                Err(e) => return refuse(&framer, &e, source, sender),
            }
        }
        let buf = framer.buffer();
        let partial = buf.iter().any(|b| !matches!(b, b'\r' | b'\n'));
        started = if partial { Some(started.unwrap_or_else(tokio::time::Instant::now)) } else { None };
        let wait = started.map_or(sender.limits.idle_timeout, |t| sender.limits.read_timeout.saturating_sub(t.elapsed()));
        buf.reserve(8192);
        let read = tokio::select! {
            r = tokio::time::timeout(wait.min(sender.limits.idle_timeout), reader.read_buf(buf)) => r,
            _ = shutdown.changed() => return End::quiet("server shutting down"),
        };
        match read {
            Ok(Ok(0)) => return End::quiet("closed by peer"),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return End::quiet(format!("read error: {e}")),
            Err(_) if started.is_some() => return End::quiet("incomplete message: read timeout"),
            Err(_) => return End::quiet("idle timeout"),
        }
    }
}

/// Queues the error response a framing error earns, when the message can be answered,
/// and logs it; the caller closes the connection.
fn refuse(framer: &Framer, error: &FramingError, source: Source, sender: &Sender) -> End {
    let limits = &sender.limits.sources;
    let (status, reason) = error.status();
    let conn = source.conn.and_then(|id| sender.connections.get(id));
    match (framer.refusal(error), conn) {
        (Some(answer), Some(conn)) => {
            let _ = conn.try_send(answer);
            match status {
                400 => limits.log_malformed(source.remote, source.protocol.via_name(), reason, "answered 400, closing the connection"),
                _ => limits.log_refusal(source.remote, status, reason),
            }
        }
        _ => limits.log_malformed(source.remote, source.protocol.via_name(), &error.to_string(), "closing the connection"),
    }
    End { reason: format!("framing error: {error}"), refused: true }
}

/// Writes queued messages until the queue ends or an empty message (`Sender::close`).
async fn write_loop<W: AsyncWrite + Unpin>(mut writer: W, mut rx: mpsc::Receiver<Bytes>) -> End {
    let mut end = End::quiet("write queue closed");
    while let Some(data) = rx.recv().await {
        if data.is_empty() {
            end = End { reason: "closed after a message that could not be read".into(), refused: true };
            break;
        }
        if writer.write_all(&data).await.is_err() {
            return End::quiet("write error");
        }
    }
    let _ = writer.shutdown().await;
    end
}
