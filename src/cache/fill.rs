//! In-flight fills: one upstream fetch whose bytes every waiting client reads
//! while they arrive.
//!
//! moka's `try_get_with` coalesces *initialisation*, but a waiter only sees the
//! value once it is complete. Players need the first bytes of a segment as soon
//! as the leader has them, so a fill is its own shared, append-only buffer.

use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::cache::body::StoredBody;
use crate::cache::vary::Variant;
use crate::response::head::ResponseHead;

/// What the upstream answered a fill, for `Cache-Status` (RFC 9211 `fwd-status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Forwarded {
    #[default]
    Ok,
    NotFound,
    Other,
    /// 304 to our conditional request: the stale copy was revalidated.
    NotModified,
}

impl Forwarded {
    pub fn from_status(status: StatusCode) -> Forwarded {
        match status.as_u16() {
            200 => Forwarded::Ok,
            304 => Forwarded::NotModified,
            404 => Forwarded::NotFound,
            _ => Forwarded::Other,
        }
    }

    /// The `Cache-Status` parameter.
    pub fn as_str(self) -> &'static str {
        match self {
            Forwarded::Ok => "fwd-status=200",
            Forwarded::NotFound => "fwd-status=404",
            Forwarded::Other => "fwd-status=other",
            Forwarded::NotModified => "fwd-status=304",
        }
    }
}

/// How a fill ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FillOutcome {
    /// Every byte arrived.
    Complete,
    /// The upstream failed before or during the body; readers past the bytes
    /// already received must abort their response so clients see truncation.
    Failed(FillFailure),
}

/// Why a fill failed, and whether it was for lack of an answer (504) rather
/// than a bad one (502).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{why}")]
pub struct FillFailure {
    pub why: String,
    pub timeout: bool,
}

impl FillFailure {
    pub fn new(why: impl Into<String>, timeout: bool) -> Self {
        FillFailure {
            why: why.into(),
            timeout,
        }
    }
}

#[derive(Default)]
struct FillState {
    head: Option<Arc<ResponseHead>>,
    /// How the upstream answered, for `Cache-Status`.
    forwarded: Forwarded,
    /// Which upstream answered, for the access log.
    upstream: Option<Arc<str>>,
    /// Which requests the response answers, when it has a `Vary`.
    variant: Option<Arc<Variant>>,
    chunks: Vec<Bytes>,
    /// Bumped when `chunks` is replaced by the stored copy of the body:
    /// readers then find their place again by offset.
    layout: u64,
    len: u64,
    outcome: Option<FillOutcome>,
}

/// The shared buffer of one upstream fetch.
pub struct Fill {
    // Held only to copy a chunk handle or push one; never across `.await`.
    state: Mutex<FillState>,
    /// Bumped on every change so readers can wait without polling.
    version: watch::Sender<u64>,
    /// The purge generation when the fill started (see [`crate::cache::purge`]).
    generation: u64,
}

impl Default for Fill {
    fn default() -> Self {
        Self::new()
    }
}

impl Fill {
    pub fn new() -> Self {
        Self::starting_at(0)
    }

    /// A fill started while purge generation `generation` was current.
    pub fn starting_at(generation: u64) -> Self {
        Fill {
            state: Mutex::new(FillState::default()),
            version: watch::channel(0).0,
            generation,
        }
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The response head, if it has arrived.
    pub fn head_now(&self) -> Option<Arc<ResponseHead>> {
        self.state.lock().head.clone()
    }

    fn bump(&self) {
        self.version.send_modify(|v| *v += 1);
    }

    /// The response head is known: readers may start answering.
    pub fn set_head(&self, head: ResponseHead, forwarded: Forwarded, upstream: Option<Arc<str>>) {
        {
            let mut state = self.state.lock();
            state.head = Some(Arc::new(head));
            state.forwarded = forwarded;
            state.upstream = upstream;
        }
        self.bump();
    }

    /// Say which requests the response answers (before [`Fill::set_head`],
    /// so a reader that has the head also has this).
    pub fn set_variant(&self, variant: Option<Arc<Variant>>) {
        self.state.lock().variant = variant;
    }

    pub fn variant(&self) -> Option<Arc<Variant>> {
        self.state.lock().variant.clone()
    }

    pub fn forwarded(&self) -> Forwarded {
        self.state.lock().forwarded
    }

    pub fn upstream(&self) -> Option<Arc<str>> {
        self.state.lock().upstream.clone()
    }

    pub fn push(&self, chunk: Bytes) {
        if chunk.is_empty() {
            return;
        }
        {
            let mut state = self.state.lock();
            state.len += chunk.len() as u64;
            state.chunks.push(chunk);
        }
        self.bump();
    }

    pub fn finish(&self, outcome: FillOutcome) {
        self.state.lock().outcome = Some(outcome);
        self.bump();
    }

    pub fn received(&self) -> u64 {
        self.state.lock().len
    }

    /// The whole body, once complete, for the cache: one copy in memory of
    /// its own (see [`StoredBody`]), never the chunks, which are slices of
    /// the upstream client's read buffers and may keep far more alive.
    /// Readers go on from that copy, so the chunks are let go now rather
    /// than when the slowest reader is done.
    pub fn body(&self) -> Bytes {
        let (chunks, len) = {
            let state = self.state.lock();
            (state.chunks.clone(), state.len)
        };
        let body = StoredBody::joined(&chunks, len as usize);
        drop(chunks);
        let mut state = self.state.lock();
        if state.len == len {
            state.chunks = vec![body.clone()];
            state.layout += 1;
        }
        body
    }

    /// Wait for the response head, or for the fill to fail before it had one.
    pub async fn head(&self) -> Result<Arc<ResponseHead>, FillOutcome> {
        let mut rx = self.version.subscribe();
        loop {
            {
                let state = self.state.lock();
                if let Some(head) = &state.head {
                    return Ok(head.clone());
                }
                if let Some(outcome) = &state.outcome {
                    return Err(outcome.clone());
                }
            }
            if rx.changed().await.is_err() {
                return Err(FillOutcome::Failed(FillFailure::new(
                    "fill abandoned",
                    false,
                )));
            }
        }
    }

    /// Wait until the fill has ended, returning how.
    pub async fn outcome(&self) -> FillOutcome {
        let mut rx = self.version.subscribe();
        loop {
            if let Some(outcome) = &self.state.lock().outcome {
                return outcome.clone();
            }
            if rx.changed().await.is_err() {
                return FillOutcome::Failed(FillFailure::new("fill abandoned", false));
            }
        }
    }

    /// A reader of bytes `[start, end)` of the body (`end = None`: to the end).
    pub fn reader(self: &Arc<Self>, start: u64, end: Option<u64>) -> FillReader {
        FillReader {
            fill: self.clone(),
            rx: self.version.subscribe(),
            chunk: 0,
            chunk_start: 0,
            layout: 0,
            pos: start,
            end,
        }
    }
}

/// Streams a byte window of a [`Fill`] as it grows.
pub struct FillReader {
    fill: Arc<Fill>,
    rx: watch::Receiver<u64>,
    /// Index of the chunk holding `pos`, and that chunk's offset in the body.
    chunk: usize,
    chunk_start: u64,
    /// The fill's `layout` that `chunk` indexes.
    layout: u64,
    pos: u64,
    end: Option<u64>,
}

impl FillReader {
    /// The next piece of the window; `None` at its end; `Err` when the
    /// upstream failed before the window was complete.
    pub async fn next(&mut self) -> Option<Result<Bytes, FillFailure>> {
        loop {
            if self.end.is_some_and(|end| self.pos >= end) {
                return None;
            }
            'locked: {
                let state = self.fill.state.lock();
                if self.layout != state.layout {
                    self.layout = state.layout;
                    self.chunk = 0;
                    self.chunk_start = 0;
                }
                while self.chunk < state.chunks.len() {
                    let chunk = &state.chunks[self.chunk];
                    let chunk_end = self.chunk_start + chunk.len() as u64;
                    if self.pos < chunk_end {
                        let from = (self.pos - self.chunk_start) as usize;
                        let to = match self.end {
                            Some(end) if end < chunk_end => (end - self.chunk_start) as usize,
                            _ => chunk.len(),
                        };
                        // A whole-body reader keeps the last bytes back until
                        // the fill has ended, and so until what it fetched is
                        // stored: a client holding the complete response
                        // finds it cached on its next request.
                        let last = self.end.is_none()
                            && state.outcome.is_none()
                            && state.head.as_ref().and_then(|h| h.content_length())
                                == Some(self.pos + (to - from) as u64);
                        if last {
                            break 'locked;
                        }
                        let piece = chunk.slice(from..to);
                        self.pos += piece.len() as u64;
                        return Some(Ok(piece));
                    }
                    self.chunk += 1;
                    self.chunk_start = chunk_end;
                }
                match &state.outcome {
                    Some(FillOutcome::Complete) => return None,
                    Some(FillOutcome::Failed(f)) => return Some(Err(f.clone())),
                    None => {}
                }
            }
            if self.rx.changed().await.is_err() {
                return Some(Err(FillFailure::new("fill abandoned", false)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn readers_see_bytes_as_they_arrive_and_windows_cut_across_chunks() {
        let fill = Arc::new(Fill::new());
        let mut whole = fill.reader(0, None);
        let mut window = fill.reader(3, Some(7));
        fill.push(Bytes::from_static(b"01234"));
        assert_eq!(whole.next().await, Some(Ok(Bytes::from_static(b"01234"))));
        assert_eq!(window.next().await, Some(Ok(Bytes::from_static(b"34"))));
        fill.push(Bytes::from_static(b"56789"));
        assert_eq!(window.next().await, Some(Ok(Bytes::from_static(b"56"))));
        assert_eq!(window.next().await, None);
        fill.finish(FillOutcome::Complete);
        assert_eq!(whole.next().await, Some(Ok(Bytes::from_static(b"56789"))));
        assert_eq!(whole.next().await, None);
        assert_eq!(fill.body(), Bytes::from_static(b"0123456789"));
    }

    async fn rest(reader: &mut FillReader) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(piece) = reader.next().await {
            out.extend_from_slice(&piece.expect("no failure"));
        }
        out
    }

    #[tokio::test]
    async fn readers_go_on_from_the_stored_copy_and_the_chunks_are_let_go() {
        let fill = Arc::new(Fill::new());
        let mut whole = fill.reader(0, None);
        let mut window = fill.reader(5, Some(9));
        let first = Bytes::from(b"01234".to_vec());
        fill.push(first.clone());
        fill.push(Bytes::from_static(b"5678"));
        fill.push(Bytes::from_static(b"9"));
        assert_eq!(whole.next().await, Some(Ok(Bytes::from_static(b"01234"))));
        let body = fill.body();
        assert_eq!(body, Bytes::from_static(b"0123456789"));
        assert!(first.is_unique(), "the fill holds no chunk any more");
        fill.finish(FillOutcome::Complete);
        assert_eq!(rest(&mut whole).await, b"56789");
        assert_eq!(rest(&mut window).await, b"5678");
        assert_eq!(rest(&mut fill.reader(2, Some(4))).await, b"23");
    }

    #[tokio::test]
    async fn the_last_bytes_of_a_whole_body_wait_for_the_fill_to_end() {
        let fill = Arc::new(Fill::new());
        let mut head = ResponseHead::new(StatusCode::OK);
        head.headers.insert(http::header::CONTENT_LENGTH, 6.into());
        fill.set_head(head, Forwarded::Ok, None);
        let mut whole = fill.reader(0, None);
        let mut range = fill.reader(0, Some(6));
        fill.push(Bytes::from_static(b"abc"));
        assert_eq!(whole.next().await, Some(Ok(Bytes::from_static(b"abc"))));
        fill.push(Bytes::from_static(b"def"));
        assert_eq!(range.next().await, Some(Ok(Bytes::from_static(b"abc"))));
        assert_eq!(range.next().await, Some(Ok(Bytes::from_static(b"def"))));
        use futures::FutureExt;
        assert_eq!(
            whole.next().now_or_never(),
            None,
            "held back until the fill ends"
        );
        fill.finish(FillOutcome::Complete);
        assert_eq!(whole.next().await, Some(Ok(Bytes::from_static(b"def"))));
        assert_eq!(whole.next().await, None);
    }

    #[tokio::test]
    async fn a_failed_fill_is_an_error_for_readers_that_want_more() {
        let fill = Arc::new(Fill::new());
        let mut reader = fill.reader(0, None);
        fill.push(Bytes::from_static(b"abc"));
        fill.finish(FillOutcome::Failed(FillFailure::new(
            "upstream closed",
            false,
        )));
        assert_eq!(reader.next().await, Some(Ok(Bytes::from_static(b"abc"))));
        assert!(matches!(reader.next().await, Some(Err(_))));
        assert!(fill.head().await.is_err());
    }
}
