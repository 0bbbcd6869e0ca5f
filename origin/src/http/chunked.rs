//! LL-DASH on the playback listener: a request for a CMAF segment that is
//! still being cut is answered with the chunks (parts) cut so far, then each
//! new one as the store cuts it, and ends with the segment (chunked transfer
//! encoding on HTTP/1.1, DATA frames on h2). The bytes are those of the
//! finished segment ([`crate::package::chunked_fragment`]), so a cache that
//! keeps the streamed copy keeps the same object a later request gets whole.
//!
//! A stream that cannot finish (the publisher left mid-segment and nothing
//! came within the hold limit, or the channel went away) ends with an error,
//! not a clean end: the client (an edge included) sees a truncated body and
//! must not keep it.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::media::TrackKind;
use crate::package::Part;
use crate::store::{SegmentProgress, Store};

/// Which segment a stream follows.
#[derive(Clone, Debug)]
pub struct SegmentRef {
    pub channel: String,
    pub rendition: String,
    pub kind: TrackKind,
    pub sequence: u64,
}

/// How a request for a segment that may be in progress is to be answered.
pub enum Answer {
    /// Render it the ordinary way: cut already, not cut into parts, or not
    /// there (a 404 from the render).
    Render,
    /// Stream it: the chunks so far come first.
    Stream(ChunkStream),
}

/// A part as the chunk sent for it (`first`: it opens the segment): clear,
/// or in the channel's encryption ([`crate::drm::Drm::protect_chunk`]);
/// `None` when it cannot be produced.
pub type ChunkOf = Arc<dyn Fn(&Part, bool) -> Option<Bytes> + Send + Sync>;

/// An in-progress segment being followed.
pub struct ChunkStream {
    store: Store,
    segment: SegmentRef,
    chunk_of: ChunkOf,
    updates: watch::Receiver<u64>,
    /// Parts sent so far.
    sent: usize,
    limit: Duration,
    done: bool,
}

/// Why a stream stopped short.
#[derive(Debug, thiserror::Error)]
pub enum Truncated {
    #[error("no new chunk of the segment within {0:?}")]
    Stalled(Duration),
    #[error("the segment's channel or rendition went away")]
    Gone,
    #[error("a chunk of the segment could not be encrypted")]
    Unprotected,
}

/// Wait (at most `limit`) until `segment` is cut or has a first part, and
/// say how to answer it.
pub async fn follow(
    store: &Store,
    segment: SegmentRef,
    limit: Duration,
    chunk_of: ChunkOf,
) -> Answer {
    // Subscribe before looking, so an update between the two is not missed.
    let Some(updates) = store.updates(&segment.channel) else {
        return Answer::Render;
    };
    let ready = super::blocking::until(updates.clone(), limit, || {
        match store.segment_progress(
            &segment.channel,
            &segment.rendition,
            segment.kind,
            segment.sequence,
        ) {
            Ok(SegmentProgress::Open(parts)) if parts.is_empty() => None,
            Ok(SegmentProgress::Open(_)) => Some(true),
            Ok(SegmentProgress::Complete(_)) | Err(_) => Some(false),
        }
    })
    .await;
    match ready {
        Some(true) => Answer::Stream(ChunkStream {
            store: store.clone(),
            segment,
            chunk_of,
            updates,
            sent: 0,
            limit,
            done: false,
        }),
        _ => Answer::Render,
    }
}

impl ChunkStream {
    /// The next bytes: every part not sent yet, as chunks of the segment;
    /// `None` once the segment is complete and sent.
    pub async fn next(&mut self) -> Option<Result<Bytes, Truncated>> {
        if self.done {
            return None;
        }
        let deadline = Instant::now() + self.limit;
        loop {
            self.updates.borrow_and_update();
            let s = &self.segment;
            let progress =
                self.store
                    .segment_progress(&s.channel, &s.rendition, s.kind, s.sequence);
            let (parts, complete) = match progress {
                Ok(SegmentProgress::Open(parts)) => (parts, false),
                Ok(SegmentProgress::Complete(parts)) => (parts, true),
                Err(_) => {
                    self.done = true;
                    return Some(Err(Truncated::Gone));
                }
            };
            if complete && parts.len() < self.sent.max(1) {
                // Cut without the parts already sent: cannot be finished.
                self.done = true;
                return Some(Err(Truncated::Gone));
            }
            if parts.len() > self.sent {
                let Some(body) = chunks(&parts, self.sent, &self.chunk_of) else {
                    self.done = true;
                    return Some(Err(Truncated::Unprotected));
                };
                self.sent = parts.len();
                self.done = complete;
                return Some(Ok(body));
            }
            if complete {
                self.done = true;
                return None;
            }
            match tokio::time::timeout_at(deadline, self.updates.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => {
                    self.done = true;
                    return Some(Err(Truncated::Gone));
                }
                Err(_) => {
                    self.done = true;
                    return Some(Err(Truncated::Stalled(self.limit)));
                }
            }
        }
    }

    /// The stream as a response body's frames.
    pub fn into_stream(self) -> impl futures::Stream<Item = Result<Bytes, Truncated>> + Send {
        futures::stream::unfold(self, |mut s| async move {
            let item = s.next().await?;
            Some((item, s))
        })
    }
}

/// Parts `from..` of a segment, as the chunks of its fragment.
fn chunks(parts: &[Arc<Part>], from: usize, chunk_of: &ChunkOf) -> Option<Bytes> {
    let mut body = BytesMut::new();
    for (i, part) in parts.iter().enumerate().skip(from) {
        body.extend_from_slice(&chunk_of(part, i == 0)?);
    }
    Some(body.freeze())
}
