//! Remote stores: titles kept in an HTTP(S) object store (S3, GCS, R2,
//! MinIO, any server that honours `Range`), read by byte range only — the
//! top-level box headers, the `moov`, and the samples one segment needs;
//! never the whole file.
//!
//! Each `[[vod.remote]]` store owns a path prefix: `/vod/{prefix}/{key}/…`
//! reads `{url}{key}`. Requests carry the store's static headers, run under
//! a per-attempt timeout, retry 5xx/429, timeouts and broken connections
//! with backoff, and take one of `max_connections` permits (the pool's
//! bound). Once a title is indexed, every read carries `If-Match` with the
//! object's ETag, so bytes of a replaced object are never mixed with the old
//! index (a 412 drops the index and the request is answered from a fresh one).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_RANGE, ETAG, IF_MATCH, RANGE};
use http::{HeaderMap, StatusCode};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

/// Bytes read from the start of an object when it is first opened: the file
/// type and, for a "fast start" file, usually the whole `moov`.
const HEAD_BYTES: u64 = 64 << 10;
/// Least read while walking the top-level boxes: a `moov` at the end of the
/// file usually comes whole with its header.
const READAHEAD: usize = 64 << 10;
/// Sample runs of one segment separated by at most this many bytes are read
/// as one range (a small audio chunk between two video chunks).
const MERGE_GAP: u64 = 16 << 10;

/// Path-segment characters sent as they are; everything else is escaped.
const KEY_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// One `[[vod.remote]]` store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteStoreConfig {
    /// The first path component under `/vod/` that selects this store:
    /// `/vod/{prefix}/{key}/master.m3u8` reads `{url}{key}`. It shadows a
    /// local directory of the same name.
    pub prefix: String,
    /// Base URL of the objects, `http://` or `https://`, ending in `/`
    /// (e.g. `https://bucket.s3.eu-west-1.amazonaws.com/vod/`).
    pub url: String,
    /// One attempt (connect, headers and body) gives up after this long.
    #[serde(with = "humantime_serde", default = "default_timeout")]
    pub timeout: Duration,
    /// Establishing a connection (TCP and TLS) gives up after this long.
    #[serde(with = "humantime_serde", default = "default_connect_timeout")]
    pub connect_timeout: Duration,
    /// Further attempts after a 5xx, a 429, a timeout, a refused or broken
    /// connection or a short body (never after another 4xx).
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Requests in flight to this store at once; the pool keeps at most this
    /// many idle connections.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Sent with every request, e.g. `{ authorization = "Bearer …" }` or an
    /// API key header. Values are never logged.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// An indexed title is trusted this long; after it, the next request
    /// reads the object's first bytes again and re-indexes it only if its
    /// ETag or size changed.
    #[serde(with = "humantime_serde", default = "default_revalidate")]
    pub revalidate: Duration,
    /// Sign every request with AWS Signature V4 (`[vod.remote.s3]`), as
    /// S3 and S3-compatible stores require for private buckets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Signing>,
}

/// `[vod.remote.s3]`: who signs. The secret comes from a file or an
/// environment variable, never from the config itself, and is never logged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Signing {
    pub region: String,
    pub access_key_id: String,
    /// A file holding the secret access key (surrounding whitespace ignored).
    #[serde(default)]
    pub secret_file: Option<std::path::PathBuf>,
    /// An environment variable holding the secret access key.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// The signing service name; `s3` unless the store says otherwise.
    #[serde(default = "default_service")]
    pub service: String,
}

fn default_service() -> String {
    "s3".into()
}

impl S3Signing {
    /// The secret, read from its file or variable; errors name the key only.
    fn secret(&self, key: &str) -> Result<String, String> {
        let secret = match (&self.secret_file, &self.secret_env) {
            (Some(file), None) => std::fs::read_to_string(file)
                .map_err(|e| format!("{key}.s3.secret_file: {}: {e}", file.display()))?,
            (None, Some(var)) => {
                std::env::var(var).map_err(|_| format!("{key}.s3.secret_env: {var} is not set"))?
            }
            _ => {
                return Err(format!(
                    "{key}.s3: exactly one of secret_file and secret_env"
                ))
            }
        };
        let secret = secret.trim().to_owned();
        if secret.is_empty() {
            return Err(format!("{key}.s3: the secret is empty"));
        }
        Ok(secret)
    }
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(3)
}

fn default_retries() -> u32 {
    2
}

fn default_max_connections() -> usize {
    32
}

fn default_revalidate() -> Duration {
    Duration::from_secs(300)
}

impl RemoteStoreConfig {
    /// A store at `url` under `prefix`, everything else as the defaults.
    pub fn new(prefix: &str, url: &str) -> RemoteStoreConfig {
        RemoteStoreConfig {
            prefix: prefix.into(),
            url: url.into(),
            timeout: default_timeout(),
            connect_timeout: default_connect_timeout(),
            retries: default_retries(),
            max_connections: default_max_connections(),
            headers: BTreeMap::new(),
            revalidate: default_revalidate(),
            s3: None,
        }
    }

    /// Checks serde cannot express; errors name the key.
    pub fn validate(&self) -> Result<(), String> {
        let key = format!("vod.remote[{}]", self.prefix);
        if self.prefix.is_empty()
            || self.prefix == "."
            || self.prefix == ".."
            || !self
                .prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(format!(
                "{key}.prefix: one path component of letters, digits, '-', '_' or '.'"
            ));
        }
        let uri: http::Uri = self.url.parse().map_err(|e| format!("{key}.url: {e}"))?;
        if !matches!(uri.scheme_str(), Some("http" | "https"))
            || uri.host().is_none()
            || uri.query().is_some()
            || !self.url.ends_with('/')
        {
            return Err(format!(
                "{key}.url: an http:// or https:// URL without a query, ending in '/'"
            ));
        }
        if self.timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err(format!(
                "{key}.timeout, connect_timeout: must be above zero"
            ));
        }
        if self.retries > 10 {
            return Err(format!("{key}.retries: at most 10"));
        }
        if self.max_connections == 0 || self.max_connections > 4096 {
            return Err(format!("{key}.max_connections: between 1 and 4096"));
        }
        if let Some(s3) = &self.s3 {
            if s3.region.is_empty() || s3.access_key_id.is_empty() || s3.service.is_empty() {
                return Err(format!(
                    "{key}.s3: region, access_key_id and service must not be empty"
                ));
            }
            s3.secret(&key)?;
        }
        self.header_map().map(|_| ())
    }

    fn header_map(&self) -> Result<HeaderMap, String> {
        let mut map = HeaderMap::new();
        for (name, value) in &self.headers {
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("vod.remote[{}].headers: bad name {name:?}", self.prefix))?;
            if [RANGE, IF_MATCH].contains(&header) {
                return Err(format!(
                    "vod.remote[{}].headers: {name} is set by Strata",
                    self.prefix
                ));
            }
            let mut value = HeaderValue::from_str(value).map_err(|_| {
                // The value may be a secret: name the header only.
                format!("vod.remote[{}].headers: bad value for {name}", self.prefix)
            })?;
            value.set_sensitive(true);
            map.insert(header, value);
        }
        Ok(map)
    }
}

/// Why a remote read failed; [`RemoteError::status`] maps it for
/// [`super::VodError::status`].
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("remote store {store}: no such object")]
    NotFound { store: String },
    #[error("remote store {store} answered {status}")]
    Status { store: String, status: u16 },
    #[error("remote store {store} did not answer within {timeout:?}")]
    Timeout { store: String, timeout: Duration },
    #[error("remote store {store} unreachable: {why}")]
    Unreachable { store: String, why: String },
    #[error("remote store {store} sent {got} of {want} bytes")]
    Truncated { store: String, got: u64, want: u64 },
    #[error("remote store {store} ignores Range requests (whole objects are never read)")]
    NoRanges { store: String },
    #[error("remote store {store}: {why}")]
    BadAnswer { store: String, why: String },
    #[error("remote store {store}: the object changed since it was indexed")]
    Changed { store: String },
    #[error("remote reads need the tokio runtime")]
    NoRuntime,
}

impl RemoteError {
    /// The store's failures are a bad gateway, its slowness a gateway
    /// timeout; a missing object is a plain 404.
    pub fn status(&self) -> u16 {
        match self {
            RemoteError::NotFound { .. } => 404,
            RemoteError::Timeout { .. } => 504,
            RemoteError::NoRuntime => 500,
            _ => 502,
        }
    }

    pub fn reason(&self) -> &'static str {
        match self {
            RemoteError::NotFound { .. } => "not_found",
            RemoteError::Status { status, .. } if *status >= 500 || *status == 429 => "remote_5xx",
            RemoteError::Status { .. } => "remote_4xx",
            RemoteError::Timeout { .. } => "remote_timeout",
            RemoteError::Unreachable { .. } => "remote_unreachable",
            RemoteError::Truncated { .. } => "remote_truncated",
            RemoteError::NoRanges { .. } | RemoteError::BadAnswer { .. } => "remote_bad_answer",
            RemoteError::Changed { .. } => "remote_changed",
            RemoteError::NoRuntime => "io",
        }
    }

    fn retryable(&self) -> bool {
        match self {
            RemoteError::Status { status, .. } => *status >= 500 || *status == 429,
            RemoteError::Timeout { .. }
            | RemoteError::Unreachable { .. }
            | RemoteError::Truncated { .. } => true,
            _ => false,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub store: String,
    /// `ok`, `not_found`, `remote_5xx`, `remote_4xx`, `remote_timeout`,
    /// `remote_unreachable`, `remote_truncated`, `remote_bad_answer`, `remote_changed`
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreLabels {
    pub store: String,
}

/// `strata_origin_vod_remote_*`.
#[derive(Clone, Default)]
pub struct RemoteMetrics {
    /// Every attempt, retries included, by outcome.
    pub requests: Family<RequestLabels, Counter>,
    /// Body bytes received.
    pub bytes: Family<StoreLabels, Counter>,
    /// Reads that failed after their retries, by reason.
    pub errors: Family<RequestLabels, Counter>,
    pub retries: Family<StoreLabels, Counter>,
}

impl RemoteMetrics {
    /// Registers under the `strata_origin_vod` registry given.
    pub fn register(&self, vod: &mut Registry) {
        vod.register(
            "remote_requests",
            "Range requests to remote stores, retries included, by outcome",
            self.requests.clone(),
        );
        vod.register(
            "remote_bytes",
            "Body bytes received from remote stores",
            self.bytes.clone(),
        );
        vod.register(
            "remote_errors",
            "Remote reads that failed after their retries, by reason",
            self.errors.clone(),
        );
        vod.register(
            "remote_retries",
            "Remote range requests tried again",
            self.retries.clone(),
        );
    }
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// One configured store, its client and its connection permits.
pub struct RemoteStore {
    pub config: RemoteStoreConfig,
    headers: HeaderMap,
    client: HttpsClient,
    permits: Arc<Semaphore>,
    metrics: RemoteMetrics,
    /// `[vod.remote.s3]`'s secret, read once at start.
    s3_secret: Option<String>,
}

impl std::fmt::Debug for RemoteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the headers: they may hold credentials.
        f.debug_struct("RemoteStore")
            .field("prefix", &self.config.prefix)
            .field("url", &self.config.url)
            .finish_non_exhaustive()
    }
}

/// What one range request brought back.
struct RangeReply {
    body: Bytes,
    /// The object's size, from `Content-Range`.
    total: Option<u64>,
    etag: Option<String>,
}

impl RemoteStore {
    pub fn new(config: RemoteStoreConfig, metrics: RemoteMetrics) -> Result<RemoteStore, String> {
        config.validate()?;
        let headers = config.header_map()?;
        let mut roots = rustls::RootCertStore::empty();
        if let Ok(certs) = rustls_native_certs::load_native_certs() {
            for cert in certs {
                let _ = roots.add(cert);
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("vod.remote[{}]: TLS: {e}", config.prefix))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(config.connect_timeout));
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(config.max_connections)
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .build(https);
        let key = format!("vod.remote[{}]", config.prefix);
        let s3_secret = config.s3.as_ref().map(|s| s.secret(&key)).transpose()?;
        Ok(RemoteStore {
            s3_secret,
            permits: Arc::new(Semaphore::new(config.max_connections)),
            headers,
            client,
            metrics,
            config,
        })
    }

    fn store(&self) -> String {
        self.config.prefix.clone()
    }

    /// `{url}{key}`, each component of `key` escaped.
    fn url(&self, key: &str) -> String {
        let mut url = self.config.url.clone();
        for (i, part) in key.split('/').enumerate() {
            if i > 0 {
                url.push('/');
            }
            url.extend(utf8_percent_encode(part, KEY_SEGMENT));
        }
        url
    }

    /// Bytes `start..start + len` of `key` (fewer at the object's end),
    /// retried as the store's policy says.
    async fn range(
        &self,
        key: &str,
        start: u64,
        len: u64,
        if_match: Option<&str>,
    ) -> Result<RangeReply, RemoteError> {
        let mut attempt = 0;
        loop {
            let result = self.attempt(key, start, len, if_match).await;
            let outcome = match &result {
                Ok(_) => "ok",
                Err(e) => e.reason(),
            };
            self.metrics
                .requests
                .get_or_create(&RequestLabels {
                    store: self.store(),
                    outcome,
                })
                .inc();
            match result {
                Err(e) if e.retryable() && attempt < self.config.retries => {
                    attempt += 1;
                    self.metrics
                        .retries
                        .get_or_create(&StoreLabels {
                            store: self.store(),
                        })
                        .inc();
                    tracing::info!(store = %self.config.prefix, %key, attempt, error = %e, "remote range read failed; retrying");
                    let backoff = Duration::from_millis(50 << attempt.min(5));
                    tokio::time::sleep(backoff).await;
                }
                Err(e) => {
                    self.metrics
                        .errors
                        .get_or_create(&RequestLabels {
                            store: self.store(),
                            outcome: e.reason(),
                        })
                        .inc();
                    return Err(e);
                }
                Ok(reply) => return Ok(reply),
            }
        }
    }

    async fn attempt(
        &self,
        key: &str,
        start: u64,
        len: u64,
        if_match: Option<&str>,
    ) -> Result<RangeReply, RemoteError> {
        let store = self.store();
        let timeout = self.config.timeout;
        let permit = tokio::time::timeout(timeout, self.permits.acquire())
            .await
            .map_err(|_| RemoteError::Timeout {
                store: store.clone(),
                timeout,
            })?
            .map_err(|_| RemoteError::NoRuntime)?;
        let work = async {
            let store = store.clone();
            let uri: http::Uri = self.url(key).parse().map_err(|e| RemoteError::BadAnswer {
                store: store.clone(),
                why: format!("object URL: {e}"),
            })?;
            let mut request = http::Request::get(uri)
                .header(http::header::USER_AGENT, "strata-origin-vod")
                .header(RANGE, format!("bytes={start}-{}", start + len.max(1) - 1))
                .body(Empty::new())
                .map_err(|e| RemoteError::BadAnswer {
                    store: store.clone(),
                    why: e.to_string(),
                })?;
            request.headers_mut().extend(self.headers.clone());
            if let Some(etag) = if_match.and_then(|e| HeaderValue::from_str(e).ok()) {
                request.headers_mut().insert(IF_MATCH, etag);
            }
            if let (Some(s3), Some(secret)) = (&self.config.s3, &self.s3_secret) {
                sign_s3(&mut request, s3, secret, std::time::SystemTime::now());
            }
            let response = self.client.request(request).await.map_err(|e| {
                let mut why = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    why = format!("{why}: {s}");
                    source = s.source();
                }
                RemoteError::Unreachable {
                    store: store.clone(),
                    why,
                }
            })?;
            let status = response.status();
            let etag = response
                .headers()
                .get(ETAG)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let (want, total) = match status {
                StatusCode::PARTIAL_CONTENT => {
                    let (first, last, total) = response
                        .headers()
                        .get(CONTENT_RANGE)
                        .and_then(|v| v.to_str().ok())
                        .and_then(parse_content_range)
                        .ok_or_else(|| RemoteError::BadAnswer {
                            store: store.clone(),
                            why: "206 without a usable Content-Range".into(),
                        })?;
                    if first != start || last < first || last - first + 1 > len.max(1) {
                        return Err(RemoteError::BadAnswer {
                            store: store.clone(),
                            why: format!(
                                "asked for bytes {start}+{len}, got Content-Range {first}-{last}"
                            ),
                        });
                    }
                    (last - first + 1, total)
                }
                StatusCode::OK => {
                    // Range ignored: fine for an object no bigger than what
                    // was asked for, never read otherwise.
                    let length = response
                        .headers()
                        .get(CONTENT_LENGTH)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok());
                    match length {
                        Some(n) if start == 0 && n <= len => (n, Some(n)),
                        _ => return Err(RemoteError::NoRanges { store }),
                    }
                }
                StatusCode::NOT_FOUND | StatusCode::GONE => {
                    return Err(RemoteError::NotFound { store })
                }
                StatusCode::PRECONDITION_FAILED => return Err(RemoteError::Changed { store }),
                StatusCode::RANGE_NOT_SATISFIABLE => {
                    return Ok(RangeReply {
                        body: Bytes::new(),
                        total: response
                            .headers()
                            .get(CONTENT_RANGE)
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.strip_prefix("bytes */"))
                            .and_then(|v| v.parse().ok()),
                        etag,
                    })
                }
                other => {
                    return Err(RemoteError::Status {
                        store,
                        status: other.as_u16(),
                    })
                }
            };
            let mut body = Limited::new(response.into_body(), want as usize);
            let mut got = Vec::with_capacity(want as usize);
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| {
                    if got.len() as u64 >= want {
                        RemoteError::BadAnswer {
                            store: store.clone(),
                            why: format!("body longer than the {want} bytes announced"),
                        }
                    } else {
                        tracing::debug!(error = %e, "remote body broke off");
                        RemoteError::Truncated {
                            store: store.clone(),
                            got: got.len() as u64,
                            want,
                        }
                    }
                })?;
                if let Ok(data) = frame.into_data() {
                    got.extend_from_slice(&data);
                    self.metrics
                        .bytes
                        .get_or_create(&StoreLabels {
                            store: store.clone(),
                        })
                        .inc_by(data.len() as u64);
                }
            }
            if (got.len() as u64) < want {
                return Err(RemoteError::Truncated {
                    store: store.clone(),
                    got: got.len() as u64,
                    want,
                });
            }
            Ok(RangeReply {
                body: got.into(),
                total,
                etag,
            })
        };
        let result = tokio::time::timeout(timeout, work)
            .await
            .unwrap_or_else(|_| {
                Err(RemoteError::Timeout {
                    store: store.clone(),
                    timeout,
                })
            });
        drop(permit);
        result
    }

    /// Longest a blocking caller waits for one read, retries included.
    fn budget(&self) -> Duration {
        (self.config.timeout + Duration::from_secs(2)) * (self.config.retries + 1)
    }
}

/// `bytes a-b/total` (total may be `*`).
fn parse_content_range(v: &str) -> Option<(u64, u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    let total = match total {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((a.parse().ok()?, b.parse().ok()?, total))
}

/// Runs `work` on the tokio runtime and waits for it from this (blocking)
/// thread. The library's reads run on tokio's blocking pool; waiting on a
/// channel (not `Handle::block_on`) cannot panic whatever thread calls it.
fn wait<T: Send + 'static>(
    store: &RemoteStore,
    work: impl std::future::Future<Output = Result<T, RemoteError>> + Send + 'static,
) -> Result<T, RemoteError> {
    let handle = tokio::runtime::Handle::try_current().map_err(|_| RemoteError::NoRuntime)?;
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let task = handle.spawn(async move {
        let _ = tx.send(work.await);
    });
    let budget = store.budget();
    match rx.recv_timeout(budget) {
        Ok(result) => result,
        Err(_) => {
            task.abort();
            Err(RemoteError::Timeout {
                store: store.store(),
                timeout: budget,
            })
        }
    }
}

/// One object of a store, opened: its size and ETag, and the last window of
/// bytes read while its boxes were walked.
pub struct RemoteObject {
    pub store: Arc<RemoteStore>,
    pub key: String,
    pub len: u64,
    pub etag: Option<String>,
    // Held for a lookup or a replace only; indexing runs on one thread.
    window: Mutex<(u64, Bytes)>,
}

impl std::fmt::Debug for RemoteObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteObject")
            .field("store", &self.store.config.prefix)
            .field("key", &self.key)
            .field("len", &self.len)
            .field("etag", &self.etag)
            .finish()
    }
}

impl RemoteObject {
    /// Reads the object's first bytes: its size (from `Content-Range`), its
    /// ETag, and the first box headers.
    pub fn open(store: Arc<RemoteStore>, key: &str) -> Result<RemoteObject, RemoteError> {
        let (s, k) = (store.clone(), key.to_owned());
        let reply = wait(
            &store,
            async move { s.range(&k, 0, HEAD_BYTES, None).await },
        )?;
        let len = reply.total.ok_or_else(|| RemoteError::BadAnswer {
            store: store.config.prefix.clone(),
            why: "no object size in Content-Range".into(),
        })?;
        Ok(RemoteObject {
            key: key.to_owned(),
            len,
            etag: reply.etag,
            window: Mutex::new((0, reply.body)),
            store,
        })
    }

    /// Up to `n` bytes at `at` (fewer at the end), from the last window when
    /// it holds them, else with a read of at least [`READAHEAD`] bytes.
    pub fn read_upto(&self, at: u64, n: usize) -> Result<Vec<u8>, RemoteError> {
        let end = (at + n as u64).min(self.len);
        if at >= end {
            return Ok(Vec::new());
        }
        {
            let window = self.window.lock().expect("not poisoned");
            let (w_at, w) = (window.0, &window.1);
            if at >= w_at && end <= w_at + w.len() as u64 {
                return Ok(w[(at - w_at) as usize..(end - w_at) as usize].to_vec());
            }
        }
        let ask = (n.max(READAHEAD) as u64).min(self.len - at);
        let body = self.read_ranges(&[(at, at + ask)])?.remove(0);
        let out = body[..(end - at) as usize].to_vec();
        *self.window.lock().expect("not poisoned") = (at, body);
        Ok(out)
    }

    /// The bytes of each of `runs` (`start..end`, ascending): ranges closer
    /// than [`MERGE_GAP`] are read as one, the reads run concurrently.
    pub fn read_ranges(&self, runs: &[(u64, u64)]) -> Result<Vec<Bytes>, RemoteError> {
        let mut sorted = runs.to_vec();
        sorted.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::new();
        for (s, e) in sorted {
            match merged.last_mut() {
                Some(last) if s <= last.1 + MERGE_GAP => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        let (store, key, etag) = (self.store.clone(), self.key.clone(), self.etag.clone());
        let reads = merged.clone();
        let bodies = wait(&self.store, async move {
            let fetches = reads.iter().map(|&(s, e)| {
                let (store, key, etag) = (&store, &key, etag.as_deref());
                async move {
                    let reply = store.range(key, s, e - s, etag).await?;
                    if (reply.body.len() as u64) < e - s {
                        return Err(RemoteError::Truncated {
                            store: store.store(),
                            got: reply.body.len() as u64,
                            want: e - s,
                        });
                    }
                    Ok(reply.body)
                }
            });
            futures::future::try_join_all(fetches).await
        })?;
        Ok(runs
            .iter()
            .map(|&(s, e)| {
                let k = merged.partition_point(|m| m.0 <= s).saturating_sub(1);
                let (m_start, _) = merged[k];
                bodies[k].slice((s - m_start) as usize..(e - m_start) as usize)
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_parses() {
        assert_eq!(
            parse_content_range("bytes 0-99/1000"),
            Some((0, 99, Some(1000)))
        );
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, 9, None)));
        assert_eq!(parse_content_range("bytes */1000"), None);
        assert_eq!(parse_content_range("items 0-1/2"), None);
    }

    #[test]
    fn config_is_checked() {
        let ok = RemoteStoreConfig::new("s3", "https://bucket.example/prefix/");
        assert_eq!(ok.validate(), Ok(()));
        for (prefix, url) in [
            ("..", "https://b.example/"),
            ("a/b", "https://b.example/"),
            ("s3", "ftp://b.example/"),
            ("s3", "https://b.example/no-slash"),
            ("s3", "https://b.example/?sig=1"),
        ] {
            assert!(
                RemoteStoreConfig::new(prefix, url).validate().is_err(),
                "{prefix} {url}"
            );
        }
        let mut secret = ok.clone();
        secret
            .headers
            .insert("x-api-key".into(), "line\nbreak-secret".into());
        let Err(err) = secret.validate() else {
            panic!("a header value with a line break is refused");
        };
        assert!(!err.contains("secret"), "{err}");
    }

    #[test]
    fn keys_are_escaped_per_component() {
        let store = RemoteStore::new(
            RemoteStoreConfig::new("s3", "http://b.example/vod/"),
            RemoteMetrics::default(),
        )
        .expect("store");
        assert_eq!(
            store.url("films/a b#1.mp4"),
            "http://b.example/vod/films/a%20b%231.mp4"
        );
    }
}

/// Adds `x-amz-date`, `x-amz-content-sha256` and the SigV4 `Authorization`
/// (over host, range, if-match and those two) to a GET.
fn sign_s3<B>(
    request: &mut http::Request<B>,
    s3: &S3Signing,
    secret: &str,
    now: std::time::SystemTime,
) {
    use super::sigv4::{Request, Signer, EMPTY_SHA256};
    let amz_date = amz_date(now);
    let host = request
        .uri()
        .authority()
        .map(|a| a.as_str().to_owned())
        .unwrap_or_default();
    let path = request.uri().path().to_owned();
    let value = |name: &http::HeaderName| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let mut headers: Vec<(&str, String)> = vec![
        ("host", host),
        ("x-amz-content-sha256", EMPTY_SHA256.to_owned()),
        ("x-amz-date", amz_date.clone()),
    ];
    if let Some(range) = value(&RANGE) {
        headers.push(("range", range));
    }
    if let Some(etag) = value(&IF_MATCH) {
        headers.push(("if-match", etag));
    }
    let pairs: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let authorization = Signer {
        access_key_id: &s3.access_key_id,
        secret,
        region: &s3.region,
        service: &s3.service,
    }
    .authorization(&Request {
        method: "GET",
        path: &path,
        query: "",
        headers: &pairs,
        payload_sha256: EMPTY_SHA256,
        amz_date: &amz_date,
    });
    let h = request.headers_mut();
    h.insert(
        "x-amz-content-sha256",
        HeaderValue::from_static(EMPTY_SHA256),
    );
    if let Ok(v) = HeaderValue::from_str(&amz_date) {
        h.insert("x-amz-date", v);
    }
    if let Ok(mut v) = HeaderValue::from_str(&authorization) {
        v.set_sensitive(true);
        h.insert(http::header::AUTHORIZATION, v);
    }
}

/// `YYYYMMDDTHHMMSSZ` (UTC) of `t`.
fn amz_date(t: std::time::SystemTime) -> String {
    let c = crate::package::Civil::utc(t);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

#[cfg(test)]
mod s3_tests {
    use super::*;

    #[test]
    fn amz_dates_are_utc_calendar_times() {
        let at = |s: u64| amz_date(std::time::UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "19700101T000000Z");
        assert_eq!(at(1_440_938_160), "20150830T123600Z");
        assert_eq!(at(1_709_210_096), "20240229T123456Z");
    }

    /// A signed range GET carries the S3 headers, and its Authorization is
    /// the signer's over exactly them (the S3 documentation's example).
    #[test]
    fn range_gets_are_signed_with_their_range() {
        let s3 = S3Signing {
            region: "us-east-1".into(),
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_file: None,
            secret_env: Some("UNUSED".into()),
            service: "s3".into(),
        };
        let mut request = http::Request::get("http://examplebucket.s3.amazonaws.com/test.txt")
            .header(RANGE, "bytes=0-9")
            .body(())
            .expect("request");
        // 2013-05-24T00:00:00Z
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_369_353_600);
        sign_s3(
            &mut request,
            &s3,
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            now,
        );
        let h = request.headers();
        assert_eq!(h["x-amz-date"], "20130524T000000Z");
        assert_eq!(h["x-amz-content-sha256"], super::super::sigv4::EMPTY_SHA256);
        assert_eq!(
            h[http::header::AUTHORIZATION],
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
        assert!(h[http::header::AUTHORIZATION].is_sensitive());
        let bad = S3Signing {
            secret_env: Some("STRATA_NO_SUCH_VARIABLE_FOR_TESTS".into()),
            ..s3
        };
        let e = bad.secret("vod.remote[s3]").expect_err("unset");
        assert!(e.contains("vod.remote[s3].s3.secret_env"), "{e}");
    }
}
