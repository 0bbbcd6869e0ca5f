//! Upstream pool: which origin or shield gets a fetch, their health, retries.
//!
//! Objects are spread over the pool by rendezvous (highest-random-weight)
//! hashing of the cache key: every edge picks the same shield for an object,
//! so it leaves the origin once for the whole CDN, and removing one upstream
//! only moves the objects that were on it.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use parking_lot::Mutex;
use serde::Deserialize;
use tokio::time::Instant;

use crate::error::EdgeError;
use crate::metrics::{UpstreamLabels, UpstreamMetrics, UpstreamOutcomeLabels};

/// The most an upstream connection reads at once (hyper's default: ~400 KiB).
pub const UPSTREAM_READ_BUFFER: usize = 64 * 1024;

/// The `[upstream]` section.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// Origins or shields, e.g. `["http://10.0.0.5:8080"]`. Several make a
    /// pool: objects are spread by consistent hashing, failures go to the next.
    pub urls: Vec<String>,
    /// Time allowed to open a TCP connection.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Time allowed from request to response headers.
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// Longest silence allowed between two body chunks.
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
    /// How many upstreams one request may try (first choice included).
    pub max_attempts: usize,
    /// A `404` from one upstream sends the request on to the next (nginx's
    /// `proxy_next_upstream http_404`, CloudFront origin-group failover):
    /// for a pool of redundant origins, where one that restarted holds a
    /// shorter window than the other. The last `404` is the answer when
    /// none has the object; a `404` never counts against health.
    pub next_on_not_found: bool,
    pub health: HealthConfig,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            urls: Vec::new(),
            connect_timeout: Duration::from_secs(2),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            max_attempts: 3,
            next_on_not_found: false,
            health: HealthConfig::default(),
        }
    }
}

/// Active and passive health checking.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Path probed with GET; any status below 500 passes. Empty: TCP connect only.
    pub path: String,
    /// Time between active probes.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Consecutive failures (probes or real requests) that eject an upstream.
    pub failures: u32,
    /// How long an upstream ejected by real-request failures stays out.
    #[serde(with = "humantime_serde")]
    pub eject_for: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            path: String::new(),
            interval: Duration::from_secs(2),
            failures: 3,
            eject_for: Duration::from_secs(10),
        }
    }
}

/// Why a configured upstream URL cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamUrlError {
    #[error("{url}: {why}")]
    Malformed { url: String, why: String },
    #[error("{0}: no scheme")]
    NoScheme(String),
    #[error("{0}: only http:// upstreams are supported")]
    NotHttp(String),
    #[error("{0}: no host")]
    NoHost(String),
}

/// One origin or shield.
pub struct Upstream {
    /// As configured, for labels and logs.
    pub name: String,
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    /// Path prefix from the configured URL, without trailing `/`.
    base_path: String,
    healthy: AtomicBool,
    consecutive_failures: AtomicU32,
    // Read on every pick, written on failures; never held across `.await`.
    ejected_until: Mutex<Option<Instant>>,
}

impl Upstream {
    pub fn parse(url: &str) -> Result<Upstream, UpstreamUrlError> {
        let uri: Uri =
            url.parse()
                .map_err(|e: http::uri::InvalidUri| UpstreamUrlError::Malformed {
                    url: url.to_owned(),
                    why: e.to_string(),
                })?;
        let scheme = uri
            .scheme()
            .cloned()
            .ok_or_else(|| UpstreamUrlError::NoScheme(url.to_owned()))?;
        if scheme != http::uri::Scheme::HTTP {
            return Err(UpstreamUrlError::NotHttp(url.to_owned()));
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| UpstreamUrlError::NoHost(url.to_owned()))?;
        Ok(Upstream {
            name: url.trim_end_matches('/').to_owned(),
            scheme,
            authority,
            base_path: uri.path().trim_end_matches('/').to_owned(),
            healthy: AtomicBool::new(true),
            consecutive_failures: AtomicU32::new(0),
            ejected_until: Mutex::new(None),
        })
    }

    pub fn is_available(&self) -> bool {
        if !self.healthy.load(Ordering::Relaxed) {
            return false;
        }
        match *self.ejected_until.lock() {
            Some(until) => Instant::now() >= until,
            None => true,
        }
    }

    fn uri(&self, path_and_query: &str) -> Result<Uri, EdgeError> {
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(format!("{}{}", self.base_path, path_and_query))
            .build()
            .map_err(|_| EdgeError::BadRequest("path cannot be sent upstream"))
    }

    fn score(&self, key: &str) -> u64 {
        // FNV-1a over upstream name and key, then a 64-bit finaliser
        // (splitmix64) so nearby keys spread well: stable across nodes and
        // releases, unlike std's hasher.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in self.name.bytes().chain([0u8]).chain(key.bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h ^= h >> 30;
        h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h ^= h >> 27;
        h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
        h ^ (h >> 31)
    }
}

/// What came back from upstream.
pub struct UpstreamResponse {
    pub upstream: Arc<Upstream>,
    pub response: Response<Incoming>,
}

pub struct UpstreamPool {
    upstreams: Vec<Arc<Upstream>>,
    client: Client<HttpConnector, Full<Bytes>>,
    config: UpstreamConfig,
    metrics: Arc<UpstreamMetrics>,
}

impl UpstreamPool {
    pub fn new(
        config: UpstreamConfig,
        metrics: Arc<UpstreamMetrics>,
    ) -> Result<UpstreamPool, UpstreamUrlError> {
        let upstreams = config
            .urls
            .iter()
            .map(|u| Upstream::parse(u).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            // Body chunks are slices of the connection's read buffer, which
            // grows to ~400 KiB by default; a fill holds its chunks while it
            // runs, so each read buffer is a fresh allocation of that size,
            // and a few live ones keep the allocator's 4 MiB pages for such
            // blocks resident (issue 11, benches/README.md "Memory"). A
            // loopback or LAN read returns 64 KiB anyway; an upstream head
            // larger than that is refused.
            .http1_max_buf_size(UPSTREAM_READ_BUFFER)
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(256)
            .build(connector);
        for u in &upstreams {
            metrics
                .healthy
                .get_or_create(&UpstreamLabels {
                    upstream: u.name.clone(),
                })
                .set(1);
        }
        Ok(UpstreamPool {
            upstreams,
            client,
            config,
            metrics,
        })
    }

    pub fn config(&self) -> &UpstreamConfig {
        &self.config
    }

    pub fn upstreams(&self) -> &[Arc<Upstream>] {
        &self.upstreams
    }

    /// Upstreams in the order to try for `key`: by hash score, available first.
    pub fn candidates(&self, key: &str) -> Vec<Arc<Upstream>> {
        let mut ranked: Vec<(bool, u64, &Arc<Upstream>)> = self
            .upstreams
            .iter()
            .map(|u| (u.is_available(), u.score(key), u))
            .collect();
        ranked.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)));
        ranked.into_iter().map(|(_, _, u)| u.clone()).collect()
    }

    /// GET `path_and_query`, trying upstreams in order until one answers
    /// below 500. `headers` are added to each attempt (validators, Via).
    pub async fn fetch(
        &self,
        path_and_query: &str,
        headers: &HeaderMap,
    ) -> Result<UpstreamResponse, EdgeError> {
        if self.upstreams.is_empty() {
            return Err(EdgeError::NoUpstream);
        }
        let mut last = EdgeError::NoUpstream;
        let mut not_found = None;
        let candidates = self.candidates(path_and_query);
        let attempts = candidates.len().min(self.config.max_attempts.max(1));
        for (i, upstream) in candidates.into_iter().take(attempts).enumerate() {
            match self
                .attempt(
                    &upstream,
                    &Method::GET,
                    path_and_query,
                    headers,
                    Bytes::new(),
                )
                .await
            {
                Ok(response)
                    if response.status().is_server_error()
                        && !held_too_long(path_and_query, response.status()) =>
                {
                    self.failed(&upstream, "http-5xx");
                    last = EdgeError::Upstream {
                        why: format!("{} answered {}", upstream.name, response.status()),
                        timeout: false,
                    };
                }
                Ok(response)
                    if response.status() == http::StatusCode::NOT_FOUND
                        && self.config.next_on_not_found
                        && i + 1 < attempts =>
                {
                    self.count(&upstream, "not-found-next");
                    not_found = Some(UpstreamResponse { upstream, response });
                }
                Ok(response) => {
                    self.succeeded(&upstream);
                    return Ok(UpstreamResponse { upstream, response });
                }
                Err(e) => last = e,
            }
        }
        not_found.ok_or(last)
    }

    /// Send a non-cacheable request (e.g. a licence POST) to the object's
    /// upstream; another upstream is tried only when no answer came at all,
    /// since the request may not be idempotent.
    pub async fn forward(
        &self,
        method: &Method,
        path_and_query: &str,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<UpstreamResponse, EdgeError> {
        let mut last = EdgeError::NoUpstream;
        for upstream in self
            .candidates(path_and_query)
            .into_iter()
            .take(self.config.max_attempts.max(1))
        {
            match self
                .attempt(&upstream, method, path_and_query, headers, body.clone())
                .await
            {
                Ok(response) => {
                    self.succeeded(&upstream);
                    return Ok(UpstreamResponse { upstream, response });
                }
                Err(e @ EdgeError::Upstream { timeout: true, .. }) => return Err(e),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    async fn attempt(
        &self,
        upstream: &Arc<Upstream>,
        method: &Method,
        path_and_query: &str,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<Response<Incoming>, EdgeError> {
        let mut request = Request::builder()
            .method(method.clone())
            .uri(upstream.uri(path_and_query)?)
            .body(Full::new(body))
            .map_err(|_| EdgeError::BadRequest("request cannot be sent upstream"))?;
        for (name, value) in headers {
            request.headers_mut().append(name.clone(), value.clone());
        }
        if let Ok(host) = HeaderValue::from_str(upstream.authority.as_str()) {
            request.headers_mut().insert(header::HOST, host);
        }
        let started = Instant::now();
        let result =
            tokio::time::timeout(self.config.header_timeout, self.client.request(request)).await;
        let labels = UpstreamLabels {
            upstream: upstream.name.clone(),
        };
        match result {
            Ok(Ok(response)) => {
                self.metrics
                    .latency
                    .get_or_create(&labels)
                    .observe(started.elapsed().as_secs_f64());
                Ok(response)
            }
            Ok(Err(e)) => {
                self.failed(upstream, "connect");
                Err(EdgeError::Upstream {
                    why: format!("{}: {}", upstream.name, error_chain(&e)),
                    timeout: false,
                })
            }
            Err(_) => {
                self.failed(upstream, "timeout");
                Err(EdgeError::Upstream {
                    why: format!(
                        "{}: no response within {:?}",
                        upstream.name, self.config.header_timeout
                    ),
                    timeout: true,
                })
            }
        }
    }

    fn count(&self, upstream: &Upstream, outcome: &'static str) {
        self.metrics
            .requests
            .get_or_create(&UpstreamOutcomeLabels {
                upstream: upstream.name.clone(),
                outcome,
            })
            .inc();
    }

    fn succeeded(&self, upstream: &Upstream) {
        self.count(upstream, "ok");
        upstream.consecutive_failures.store(0, Ordering::Relaxed);
    }

    /// Passive health: enough consecutive failures eject the upstream for a while.
    pub fn failed(&self, upstream: &Upstream, outcome: &'static str) {
        self.count(upstream, outcome);
        let failures = upstream
            .consecutive_failures
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        if failures >= self.config.health.failures {
            *upstream.ejected_until.lock() = Some(Instant::now() + self.config.health.eject_for);
            tracing::warn!(upstream = %upstream.name, failures, "upstream ejected after consecutive failures");
        }
    }

    /// Active health checks until `shutdown` fires.
    pub async fn check_health_forever(self: Arc<Self>) {
        let mut ticker = tokio::time::interval(self.config.health.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            for upstream in &self.upstreams {
                let ok = self.probe(upstream).await;
                let was = upstream.healthy.swap(ok, Ordering::Relaxed);
                if was != ok {
                    if ok {
                        upstream.consecutive_failures.store(0, Ordering::Relaxed);
                        *upstream.ejected_until.lock() = None;
                        tracing::info!(upstream = %upstream.name, "upstream healthy again");
                    } else {
                        tracing::warn!(upstream = %upstream.name, "upstream failed its health check");
                    }
                }
                self.metrics
                    .healthy
                    .get_or_create(&UpstreamLabels {
                        upstream: upstream.name.clone(),
                    })
                    .set(i64::from(ok));
            }
        }
    }

    async fn probe(&self, upstream: &Upstream) -> bool {
        let timeout =
            self.config.connect_timeout + self.config.header_timeout.min(Duration::from_secs(5));
        if self.config.health.path.is_empty() {
            let addr = upstream.authority.as_str();
            return matches!(
                tokio::time::timeout(
                    self.config.connect_timeout,
                    tokio::net::TcpStream::connect(addr)
                )
                .await,
                Ok(Ok(_))
            );
        }
        let Ok(uri) = upstream.uri(&self.config.health.path) else {
            return false;
        };
        let Ok(request) = Request::get(uri).body(Full::new(Bytes::new())) else {
            return false;
        };
        matches!(
            tokio::time::timeout(timeout, self.client.request(request)).await,
            Ok(Ok(r)) if r.status() < StatusCode::INTERNAL_SERVER_ERROR
        )
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// LL-HLS: a 503 to a blocking playlist reload (`_HLS_msn`) is the
/// origin's answer that the part did not come within its hold (RFC 8216bis
/// §6.2.5.2), not a fault: it goes to the player as it is, is not tried
/// elsewhere (another hold) and does not count against the upstream.
fn held_too_long(path_and_query: &str, status: http::StatusCode) -> bool {
    status == http::StatusCode::SERVICE_UNAVAILABLE
        && path_and_query
            .split_once('?')
            .is_some_and(|(_, q)| q.split('&').any(|p| p.starts_with("_HLS_msn=")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_blocking_reloads_503_is_an_answer() {
        let blocking = "/live/a/main/video.m3u8?_HLS_msn=7&_HLS_part=1";
        assert!(held_too_long(blocking, StatusCode::SERVICE_UNAVAILABLE));
        assert!(!held_too_long(blocking, StatusCode::BAD_GATEWAY));
        assert!(!held_too_long(
            "/live/a/main/video.m3u8",
            StatusCode::SERVICE_UNAVAILABLE
        ));
        assert!(!held_too_long(
            "/x?a_HLS_msn=1",
            StatusCode::SERVICE_UNAVAILABLE
        ));
    }

    fn pool(urls: &[&str]) -> UpstreamPool {
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = crate::metrics::EdgeMetrics::register(&mut registry);
        UpstreamPool::new(
            UpstreamConfig {
                urls: urls.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            },
            metrics.upstream,
        )
        .expect("pool")
    }

    #[tokio::test]
    async fn hashing_is_stable_and_only_moves_objects_of_a_removed_upstream() {
        let three = pool(&["http://a:1", "http://b:1", "http://c:1"]);
        let two = pool(&["http://a:1", "http://b:1"]);
        let mut moved = 0;
        let mut per_node = std::collections::HashMap::new();
        for i in 0..3000 {
            let key = format!("/live/ch/main/video/{i}.m4s");
            let first = three.candidates(&key)[0].name.clone();
            *per_node.entry(first.clone()).or_insert(0) += 1;
            let after = two.candidates(&key)[0].name.clone();
            if first != "http://c:1" && first != after {
                moved += 1;
            }
        }
        assert_eq!(
            moved, 0,
            "objects not on the removed upstream must stay put"
        );
        for (node, n) in per_node {
            assert!((800..1200).contains(&n), "{node} got {n} of 3000");
        }
    }

    #[test]
    fn only_http_urls_with_a_host_are_upstreams() {
        assert!(Upstream::parse("https://x").is_err());
        assert!(Upstream::parse("/path").is_err());
        let u = Upstream::parse("http://127.0.0.1:8080/base/").expect("parse");
        assert_eq!(
            u.uri("/live/a.m3u8?x=1")
                .ok()
                .map(|u| u.to_string())
                .as_deref(),
            Some("http://127.0.0.1:8080/base/live/a.m3u8?x=1")
        );
    }
}
