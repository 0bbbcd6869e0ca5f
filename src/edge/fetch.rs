//! The fill task: one upstream fetch per key, its body fed to every
//! reader as it arrives, the object stored before the key is freed.

use std::sync::Arc;

use http::{header, HeaderMap, HeaderValue};
use tokio::time::Instant;

use super::control::surrogate_keys;
use super::forward::{client_headers, upstream_headers, Purpose};
use super::shape::age_header;
use super::Edge;
use crate::cache::fill::{Fill, FillFailure, FillOutcome, Forwarded};
use crate::cache::freshness::{freshness, shared_despite_authorization, Freshness};
use crate::cache::inflight::{merge_not_modified, pump_body, BodyError, FillPermit};
use crate::cache::key::CacheKey;
use crate::cache::ll::playlist_lifetime;
use crate::cache::vary::Variant;
use crate::cache::CachedObject;
use crate::error::EdgeError;
use crate::request::{MediaRequest, ObjectKind};
use crate::response::ResponseHead;
use crate::upstream::UpstreamResponse;

/// What a fill needs of the request that started it.
struct Leader {
    kind: ObjectKind,
    /// The request's `Via` hops, this node's last.
    via: Vec<String>,
    /// The client's request headers: what goes upstream is chosen from them
    /// ([`upstream_headers`]), and they select the variant of a varying
    /// response.
    headers: HeaderMap,
}

impl Edge {
    pub(super) fn start_fill(
        self: &Arc<Self>,
        request: &MediaRequest,
        headers: &HeaderMap,
        permit: FillPermit,
        stale: Option<Arc<CachedObject>>,
    ) {
        let mut via = request.via.clone();
        via.push(format!("1.1 {}", self.node_id));
        self.spawn_fill(permit, request.kind, via, headers.clone(), stale);
    }

    /// Drive the fill `permit` gives in a task of its own, for a leader
    /// request of `kind` with `via` (this node's hop last) and `headers`.
    pub(super) fn spawn_fill(
        self: &Arc<Self>,
        permit: FillPermit,
        kind: ObjectKind,
        via: Vec<String>,
        headers: HeaderMap,
        stale: Option<Arc<CachedObject>>,
    ) {
        let edge = self.clone();
        let leader = Leader { kind, via, headers };
        tokio::spawn(async move { edge.run_fill(permit, leader, stale).await });
    }

    async fn run_fill(
        self: Arc<Self>,
        permit: FillPermit,
        leader: Leader,
        stale: Option<Arc<CachedObject>>,
    ) {
        let key = permit.key().clone();
        let fill = permit.fill().clone();
        match self
            .fill_from_upstream(&key, &leader, &fill, stale.as_deref())
            .await
        {
            Ok(object) => {
                // An LL-HLS media playlist: what its players load next.
                let playlist = object
                    .as_ref()
                    .filter(|o| leader.kind == ObjectKind::Playlist && o.head.status == 200)
                    .map(|o| o.body.clone());
                if let Some(object) = object {
                    // Stored before the permit frees the key, so a request
                    // that finds neither cannot exist (see `serve`).
                    self.store_unless_purged(&key, Arc::new(object), &fill)
                        .await;
                } else if stale.is_some() {
                    self.cache.remove(&key).await;
                }
                permit.finish(FillOutcome::Complete);
                if let Some(body) = playlist {
                    self.prefetch_parts(&key, &body, &leader.via, &leader.headers)
                        .await;
                }
            }
            Err(failure) => {
                tracing::warn!(path = %key.path(), why = %failure.why, "upstream fetch failed");
                permit.finish(FillOutcome::Failed(failure));
            }
        }
    }

    /// Fetch `key` into `fill`; returns the object to store, if storable.
    async fn fill_from_upstream(
        &self,
        key: &CacheKey,
        leader: &Leader,
        fill: &Fill,
        stale: Option<&CachedObject>,
    ) -> Result<Option<CachedObject>, FillFailure> {
        let kind = leader.kind;
        let mut headers = upstream_headers(&leader.headers, Purpose::Fill);
        // RFC 9111 §3.5: kept for others only when the response allows it.
        let authorized = leader.headers.contains_key(header::AUTHORIZATION);
        if let Ok(via) = HeaderValue::from_str(&leader.via.join(", ")) {
            headers.insert(header::VIA, via);
        }
        if let Some(stale) = stale {
            if let Some(etag) = stale.head.headers.get(header::ETAG) {
                headers.insert(header::IF_NONE_MATCH, etag.clone());
            }
            if let Some(lm) = stale.head.headers.get(header::LAST_MODIFIED) {
                headers.insert(header::IF_MODIFIED_SINCE, lm.clone());
            }
        }
        let UpstreamResponse { upstream, response } = self
            .upstreams
            .fetch(key.as_str(), &headers)
            .await
            .map_err(|e| match e {
                // Said once: the client's error names "all upstreams failed".
                EdgeError::Upstream { why, timeout } => FillFailure::new(why, timeout),
                other => FillFailure::new(other.to_string(), false),
            })?;
        let (parts, body) = response.into_parts();
        let received_at = Instant::now();
        let forwarded = Forwarded::from_status(parts.status);

        if let (Forwarded::NotModified, Some(stale)) = (forwarded, stale) {
            let mut head = merge_not_modified(&stale.head, &client_headers(&parts.headers));
            let fresh = freshness(
                head.status,
                &head.headers,
                kind,
                &self.cache_config.ttl,
                self.ttl_override(key),
                self.clock.now(),
            );
            let initial_age = age_header(&head.headers);
            head.headers.remove(header::AGE);
            let storable =
                fresh.storable && (!authorized || shared_despite_authorization(&head.headers));
            fill.set_variant(stale.variant.clone());
            fill.set_head(head.clone(), forwarded, Some(upstream.name.as_str().into()));
            fill.push(stale.body.clone());
            let fresh = ll_bounded(fresh, kind, &head, &stale.body);
            return Ok(storable.then(|| CachedObject {
                head,
                body: stale.body.clone(),
                stored_at: received_at,
                initial_age,
                freshness: fresh,
                surrogate_keys: stale.surrogate_keys.clone(),
                variant: stale.variant.clone(),
                generation: fill.generation(),
            }));
        }

        let fresh = freshness(
            parts.status,
            &parts.headers,
            kind,
            &self.cache_config.ttl,
            self.ttl_override(key),
            self.clock.now(),
        );
        let initial_age = age_header(&parts.headers);
        let mut head = ResponseHead::new(parts.status);
        head.headers = client_headers(&parts.headers);
        let expected = head.content_length();
        let forwarded = match forwarded {
            // A 304 to an unconditional request: pass it on as it is.
            Forwarded::NotModified => Forwarded::Other,
            other => other,
        };
        let variant = Variant::of(&head.headers, &leader.headers).map(Arc::new);
        // `Vary: *` matches no later request; credentials keep a response
        // private unless it says otherwise (RFC 9111 §3.5).
        let storable = fresh.storable
            && variant.as_ref().is_none_or(|v| v.selected.is_some())
            && (!authorized || shared_despite_authorization(&head.headers));
        fill.set_variant(variant.clone());
        fill.set_head(head.clone(), forwarded, Some(upstream.name.as_str().into()));

        let body_timeout = self.upstreams.config().body_timeout;
        if let Err(e) = pump_body(fill, body, body_timeout).await {
            self.upstreams.failed(&upstream, "body");
            return Err(match e {
                BodyError::Cut(e) => {
                    FillFailure::new(format!("{}: body cut short: {e}", upstream.name), false)
                }
                BodyError::Stalled(after) => FillFailure::new(
                    format!("{}: body stalled for {after:?}", upstream.name),
                    true,
                ),
            });
        }
        let received = fill.received();
        if expected.is_some_and(|e| e != received) {
            return Err(FillFailure::new(
                format!("{}: body ended after {received} bytes", upstream.name),
                false,
            ));
        }
        if !storable || received > self.cache_config.max_object_size.0 {
            return Ok(None);
        }
        let surrogate_keys = surrogate_keys(&head);
        let body = fill.body();
        let fresh = ll_bounded(fresh, kind, &head, &body);
        Ok(Some(CachedObject {
            head,
            body,
            stored_at: received_at,
            initial_age,
            freshness: fresh,
            surrogate_keys,
            variant,
            generation: fill.generation(),
        }))
    }
}

/// An LL-HLS media playlist is fresh for at most its part target
/// ([`playlist_lifetime`]), whatever its `Cache-Control` allows.
fn ll_bounded(
    mut fresh: Freshness,
    kind: ObjectKind,
    head: &ResponseHead,
    body: &[u8],
) -> Freshness {
    if kind == ObjectKind::Playlist && head.status == 200 {
        if let Some(lifetime) = playlist_lifetime(body) {
            fresh.ttl = fresh.ttl.min(lifetime);
        }
    }
    fresh
}
