//! Token and geo rules on the way in, token propagation on the way out.

use http::{header, request::Parts, HeaderValue, Method, StatusCode};

use super::Edge;
use crate::error::EdgeError;
use crate::policy::{self, Denied, Grant, Propagate};
use crate::request::{MediaRequest, ObjectKind};
use crate::response::{Body, EdgeResponse};

impl Edge {
    /// Token and geo rules, on every protocol alike.
    pub(super) fn admit(&self, parts: &Parts, request: &MediaRequest) -> Result<Grant, Denied> {
        let Some(policy) = &self.policy else {
            return Ok(Grant {
                token: None,
                propagate: Propagate::Off,
            });
        };
        if request.method == Method::OPTIONS {
            return Ok(Grant {
                token: None,
                propagate: Propagate::Off,
            });
        }
        let client_ip = if parts.headers.contains_key("x-forwarded-for") {
            policy::client_ip(request.client, &parts.headers, &policy.trusted_proxies())
        } else {
            request.client.ip()
        };
        policy.check(request, client_ip, self.clock.now())
    }

    /// Carry the viewer's token on to everything a manifest points at, so a
    /// player holding only a signed master URL can play the whole stream.
    pub(super) async fn propagate(
        &self,
        request: &MediaRequest,
        mut response: EdgeResponse,
        grant: Grant,
    ) -> EdgeResponse {
        let (Some(token), Some(policy)) = (grant.token, &self.policy) else {
            return response;
        };
        let param = policy.token_param().unwrap_or("token");
        match grant.propagate {
            Propagate::Off => response,
            Propagate::Cookie => {
                if let Ok(cookie) = HeaderValue::from_str(&policy::token_cookie(param, &token)) {
                    response.head.headers.append(header::SET_COOKIE, cookie);
                }
                response
            }
            Propagate::Query => {
                let manifest = matches!(request.kind, ObjectKind::Playlist | ObjectKind::Manifest);
                if !manifest
                    || response.head.status != StatusCode::OK
                    || request.method == Method::HEAD
                {
                    return response;
                }
                let mut text = Vec::new();
                while let Some(chunk) = response.body.next_chunk().await {
                    match chunk {
                        Ok(bytes) => text.extend_from_slice(&bytes),
                        Err(failure) => {
                            return EdgeError::Upstream {
                                why: failure.why,
                                timeout: failure.timeout,
                            }
                            .into_response()
                        }
                    }
                }
                let Ok(text) = String::from_utf8(text) else {
                    return EdgeError::Upstream {
                        why: "manifest is not UTF-8".into(),
                        timeout: false,
                    }
                    .into_response();
                };
                let rewritten = if request.kind == ObjectKind::Playlist {
                    policy::rewrite_hls_playlist(&text, param, &token)
                } else {
                    policy::rewrite_dash_mpd(&text, param, &token)
                };
                let h = &mut response.head.headers;
                h.insert(header::CONTENT_LENGTH, rewritten.len().into());
                // The body now carries one viewer's token: no shared cache may keep it.
                h.remove(header::ETAG);
                let max_age = h
                    .get(header::CACHE_CONTROL)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| {
                        v.split(',')
                            .find_map(|d| d.trim().strip_prefix("max-age=").map(str::to_owned))
                    });
                let cc = format!("private, max-age={}", max_age.as_deref().unwrap_or("1"));
                if let Ok(cc) = HeaderValue::from_str(&cc) {
                    h.insert(header::CACHE_CONTROL, cc);
                }
                response.body = Body::Full(bytes::Bytes::from(rewritten));
                response
            }
        }
    }
}
