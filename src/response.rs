//! What the core hands back to a front door: a head and a body that streams.

use bytes::Bytes;
use http::{HeaderValue, StatusCode};

use crate::cache::fill::{FillFailure, FillReader};

pub mod head;

pub use head::{date_now, ResponseHead};

/// A response body as the front doors write it.
pub enum Body {
    Empty,
    Full(Bytes),
    /// Bytes of a fill, as they arrive from upstream.
    Fill(FillReader),
}

impl Body {
    /// The next chunk; `Err` means the body is truncated and the front door
    /// must abort the response so the client can tell.
    pub async fn next_chunk(&mut self) -> Option<Result<Bytes, FillFailure>> {
        match self {
            Body::Empty => None,
            Body::Full(bytes) => {
                let bytes = std::mem::take(bytes);
                *self = Body::Empty;
                (!bytes.is_empty()).then_some(Ok(bytes))
            }
            Body::Fill(reader) => reader.next().await,
        }
    }
}

/// How the cache took part in a response: the `cache` label of metrics
/// and the access log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum CacheStatus {
    /// Served fresh from the cache.
    Hit,
    /// This request's upstream fetch (it led the fill).
    #[default]
    Miss,
    /// Joined another request's fill.
    Collapsed,
    /// Served stale (`stale-while-revalidate`, `stale-if-error`).
    Stale,
    /// A stale copy the upstream confirmed with 304.
    Revalidated,
    /// Passed through, never cached (POST licence requests, CORS preflights).
    Pass,
    /// The edge answered with an error.
    Error,
    /// The access policy refused the request.
    Denied,
}

impl CacheStatus {
    /// Every status, in the order metrics pre-create them.
    pub const ALL: [CacheStatus; 8] = [
        CacheStatus::Hit,
        CacheStatus::Miss,
        CacheStatus::Collapsed,
        CacheStatus::Stale,
        CacheStatus::Revalidated,
        CacheStatus::Pass,
        CacheStatus::Error,
        CacheStatus::Denied,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "hit",
            CacheStatus::Miss => "miss",
            CacheStatus::Collapsed => "collapsed",
            CacheStatus::Stale => "stale",
            CacheStatus::Revalidated => "revalidated",
            CacheStatus::Pass => "pass",
            CacheStatus::Error => "error",
            CacheStatus::Denied => "denied",
        }
    }
}

/// What the access log and metrics need to know about a response.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    pub cache: CacheStatus,
    pub upstream: Option<String>,
    /// Why the edge refused or failed, when it did.
    pub reason: Option<&'static str>,
}

pub struct EdgeResponse {
    pub head: ResponseHead,
    pub body: Body,
    pub outcome: Outcome,
}

impl EdgeResponse {
    /// A small response the edge makes itself: errors, refusals, 304, 416.
    pub fn local(status: StatusCode, message: &str, outcome: Outcome) -> Self {
        let mut head = ResponseHead::new(status);
        let body = if message.is_empty() {
            Bytes::new()
        } else {
            Bytes::from(format!("{message}\n"))
        };
        head.headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        head.headers
            .insert(http::header::CONTENT_LENGTH, body.len().into());
        head.headers.insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        );
        EdgeResponse {
            head,
            body: Body::Full(body),
            outcome,
        }
    }
}
