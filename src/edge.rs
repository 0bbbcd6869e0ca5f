//! The front-door-neutral request pipeline: parse → policy → cache → one
//! coalesced upstream fetch → response headers. Front doors (Pingora for h1/h2,
//! quinn for h3) call [`Edge::handle`] and write what it returns.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{header, request::Parts, HeaderMap, HeaderValue, Method, StatusCode};

use crate::cache::freshness::TtlOverrides;
use crate::cache::inflight::Inflight;
use crate::cache::purge::PurgeLog;
use crate::cache::Cache;
pub use crate::cache::CacheConfig;
use crate::clock::Clock;
use crate::error::{ConfigError, EdgeError};
use crate::metrics::{status_class, EdgeMetrics, ReasonLabels, RequestLabels};
use crate::policy::{Policy, Propagate};
use crate::request::{MediaRequest, ObjectKind, Protocol};
use crate::response::{EdgeResponse, Outcome};
use crate::upstream::UpstreamPool;

mod access;
mod control;
mod fetch;
mod forward;
mod lookup;
mod pass;
mod prefetch;
mod respond;
mod shape;

use shape::denied_response;

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
    prefetched: prefetch::Prefetched,
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
            .map_err(|e| ConfigError::new(e.key, e.message))?;
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
            prefetched: prefetch::Prefetched::default(),
        })
    }

    /// Put a disk tier under the memory cache (`None`: one is configured
    /// but could not be opened); purge generations continue its journal's.
    pub fn set_disk(&mut self, disk: Option<Arc<crate::cache::disk::DiskTier>>) {
        if let Some(disk) = &disk {
            self.purges = PurgeLog::starting_at(disk.last_generation());
        }
        self.cache.set_disk(disk);
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

    /// Answer one request that carries a body (a method other than GET,
    /// HEAD and OPTIONS, passed through under `cache.pass_through`).
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
                Ok(request) => request.key.as_str().to_owned(),
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
                    Ok(_) if crate::request::passes_through(&request.method) => {
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
                        let response = match self.serve(&request, &parts.headers).await {
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
}

#[cfg(test)]
mod tests;
