//! A response from a stored object or from a fill in flight, with its
//! `Cache-Status` (RFC 9211).

use std::sync::Arc;

use http::{header, HeaderName, HeaderValue, StatusCode};
use tokio::time::Instant;

use super::shape::{shape, BodySource};
use super::Edge;
use crate::cache::fill::Fill;
use crate::cache::CachedObject;
use crate::request::MediaRequest;
use crate::response::{CacheStatus, EdgeResponse, Outcome, ResponseHead};

/// Fields the edge adds to a stored or filled head on its way out: Age,
/// Cache-Status, Accept-Ranges, Content-Length, Content-Range, Date, Via,
/// Alt-Svc and two CORS fields.
const RESPONSE_FIELDS: usize = 10;

/// `Cache-Status` (RFC 9211), named once rather than parsed per response.
pub(super) const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

impl Edge {
    /// `{node_id}; {detail}`, and `; ttl={ttl}` when given: built by hand,
    /// since this runs on every hit.
    pub(super) fn cache_status(&self, detail: &str, ttl: Option<i64>) -> HeaderValue {
        let mut value = Vec::with_capacity(self.node_id.len() + detail.len() + 32);
        value.extend_from_slice(self.node_id.as_bytes());
        value.extend_from_slice(b"; ");
        value.extend_from_slice(detail.as_bytes());
        if let Some(ttl) = ttl {
            value.extend_from_slice(b"; ttl=");
            value.extend_from_slice(itoa::Buffer::new().format(ttl).as_bytes());
        }
        HeaderValue::from_maybe_shared(bytes::Bytes::from(value))
            .unwrap_or(HeaderValue::from_static("strata"))
    }

    pub(super) fn respond_from_object(
        &self,
        request: &MediaRequest,
        object: &CachedObject,
        now: Instant,
        cache: CacheStatus,
        detail: &str,
    ) -> EdgeResponse {
        let mut head = object.head.with_room(RESPONSE_FIELDS);
        head.headers
            .insert(header::AGE, object.age(now).as_secs().into());
        let ttl = (cache == CacheStatus::Hit)
            .then(|| object.freshness.ttl.as_secs() as i64 - object.resident(now).as_secs() as i64);
        head.headers
            .append(CACHE_STATUS, self.cache_status(detail, ttl));
        let outcome = Outcome {
            cache,
            upstream: None,
            reason: None,
        };
        shape(
            request,
            head,
            BodySource::Bytes(object.body.clone()),
            Some(object.body.len() as u64),
            outcome,
        )
    }

    pub(super) async fn respond_from_fill(
        &self,
        request: &MediaRequest,
        head: &ResponseHead,
        fill: &Arc<Fill>,
        cache: CacheStatus,
        detail: &str,
    ) -> EdgeResponse {
        let mut head = head.with_room(RESPONSE_FIELDS);
        // The upstream's own Age, if it sent one (RFC 9111 §5.1).
        head.headers.entry(header::AGE).or_insert(0.into());
        head.headers
            .append(CACHE_STATUS, self.cache_status(detail, None));
        let mut len = head.content_length();
        if len.is_none() && request.range.is_some() && head.status == StatusCode::OK {
            // A range of a body of unknown length can only be cut once it is all here.
            fill.outcome().await;
            len = Some(fill.received());
        }
        let outcome = Outcome {
            cache,
            upstream: None,
            reason: None,
        };
        shape(request, head, BodySource::Fill(fill.clone()), len, outcome)
    }
}
