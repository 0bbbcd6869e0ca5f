//! Response writes coalesced into as few `send`s as possible.
//!
//! Pingora writes a response head and each body chunk separately and flushes
//! after the body; on a plain `TcpStream` that is two syscalls and two TCP
//! segments per small response, and two wake-ups for the player. This wrapper
//! buffers writes until Pingora flushes, so a playlist and its head leave in
//! one segment. Bodies larger than the buffer bypass it (no extra copy).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::SslDigest;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufWriter, ReadBuf};

/// Bytes held back until a flush; larger writes go straight through.
const WRITE_BUFFER: usize = 16 * 1024;

#[derive(Debug)]
pub struct Coalesced<S: AsyncRead + AsyncWrite> {
    inner: BufWriter<S>,
}

impl<S: AsyncRead + AsyncWrite> Coalesced<S> {
    pub fn new(stream: S) -> Self {
        Coalesced {
            inner: BufWriter::with_capacity(WRITE_BUFFER, stream),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Coalesced<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Coalesced<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl<S: AsyncRead + AsyncWrite + Shutdown + Unpin + Send> Shutdown for Coalesced<S> {
    async fn shutdown(&mut self) {
        let _ = self.inner.flush().await;
        self.inner.get_mut().shutdown().await;
    }
}

impl<S: AsyncRead + AsyncWrite + UniqueID> UniqueID for Coalesced<S> {
    fn id(&self) -> UniqueIDType {
        self.inner.get_ref().id()
    }
}

impl<S: AsyncRead + AsyncWrite + Ssl> Ssl for Coalesced<S> {
    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ref().get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.get_ref().selected_alpn_proto()
    }
}

impl<S: AsyncRead + AsyncWrite + GetTimingDigest> GetTimingDigest for Coalesced<S> {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_ref().get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_ref().get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_ref().get_write_pending_time()
    }
}

impl<S: AsyncRead + AsyncWrite + GetProxyDigest> GetProxyDigest for Coalesced<S> {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_ref().get_proxy_digest()
    }
}

impl<S: AsyncRead + AsyncWrite + GetSocketDigest> GetSocketDigest for Coalesced<S> {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_ref().get_socket_digest()
    }
}

#[async_trait]
impl<S: AsyncRead + AsyncWrite + Peek + Unpin + Send> Peek for Coalesced<S> {
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        self.inner.get_mut().try_peek(buf).await
    }
}
