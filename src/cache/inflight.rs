//! The in-flight table: at most one upstream fetch per cache key, and the
//! lifecycle of that fetch (its *fill*, see [`super::fill`]).
//!
//! Modelled on pingora-cache's `lock.rs`: [`Inflight::join`] answers
//! [`Joined::Leader`] with a [`FillPermit`] to the first request for a key
//! and [`Joined::Follower`] to every request that arrives while that fill
//! runs. The permit's holder drives the fill and ends it with
//! [`FillPermit::finish`]; a permit dropped without that (the task panicked
//! or was cancelled) marks the fill abandoned, so followers fail at once
//! instead of waiting on a fill nobody feeds, and the next request starts a
//! new one.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;

pub use crate::cache::fill::Forwarded;
use crate::cache::fill::{Fill, FillFailure, FillOutcome};
use crate::cache::key::CacheKey;
use crate::response::head::ResponseHead;

/// How a request takes part in the fill for its key.
pub enum Joined {
    /// No fill was running: this request started one and must drive it.
    Leader(FillPermit),
    /// A fill was running: read it.
    Follower(Arc<Fill>),
}

impl Joined {
    /// The fill to read the response from, whichever side this is.
    pub fn fill(&self) -> &Arc<Fill> {
        match self {
            Joined::Leader(permit) => &permit.fill,
            Joined::Follower(fill) => fill,
        }
    }
}

type Table = Mutex<HashMap<CacheKey, Arc<Fill>>>;

/// The fills running now, by cache key.
#[derive(Default)]
pub struct Inflight {
    // Held only to look up, insert or remove an entry; never across `.await`.
    fills: Arc<Table>,
}

impl Inflight {
    /// Join the fill for `key`, or start one (belonging to purge generation
    /// `generation`) when none runs.
    pub fn join(&self, key: &CacheKey, generation: u64) -> Joined {
        let mut fills = self.fills.lock();
        if let Some(fill) = fills.get(key) {
            return Joined::Follower(fill.clone());
        }
        let fill = Arc::new(Fill::starting_at(generation));
        fills.insert(key.clone(), fill.clone());
        Joined::Leader(FillPermit {
            fill,
            key: key.clone(),
            table: self.fills.clone(),
            finished: false,
        })
    }

    /// A fill for `key` that nobody can join: for a request whose response
    /// may be its own (credentials, `Vary: *`). What it fetches is still
    /// stored under `key` when that is allowed.
    pub fn alone(&self, key: &CacheKey, generation: u64) -> FillPermit {
        FillPermit {
            fill: Arc::new(Fill::starting_at(generation)),
            key: key.clone(),
            table: self.fills.clone(),
            finished: false,
        }
    }

    /// Keep only the fills `keep` selects (purges drop the ones they match:
    /// their readers go on, but nobody joins them any more).
    pub fn retain(&self, mut keep: impl FnMut(&CacheKey, &Fill) -> bool) {
        self.fills.lock().retain(|key, fill| keep(key, fill));
    }

    /// How many fills are running.
    pub fn len(&self) -> usize {
        self.fills.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The right and duty to drive one fill. Dropped unfinished, it marks the
/// fill abandoned.
pub struct FillPermit {
    fill: Arc<Fill>,
    key: CacheKey,
    table: Arc<Table>,
    finished: bool,
}

impl FillPermit {
    pub fn fill(&self) -> &Arc<Fill> {
        &self.fill
    }

    pub fn key(&self) -> &CacheKey {
        &self.key
    }

    /// End the fill: readers see `outcome`, and the key is free for the
    /// next fill. Store what the fill fetched *before* this, so a request
    /// that finds the key neither in flight nor cached cannot exist.
    pub fn finish(mut self, outcome: FillOutcome) {
        self.end(outcome);
    }

    fn end(&mut self, outcome: FillOutcome) {
        self.finished = true;
        self.fill.finish(outcome);
        let mut fills = self.table.lock();
        if fills
            .get(&self.key)
            .is_some_and(|f| Arc::ptr_eq(f, &self.fill))
        {
            fills.remove(&self.key);
        }
    }
}

impl Drop for FillPermit {
    fn drop(&mut self) {
        if !self.finished {
            self.end(FillOutcome::Failed(FillFailure::new(
                "fill abandoned",
                false,
            )));
        }
    }
}

/// A stale object's head updated by a 304 (RFC 9111 §3.2, §4.3.4): every
/// field the 304 carries replaces the stored one, except those that
/// describe the stored body itself ([`BODY_FIELDS`]: the 304 has none).
/// `not_modified` must already be without hop-by-hop fields.
pub fn merge_not_modified(stale: &ResponseHead, not_modified: &http::HeaderMap) -> ResponseHead {
    let mut head = stale.clone();
    for name in not_modified.keys() {
        if BODY_FIELDS.contains(&name.as_str()) {
            continue;
        }
        head.headers.remove(name);
        for value in not_modified.get_all(name) {
            head.headers.append(name.clone(), value.clone());
        }
    }
    head
}

/// Fields a 304 does not update: they describe the bytes stored, which the
/// 304 confirms rather than replaces.
const BODY_FIELDS: [&str; 5] = [
    "content-length",
    "content-encoding",
    "content-range",
    "content-md5",
    "etag",
];

/// Why pumping an upstream body into a fill stopped early.
pub enum BodyError {
    /// The connection broke or the body was malformed.
    Cut(String),
    /// No bytes for the body timeout.
    Stalled(Duration),
}

/// Feed an upstream body into `fill` as it arrives; each frame must come
/// within `body_timeout`.
pub async fn pump_body<B>(fill: &Fill, mut body: B, body_timeout: Duration) -> Result<(), BodyError>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    use http_body_util::BodyExt;
    loop {
        match tokio::time::timeout(body_timeout, body.frame()).await {
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    fill.push(data);
                }
            }
            Ok(None) => return Ok(()),
            Ok(Some(Err(e))) => return Err(BodyError::Cut(e.to_string())),
            Err(_) => return Err(BodyError::Stalled(body_timeout)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_leader_per_key_and_a_dropped_permit_abandons_the_fill() {
        let inflight = Inflight::default();
        let key = CacheKey::new("/live/a/1.m4s", None, &[]);
        let Joined::Leader(permit) = inflight.join(&key, 0) else {
            panic!("the first request leads");
        };
        let Joined::Follower(fill) = inflight.join(&key, 0) else {
            panic!("the second follows");
        };
        assert!(Arc::ptr_eq(&fill, permit.fill()));
        drop(permit);
        assert!(matches!(
            fill.outcome().await,
            FillOutcome::Failed(FillFailure { ref why, .. }) if why == "fill abandoned"
        ));
        assert!(inflight.is_empty(), "the key is free again");
        assert!(matches!(inflight.join(&key, 0), Joined::Leader(_)));
    }

    #[tokio::test]
    async fn a_finished_fill_frees_its_key() {
        let inflight = Inflight::default();
        let key = CacheKey::new("/a", None, &[]);
        let Joined::Leader(permit) = inflight.join(&key, 0) else {
            panic!("leader");
        };
        let fill = permit.fill().clone();
        permit.finish(FillOutcome::Complete);
        assert_eq!(fill.outcome().await, FillOutcome::Complete);
        assert!(inflight.is_empty());
    }

    #[test]
    fn a_304_updates_the_stored_fields_but_not_those_of_the_body() {
        let mut stored = ResponseHead::new(http::StatusCode::OK);
        for (k, v) in [
            ("etag", "\"a\""),
            ("content-length", "5"),
            ("x-a", "1"),
            ("set-cookie", "a=b"),
        ] {
            stored.headers.append(k, http::HeaderValue::from_static(v));
        }
        let mut update = http::HeaderMap::new();
        for (k, v) in [
            ("etag", "\"b\""),
            ("content-length", "0"),
            ("x-a", "2"),
            ("cache-control", "max-age=9"),
        ] {
            update.append(k, http::HeaderValue::from_static(v));
        }
        let merged = merge_not_modified(&stored, &update);
        assert_eq!(merged.header_str("etag"), Some("\"a\""));
        assert_eq!(merged.header_str("content-length"), Some("5"));
        assert_eq!(merged.header_str("x-a"), Some("2"));
        assert_eq!(merged.header_str("cache-control"), Some("max-age=9"));
        assert_eq!(merged.header_str("set-cookie"), Some("a=b"));
    }

    #[test]
    fn forwarded_statuses() {
        use http::StatusCode;
        assert_eq!(
            Forwarded::from_status(StatusCode::NOT_MODIFIED).as_str(),
            "fwd-status=304"
        );
        assert_eq!(Forwarded::from_status(StatusCode::OK), Forwarded::Ok);
        assert_eq!(
            Forwarded::from_status(StatusCode::BAD_GATEWAY),
            Forwarded::Other
        );
    }
}
