//! Key delivery over HTTP: HLS AES-128 keys (`GET /live/{channel}/key/{kid}.key`),
//! the W3C ClearKey licence endpoint (`POST /drm/clearkey`) on the playback
//! listener, and CPIX export/import on the admin listener
//! (`GET`/`PUT /api/channels/{channel}/keys`, bearer token).
//!
//! Every key response is `Cache-Control: private, no-store`, so edges and
//! browsers keep none; keys are never logged. Bad requests are a 4xx with a
//! reason and a count in `strata_origin_drm_*`.

use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::Deserialize;

use super::entitlement::NotEntitled;
use super::Drm;
use crate::keys::{write_cpix_entries, ContentKey, KeyError, KeyId, KeyLocation};

/// Largest licence request body read (W3C ClearKey requests are tiny).
pub const MAX_LICENCE_REQUEST: usize = 16 * 1024;
/// Largest CPIX document accepted for import.
pub const MAX_CPIX_DOCUMENT: usize = 1024 * 1024;
/// Most key IDs in one licence request.
const MAX_KIDS: usize = 64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `ok`, `bad_request`, `too_large`, `unknown_key`, `unauthorised`, `conflict`, `error`
    pub outcome: &'static str,
}

/// `strata_origin_drm_*`.
#[derive(Clone, Default)]
pub struct DrmMetrics {
    pub licence_requests: Family<OutcomeLabels, Counter>,
    pub key_requests: Family<OutcomeLabels, Counter>,
    pub cpix_requests: Family<OutcomeLabels, Counter>,
    pub keys_pruned: Counter,
}

impl DrmMetrics {
    pub fn register(registry: &mut Registry) -> DrmMetrics {
        let metrics = DrmMetrics::default();
        let drm = registry.sub_registry_with_prefix("strata_origin_drm");
        drm.register(
            "licence_requests",
            "ClearKey licence requests by outcome",
            metrics.licence_requests.clone(),
        );
        drm.register(
            "key_requests",
            "HLS AES-128 key requests by outcome",
            metrics.key_requests.clone(),
        );
        drm.register(
            "cpix_requests",
            "CPIX export and import requests by outcome",
            metrics.cpix_requests.clone(),
        );
        drm.register(
            "keys_pruned",
            "Rotating keys dropped once their key period left every DVR window",
            metrics.keys_pruned.clone(),
        );
        metrics
    }
}

pub(crate) fn count(family: &Family<OutcomeLabels, Counter>, outcome: &'static str) {
    family.get_or_create(&OutcomeLabels { outcome }).inc();
}

/// A refusal: status, reason, and the metric outcome.
struct Refusal(StatusCode, &'static str);

/// The metric outcome for a refusal's status.
fn outcome(status: StatusCode) -> &'static str {
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::NOT_FOUND => "unknown_key",
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => "unauthorised",
        StatusCode::CONFLICT => "conflict",
        s if s.is_server_error() => "error",
        _ => "bad_request",
    }
}

impl Refusal {
    fn outcome(&self) -> &'static str {
        outcome(self.0)
    }

    fn response(self) -> Response {
        let mut r = (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response();
        private(r.headers_mut());
        r
    }
}

pub(crate) fn private(h: &mut HeaderMap) {
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
}

/// Key and licence routes for the playback listener; merge with the
/// playback router (the static `key` segment wins over `{*path}`).
pub fn playback_routes(drm: Arc<Drm>) -> Router {
    Router::new()
        .route("/live/{channel}/key/{file}", get(hls_key))
        .route("/drm/clearkey", post(clearkey).options(licence_preflight))
        .route(
            "/drm/clearkey/{channel}",
            post(channel_clearkey).options(licence_preflight),
        )
        .with_state(drm)
}

/// CPIX routes for the admin listener.
pub fn admin_routes(drm: Arc<Drm>, api_token: Option<String>) -> Router {
    Router::new()
        .route(
            "/api/channels/{channel}/keys",
            get(export_cpix).put(import_cpix),
        )
        .with_state(Arc::new(AdminDrm { drm, api_token }))
}

/// 403 with `Strata-Reject-Reason` (as the edge answers a bad token).
pub(crate) fn not_entitled(reason: NotEntitled) -> Response {
    let mut r = Refusal(
        StatusCode::FORBIDDEN,
        "a licence or key needs a valid token (encryption.licence_auth)",
    )
    .response();
    r.headers_mut()
        .insert("strata-reject-reason", HeaderValue::from_static(reason.0));
    r
}

/// `GET /live/{channel}/key/{kid}.key`: the 16 raw key bytes (RFC 8216 §5.2).
async fn hls_key(
    State(drm): State<Arc<Drm>>,
    Path((channel, file)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Err(reason) = drm.entitlement.check(&uri, &headers, SystemTime::now()) {
        count(&drm.metrics.key_requests, "unauthorised");
        return not_entitled(reason);
    }
    let found = file
        .strip_suffix(".key")
        .and_then(|kid| kid.parse::<KeyId>().ok())
        .and_then(|kid| drm.locate_key(&kid, Some(&channel)))
        .filter(|at| at.channel == channel)
        .map(|at| at.entry.key);
    let Some(key) = found else {
        count(&drm.metrics.key_requests, "unknown_key");
        return Refusal(StatusCode::NOT_FOUND, "no such key").response();
    };
    count(&drm.metrics.key_requests, "ok");
    let mut r = (StatusCode::OK, key.key.to_vec()).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    private(h);
    r
}

#[derive(Deserialize)]
struct LicenceRequest {
    kids: Vec<String>,
    #[serde(rename = "type", default)]
    session_type: Option<String>,
}

/// W3C EME §9.1.4 ClearKey: `{"kids":[b64url]}` → JWK set of those we
/// hold. For a rotating key the set also carries the same group's next and
/// current period keys ([`Drm::rotation_companions`]): a licence may hold
/// keys that were not asked for, and under rotation players need them.
async fn clearkey(
    State(drm): State<Arc<Drm>>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    licence_response(&drm, None, (&uri, &headers), body).await
}

/// The same, limited to one channel's keys, so an edge token's ACL
/// (`/drm/clearkey/{channel}`) can entitle a viewer to one channel only.
async fn channel_clearkey(
    State(drm): State<Arc<Drm>>,
    Path(channel): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    licence_response(&drm, Some(&channel), (&uri, &headers), body).await
}

pub(crate) async fn licence_response(
    drm: &Drm,
    channel: Option<&str>,
    (uri, headers): (&Uri, &HeaderMap),
    body: Body,
) -> Response {
    if let Err(reason) = drm.entitlement.check(uri, headers, SystemTime::now()) {
        count(&drm.metrics.licence_requests, "unauthorised");
        return not_entitled(reason);
    }
    let result = licence(drm, channel, body).await;
    match result {
        Ok(response) => {
            count(&drm.metrics.licence_requests, "ok");
            response
        }
        Err(refusal) => {
            count(&drm.metrics.licence_requests, refusal.outcome());
            refusal.response()
        }
    }
}

async fn licence(drm: &Drm, channel: Option<&str>, body: Body) -> Result<Response, Refusal> {
    if !drm.config.clearkey {
        return Err(Refusal(StatusCode::NOT_FOUND, "ClearKey is disabled"));
    }
    let bytes = axum::body::to_bytes(body, MAX_LICENCE_REQUEST)
        .await
        .map_err(|_| Refusal(StatusCode::PAYLOAD_TOO_LARGE, "licence request too large"))?;
    let request: LicenceRequest = serde_json::from_slice(&bytes)
        .map_err(|_| Refusal(StatusCode::BAD_REQUEST, "not a ClearKey licence request"))?;
    if request.kids.is_empty() || request.kids.len() > MAX_KIDS {
        return Err(Refusal(
            StatusCode::BAD_REQUEST,
            "kids: give 1 to 64 key IDs",
        ));
    }
    let kids = request
        .kids
        .iter()
        .map(|k| KeyId::from_base64url(k))
        .collect::<Option<Vec<KeyId>>>()
        .ok_or(Refusal(
            StatusCode::BAD_REQUEST,
            "kids: not base64url 128-bit key IDs",
        ))?;
    let asked: Vec<KeyLocation> = kids
        .iter()
        .filter_map(|kid| drm.locate_key(kid, channel))
        .filter(|at| channel.is_none_or(|c| at.channel == c))
        .collect();
    // The requested keys first, then their rotation companions.
    let mut answer: Vec<ContentKey> = asked.iter().map(|at| at.entry.key).collect();
    for at in &asked {
        for key in drm.rotation_companions(at) {
            if !answer.contains(&key) {
                answer.push(key);
            }
        }
    }
    let keys: Vec<serde_json::Value> = answer
        .iter()
        .map(|key| {
            serde_json::json!({
                "kty": "oct",
                "kid": key.kid.base64url(),
                "k": URL_SAFE_NO_PAD.encode(key.key),
            })
        })
        .collect();
    if keys.is_empty() {
        return Err(Refusal(StatusCode::NOT_FOUND, "no such key"));
    }
    let session_type = match request.session_type.as_deref() {
        Some("persistent-license") => "persistent-license",
        _ => "temporary",
    };
    let mut r = Json(serde_json::json!({ "keys": keys, "type": session_type })).into_response();
    private(r.headers_mut());
    Ok(r)
}

pub(crate) async fn licence_preflight() -> Response {
    let mut r = StatusCode::NO_CONTENT.into_response();
    let h = r.headers_mut();
    private(h);
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Content-Type"),
    );
    r
}

struct AdminDrm {
    drm: Arc<Drm>,
    api_token: Option<String>,
}

fn check_bearer(state: &AdminDrm, headers: &HeaderMap) -> Result<(), Refusal> {
    crate::http::check_bearer(state.api_token.as_deref(), headers).map_err(
        |refusal| match refusal {
            crate::http::BearerRefusal::Disabled => Refusal(
                StatusCode::FORBIDDEN,
                "key export and import are disabled: set server.api_token",
            ),
            crate::http::BearerRefusal::Wrong => {
                Refusal(StatusCode::UNAUTHORIZED, "missing or wrong bearer token")
            }
        },
    )
}

/// `GET /api/channels/{channel}/keys`: the channel's keys as CPIX, with
/// usage rules when they differ by key group or period.
async fn export_cpix(
    State(state): State<Arc<AdminDrm>>,
    Path(channel): Path<String>,
    headers: HeaderMap,
) -> Response {
    let metrics = &state.drm.metrics.cpix_requests;
    if let Err(refusal) = check_bearer(&state, &headers) {
        count(metrics, refusal.outcome());
        return refusal.response();
    }
    let keys = state.drm.keys.entries_of(&channel);
    if keys.is_empty() {
        count(metrics, "unknown_key");
        return Refusal(StatusCode::NOT_FOUND, "the channel has no keys yet").response();
    }
    count(metrics, "ok");
    let mut r = write_cpix_entries(&keys).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml"),
    );
    private(h);
    r
}

/// `PUT /api/channels/{channel}/keys` with a CPIX document of clear keys.
async fn import_cpix(
    State(state): State<Arc<AdminDrm>>,
    Path(channel): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let metrics = &state.drm.metrics.cpix_requests;
    if let Err(refusal) = check_bearer(&state, &headers) {
        count(metrics, refusal.outcome());
        return refusal.response();
    }
    let Ok(bytes) = axum::body::to_bytes(body, MAX_CPIX_DOCUMENT).await else {
        count(metrics, "too_large");
        return Refusal(StatusCode::PAYLOAD_TOO_LARGE, "CPIX document too large").response();
    };
    let text = String::from_utf8_lossy(&bytes);
    match state.drm.keys.import_cpix(&channel, &text) {
        Ok(kids) => {
            count(metrics, "ok");
            let kids: Vec<String> = kids.iter().map(KeyId::uuid).collect();
            let mut r = Json(serde_json::json!({ "imported": kids })).into_response();
            private(r.headers_mut());
            r
        }
        Err(e) => {
            let status = match e {
                KeyError::InUse(_) => StatusCode::CONFLICT,
                KeyError::Io { .. } | KeyError::Random(_) | KeyError::Corrupt { .. } => {
                    StatusCode::INTERNAL_SERVER_ERROR
                }
                _ => StatusCode::BAD_REQUEST,
            };
            count(metrics, outcome(status));
            let mut r =
                (status, Json(serde_json::json!({ "error": e.to_string() }))).into_response();
            private(r.headers_mut());
            r
        }
    }
}
