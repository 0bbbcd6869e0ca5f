//! Pass-through of methods other than GET, HEAD and OPTIONS on
//! `cache.pass_through` prefixes (licence POSTs): never cached, never
//! coalesced; a success invalidates what the edge stored (RFC 9111 §4.4).

use std::sync::Arc;

use http::{header, request::Parts, HeaderMap, HeaderValue};

use super::forward::{client_headers, upstream_headers, Purpose};
use super::Edge;
use crate::cache::fill::{Fill, FillFailure, FillOutcome, Forwarded};
use crate::cache::inflight::{pump_body, BodyError};
use crate::cache::purge::PurgeTarget;
use crate::error::EdgeError;
use crate::request::MediaRequest;
use crate::response::{Body, CacheStatus, EdgeResponse, Outcome, ResponseHead};
use crate::upstream::UpstreamResponse;

impl Edge {
    /// Proxy a request under `cache.pass_through` (licence POSTs, PUTs):
    /// never cached, never coalesced, streamed back as it arrives.
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
        let mut headers = upstream_headers(&parts.headers, Purpose::Pass);
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
        if upstream_parts.status.is_success() || upstream_parts.status.is_redirection() {
            self.invalidate_after(request, parts, &upstream_parts.headers)
                .await;
        }
        let mut head = ResponseHead::new(upstream_parts.status);
        head.headers = client_headers(&upstream_parts.headers);
        head.headers
            .entry(header::CACHE_CONTROL)
            .or_insert(HeaderValue::from_static("private, no-store"));
        head.headers.append(
            super::respond::CACHE_STATUS,
            self.cache_status("fwd=request", None),
        );
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

    /// RFC 9111 §4.4: a successful unsafe request invalidates what the edge
    /// stored for its URL, and for the `Location` and `Content-Location`
    /// of the answer when they are on this host.
    async fn invalidate_after(&self, request: &MediaRequest, parts: &Parts, answer: &HeaderMap) {
        let host = parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or(parts.uri.authority().map(|a| a.as_str()));
        let mut keys = vec![request.key.clone()];
        for name in [header::LOCATION, header::CONTENT_LOCATION] {
            let Some(target) = answer.get(name).and_then(|v| v.to_str().ok()) else {
                continue;
            };
            let Ok(uri) = target.parse::<http::Uri>() else {
                continue;
            };
            if uri.authority().is_some_and(|a| Some(a.as_str()) != host) {
                continue;
            }
            let target = if uri.path().starts_with('/') {
                uri.path_and_query()
                    .map_or(uri.path(), |pq| pq.as_str())
                    .to_owned()
            } else {
                // Relative to the request's path (RFC 3986 §5.2).
                let base = request.path.rsplit_once('/').map_or("", |(dir, _)| dir);
                format!("{base}/{target}")
            };
            if let Ok(key) = self.cache_key_for(&target) {
                keys.push(key);
            }
        }
        self.purge(PurgeTarget::Keys(keys), false).await;
    }
}
