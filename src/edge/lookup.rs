//! The cache lookup: a fresh hit, a stale copy served while it is
//! revalidated, or a place in the one coalesced fill for the key.

use std::sync::Arc;

use http::Method;
use tokio::time::Instant;

use super::shape::preflight;
use super::Edge;
use crate::cache::fill::{Fill, FillOutcome, Forwarded};
use crate::cache::inflight::Joined;
use crate::cache::{CachedObject, Staleness};
use crate::error::EdgeError;
use crate::request::MediaRequest;
use crate::response::{CacheStatus, EdgeResponse};

impl Edge {
    pub(super) async fn serve(
        self: &Arc<Self>,
        request: &MediaRequest,
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

        let now = Instant::now();
        let stale = match self.cache.get(&request.key).await {
            Some(object) => match object.staleness(now) {
                Staleness::Fresh => {
                    return Ok(self.respond_from_object(
                        request,
                        &object,
                        now,
                        CacheStatus::Hit,
                        "hit",
                    ))
                }
                Staleness::Revalidate => {
                    self.join_or_start(request, Some(object.clone()));
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

        let (fill, leader) = self.join_or_start(request, stale.clone());
        if !leader {
            self.metrics.requests.coalesced_followers.inc();
        }

        match fill.head().await {
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
                    tracing::warn!(path = %request.key, why = %failure.why, "upstream failed, serving stale");
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

    /// Join the in-flight fill for this request's key, or start one
    /// (revalidating `stale` when there is one) if none runs: a leader's
    /// permit goes to the task that drives the fill. Returns the fill to
    /// read and whether this request leads it.
    pub(super) fn join_or_start(
        self: &Arc<Self>,
        request: &MediaRequest,
        stale: Option<Arc<CachedObject>>,
    ) -> (Arc<Fill>, bool) {
        match self.inflight.join(&request.key, self.purges.generation()) {
            Joined::Follower(fill) => (fill, false),
            Joined::Leader(permit) => {
                let fill = permit.fill().clone();
                self.start_fill(request, permit, stale);
                (fill, true)
            }
        }
    }
}
