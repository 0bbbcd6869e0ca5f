//! h3's QUIC traits over quinn, sending response bodies without copying them.
//!
//! # Why not h3-quinn
//!
//! h3-quinn writes every frame with `quinn::SendStream::poll_write(chunk())`,
//! which copies each body chunk into quinn's send buffer: for a cached 2 MB
//! segment that is 2 MB of `memmove` per response, about 7 % of the edge's CPU
//! under HTTP/3 load (benches/README.md). quinn can queue `Bytes` by reference
//! (`SendStream::write_chunks`); the cached body already is `Bytes`.
//!
//! # How the body reaches quinn by reference
//!
//! h3 0.0.8 wraps what `RequestStream::send_data(B)` gets in a
//! [`WriteBuf<B>`](h3::quic::WriteBuf): the DATA frame header, encoded in a
//! small array inside the `WriteBuf`, then the payload `B`. Its fields are
//! private and it only offers [`Buf`], whose `copy_to_bytes` is the default,
//! copying one, so it never reaches the payload's own `copy_to_bytes`. h3's
//! unframed send path (`SendStreamUnframed`) is only reachable from
//! WebTransport, not from a request stream.
//!
//! What `WriteBuf` does guarantee is that `chunk()` yields the header first
//! and, once the header is consumed, exactly `payload.chunk()`. So the
//! payload type is ours, [`BodyChunk`], and its `chunk()` *lends* the `Bytes`
//! it slices from: while [`wire_pieces`] is asking for a chunk, `BodyChunk`
//! leaves a clone of its `Bytes` (a reference count, no data) in a
//! thread-local slot, and `wire_pieces` queues that clone instead of copying
//! the slice. The slot is armed and emptied within one synchronous call on one
//! thread, so no other stream or task can see it, and a lent `Bytes` is only
//! used when it starts at the very address and has the very length of the
//! slice `chunk()` returned. Everything else (frame headers, HEADERS blocks,
//! control-stream frames) is copied, as h3-quinn did: a few hundred bytes per
//! response.
//!
//! # Order between a connection's streams
//!
//! quinn sends a connection's streams in priority order, and among equal
//! priorities in the order they last became ready to send; it charges a
//! write against the connection's flow-control window (the client's
//! `MAX_DATA`, our `send_window`) when the bytes are *queued*, and when the
//! window opens it wakes every blocked writer at once. So with several
//! large responses on one connection the window went to whichever task ran
//! first, a stream that got a little of it went to the back of the send
//! order each time, and a few responses waited several times longer than
//! the rest: `h3_load`'s p99 was 2–3x HTTP/2's (benches/README.md).
//!
//! Now a connection's streams take turns in the order they arrived
//! ([`SendOrder`]): each gets a quinn priority from its place in line, so
//! older responses are sent first, and only the first stream in line with
//! bytes to hand over gives quinn all of them; the others give at most
//! [`SHARE`] per turn and yield, so an opening window goes mostly to the
//! stream that is sent next. A stream's first frame (its HEADERS, a few
//! hundred bytes) always goes in whole. Nothing waits on another stream: a
//! stream that its client stopped reading (its own window shut) does not
//! hold the others back, they just get shares meanwhile.
//!
//! The rest is plain: quinn's `write_chunks` and `read_chunk` register their
//! waker with the connection rather than in the future, and write or read
//! nothing unless they resolve (documented as cancel-safe), so each poll
//! builds the future, polls it once and drops it; no boxed futures per stream.

use std::cell::Cell;
use std::collections::BTreeSet;
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use h3::error::Code;
use h3::quic::{self, ConnectionErrorIncoming, StreamErrorIncoming, StreamId, WriteBuf};
use quinn::VarInt;

/// A response body chunk, handed to quinn without copying (see the module docs).
#[derive(Clone, Debug, Default)]
pub struct BodyChunk(Bytes);

impl From<Bytes> for BodyChunk {
    fn from(bytes: Bytes) -> Self {
        BodyChunk(bytes)
    }
}

impl Buf for BodyChunk {
    fn remaining(&self) -> usize {
        self.0.len()
    }

    fn chunk(&self) -> &[u8] {
        LENDING.with(|slot| {
            if slot.listening.get() {
                slot.lent.set(Some(self.0.clone()));
            }
        });
        &self.0
    }

    fn advance(&mut self, cnt: usize) {
        self.0.advance(cnt);
    }

    fn copy_to_bytes(&mut self, len: usize) -> Bytes {
        self.0.split_to(len)
    }
}

/// Where a [`BodyChunk`] leaves its `Bytes` while [`wire_pieces`] listens.
struct Lending {
    listening: Cell<bool>,
    lent: Cell<Option<Bytes>>,
}

thread_local! {
    static LENDING: Lending = const {
        Lending { listening: Cell::new(false), lent: Cell::new(None) }
    };
}

/// `buf.chunk()`, and the `Bytes` it is a view of if a [`BodyChunk`] lent it.
fn chunk_and_owner<W: Buf>(buf: &W) -> (&[u8], Option<Bytes>) {
    LENDING.with(|slot| {
        slot.lent.set(None);
        slot.listening.set(true);
    });
    let chunk = buf.chunk();
    let lent = LENDING.with(|slot| {
        slot.listening.set(false);
        slot.lent.take()
    });
    let owner = lent.filter(|b| b.as_ptr() == chunk.as_ptr() && b.len() == chunk.len());
    (chunk, owner)
}

/// Drain `buf` (an h3 frame: header, then payload) into `Bytes` for quinn:
/// the payload by reference when it is a [`BodyChunk`], anything else copied.
/// Returns how many bytes had to be copied.
fn wire_pieces<W: Buf>(mut buf: W, out: &mut Vec<Bytes>) -> usize {
    let mut copied = 0;
    while buf.has_remaining() {
        let (chunk, owner) = chunk_and_owner(&buf);
        let len = chunk.len();
        if len == 0 {
            break;
        }
        let piece = owner.unwrap_or_else(|| {
            copied += len;
            Bytes::copy_from_slice(chunk)
        });
        out.push(piece);
        buf.advance(len);
    }
    copied
}

fn connection_error(e: quinn::ConnectionError) -> ConnectionErrorIncoming {
    match e {
        quinn::ConnectionError::ApplicationClosed(close) => {
            ConnectionErrorIncoming::ApplicationClose {
                error_code: close.error_code.into_inner(),
            }
        }
        quinn::ConnectionError::TimedOut => ConnectionErrorIncoming::Timeout,
        // The h3 front door tells normal closes apart by downcasting these.
        other => ConnectionErrorIncoming::Undefined(Arc::new(other)),
    }
}

fn stream_connection_error(e: quinn::ConnectionError) -> StreamErrorIncoming {
    StreamErrorIncoming::ConnectionErrorIncoming {
        connection_error: connection_error(e),
    }
}

fn write_error(e: quinn::WriteError) -> StreamErrorIncoming {
    match e {
        quinn::WriteError::Stopped(code) => StreamErrorIncoming::StreamTerminated {
            error_code: code.into_inner(),
        },
        quinn::WriteError::ConnectionLost(e) => stream_connection_error(e),
        other => StreamErrorIncoming::Unknown(Box::new(other)),
    }
}

fn read_error(e: quinn::ReadError) -> StreamErrorIncoming {
    match e {
        quinn::ReadError::Reset(code) => StreamErrorIncoming::StreamTerminated {
            error_code: code.into_inner(),
        },
        quinn::ReadError::ConnectionLost(e) => stream_connection_error(e),
        other => StreamErrorIncoming::Unknown(Box::new(other)),
    }
}

fn stream_id(id: quinn::StreamId) -> StreamId {
    // QUIC stream ids are varints, which is all h3 checks for.
    StreamId::try_from(u64::from(id)).expect("a QUIC stream id is a varint")
}

/// An error code for quinn; h3 only passes codes it got from the wire or
/// its own (all varints), so the fallback is never used in practice.
fn var_int(code: u64) -> VarInt {
    VarInt::from_u64(code).unwrap_or(VarInt::MAX)
}

/// A stream being accepted or opened; kept across polls because quinn's
/// accept and open futures wait on a `Notify` that forgets a dropped waiter.
type Pending<T> =
    Option<Pin<Box<dyn Future<Output = Result<T, quinn::ConnectionError>> + Send + Sync>>>;

fn poll_pending<T, F>(
    pending: &mut Pending<T>,
    cx: &mut Context<'_>,
    start: impl FnOnce() -> F,
) -> Poll<Result<T, quinn::ConnectionError>>
where
    F: Future<Output = Result<T, quinn::ConnectionError>> + Send + Sync + 'static,
{
    let future = pending.get_or_insert_with(|| Box::pin(start()));
    let out = ready!(future.as_mut().poll(cx));
    *pending = None;
    Poll::Ready(out)
}

/// One QUIC connection, as h3 sees it.
pub struct Connection {
    conn: quinn::Connection,
    accepting_bidi: Pending<(quinn::SendStream, quinn::RecvStream)>,
    accepting_uni: Pending<quinn::RecvStream>,
    opener: OpenStreams,
    order: Arc<SendOrder>,
}

impl Connection {
    pub fn new(conn: quinn::Connection) -> Self {
        let order = Arc::new(SendOrder::default());
        Connection {
            opener: OpenStreams::new(conn.clone(), order.clone()),
            conn,
            accepting_bidi: None,
            accepting_uni: None,
            order,
        }
    }
}

impl quic::Connection<BodyChunk> for Connection {
    type RecvStream = RecvStream;
    type OpenStreams = OpenStreams;

    fn poll_accept_recv(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<RecvStream, ConnectionErrorIncoming>> {
        let conn = self.conn.clone();
        let recv = ready!(poll_pending(&mut self.accepting_uni, cx, || async move {
            conn.accept_uni().await
        }))
        .map_err(connection_error)?;
        Poll::Ready(Ok(RecvStream { stream: recv }))
    }

    fn poll_accept_bidi(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<BidiStream, ConnectionErrorIncoming>> {
        let conn = self.conn.clone();
        let (send, recv) = ready!(poll_pending(&mut self.accepting_bidi, cx, || async move {
            conn.accept_bi().await
        }))
        .map_err(connection_error)?;
        Poll::Ready(Ok(BidiStream::new(send, recv, &self.order)))
    }

    fn opener(&self) -> OpenStreams {
        OpenStreams::new(self.conn.clone(), self.order.clone())
    }
}

impl quic::OpenStreams<BodyChunk> for Connection {
    type BidiStream = BidiStream;
    type SendStream = SendStream;

    fn poll_open_bidi(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<BidiStream, StreamErrorIncoming>> {
        self.opener.poll_open_bidi(cx)
    }

    fn poll_open_send(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<SendStream, StreamErrorIncoming>> {
        self.opener.poll_open_send(cx)
    }

    fn close(&mut self, code: Code, reason: &[u8]) {
        self.opener.close(code, reason);
    }
}

/// Opens streams on a connection (h3's control and QPACK streams).
pub struct OpenStreams {
    conn: quinn::Connection,
    order: Arc<SendOrder>,
    opening_bidi: Pending<(quinn::SendStream, quinn::RecvStream)>,
    opening_uni: Pending<quinn::SendStream>,
}

impl OpenStreams {
    fn new(conn: quinn::Connection, order: Arc<SendOrder>) -> Self {
        OpenStreams {
            conn,
            order,
            opening_bidi: None,
            opening_uni: None,
        }
    }
}

impl Clone for OpenStreams {
    fn clone(&self) -> Self {
        OpenStreams::new(self.conn.clone(), self.order.clone())
    }
}

impl quic::OpenStreams<BodyChunk> for OpenStreams {
    type BidiStream = BidiStream;
    type SendStream = SendStream;

    fn poll_open_bidi(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<BidiStream, StreamErrorIncoming>> {
        let conn = self.conn.clone();
        let (send, recv) = ready!(poll_pending(&mut self.opening_bidi, cx, || async move {
            conn.open_bi().await
        }))
        .map_err(stream_connection_error)?;
        Poll::Ready(Ok(BidiStream::new(send, recv, &self.order)))
    }

    fn poll_open_send(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<SendStream, StreamErrorIncoming>> {
        let conn = self.conn.clone();
        let send = ready!(poll_pending(&mut self.opening_uni, cx, || async move {
            conn.open_uni().await
        }))
        .map_err(stream_connection_error)?;
        Poll::Ready(Ok(SendStream::new(send, &self.order)))
    }

    fn close(&mut self, code: Code, reason: &[u8]) {
        self.conn.close(var_int(code.value()), reason);
    }
}

/// The sending half of a stream: what h3 handed over and quinn has not taken yet.
pub struct SendStream {
    stream: quinn::SendStream,
    /// One frame's pieces (header, payload), front first; quinn empties or
    /// shortens them as flow control lets it take them.
    queued: Vec<Bytes>,
    /// The connection's line of streams, and this stream's place in it.
    order: Arc<SendOrder>,
    place: u64,
    /// Whether the first frame (the HEADERS) is with quinn.
    head_sent: bool,
}

impl SendStream {
    fn new(stream: quinn::SendStream, order: &Arc<SendOrder>) -> Self {
        let place = order.join();
        // Fails only on a stream that is already closed.
        let _ = stream.set_priority(priority(place));
        SendStream {
            stream,
            queued: Vec::with_capacity(2),
            order: order.clone(),
            place,
            head_sent: false,
        }
    }

    /// Queue one frame's bytes; `poll_ready` hands them to quinn.
    fn enqueue<W: Buf>(&mut self, frame: W) {
        let copied = wire_pieces(frame, &mut self.queued);
        #[cfg(test)]
        tests::COPIED.with(|c| c.set(c.get() + copied));
        #[cfg(not(test))]
        let _ = copied;
    }
}

impl quic::SendStream<BodyChunk> for SendStream {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamErrorIncoming>> {
        if self.queued.is_empty() {
            return Poll::Ready(Ok(()));
        }
        let whole = !self.head_sent || self.order.is_first(self.place);
        while !self.queued.is_empty() {
            if whole {
                let written = {
                    let write = pin!(self.stream.write_chunks(&mut self.queued));
                    ready!(write.poll(cx)).map_err(write_error)?
                };
                self.queued.drain(..written.chunks);
            } else {
                let mut share = front_share(&self.queued, SHARE);
                let written = {
                    let write = pin!(self.stream.write_chunks(&mut share));
                    ready!(write.poll(cx)).map_err(write_error)?
                };
                drop_front(&mut self.queued, written.bytes);
                if !self.queued.is_empty() {
                    // Streams ahead in line take the window first; back next turn.
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
            }
        }
        self.head_sent = true;
        self.order.leave(self.place);
        Poll::Ready(Ok(()))
    }

    fn send_data<T: Into<WriteBuf<BodyChunk>>>(
        &mut self,
        data: T,
    ) -> Result<(), StreamErrorIncoming> {
        if !self.queued.is_empty() {
            // h3 waits for poll_ready between frames; anything else is a bug in h3.
            return Err(StreamErrorIncoming::ConnectionErrorIncoming {
                connection_error: ConnectionErrorIncoming::InternalError(
                    "send_data before the previous frame was written".into(),
                ),
            });
        }
        self.enqueue(data.into());
        self.order.wait(self.place);
        Ok(())
    }

    fn poll_finish(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamErrorIncoming>> {
        ready!(self.poll_ready(cx))?;
        Poll::Ready(
            self.stream
                .finish()
                .map_err(|e| StreamErrorIncoming::Unknown(Box::new(e))),
        )
    }

    fn reset(&mut self, reset_code: u64) {
        self.queued.clear();
        self.order.leave(self.place);
        // Fails only if the stream is already finished or reset.
        let _ = self.stream.reset(var_int(reset_code));
    }

    fn send_id(&self) -> StreamId {
        stream_id(self.stream.id())
    }
}

impl Drop for SendStream {
    fn drop(&mut self) {
        self.order.leave(self.place);
    }
}

/// What a stream that is not first in line hands quinn per turn.
const SHARE: usize = 64 * 1024;

/// quinn sends higher priorities first: earlier places first.
fn priority(place: u64) -> i32 {
    -i32::try_from(place).unwrap_or(i32::MAX)
}

/// The first `limit` bytes of `queued`, as views (no copy).
fn front_share(queued: &[Bytes], limit: usize) -> Vec<Bytes> {
    let mut share = Vec::with_capacity(2);
    let mut left = limit;
    for piece in queued {
        if left == 0 {
            break;
        }
        let n = piece.len().min(left);
        share.push(piece.slice(..n));
        left -= n;
    }
    share
}

/// Drop the first `n` bytes of `queued` (quinn took them).
fn drop_front(queued: &mut Vec<Bytes>, mut n: usize) {
    let whole = queued.iter().take_while(|piece| {
        let taken = piece.len() <= n;
        if taken {
            n -= piece.len();
        }
        taken
    });
    let whole = whole.count();
    queued.drain(..whole);
    if n > 0 {
        if let Some(front) = queued.first_mut() {
            front.advance(n);
        }
    }
}

/// A connection's streams in the order they arrived (see the module docs).
#[derive(Default)]
struct SendOrder {
    state: Mutex<OrderState>,
}

#[derive(Default)]
struct OrderState {
    /// The next stream's place.
    next: u64,
    /// Places of the streams with bytes quinn has not taken yet.
    waiting: BTreeSet<u64>,
}

impl SendOrder {
    fn lock(&self) -> std::sync::MutexGuard<'_, OrderState> {
        // Nothing panics while holding it; a poisoned lock's state is still sound.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A place for a new stream, behind every earlier one.
    fn join(&self) -> u64 {
        let mut state = self.lock();
        let place = state.next;
        state.next += 1;
        place
    }

    fn wait(&self, place: u64) {
        self.lock().waiting.insert(place);
    }

    fn leave(&self, place: u64) {
        self.lock().waiting.remove(&place);
    }

    /// Whether no earlier stream has bytes waiting for quinn.
    fn is_first(&self, place: u64) -> bool {
        self.lock()
            .waiting
            .first()
            .is_none_or(|&first| first >= place)
    }
}

/// The receiving half of a stream.
pub struct RecvStream {
    stream: quinn::RecvStream,
}

impl quic::RecvStream for RecvStream {
    type Buf = Bytes;

    fn poll_data(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Bytes>, StreamErrorIncoming>> {
        let read = pin!(self.stream.read_chunk(usize::MAX, true));
        let chunk = ready!(read.poll(cx)).map_err(read_error)?;
        Poll::Ready(Ok(chunk.map(|c| c.bytes)))
    }

    fn stop_sending(&mut self, error_code: u64) {
        // Fails only if the stream is already stopped or fully read.
        let _ = self.stream.stop(var_int(error_code));
    }

    fn recv_id(&self) -> StreamId {
        stream_id(self.stream.id())
    }
}

/// A request stream: both halves.
pub struct BidiStream {
    send: SendStream,
    recv: RecvStream,
}

impl BidiStream {
    fn new(send: quinn::SendStream, recv: quinn::RecvStream, order: &Arc<SendOrder>) -> Self {
        BidiStream {
            send: SendStream::new(send, order),
            recv: RecvStream { stream: recv },
        }
    }
}

impl quic::BidiStream<BodyChunk> for BidiStream {
    type SendStream = SendStream;
    type RecvStream = RecvStream;

    fn split(self) -> (SendStream, RecvStream) {
        (self.send, self.recv)
    }
}

impl quic::SendStream<BodyChunk> for BidiStream {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamErrorIncoming>> {
        self.send.poll_ready(cx)
    }

    fn send_data<T: Into<WriteBuf<BodyChunk>>>(
        &mut self,
        data: T,
    ) -> Result<(), StreamErrorIncoming> {
        self.send.send_data(data)
    }

    fn poll_finish(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamErrorIncoming>> {
        self.send.poll_finish(cx)
    }

    fn reset(&mut self, reset_code: u64) {
        self.send.reset(reset_code);
    }

    fn send_id(&self) -> StreamId {
        self.send.send_id()
    }
}

impl quic::RecvStream for BidiStream {
    type Buf = Bytes;

    fn poll_data(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Bytes>, StreamErrorIncoming>> {
        self.recv.poll_data(cx)
    }

    fn stop_sending(&mut self, error_code: u64) {
        self.recv.stop_sending(error_code);
    }

    fn recv_id(&self) -> StreamId {
        self.recv.recv_id()
    }
}

#[cfg(test)]
mod tests;
