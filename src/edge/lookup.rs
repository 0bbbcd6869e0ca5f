//! The cache lookup: a fresh hit, a stale copy served while it is
//! revalidated, or a place in the one coalesced fill for the key.

use std::borrow::Cow;
use std::sync::Arc;

use http::{header, HeaderMap, Method};
use tokio::time::Instant;

use super::shape::preflight;
use super::Edge;
use crate::cache::fill::{Fill, FillOutcome, Forwarded};
use crate::cache::inflight::Joined;
use crate::cache::key::CacheKey;
use crate::cache::{CachedObject, Staleness, Tier};
use crate::error::EdgeError;
use crate::request::{MediaRequest, ObjectKind};
use crate::response::{CacheStatus, EdgeResponse, ResponseHead};

impl Edge {
    pub(super) async fn serve(
        self: &Arc<Self>,
        request: &MediaRequest,
        headers: &HeaderMap,
    ) -> Result<EdgeResponse, EdgeError> {
        match request.method {
            Method::GET | Method::HEAD => {}
            Method::OPTIONS => return Ok(preflight()),
            _ => return Err(EdgeError::MethodNotAllowed),
        }
        if request
            .via
            .iter()
            .any(|hop| hop.split_whitespace().nth(1) == Some(self.node_id.as_str()))
        {
            return Err(EdgeError::Loop);
        }
        if matches!(request.kind, ObjectKind::Segment | ObjectKind::Init) {
            self.note_prefetch_hit(&request.key);
        }

        // RFC 9111 §3.5: the answer to a request with credentials is that
        // client's alone unless it says otherwise, so such a request never
        // joins another's fill, nobody joins its, and it is not answered
        // with what another client's request stored (which its credentials
        // might have changed): it always reaches the upstream.
        let authorized = headers.contains_key(header::AUTHORIZATION);
        let mut alone = authorized;
        let mut key = Cow::Borrowed(&request.key);
        let mut rejoined = false;
        // LL-HLS: a blocking reload asks for a playlist newer than any copy
        // that went stale, so it never gets one (neither while revalidating
        // nor when the upstream fails): a fresh hit, the upstream's answer,
        // or the error.
        let blocking = request
            .query
            .as_deref()
            .is_some_and(crate::cache::is_blocking_reload);
        loop {
            let now = Instant::now();
            let mut tier = Tier::Memory;
            let mut cached = if authorized {
                None
            } else {
                self.cache.get(&key).await.map(|(object, t)| {
                    tier = t;
                    object
                })
            };
            // A varying response answers only requests that select what its
            // own request selected; others look under their variant's key.
            if let Some(variant) = cached.as_ref().and_then(|o| o.variant.clone()) {
                if let Err(selected) = variant.answers(headers) {
                    cached = None;
                    match selected {
                        Some(selected) if !key.is_variant() => {
                            let variant_key = request.key.with_variant(&selected);
                            cached = self
                                .cache
                                .get(&variant_key)
                                .await
                                .filter(|(o, _)| {
                                    o.variant
                                        .as_ref()
                                        .is_none_or(|v| v.answers(headers).is_ok())
                                })
                                .map(|(object, t)| {
                                    tier = t;
                                    object
                                });
                            key = Cow::Owned(variant_key);
                        }
                        _ => alone = true,
                    }
                }
            }
            if blocking
                && cached
                    .as_ref()
                    .is_some_and(|o| o.staleness(now) != Staleness::Fresh)
            {
                cached = None;
            }
            let stale = match cached {
                Some(object) => match object.staleness(now) {
                    Staleness::Fresh => {
                        return Ok(self.respond_from_object(
                            request,
                            &object,
                            now,
                            CacheStatus::Hit,
                            match tier {
                                Tier::Memory => "hit",
                                Tier::Disk => "hit; detail=disk",
                            },
                        ))
                    }
                    Staleness::Revalidate => {
                        self.join_or_start(request, &key, headers, Some(object.clone()), alone);
                        return Ok(self.respond_from_object(
                            request,
                            &object,
                            now,
                            CacheStatus::Stale,
                            "hit; detail=stale-while-revalidate",
                        ));
                    }
                    Staleness::IfError | Staleness::Expired => Some(object),
                },
                None => None,
            };

            let (fill, leader) = self.join_or_start(request, &key, headers, stale.clone(), alone);
            if !leader {
                self.metrics.requests.coalesced_followers.inc();
            }
            let head = fill.head().await;
            // A follower shares the leader's response only when it selects
            // the same variant: otherwise it fills its own (once).
            if let (Ok(_), false, Some(variant)) = (&head, leader, fill.variant()) {
                if let Err(selected) = variant.answers(headers) {
                    match selected {
                        Some(selected) if !rejoined && !key.is_variant() => {
                            key = Cow::Owned(request.key.with_variant(&selected));
                        }
                        _ => alone = true,
                    }
                    rejoined = true;
                    continue;
                }
            }
            return self
                .answer_from_fill(request, fill, leader, head, stale)
                .await;
        }
    }

    async fn answer_from_fill(
        &self,
        request: &MediaRequest,
        fill: Arc<Fill>,
        leader: bool,
        head: Result<Arc<ResponseHead>, FillOutcome>,
        stale: Option<Arc<CachedObject>>,
    ) -> Result<EdgeResponse, EdgeError> {
        match head {
            Ok(head) => {
                let forwarded = fill.forwarded();
                let note = forwarded.as_str();
                let (cache, detail) = match (leader, forwarded) {
                    (_, Forwarded::NotModified) => {
                        (CacheStatus::Revalidated, format!("fwd=stale; {note}"))
                    }
                    (true, _) => (CacheStatus::Miss, format!("fwd=miss; {note}")),
                    (false, _) => (
                        CacheStatus::Collapsed,
                        format!("fwd=miss; {note}; collapsed"),
                    ),
                };
                let mut response = self
                    .respond_from_fill(request, &head, &fill, cache, &detail)
                    .await;
                response.outcome.upstream = fill.upstream().map(|u| u.to_string());
                Ok(response)
            }
            Err(FillOutcome::Failed(failure)) => {
                if let Some(object) =
                    stale.filter(|o| o.staleness(Instant::now()) != Staleness::Expired)
                {
                    tracing::warn!(path = %request.key.path(), why = %failure.why, "upstream failed, serving stale");
                    let mut response = self.respond_from_object(
                        request,
                        &object,
                        Instant::now(),
                        CacheStatus::Stale,
                        "fwd=stale; detail=stale-if-error",
                    );
                    response.outcome.reason = Some("stale-if-error");
                    return Ok(response);
                }
                Err(EdgeError::Upstream {
                    why: failure.why,
                    timeout: failure.timeout,
                })
            }
            Err(FillOutcome::Complete) => Err(EdgeError::Upstream {
                why: "fill ended without a response".into(),
                timeout: false,
            }),
        }
    }

    /// Join the in-flight fill for `key`, or start one (revalidating
    /// `stale` when there is one) if none runs, or with `alone` start one
    /// nobody joins: a leader's permit goes to the task that drives the
    /// fill. Returns the fill to read and whether this request leads it.
    pub(super) fn join_or_start(
        self: &Arc<Self>,
        request: &MediaRequest,
        key: &CacheKey,
        headers: &HeaderMap,
        stale: Option<Arc<CachedObject>>,
        alone: bool,
    ) -> (Arc<Fill>, bool) {
        let generation = self.purges.generation();
        let joined = if alone {
            Joined::Leader(self.inflight.alone(key, generation))
        } else {
            self.inflight.join(key, generation)
        };
        match joined {
            Joined::Follower(fill) => (fill, false),
            Joined::Leader(permit) => {
                let fill = permit.fill().clone();
                self.start_fill(request, headers, permit, stale);
                (fill, true)
            }
        }
    }
}
