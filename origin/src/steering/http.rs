//! The steering service's HTTP side.
//!
//! Playback listener:
//! - `GET /steering/{channel}.json` — HLS steering manifest
//! - `GET /steering/{channel}/dash.json` — DASH steering manifest
//! - `GET /live/{channel}/steer/master.m3u8`, `…/steer/manifest.mpd` — `302`
//!   to the best pathway's playlist or MPD, for players that do not steer
//! - every `master.m3u8`, `master-ts.m3u8` and `manifest.mpd` gets its
//!   steering tags on the way out ([`tag_manifests`])
//!
//! Admin listener: `GET /api/steering` (pathway states, ranking per country),
//! `PUT /api/steering/pathways/{id}/qoe_penalty` (bearer `server.api_token`).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};

use super::query::{QueryError, SteeringQuery};
use super::{Format, Steering};
use crate::package::{dash, hls, strong_etag, valid_name};

/// Largest manifest the tagger reads.
const MAX_MANIFEST: usize = 16 << 20;

fn no_store(headers: &mut HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
}

fn refuse(status: StatusCode, why: &str) -> Response {
    let mut response = (status, Json(serde_json::json!({ "error": why }))).into_response();
    no_store(response.headers_mut());
    response
}

/// Routes on the playback listener.
pub fn playback_routes(steering: Arc<Steering>) -> Router {
    Router::new()
        .route(
            "/steering/{file}",
            get(hls_manifest).options(crate::http::preflight),
        )
        .route(
            "/steering/{channel}/dash.json",
            get(dash_manifest).options(crate::http::preflight),
        )
        .route("/live/{channel}/steer/{file}", get(redirect).head(redirect))
        .with_state(steering)
}

/// Routes on the admin listener.
pub fn admin_routes(steering: Arc<Steering>, api_token: Option<String>) -> Router {
    Router::new()
        .route("/api/steering", get(snapshot))
        .route("/api/steering/pathways/{id}/qoe_penalty", put(qoe_penalty))
        .with_state((steering, api_token.map(Arc::<str>::from)))
}

fn random_session() -> u64 {
    let mut bytes = [0u8; 8];
    if getrandom::getrandom(&mut bytes).is_err() {
        // No OS randomness: sessions still work, spread by time.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        return now.as_nanos() as u64;
    }
    u64::from_le_bytes(bytes)
}

async fn hls_manifest(
    State(steering): State<Arc<Steering>>,
    Path(file): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    match file.strip_suffix(".json").filter(|c| valid_name(c)) {
        Some(channel) => answer(&steering, channel, Format::Hls, peer, &uri, &headers),
        None => {
            steering.metrics.bad_input("channel");
            refuse(StatusCode::NOT_FOUND, "no such steering manifest")
        }
    }
}

async fn dash_manifest(
    State(steering): State<Arc<Steering>>,
    Path(channel): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if !valid_name(&channel) {
        steering.metrics.bad_input("channel");
        return refuse(StatusCode::NOT_FOUND, "no such steering manifest");
    }
    answer(&steering, &channel, Format::Dash, peer, &uri, &headers)
}

/// A steering manifest for one session.
fn answer(
    steering: &Steering,
    channel: &str,
    format: Format,
    peer: SocketAddr,
    uri: &Uri,
    headers: &HeaderMap,
) -> Response {
    let query = match SteeringQuery::parse(steering, uri.query(), random_session) {
        Ok(q) => q,
        Err(QueryError::TooLong) => {
            return refuse(StatusCode::URI_TOO_LONG, "steering query too long")
        }
    };
    for &(pathway, bps) in &query.throughput {
        steering.report_throughput(pathway, bps);
    }
    let country = steering.country(peer, headers);
    let choice = steering.decide(&query.session, country.as_deref(), format);
    let ids = steering.ids(&choice.priority);
    let reload = query.reload_uri(&steering.manifest_url(channel, format), &ids[0]);
    let mut body = serde_json::json!({
        "VERSION": 1,
        "TTL": steering.config().ttl.as_secs().max(1),
        "RELOAD-URI": reload,
        "PATHWAY-PRIORITY": ids,
    });
    let clones = steering.pathway_clones();
    if !clones.is_empty() {
        body["PATHWAY-CLONES"] = clones.into();
    }
    if format == Format::Dash {
        // DASH-IF CTS 1.0 name, still read by older players.
        body["SERVICE-LOCATION-PRIORITY"] = body["PATHWAY-PRIORITY"].clone();
    }
    let mut response = Json(body).into_response();
    no_store(response.headers_mut());
    response
}

/// `302` to the best pathway's playlist or MPD, query (a token) kept.
async fn redirect(
    State(steering): State<Arc<Steering>>,
    Path((channel, file)): Path<(String, String)>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if !valid_name(&channel) || !matches!(file.as_str(), "master.m3u8" | "manifest.mpd") {
        steering.metrics.bad_input("channel");
        return refuse(StatusCode::NOT_FOUND, "no such entry point");
    }
    if uri
        .query()
        .is_some_and(|q| q.len() > super::query::MAX_QUERY)
    {
        steering.metrics.bad_input("query_too_long");
        return refuse(StatusCode::URI_TOO_LONG, "query too long");
    }
    let country = steering.country(peer, &headers);
    let (id, base) = steering.best_base(country.as_deref());
    steering.metrics.decision("redirect", &id, "new");
    let mut location = format!("{base}/live/{channel}/{file}");
    if let Some(q) = uri.query().filter(|q| !q.is_empty()) {
        location.push('?');
        location.push_str(q);
    }
    let mut response = StatusCode::FOUND.into_response();
    no_store(response.headers_mut());
    match HeaderValue::from_str(&location) {
        Ok(v) => {
            response.headers_mut().insert(header::LOCATION, v);
            response
        }
        Err(_) => refuse(StatusCode::BAD_REQUEST, "unusable query"),
    }
}

/// Which steered manifest a path names: `(channel, format)`.
fn steered(path: &str) -> Option<(&str, Format)> {
    let rest = path.strip_prefix("/live/")?;
    let (channel, file) = rest.split_once('/')?;
    let format = match file {
        "master.m3u8" | "master-ts.m3u8" => Format::Hls,
        "manifest.mpd" => Format::Dash,
        _ => return None,
    };
    valid_name(channel).then_some((channel, format))
}

/// Middleware on the playback routes: adds the steering tags to every
/// multivariant playlist and MPD, with their own ETag (the tags follow the
/// ranking, so the packager's memoised ETag no longer names the body).
pub async fn tag_manifests(
    State(steering): State<Arc<Steering>>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some((channel, format)) = steered(request.uri().path()) else {
        return next.run(request).await;
    };
    let channel = channel.to_owned();
    let head = request.method() == Method::HEAD;
    if head {
        *request.method_mut() = Method::GET;
    }
    let if_none_match = request.headers_mut().remove(header::IF_NONE_MATCH);
    let response = next.run(request).await;
    if response.status() != StatusCode::OK {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_MANIFEST).await {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "steering: manifest body unreadable");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    let text = String::from_utf8_lossy(&bytes);
    let tags = steering.tags(&channel, format);
    let tagged = match format {
        Format::Hls => hls::with_steering(&text, &tags),
        Format::Dash => dash::with_steering(&text, &tags),
    };
    let etag = strong_etag(tagged.as_bytes());
    let h = &mut parts.headers;
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::CONTENT_LENGTH, tagged.len().into());
    let matches = if_none_match
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .is_some_and(|inm| inm.split(',').any(|t| t.trim() == etag));
    if matches {
        parts.status = StatusCode::NOT_MODIFIED;
        h.remove(header::CONTENT_LENGTH);
        return Response::from_parts(parts, Body::empty());
    }
    let body = if head {
        Body::empty()
    } else {
        Body::from(tagged)
    };
    Response::from_parts(parts, body)
}

type AdminState = (Arc<Steering>, Option<Arc<str>>);

async fn snapshot(State((steering, _)): State<AdminState>) -> Response {
    Json(steering.snapshot()).into_response()
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Penalty {
    penalty: f64,
}

async fn qoe_penalty(
    State((steering, token)): State<AdminState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    match crate::http::check_bearer(token.as_deref(), &headers) {
        Ok(()) => {}
        Err(crate::http::BearerRefusal::Disabled) => {
            return refuse(
                StatusCode::FORBIDDEN,
                "changes are disabled: set server.api_token",
            )
        }
        Err(crate::http::BearerRefusal::Wrong) => {
            return refuse(StatusCode::UNAUTHORIZED, "missing or wrong bearer token")
        }
    }
    let penalty = match serde_json::from_slice::<Penalty>(&body) {
        Ok(p) if (0.0..=1.0).contains(&p.penalty) => p.penalty,
        Ok(_) => return refuse(StatusCode::UNPROCESSABLE_ENTITY, "penalty: between 0 and 1"),
        Err(e) => return refuse(StatusCode::BAD_REQUEST, &format!("body: {e}")),
    };
    if !steering.set_qoe_penalty(&id, penalty) {
        return refuse(StatusCode::NOT_FOUND, "no such pathway");
    }
    Json(serde_json::json!({ "pathway": id, "qoe_penalty": penalty })).into_response()
}
