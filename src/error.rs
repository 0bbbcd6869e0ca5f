//! The edge's one error type, and the one place it becomes an HTTP status.

use http::StatusCode;

use crate::response::{EdgeResponse, Outcome};

/// A configuration problem, naming the key: the crate's one config error,
/// from the file (`Read`, `Parse`) or a value no module can use (`Invalid`,
/// `key` its path in the TOML, e.g. `token.keys[0].secret`).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

impl ConfigError {
    /// An error about `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }

    /// The same error under a parent key: `id` under `token.keys[0]` is `token.keys[0].id`.
    pub fn under(self, parent: &str) -> Self {
        match self {
            ConfigError::Invalid { key, message } => ConfigError::Invalid {
                key: format!("{parent}.{key}"),
                message,
            },
            other => other,
        }
    }

    /// The key an `Invalid` error names (`upstream.urls[0]`), if any.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => Some(key),
            _ => None,
        }
    }
}

impl From<strata_edgeauth::KeyError> for ConfigError {
    fn from(e: strata_edgeauth::KeyError) -> Self {
        ConfigError::new(e.field, e.message)
    }
}

/// A request the edge cannot serve, by whose fault.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    /// The client's fault: malformed headers.
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// The client's fault: a path with no normal form (`crate::request::path`).
    #[error("bad request: {0}")]
    BadPath(#[from] crate::request::path::PathError),
    /// Neither an absolute URL nor a path (a purge target, a `Location`).
    #[error("{0:?} is neither an absolute URL nor a path")]
    NotAUrl(String),
    /// Request head larger than the edge accepts (RFC 6585 §5).
    #[error("request header fields too large: {0} bytes")]
    HeadersTooLarge(usize),
    #[error("request body larger than {0} bytes")]
    BodyTooLarge(usize),
    #[error("method not allowed: the edge serves GET, HEAD and OPTIONS (and other methods under cache.pass_through)")]
    MethodNotAllowed,
    /// This node's name is already in the request's `Via`: tiers point at each other.
    #[error("request loop detected: this node already handled this request (Via)")]
    Loop,
    /// Every upstream failed; `timeout` says whether the last one never answered.
    #[error("all upstreams failed: {why}")]
    Upstream { why: String, timeout: bool },
    #[error("no upstream configured")]
    NoUpstream,
    /// Sent in TLS early data (0-RTT), which an attacker can replay, and not a
    /// safe fetch of a cacheable object: retry after the handshake (RFC 8470 §5.2).
    #[error("too early: send this request again after the handshake completes")]
    TooEarly,
}

impl EdgeError {
    pub fn status(&self) -> StatusCode {
        match self {
            EdgeError::BadRequest(_) | EdgeError::BadPath(_) | EdgeError::NotAUrl(_) => {
                StatusCode::BAD_REQUEST
            }
            EdgeError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            EdgeError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            EdgeError::HeadersTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            EdgeError::Loop => StatusCode::LOOP_DETECTED,
            EdgeError::Upstream { timeout: true, .. } => StatusCode::GATEWAY_TIMEOUT,
            EdgeError::Upstream { .. } | EdgeError::NoUpstream => StatusCode::BAD_GATEWAY,
            EdgeError::TooEarly => StatusCode::TOO_EARLY,
        }
    }

    /// Short, stable label for metrics and the access log.
    pub fn reason(&self) -> &'static str {
        match self {
            EdgeError::BadRequest(_) | EdgeError::BadPath(_) | EdgeError::NotAUrl(_) => {
                "bad-request"
            }
            EdgeError::MethodNotAllowed => "method",
            EdgeError::BodyTooLarge(_) => "body-too-large",
            EdgeError::HeadersTooLarge(_) => "headers-too-large",
            EdgeError::Loop => "loop",
            EdgeError::Upstream { timeout: true, .. } => "upstream-timeout",
            EdgeError::Upstream { .. } => "upstream-failed",
            EdgeError::NoUpstream => "no-upstream",
            EdgeError::TooEarly => "too-early",
        }
    }

    /// Whether trying again (another upstream, later) may help.
    pub fn retryable(&self) -> bool {
        matches!(self, EdgeError::Upstream { .. })
    }

    pub fn into_response(self) -> EdgeResponse {
        let mut response = EdgeResponse::local(
            self.status(),
            &self.to_string(),
            Outcome {
                cache: crate::response::CacheStatus::Error,
                upstream: None,
                reason: Some(self.reason()),
            },
        );
        if matches!(self, EdgeError::MethodNotAllowed) {
            response.head.headers.insert(
                http::header::ALLOW,
                http::HeaderValue::from_static("GET, HEAD, OPTIONS"),
            );
        }
        response
    }
}
