//! A response's status and headers (a leaf: the cache stores it, fills share it).

use http::{HeaderMap, HeaderValue, StatusCode};

/// Status and headers, shared between every reader of one fill.
#[derive(Clone, Debug)]
pub struct ResponseHead {
    pub status: StatusCode,
    pub headers: HeaderMap,
}

impl ResponseHead {
    pub fn new(status: StatusCode) -> Self {
        ResponseHead {
            status,
            headers: HeaderMap::new(),
        }
    }

    pub fn header_str(&self, name: impl http::header::AsHeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn content_length(&self) -> Option<u64> {
        self.header_str(http::header::CONTENT_LENGTH)?
            .trim()
            .parse()
            .ok()
    }
}

/// The current time as an HTTP `Date` value (RFC 9110 §5.6.7).
pub fn date_now() -> HeaderValue {
    HeaderValue::from_str(&httpdate::fmt_http_date(std::time::SystemTime::now()))
        .expect("an HTTP date is ASCII")
}
