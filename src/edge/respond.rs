//! A response from a stored object or from a fill in flight, with its
//! `Cache-Status` (RFC 9211).

use std::sync::Arc;

use http::{header, HeaderValue, StatusCode};
use tokio::time::Instant;

use super::shape::{shape, BodySource};
use super::Edge;
use crate::cache::fill::Fill;
use crate::cache::CachedObject;
use crate::request::MediaRequest;
use crate::response::{CacheStatus, EdgeResponse, Outcome, ResponseHead};

impl Edge {
    pub(super) fn cache_status(&self, detail: &str) -> HeaderValue {
        HeaderValue::from_str(&format!("{}; {detail}", self.node_id))
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
        let mut head = object.head.clone();
        head.headers
            .insert(header::AGE, object.age(now).as_secs().into());
        let status = if cache == CacheStatus::Hit {
            let remaining =
                object.freshness.ttl.as_secs() as i64 - object.resident(now).as_secs() as i64;
            HeaderValue::from_str(&format!("{}; {detail}; ttl={remaining}", self.node_id))
                .unwrap_or(HeaderValue::from_static("strata"))
        } else {
            self.cache_status(detail)
        };
        head.headers.append("cache-status", status);
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
        let mut head = head.clone();
        // The upstream's own Age, if it sent one (RFC 9111 §5.1).
        head.headers.entry(header::AGE).or_insert(0.into());
        head.headers
            .append("cache-status", self.cache_status(detail));
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
