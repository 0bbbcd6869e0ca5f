//! The front-door-neutral request pipeline: parse → policy → cache → one
//! coalesced upstream fetch → response headers. Front doors (Pingora for h1/h2,
//! quinn for h3) call [`Edge::handle`] and write what it returns.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{header, request::Parts, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use tokio::time::Instant;

use crate::cache::fill::{Fill, FillFailure, FillOutcome, Forwarded};
use crate::cache::freshness::{freshness, TtlOverrides};
use crate::cache::inflight::{
    merge_not_modified, pump_body, BodyError, FillPermit, Inflight, Joined,
};
use crate::cache::key::CacheKey;
use crate::cache::purge::PurgeLog;
pub use crate::cache::CacheConfig;
use crate::cache::{Cache, CachedObject, Staleness};
use crate::clock::Clock;
use crate::error::{ConfigError, EdgeError};
use crate::metrics::{status_class, EdgeMetrics, ReasonLabels, RequestLabels};
use crate::policy::{Policy, Propagate};
use crate::request::{MediaRequest, ObjectKind, Protocol};
use crate::response::{CacheStatus, EdgeResponse, Outcome, ResponseHead};
use crate::upstream::{UpstreamPool, UpstreamResponse};

mod access;
mod control;
mod pass;
mod shape;

use shape::{age_header, denied_response, preflight, shape, BodySource};

/// Hop-by-hop and per-hop headers never copied from upstream to client.
const NOT_FORWARDED: [HeaderName; 9] = [
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::AGE,
    HeaderName::from_static("keep-alive"),
];

/// The request facts an access-log line and the metrics need.
#[derive(Clone, Debug)]
pub struct RequestLog {
    pub method: Method,
    /// Path and kept query: tokens and CMCD never reach the log.
    pub target: String,
    pub protocol: Protocol,
    pub client: SocketAddr,
}

pub struct Edge {
    node_id: String,
    cache_config: CacheConfig,
    cache: Cache,
    inflight: Inflight,
    clock: Clock,
    upstreams: Arc<UpstreamPool>,
    metrics: Arc<EdgeMetrics>,
    counters: crate::metrics::RequestHandles,
    via: HeaderValue,
    alt_svc: Option<HeaderValue>,
    policy: Option<Policy>,
    purges: PurgeLog,
    // Read once per fill, swapped whole by the admin API.
    ttl_overrides: parking_lot::RwLock<Arc<TtlOverrides>>,
    qoe: Option<Arc<crate::qoe::Qoe>>,
}

impl Edge {
    pub fn new(
        node_id: String,
        mut cache_config: CacheConfig,
        upstreams: Arc<UpstreamPool>,
        metrics: Arc<EdgeMetrics>,
        policy: Option<Policy>,
    ) -> Result<Edge, ConfigError> {
        // A token never splits the cache, whatever its parameter is called.
        if let Some(param) = policy.as_ref().and_then(|p| p.token_param()) {
            if !cache_config
                .ignore_params
                .iter()
                .any(|i| i.eq_ignore_ascii_case(param))
            {
                cache_config.ignore_params.push(param.to_owned());
            }
        }
        let via = HeaderValue::from_str(&format!("1.1 {node_id}")).map_err(|_| {
            ConfigError::new(
                "server.node_id",
                format!("{node_id:?} is not a valid header value"),
            )
        })?;
        let ttl_overrides = TtlOverrides::new(&cache_config.ttl_overrides, "cache.ttl_overrides")
            .map_err(|(key, message)| ConfigError::new(key, message))?;
        Ok(Edge {
            purges: PurgeLog::default(),
            ttl_overrides: parking_lot::RwLock::new(Arc::new(ttl_overrides)),
            cache: Cache::new(cache_config.size.0, metrics.cache.clone()),
            counters: crate::metrics::RequestHandles::new(&metrics.requests),
            node_id,
            cache_config,
            inflight: Inflight::default(),
            clock: Clock::system(),
            upstreams,
            metrics,
            via,
            alt_svc: None,
            policy,
            qoe: None,
        })
    }

    /// Take wall-clock time (freshness, token windows) from `clock`: tests
    /// move it instead of sleeping.
    pub fn set_clock(&mut self, clock: Clock) {
        self.clock = clock;
    }

    /// Advertise another front door (HTTP/3) on every response.
    pub fn set_alt_svc(&mut self, value: Option<HeaderValue>) {
        self.alt_svc = value;
    }

    /// Read CMCD and serve the QoE beacon ([`crate::qoe`]).
    pub fn set_qoe(&mut self, qoe: Option<Arc<crate::qoe::Qoe>>) {
        self.qoe = qoe;
    }

    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    pub fn upstreams(&self) -> &Arc<UpstreamPool> {
        &self.upstreams
    }

    pub fn metrics(&self) -> &Arc<EdgeMetrics> {
        &self.metrics
    }

    pub fn policy(&self) -> Option<&Policy> {
        self.policy.as_ref()
    }

    /// Answer one request that carries a body (POST under `cache.pass_through`).
    pub async fn handle_with_body(
        self: &Arc<Self>,
        parts: &Parts,
        body: bytes::Bytes,
        client: SocketAddr,
        protocol: Protocol,
    ) -> (EdgeResponse, RequestLog) {
        self.answer(parts, body, client, protocol).await
    }

    /// Answer with `error` without looking further (e.g. an oversized body).
    pub fn refuse(
        &self,
        parts: &Parts,
        error: EdgeError,
        client: SocketAddr,
        protocol: Protocol,
    ) -> (EdgeResponse, RequestLog) {
        let log = RequestLog {
            method: parts.method.clone(),
            target: parts.uri.path().to_owned(),
            protocol,
            client,
        };
        let mut response = error.into_response();
        self.finish_headers(&mut response.head.headers, protocol);
        (response, log)
    }

    /// Counts a request head the front door could not parse (and answered
    /// with 400 itself): a request like any other in the metrics, with the
    /// reason `unreadable-head`.
    pub fn count_unreadable_head(&self, protocol: Protocol) {
        let m = &self.metrics.requests;
        let labels = RequestLabels {
            status: "4xx",
            cache: "error",
            protocol: protocol.as_str(),
        };
        self.counters.record(m, labels, 0, 0.0);
        let reason = "unreadable-head";
        m.errors.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// Answer one request. Never fails: errors become responses here.
    pub async fn handle(
        self: &Arc<Self>,
        parts: &Parts,
        client: SocketAddr,
        protocol: Protocol,
    ) -> (EdgeResponse, RequestLog) {
        self.answer(parts, bytes::Bytes::new(), client, protocol)
            .await
    }

    async fn answer(
        self: &Arc<Self>,
        parts: &Parts,
        body: bytes::Bytes,
        client: SocketAddr,
        protocol: Protocol,
    ) -> (EdgeResponse, RequestLog) {
        if let Some(qoe) = &self.qoe {
            if let Some(mut response) = qoe.beacon(parts, &body, client, protocol) {
                self.finish_headers(&mut response.head.headers, protocol);
                let target = parts.uri.path().to_owned();
                let method = parts.method.clone();
                return (
                    response,
                    RequestLog {
                        method,
                        target,
                        protocol,
                        client,
                    },
                );
            }
        }
        let parsed = MediaRequest::parse(
            parts,
            client,
            protocol,
            &self.cache_config.ignore_params,
            self.policy.as_ref().and_then(|p| p.token_source()),
        );
        let log = RequestLog {
            method: parts.method.clone(),
            target: match &parsed {
                Ok(request) => request.key.to_string(),
                Err(_) => parts.uri.path().to_owned(),
            },
            protocol,
            client,
        };
        let mut response = match parsed {
            Ok(request) => {
                if let Some(qoe) = &self.qoe {
                    qoe.observe(&request, &parts.headers);
                }
                match self.admit(parts, &request) {
                    Err(denied) => denied_response(denied),
                    // Licence answers are per viewer already: nothing to propagate.
                    Ok(_) if request.method == Method::POST => {
                        match self.pass(&request, parts, body).await {
                            Ok(response) => response,
                            Err(e) => e.into_response(),
                        }
                    }
                    Ok(grant) => {
                        let mut request = request;
                        let rewrites = grant.token.is_some()
                            && grant.propagate == Propagate::Query
                            && matches!(request.kind, ObjectKind::Playlist | ObjectKind::Manifest);
                        if rewrites {
                            // A manifest is rewritten whole (ffmpeg asks for
                            // `bytes=0-`); RFC 9110 lets us answer 200.
                            request.range = None;
                        }
                        let response = match self.serve(&request).await {
                            Ok(response) => response,
                            Err(e) => e.into_response(),
                        };
                        self.propagate(&request, response, grant).await
                    }
                }
            }
            Err(e) => e.into_response(),
        };
        self.finish_headers(&mut response.head.headers, protocol);
        (response, log)
    }

    /// Count and log a response once its body has been written (or abandoned).
    pub fn record(
        &self,
        log: &RequestLog,
        outcome: &Outcome,
        status: StatusCode,
        bytes: u64,
        elapsed: Duration,
        complete: bool,
    ) {
        let m = &self.metrics.requests;
        let protocol = log.protocol.as_str();
        self.counters.record(
            m,
            RequestLabels {
                status: status_class(status.as_u16()),
                cache: outcome.cache.as_str(),
                protocol,
            },
            bytes,
            elapsed.as_secs_f64(),
        );
        if let Some(reason) = outcome.reason {
            m.errors.get_or_create(&ReasonLabels { reason }).inc();
        }
        crate::logging::AccessLine {
            client: log.client.ip(),
            method: log.method.as_str(),
            path: &log.target,
            status: status.as_u16(),
            cache: outcome.cache.as_str(),
            bytes,
            elapsed,
            upstream: outcome.upstream.as_deref().unwrap_or("-"),
            protocol,
            complete,
            reason: outcome.reason.unwrap_or("-"),
        }
        .emit();
    }

    fn finish_headers(&self, headers: &mut HeaderMap, protocol: Protocol) {
        // When this response leaves the edge, on every protocol: Pingora stamps
        // h1 and h2 responses with the current Date (overwriting a stored
        // one), so h3 must too. A cached copy's age travels in Age, and
        // players that set their clock from Date (DASH UTCTiming http-head)
        // read the edge's clock, not the time the origin made the copy.
        headers.insert(header::DATE, crate::response::date_now());
        headers.append(header::VIA, self.via.clone());
        match &self.alt_svc {
            Some(alt_svc) if protocol != Protocol::Http3 => {
                headers.insert(header::ALT_SVC, alt_svc.clone());
            }
            _ => {}
        }
        headers
            .entry(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .or_insert(HeaderValue::from_static("*"));
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(
                "Age, Cache-Status, Content-Length, Content-Range, Date, ETag",
            ),
        );
    }

    async fn serve(self: &Arc<Self>, request: &MediaRequest) -> Result<EdgeResponse, EdgeError> {
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
    fn join_or_start(
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

    fn start_fill(
        self: &Arc<Self>,
        request: &MediaRequest,
        permit: FillPermit,
        stale: Option<Arc<CachedObject>>,
    ) {
        let edge = self.clone();
        let kind = request.kind;
        let mut via = request.via.clone();
        via.push(format!("1.1 {}", self.node_id));
        tokio::spawn(async move { edge.run_fill(permit, kind, stale, via).await });
    }

    async fn run_fill(
        self: Arc<Self>,
        permit: FillPermit,
        kind: ObjectKind,
        stale: Option<Arc<CachedObject>>,
        via: Vec<String>,
    ) {
        let key = permit.key().clone();
        let fill = permit.fill().clone();
        match self
            .fill_from_upstream(&key, kind, &fill, stale.as_deref(), &via)
            .await
        {
            Ok(object) => {
                if let Some(object) = object {
                    // Stored before the permit frees the key, so a request
                    // that finds neither cannot exist (see `serve`).
                    self.store_unless_purged(&key, Arc::new(object), &fill)
                        .await;
                } else if stale.is_some() {
                    self.cache.remove(&key).await;
                }
                permit.finish(FillOutcome::Complete);
            }
            Err(failure) => {
                tracing::warn!(path = %key, why = %failure.why, "upstream fetch failed");
                permit.finish(FillOutcome::Failed(failure));
            }
        }
    }

    /// Fetch `key` into `fill`; returns the object to store, if storable.
    async fn fill_from_upstream(
        &self,
        key: &CacheKey,
        kind: ObjectKind,
        fill: &Fill,
        stale: Option<&CachedObject>,
        via: &[String],
    ) -> Result<Option<CachedObject>, FillFailure> {
        let mut headers = HeaderMap::new();
        if let Ok(via) = HeaderValue::from_str(&via.join(", ")) {
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
            .map_err(|e| {
                FillFailure::new(
                    e.to_string(),
                    matches!(e, EdgeError::Upstream { timeout: true, .. }),
                )
            })?;
        let (parts, body) = response.into_parts();
        let received_at = Instant::now();
        let forwarded = Forwarded::from_status(parts.status);

        if let (Forwarded::NotModified, Some(stale)) = (forwarded, stale) {
            let mut head = merge_not_modified(&stale.head, &parts.headers);
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
            fill.set_head(head.clone(), forwarded, Some(upstream.name.as_str().into()));
            fill.push(stale.body.clone());
            return Ok(fresh.storable.then(|| CachedObject {
                head,
                body: stale.body.clone(),
                stored_at: received_at,
                initial_age,
                freshness: fresh,
                surrogate_keys: stale.surrogate_keys.clone(),
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
        for (name, value) in &parts.headers {
            if !NOT_FORWARDED.contains(name) {
                head.headers.append(name.clone(), value.clone());
            }
        }
        let expected = head.content_length();
        let forwarded = match forwarded {
            // A 304 to an unconditional request: pass it on as it is.
            Forwarded::NotModified => Forwarded::Other,
            other => other,
        };
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
        if !fresh.storable || received > self.cache_config.max_object_size.0 {
            return Ok(None);
        }
        let surrogate_keys = control::surrogate_keys(&head);
        Ok(Some(CachedObject {
            head,
            body: fill.body(),
            stored_at: received_at,
            initial_age,
            freshness: fresh,
            surrogate_keys,
        }))
    }

    fn cache_status(&self, detail: &str) -> HeaderValue {
        HeaderValue::from_str(&format!("{}; {detail}", self.node_id))
            .unwrap_or(HeaderValue::from_static("strata"))
    }

    fn respond_from_object(
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

    async fn respond_from_fill(
        &self,
        request: &MediaRequest,
        head: &ResponseHead,
        fill: &Arc<Fill>,
        cache: CacheStatus,
        detail: &str,
    ) -> EdgeResponse {
        let mut head = head.clone();
        head.headers.insert(header::AGE, 0.into());
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

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::policy::PolicyConfig;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    /// Token windows move with the edge's clock, not the machine's: a
    /// token's whole life is checked here without sleeping.
    #[tokio::test]
    async fn token_windows_follow_the_injected_clock() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_600_000);
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = Arc::new(EdgeMetrics::register(&mut registry));
        let upstream = crate::upstream::UpstreamConfig {
            urls: vec!["http://127.0.0.1:1".into()],
            ..Default::default()
        };
        let pool =
            Arc::new(UpstreamPool::new(upstream, metrics.upstream.clone()).expect("upstream pool"));
        let token = toml::from_str(&format!(
            "keys = [{{ id = \"k\", secret = \"{SECRET}\" }}]\nrequire = [\"/live/\"]\n"
        ))
        .expect("token config");
        let policy = Policy::init(PolicyConfig {
            token: Some(token),
            geo: None,
        })
        .expect("policy");
        let mut edge = Edge::new(
            "clock-edge".into(),
            CacheConfig::default(),
            pool,
            metrics,
            Some(policy),
        )
        .expect("edge");
        let clock = Clock::manual(start);
        edge.set_clock(clock.clone());
        let edge = Arc::new(edge);
        let signed = crate::policy::sign(
            SECRET,
            "/live/a/*",
            Duration::from_secs(60),
            start,
            None,
            None,
        )
        .expect("sign");
        let parts = http::Request::get(format!("/live/a/1.m4s?token={signed}"))
            .body(())
            .expect("request")
            .into_parts()
            .0;
        let client = SocketAddr::from(([192, 0, 2, 1], 40000));
        let reason = |response: &EdgeResponse| {
            response
                .head
                .header_str(crate::policy::REJECT_REASON_HEADER)
                .map(str::to_owned)
        };

        // Valid now: past the policy (the upstream is unreachable: 502).
        let (response, _) = edge.handle(&parts, client, Protocol::Http1).await;
        assert_eq!(reason(&response), None);
        assert_eq!(response.head.status, StatusCode::BAD_GATEWAY);
        // An hour later it has expired (clock skew allowance included).
        clock.advance(Duration::from_secs(3600));
        let (response, _) = edge.handle(&parts, client, Protocol::Http1).await;
        assert_eq!(response.head.status, StatusCode::FORBIDDEN);
        assert_eq!(reason(&response).as_deref(), Some("expired"));
    }
}
