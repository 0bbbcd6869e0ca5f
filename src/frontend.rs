//! Front doors: thin adapters from a wire protocol to [`crate::edge::Edge`].
//! Each implements [`ResponseSink`] (how its protocol writes a head, a body
//! chunk, an abort and the end) and lets [`deliver`] drive the one
//! body-and-record flow they share.

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use tokio::time::Instant;

use crate::edge::{Edge, RequestLog};
use crate::response::{Body, EdgeResponse};

pub mod admission;
pub mod h1;
pub mod h3;
pub mod http1;
pub mod pingora;
pub mod tls;
pub mod write_buffer;

/// While the node drains, how long an idle kept-alive HTTP/1.1 connection
/// may still bring a request (answered with `Connection: close`) before it
/// is closed. Closing an idle connection can cross a request the client is
/// sending at that instant (clients retry those on a reused connection);
/// this keeps the window to connections idle for a while.
pub(crate) const DRAIN_IDLE: std::time::Duration = std::time::Duration::from_secs(2);

/// Body bytes a response writes before it lets other tasks run: keeps the
/// run queue short for new requests while many clients stream at once.
pub const YIELD_AFTER: usize = 256 * 1024;

/// How one protocol writes one response.
pub(crate) trait ResponseSink {
    /// Split this much off the first chunk of a streamed (fill) body and
    /// write it alone, so a herd's followers each get a first byte before
    /// anyone's bulk; `None`: no split.
    const FIRST_PIECE: Option<usize>;

    /// Write the head; `false` when the client is gone.
    async fn send_head(&mut self, status: StatusCode, headers: HeaderMap) -> bool;

    /// Write a body chunk; `false` when the client is gone.
    async fn send_chunk(&mut self, bytes: Bytes) -> bool;

    /// The body stopped short: `cut` when the upstream cut it (the client
    /// must see a truncated response, never a short one that looks whole),
    /// else the client went away; `streamed` when it came from a fill.
    async fn abort(&mut self, cut: bool, streamed: bool);

    /// The whole body is written: end the response; `false` if that failed.
    async fn finish(&mut self) -> bool;
}

/// Write `response` through `sink`, then count and log it once: the flow
/// every front door shares. Returns whether the response ended cleanly.
pub(crate) async fn deliver<S: ResponseSink>(
    edge: &Edge,
    sink: &mut S,
    response: EdgeResponse,
    log: &RequestLog,
    started: Instant,
) -> bool {
    let status = response.head.status;
    let outcome = response.outcome;
    if !sink.send_head(status, response.head.headers).await {
        edge.record(log, &outcome, status, 0, started.elapsed(), false);
        return false;
    }
    let (sent, complete) = send_body(sink, response.body, log).await;
    let finished = complete && sink.finish().await;
    edge.record(log, &outcome, status, sent, started.elapsed(), finished);
    finished
}

/// `(bytes sent, whether all of them were)`.
async fn send_body<S: ResponseSink>(sink: &mut S, mut body: Body, log: &RequestLog) -> (u64, bool) {
    let streamed = matches!(body, Body::Fill(_));
    let mut first_piece = if streamed { S::FIRST_PIECE } else { None };
    let mut sent = 0u64;
    let mut since_yield = 0usize;
    while let Some(chunk) = body.next_chunk().await {
        let mut bytes = match chunk {
            Ok(bytes) => bytes,
            Err(failure) => {
                tracing::warn!(path = %log.target, why = %failure, "aborting response: upstream body cut short");
                sink.abort(true, streamed).await;
                return (sent, false);
            }
        };
        if let Some(first) = first_piece.take().filter(|&first| bytes.len() > first) {
            let rest = bytes.split_off(first);
            sent += bytes.len() as u64;
            if !sink.send_chunk(bytes).await {
                sink.abort(false, streamed).await;
                return (sent, false);
            }
            tokio::task::yield_now().await;
            bytes = rest;
        }
        let len = bytes.len();
        sent += len as u64;
        if !sink.send_chunk(bytes).await {
            sink.abort(false, streamed).await;
            return (sent, false);
        }
        since_yield += len;
        if since_yield >= YIELD_AFTER {
            // A follower catching up on a fill (or a big hit into a fast
            // reader) could otherwise write megabytes in one poll while new
            // requests wait in the run queue.
            since_yield = 0;
            tokio::task::yield_now().await;
        }
    }
    (sent, true)
}
