//! Turning a stored or in-flight response into the answer to one request.

use std::sync::Arc;
use std::time::Duration;

use http::{header, HeaderMap, HeaderValue, Method, StatusCode};

use crate::cache::fill::Fill;
use crate::policy::{Denied, REJECT_REASON_HEADER};
use crate::request::MediaRequest;
use crate::response::{Body, CacheStatus, EdgeResponse, Outcome, ResponseHead};

pub(super) enum BodySource {
    Bytes(bytes::Bytes),
    Fill(Arc<Fill>),
}

impl BodySource {
    pub(super) fn window(self, start: u64, end: Option<u64>) -> Body {
        match self {
            BodySource::Bytes(bytes) => {
                let end = end.map_or(bytes.len(), |e| e as usize);
                Body::Full(bytes.slice(start as usize..end))
            }
            BodySource::Fill(fill) => Body::Fill(fill.reader(start, end)),
        }
    }
}

/// Turn a stored or in-flight response into the answer to this request:
/// 304 for a matching validator, 206/416 for a range, headers only for HEAD.
pub(super) fn shape(
    request: &MediaRequest,
    mut head: ResponseHead,
    source: BodySource,
    len: Option<u64>,
    outcome: Outcome,
) -> EdgeResponse {
    if head.status == StatusCode::OK && not_modified(request, &head) {
        head.status = StatusCode::NOT_MODIFIED;
        head.headers.remove(header::CONTENT_LENGTH);
        return EdgeResponse {
            head,
            body: Body::Empty,
            outcome,
        };
    }
    let mut window = (0, None);
    if head.status == StatusCode::OK {
        // An empty body has no bytes to select: Range is ignored (RFC 9110
        // §14.2 lets a server do that) and the whole, empty body is sent.
        if let (Some(range), Some(len)) = (request.range, len.filter(|&len| len > 0)) {
            head.headers
                .insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
            match range.resolve(len) {
                Some((start, end)) => {
                    head.status = StatusCode::PARTIAL_CONTENT;
                    if let Ok(v) =
                        HeaderValue::from_str(&format!("bytes {start}-{}/{len}", end - 1))
                    {
                        head.headers.insert(header::CONTENT_RANGE, v);
                    }
                    head.headers
                        .insert(header::CONTENT_LENGTH, (end - start).into());
                    window = (start, Some(end));
                }
                None => {
                    let mut response = EdgeResponse::local(
                        StatusCode::RANGE_NOT_SATISFIABLE,
                        "range not satisfiable",
                        outcome,
                    );
                    if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                        response.head.headers.insert(header::CONTENT_RANGE, v);
                    }
                    return response;
                }
            }
        } else {
            head.headers
                .insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        }
    }
    if let (None, Some(len)) = (window.1, len) {
        head.headers.insert(header::CONTENT_LENGTH, len.into());
    }
    let body = if request.method == Method::HEAD {
        Body::Empty
    } else {
        source.window(window.0, window.1)
    };
    EdgeResponse {
        head,
        body,
        outcome,
    }
}

/// RFC 9110 §13.1.2 / §13.1.3: If-None-Match wins over If-Modified-Since.
fn not_modified(request: &MediaRequest, head: &ResponseHead) -> bool {
    if let Some(inm) = &request.if_none_match {
        let Some(etag) = head.header_str(header::ETAG) else {
            return false;
        };
        let weak = |t: &str| t.trim().trim_start_matches("W/").to_owned();
        return inm.trim() == "*" || inm.split(',').any(|t| weak(t) == weak(etag));
    }
    if let (Some(ims), Some(lm)) = (
        request.if_modified_since,
        head.header_str(header::LAST_MODIFIED),
    ) {
        if let Ok(lm) = httpdate::parse_http_date(lm) {
            return lm <= ims;
        }
    }
    false
}

pub(super) fn age_header(headers: &HeaderMap) -> Duration {
    headers
        .get(header::AGE)
        .and_then(|a| a.to_str().ok())
        .and_then(|a| a.trim().parse().ok())
        .map(Duration::from_secs)
        .unwrap_or_default()
}

/// 403 or 451 with a short machine-readable reason; never cached.
pub(super) fn denied_response(denied: Denied) -> EdgeResponse {
    let mut response = EdgeResponse::local(
        denied.status,
        &format!("access denied: {}", denied.reason),
        Outcome {
            cache: CacheStatus::Denied,
            upstream: None,
            reason: Some(denied.reason),
        },
    );
    response.head.headers.insert(
        REJECT_REASON_HEADER,
        HeaderValue::from_static(denied.reason),
    );
    response
}

/// CORS preflight for players on other origins.
pub(super) fn preflight() -> EdgeResponse {
    let mut response = EdgeResponse::local(
        StatusCode::NO_CONTENT,
        "",
        Outcome {
            cache: CacheStatus::Pass,
            upstream: None,
            reason: None,
        },
    );
    let h = &mut response.head.headers;
    h.remove(header::CONTENT_TYPE);
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, HEAD, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(
            "Range, If-None-Match, If-Modified-Since, Origin, Content-Type, \
             CMCD-Object, CMCD-Request, CMCD-Session, CMCD-Status",
        ),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    response
}
