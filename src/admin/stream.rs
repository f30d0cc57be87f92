//! Streaming between async HTTP bodies and the blocking import/export of the index: a
//! reader over received chunks, a writer into a channel, and a body out of that channel.
//! Plumbing only; it knows nothing of the index.

use bytes::Bytes;
use std::pin::Pin;
use std::task::{Context, Poll};

/// A `Read` over chunks sent from async code (used from a blocking thread). The end of the
/// channel is the end of input; an error item is a read error.
pub(crate) struct ChannelReader {
    pub(crate) rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
    pub(crate) cur: Bytes,
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        let _ = self.cur.split_to(n);
        Ok(n)
    }
}

/// A `Write` (from a blocking thread) feeding a [`ChannelBody`].
pub(crate) struct ChannelWriter {
    pub(crate) tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tx
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "receiver gone"))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// An HTTP body streamed from a channel (export responses, import uploads).
pub(crate) struct ChannelBody {
    pub(crate) rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        self.rx.poll_recv(cx).map(|o| o.map(|r| r.map(http_body::Frame::data)))
    }
}
