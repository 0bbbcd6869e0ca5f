//! POST pass-through for licence requests: never cached, never coalesced.

use std::sync::Arc;

use http::{header, request::Parts, HeaderMap, HeaderValue};

use super::forward::NOT_FORWARDED;
use super::Edge;
use crate::cache::fill::{Fill, FillFailure, FillOutcome, Forwarded};
use crate::cache::inflight::{pump_body, BodyError};
use crate::error::EdgeError;
use crate::request::MediaRequest;
use crate::response::{Body, CacheStatus, EdgeResponse, Outcome, ResponseHead};
use crate::upstream::UpstreamResponse;

impl Edge {
    /// Proxy a POST under `cache.pass_through` (licence requests): never
    /// cached, never coalesced, streamed back as it arrives.
    pub(super) async fn pass(
        &self,
        request: &MediaRequest,
        parts: &Parts,
        body: bytes::Bytes,
    ) -> Result<EdgeResponse, EdgeError> {
        if !self
            .cache_config
            .pass_through
            .iter()
            .any(|p| request.path.starts_with(p.as_str()))
        {
            return Err(EdgeError::MethodNotAllowed);
        }
        let mut headers = HeaderMap::new();
        for name in [
            header::CONTENT_TYPE,
            header::ACCEPT,
            header::AUTHORIZATION,
            header::ORIGIN,
            header::USER_AGENT,
        ] {
            if let Some(value) = parts.headers.get(&name) {
                headers.insert(name, value.clone());
            }
        }
        let mut via = request.via.clone();
        via.push(format!("1.1 {}", self.node_id));
        if let Ok(via) = HeaderValue::from_str(&via.join(", ")) {
            headers.insert(header::VIA, via);
        }
        let UpstreamResponse { upstream, response } = self
            .upstreams
            .forward(&request.method, request.key.as_str(), &headers, body)
            .await?;
        let (upstream_parts, incoming) = response.into_parts();
        let mut head = ResponseHead::new(upstream_parts.status);
        for (name, value) in &upstream_parts.headers {
            if !NOT_FORWARDED.contains(name) {
                head.headers.append(name.clone(), value.clone());
            }
        }
        head.headers
            .entry(header::CACHE_CONTROL)
            .or_insert(HeaderValue::from_static("private, no-store"));
        head.headers
            .append("cache-status", self.cache_status("fwd=request"));
        let fill = Arc::new(Fill::new());
        fill.set_head(
            head.clone(),
            Forwarded::from_status(upstream_parts.status),
            Some(upstream.name.as_str().into()),
        );
        let pump = fill.clone();
        let body_timeout = self.upstreams.config().body_timeout;
        tokio::spawn(async move {
            let outcome = match pump_body(&pump, incoming, body_timeout).await {
                Ok(()) => FillOutcome::Complete,
                Err(BodyError::Cut(e)) => FillOutcome::Failed(FillFailure::new(e, false)),
                Err(BodyError::Stalled(_)) => {
                    FillOutcome::Failed(FillFailure::new("body stalled", true))
                }
            };
            pump.finish(outcome);
        });
        Ok(EdgeResponse {
            head,
            body: Body::Fill(fill.reader(0, None)),
            outcome: Outcome {
                cache: CacheStatus::Pass,
                upstream: Some(upstream.name.clone()),
                reason: None,
            },
        })
    }
}
