//! Write buffering: response writes gathered into as few `send`s as possible.
//!
//! Pingora writes a response head and each body chunk separately and flushes
//! after the body; on a plain `TcpStream` that is two syscalls and two TCP
//! segments per small response, and two wake-ups for the player. This wrapper
//! buffers writes until Pingora flushes, so a playlist and its head leave in
//! one segment; a held-back head and a body too large to hold leave together
//! in one `writev`, without copying the body.
//!
//! It also bounds the wait for a TLS connection's first bytes
//! ([`WriteBuffered::with_first_read_deadline`]): an HTTP/2 connection is
//! served by Pingora's h2 handshake, which waits for the client preface
//! without a deadline, before any request head deadline applies.

use std::future::Future;
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
use std::task::ready;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

/// Bytes held back until a flush; larger writes go straight through.
pub const WRITE_BUFFER: usize = 16 * 1024;

#[derive(Debug)]
pub struct WriteBuffered<S> {
    inner: S,
    /// Writes held back until a flush or a write too large to hold.
    pending: Vec<u8>,
    /// Until the client has sent its first bytes: when they are due.
    first_read: Option<FirstRead>,
}

/// A deadline for the first `left` bytes a client sends.
struct FirstRead {
    left: usize,
    due: Pin<Box<tokio::time::Sleep>>,
    /// Called once if the deadline passes (a metric).
    on_expiry: Box<dyn Fn() + Send + Sync>,
}

impl std::fmt::Debug for FirstRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FirstRead")
            .field("left", &self.left)
            .field("due", &self.due.deadline())
            .finish_non_exhaustive()
    }
}

impl<S> WriteBuffered<S> {
    pub fn new(stream: S) -> Self {
        WriteBuffered {
            inner: stream,
            pending: Vec::with_capacity(WRITE_BUFFER),
            first_read: None,
        }
    }

    /// Reads fail with `TimedOut` (and `on_expiry` runs) if the client has
    /// not sent `bytes` bytes by `due`; after that, no deadline.
    pub fn with_first_read_deadline(
        mut self,
        bytes: usize,
        due: tokio::time::Instant,
        on_expiry: impl Fn() + Send + Sync + 'static,
    ) -> Self {
        self.first_read = Some(FirstRead {
            left: bytes,
            due: Box::pin(tokio::time::sleep_until(due)),
            on_expiry: Box::new(on_expiry),
        });
        self
    }

    fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncWrite + Unpin> WriteBuffered<S> {
    /// Send what is held back.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while !self.pending.is_empty() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.pending.drain(..n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteBuffered<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let Some(first) = this.first_read.as_mut() else {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        };
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let read = buf.filled().len() - before;
                first.left = first.left.saturating_sub(read);
                if first.left == 0 || read == 0 {
                    this.first_read = None;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                if first.due.as_mut().poll(cx).is_ready() {
                    (first.on_expiry)();
                    this.first_read = None;
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "no request within the head deadline",
                    )));
                }
                Poll::Pending
            }
            ready => ready,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteBuffered<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        if this.pending.len() + buf.len() <= WRITE_BUFFER {
            this.pending.extend_from_slice(buf);
            return Poll::Ready(Ok(buf.len()));
        }
        if this.pending.is_empty() {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        }
        // A held-back head and a large body leave in one writev.
        loop {
            let slices = [
                std::io::IoSlice::new(&this.pending),
                std::io::IoSlice::new(buf),
            ];
            let n = ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, &slices))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            if n >= this.pending.len() {
                let body = n - this.pending.len();
                this.pending.clear();
                if body > 0 {
                    return Poll::Ready(Ok(body));
                }
                return Pin::new(&mut this.inner).poll_write(cx, buf);
            }
            this.pending.drain(..n);
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl<S: AsyncWrite + Shutdown + Unpin + Send> Shutdown for WriteBuffered<S> {
    async fn shutdown(&mut self) {
        let _ = AsyncWriteExt::flush(self).await;
        Shutdown::shutdown(&mut self.inner).await;
    }
}

impl<S: UniqueID> UniqueID for WriteBuffered<S> {
    fn id(&self) -> UniqueIDType {
        self.get_ref().id()
    }
}

impl<S: Ssl> Ssl for WriteBuffered<S> {
    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.get_ref().get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.get_ref().selected_alpn_proto()
    }
}

impl<S: GetTimingDigest> GetTimingDigest for WriteBuffered<S> {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.get_ref().get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.get_ref().get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.get_ref().get_write_pending_time()
    }
}

impl<S: GetProxyDigest> GetProxyDigest for WriteBuffered<S> {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.get_ref().get_proxy_digest()
    }
}

impl<S: GetSocketDigest> GetSocketDigest for WriteBuffered<S> {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.get_ref().get_socket_digest()
    }
}

#[async_trait]
impl<S: Peek + Unpin + Send> Peek for WriteBuffered<S> {
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records every write call: (number of slices, bytes taken).
    #[derive(Default)]
    struct Recorder {
        calls: Vec<(usize, usize)>,
        data: Vec<u8>,
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            self.calls.push((1, buf.len()));
            self.data.extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[std::io::IoSlice<'_>],
        ) -> Poll<std::io::Result<usize>> {
            let n: usize = bufs.iter().map(|b| b.len()).sum();
            self.calls.push((bufs.len(), n));
            for b in bufs {
                self.data.extend_from_slice(b);
            }
            Poll::Ready(Ok(n))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_small_response_is_one_write_and_a_large_body_joins_its_head() {
        let mut small = WriteBuffered::new(Recorder::default());
        small
            .write_all(b"HTTP/1.1 200 OK\r\n\r\n")
            .await
            .expect("head");
        small.write_all(&[7u8; 1000]).await.expect("body");
        assert!(
            small.inner.calls.is_empty(),
            "nothing sent before the flush"
        );
        small.flush().await.expect("flush");
        assert_eq!(small.inner.calls, vec![(1, 19 + 1000)]);

        let mut large = WriteBuffered::new(Recorder::default());
        large
            .write_all(b"HTTP/1.1 200 OK\r\n\r\n")
            .await
            .expect("head");
        large.write_all(&vec![9u8; 100_000]).await.expect("body");
        large.flush().await.expect("flush");
        assert_eq!(
            large.inner.calls,
            vec![(2, 19 + 100_000)],
            "head and body in one writev"
        );
        assert_eq!(large.inner.data.len(), 100_019);
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_silent_past_the_first_read_deadline_gets_timed_out() {
        use tokio::io::AsyncReadExt;
        let expired = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = expired.clone();
        let (client, server) = tokio::io::duplex(64);
        let due = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut silent = WriteBuffered::new(server).with_first_read_deadline(24, due, move || {
            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        });
        let mut buf = [0u8; 24];
        let err = silent.read(&mut buf).await.expect_err("timed out");
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert_eq!(expired.load(std::sync::atomic::Ordering::Relaxed), 1);
        drop(client);

        // A client that sends its 24 bytes in time is read, and then may
        // go quiet for as long as it likes.
        let (mut client, server) = tokio::io::duplex(64);
        let due = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut prompt = WriteBuffered::new(server).with_first_read_deadline(24, due, || {});
        client.write_all(&[b'P'; 24]).await.expect("write");
        prompt.read_exact(&mut buf).await.expect("preface");
        tokio::time::sleep(Duration::from_secs(60)).await;
        client.write_all(b"x").await.expect("write");
        let mut one = [0u8; 1];
        prompt
            .read_exact(&mut one)
            .await
            .expect("no deadline after the preface");
    }
}
