//! The origin's HTTP side: playback (`/live/{channel}/…`, `/time`) on the
//! public listener; channel API, metrics and health on the admin listener.

mod blocking;
mod chunked;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::package::{Object, RenderError, Rendered};
use crate::store::Store;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ObjectLabels {
    /// `playlist`, `manifest`, `init`, `segment`, `other`
    pub object: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub status: u16,
}

/// Packaging and playback metrics.
#[derive(Clone)]
pub struct HttpMetrics {
    pub render_seconds: Family<ObjectLabels, Histogram, fn() -> Histogram>,
    pub responses: Family<StatusLabels, Counter>,
}

fn render_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

impl HttpMetrics {
    pub fn register(registry: &mut Registry) -> HttpMetrics {
        let metrics = HttpMetrics {
            render_seconds: Family::new_with_constructor(render_histogram),
            responses: Family::default(),
        };
        let origin = registry.sub_registry_with_prefix("strata_origin");
        origin.register(
            "packaging_seconds",
            "Time to build a playlist, MPD or segment on request (memoised outputs are fast)",
            metrics.render_seconds.clone(),
        );
        origin.register(
            "http_responses",
            "Playback responses by status",
            metrics.responses.clone(),
        );
        metrics
    }
}

pub struct PlaybackState {
    pub store: Store,
    pub metrics: HttpMetrics,
    /// Encryption applied to what the store renders; keys and licences.
    pub drm: Arc<crate::drm::Drm>,
}

/// Routes players and edges use.
pub fn playback_router(state: Arc<PlaybackState>) -> Router {
    Router::new()
        .route(
            "/live/{channel}/{*path}",
            get(live).head(live).options(preflight),
        )
        .route("/time", get(time))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(state.clone())
        .merge(crate::drm::http::playback_routes(state.drm.clone()))
}

fn object_label(path: &str) -> &'static str {
    match path.rsplit('.').next() {
        Some("m3u8") => "playlist",
        Some("mpd") => "manifest",
        Some("mp4") => "init",
        Some("m4s" | "ts") => "segment",
        _ => "other",
    }
}

fn cors(headers: &mut HeaderMap) {
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
}

/// A rendered object as the answer to a GET or HEAD: `304` when the
/// request's `If-None-Match` names its ETag, headers only for HEAD; with its
/// content type, `Cache-Control` and ETag. Live and VOD answer alike.
pub(crate) fn rendered_response(
    rendered: Rendered,
    method: &Method,
    request_headers: &HeaderMap,
) -> Response {
    let not_modified = rendered.etag.as_deref().is_some_and(|etag| {
        request_headers
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|inm| inm.split(',').any(|t| t.trim() == etag))
    });
    let mut response = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else if method == Method::HEAD {
        let mut r = StatusCode::OK.into_response();
        r.headers_mut()
            .insert(header::CONTENT_LENGTH, rendered.body.len().into());
        r
    } else {
        (StatusCode::OK, rendered.body).into_response()
    };
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(rendered.content_type),
    );
    if let Ok(cc) = HeaderValue::from_str(&rendered.cache_control) {
        h.insert(header::CACHE_CONTROL, cc);
    }
    if let Some(etag) = rendered
        .etag
        .as_deref()
        .and_then(|e| HeaderValue::from_str(e).ok())
    {
        h.insert(header::ETAG, etag);
    }
    response
}

pub(crate) async fn preflight() -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let h = response.headers_mut();
    cors(h);
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, HEAD, OPTIONS"),
    );
    // As the edge's preflight: players in CMCD header mode (dash.js,
    // Shaka) send CMCD-* on every request, also to an origin that is one of
    // the steering pathways.
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

/// How long a playlist or MPD request waits for its channel to become
/// presentable (or its rendition's first segment) before it gets what there
/// is: past three 2 s target durations plus an encoder's latency, and under the 10 s
/// that dash.js (`manifestRequestTimeout`) and Strata's edge
/// (`upstream.header_timeout`) wait for a response head.
const FIRST_PLAYLIST_WAIT: Duration = Duration::from_secs(8);

/// Whether a path names a playlist or an MPD: what is held while a channel
/// starts.
fn lists_segments(path: &str) -> bool {
    crate::package::Object::parse(path).is_some_and(|o| o.lists_segments())
}

/// A starting channel's playlists and MPD are held until they can honour
/// their presentation delay (see [`crate::package`], "A channel's first
/// playlist"), and a rendition's until it has a segment, both bounded by
/// [`FIRST_PLAYLIST_WAIT`]. At the bound the request gets what there is: a
/// playlist too short for the delay plays at the live edge, which beats a
/// 404 that some players (hls.js) give up on.
async fn first_playlist<F>(
    state: &PlaybackState,
    channel: &str,
    render: F,
) -> Result<Rendered, RenderError>
where
    F: Fn() -> Result<Rendered, RenderError>,
{
    let Some(mut updates) = state.store.updates(channel) else {
        return render();
    };
    let deadline = tokio::time::Instant::now() + FIRST_PLAYLIST_WAIT;
    loop {
        if state.store.presentable(channel) {
            let rendered = render();
            if !matches!(rendered, Err(RenderError::NotFound { .. })) {
                return rendered;
            }
        }
        match tokio::time::timeout_at(deadline, updates.changed()).await {
            Ok(Ok(())) => {}
            // Deadline, or the channel is gone: answer what we have.
            _ => return render(),
        }
    }
}

/// A plain-text answer that no cache keeps.
fn refusal(status: StatusCode, reason: &str) -> Response {
    let mut response = (status, format!("{reason}\n")).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn live(
    State(state): State<Arc<PlaybackState>>,
    method: Method,
    Path((channel, path)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    request_headers: HeaderMap,
) -> Response {
    let low_latency = state.store.part_target(&channel);
    let object = low_latency.and_then(|_| Object::parse(&path));
    // LL-HLS (RFC 8216bis §6.2.5): directives on media playlists, holds
    // for blocking reloads and the preload-hinted part.
    let mut skip = false;
    let mut blocking = false;
    if let Some(Object::MediaPlaylist { rendition, kind }) = &object {
        let directives = match blocking::Directives::parse(query.as_deref()) {
            Ok(d) => d,
            Err(reason) => {
                tracing::debug!(%channel, %path, %reason, "bad LL-HLS directive");
                return finish(&state, refusal(StatusCode::BAD_REQUEST, &reason));
            }
        };
        skip = directives.skip;
        if let Some(msn) = directives.msn {
            blocking = true;
            let limit = state.store.reload_limit();
            let held = blocking::reload(
                &state.store,
                &channel,
                rendition,
                *kind,
                msn,
                directives.part,
                limit,
            )
            .await;
            match held {
                blocking::Held::Ready => {}
                blocking::Held::TooFar => {
                    let reason = "_HLS_msn: more than two segments past the playlist's last";
                    return finish(&state, refusal(StatusCode::BAD_REQUEST, reason));
                }
                blocking::Held::TimedOut => {
                    let reason =
                        format!("the segment or part asked for did not appear within {limit:?}");
                    return finish(&state, refusal(StatusCode::SERVICE_UNAVAILABLE, &reason));
                }
            }
        }
    }
    // LL-DASH: a segment still being cut is streamed as its chunks appear.
    if let (
        Some(Object::ChunkedFragment {
            rendition,
            kind,
            sequence,
        }),
        &Method::GET,
    ) = (&object, &method)
    {
        let segment = chunked::SegmentRef {
            channel: channel.clone(),
            rendition: rendition.clone(),
            kind: *kind,
            sequence: *sequence,
        };
        let limit = state.store.reload_limit();
        let chunk_of: chunked::ChunkOf = {
            let (drm, channel, rendition) = (state.drm.clone(), channel.clone(), rendition.clone());
            Arc::new(move |part, first| {
                drm.protect_chunk(&channel, &rendition, part, first)
                    .map_err(|e| e.into_render_error(&channel, &part.path(&rendition)))
                    .ok()
            })
        };
        if let chunked::Answer::Stream(stream) =
            chunked::follow(&state.store, segment, limit, chunk_of).await
        {
            return finish(&state, streamed_segment(stream, *kind));
        }
    }
    let render = || {
        let started = Instant::now();
        let rendered = state
            .store
            .render_with(&channel, &path, SystemTime::now(), skip)
            .and_then(|r| {
                state
                    .drm
                    .protect(&channel, &path, r)
                    .map_err(|e| e.into_render_error(&channel, &path))
            });
        state
            .metrics
            .render_seconds
            .get_or_create(&ObjectLabels {
                object: object_label(&path),
            })
            .observe(started.elapsed().as_secs_f64());
        rendered
    };
    let rendered = if blocking {
        render().map(|r| Rendered {
            // RFC 8216bis §6.2.5.2 answers for this msn/part: caches may keep
            // it for about a part (whole seconds in Cache-Control).
            cache_control: format!(
                "public, max-age={}",
                low_latency
                    .map_or(1, |p| p.as_secs_f64().ceil() as u64)
                    .max(1)
            ),
            ..r
        })
    } else if lists_segments(&path) {
        if let (Some(Object::MediaPlaylist { rendition, kind }), Some(part_target), true) =
            (&object, low_latency, state.store.config().fresh_tune_in)
        {
            blocking::next_part(&state.store, &channel, rendition, *kind, part_target).await;
        }
        first_playlist(&state, &channel, render).await
    } else if matches!(object, Some(Object::Part { .. })) {
        // The preload-hinted part (or one just past it): held until cut.
        let not_yet = RenderError::not_yet();
        let held = match state.store.updates(&channel) {
            Some(updates) => {
                blocking::until(updates, state.store.reload_limit(), || {
                    let r = render();
                    (r.as_ref().err() != Some(&not_yet)).then_some(r)
                })
                .await
            }
            None => None,
        };
        held.unwrap_or_else(render)
    } else {
        render()
    };
    let rendered = rendered.map(|r| with_direct_clock(&path, r));
    let response = match rendered {
        Ok(rendered) => rendered_response(rendered, &method, &request_headers),
        Err(RenderError::NotFound { cache_control }) => {
            let mut response = (StatusCode::NOT_FOUND, "not found\n").into_response();
            if let Ok(cc) = HeaderValue::from_str(&cache_control) {
                response.headers_mut().insert(header::CACHE_CONTROL, cc);
            }
            response
        }
        Err(RenderError::ChannelNotFound) => {
            let mut response = (StatusCode::NOT_FOUND, "no such channel\n").into_response();
            // A channel may start any second: do not let caches keep this long.
            response.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=1"),
            );
            response
        }
    };
    finish(&state, response)
}

/// A `200` whose body is an in-progress segment's chunks as they are cut;
/// cacheable as the segment is, since it ends as the whole segment or not at
/// all (a truncated body, see [`chunked`]).
fn streamed_segment(stream: chunked::ChunkStream, kind: crate::media::TrackKind) -> Response {
    use futures::StreamExt;
    let body = stream.into_stream().inspect(|item| {
        if let Err(e) = item {
            tracing::debug!(error = %e, "in-progress segment cut short");
        }
    });
    let mut response = axum::body::Body::from_stream(body).into_response();
    let h = response.headers_mut();
    let content_type = match kind {
        crate::media::TrackKind::Video => "video/mp4",
        crate::media::TrackKind::Audio => "audio/mp4",
    };
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(crate::package::IMMUTABLE),
    );
    response
}

/// CORS and the response count, for every playback answer.
fn finish(state: &PlaybackState, mut response: Response) -> Response {
    cors(response.headers_mut());
    state
        .metrics
        .responses
        .get_or_create(&StatusLabels {
            status: response.status().as_u16(),
        })
        .inc();
    response
}

/// A live MPD leaves with the origin's time in it as well
/// ([`crate::package::dash::with_direct_clock`]). Its bytes then differ on
/// every response, so it carries no ETag: a 304 would keep an old time.
fn with_direct_clock(path: &str, rendered: Rendered) -> Rendered {
    if !matches!(
        crate::package::Object::parse(path),
        Some(crate::package::Object::Manifest)
    ) {
        return rendered;
    }
    let Some(text) = std::str::from_utf8(&rendered.body)
        .ok()
        .and_then(|mpd| crate::package::dash::with_direct_clock(mpd, SystemTime::now()))
    else {
        return rendered;
    };
    Rendered {
        body: text.into(),
        etag: None,
        ..rendered
    }
}

/// `urn:mpeg:dash:utc:http-iso:2014`: the origin's clock for DASH players.
async fn time() -> Response {
    let mut response = iso8601(SystemTime::now()).into_response();
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    cors(h);
    response
}

/// `YYYY-MM-DDThh:mm:ss.sssZ` (UTC), the format DASH's http-iso UTCTiming expects.
pub fn iso8601(t: SystemTime) -> String {
    crate::package::format_datetime(t)
}

pub struct AdminState {
    pub store: Store,
    pub registry: Registry,
    /// Bearer token for changes (kick); `None` disables them.
    pub api_token: Option<String>,
}

/// Channel API, metrics and health.
pub fn admin_router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(|| async { "ready\n" }))
        .route("/api/channels", get(channels))
        .route("/api/channels/{channel}", get(channel))
        .route("/api/channels/{channel}/kick", post(kick))
        .with_state(state)
}

async fn metrics(State(state): State<Arc<AdminState>>) -> Response {
    metrics_response(&state.registry)
}

/// A registry in the Prometheus/OpenMetrics text format, as an HTTP response
/// (used by every role's admin listener).
pub fn metrics_response(registry: &Registry) -> Response {
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, registry).is_err() {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "metrics encoding failed\n",
        )
            .into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn channels(State(state): State<Arc<AdminState>>) -> Response {
    Json(state.store.channels()).into_response()
}

async fn channel(State(state): State<Arc<AdminState>>, Path(name): Path<String>) -> Response {
    match state.store.channels().into_iter().find(|c| c.name == name) {
        Some(status) => Json(status).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({ "error": "no such channel" })),
        )
            .into_response(),
    }
}

/// Why a bearer-token check refused a request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum BearerRefusal {
    /// No token is configured: changes are switched off.
    Disabled,
    /// The request's token is missing or wrong.
    Wrong,
}

/// `Authorization: Bearer …` against `expected`, compared in constant time
/// as SHA-256 digests, so neither the content nor the length of the secret
/// shows in how long a wrong guess takes.
pub(crate) fn check_bearer(
    expected: Option<&str>,
    headers: &HeaderMap,
) -> Result<(), BearerRefusal> {
    let expected = expected.ok_or(BearerRefusal::Disabled)?;
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if same_secret(given.as_bytes(), expected.as_bytes()) {
        Ok(())
    } else {
        Err(BearerRefusal::Wrong)
    }
}

/// Whether `given` is the secret `expected`, compared in constant time as
/// SHA-256 digests: neither the content nor the length of the secret shows
/// in how long a wrong guess takes (a plain `ct_eq` of the two slices
/// returns early when their lengths differ).
pub(crate) fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    use subtle::ConstantTimeEq;
    let given = Sha256::digest(given);
    let expected = Sha256::digest(expected);
    bool::from(given.as_slice().ct_eq(expected.as_slice()))
}

fn authorised(state: &AdminState, headers: &HeaderMap) -> Result<(), Response> {
    match check_bearer(state.api_token.as_deref(), headers) {
        Ok(()) => Ok(()),
        Err(BearerRefusal::Disabled) => Err((
            StatusCode::FORBIDDEN,
            Json(serde_json::json!({ "error": "channel changes are disabled: set server.api_token" })),
        )
            .into_response()),
        Err(BearerRefusal::Wrong) => {
            let mut response = (
                StatusCode::UNAUTHORIZED,
                Json(serde_json::json!({ "error": "missing or wrong bearer token" })),
            )
                .into_response();
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            Err(response)
        }
    }
}

async fn kick(
    State(state): State<Arc<AdminState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(refused) = authorised(&state, &headers) {
        return refused;
    }
    if state.store.kick(&name) {
        tracing::info!(channel = %name, "publisher kicked through the channel API");
        (StatusCode::OK, Json(serde_json::json!({ "kicked": name }))).into_response()
    } else {
        (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({ "error": "no live publisher on that channel" })),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn iso8601_matches_known_instants() {
        assert_eq!(iso8601(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_598_118_123);
        assert_eq!(iso8601(t), "2026-11-25T09:15:18.123Z");
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(iso8601(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn bearer_tokens_compare_whole() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(
                header::AUTHORIZATION,
                HeaderValue::from_str(v).expect("value"),
            );
            h
        };
        assert_eq!(check_bearer(Some("abc"), &with("Bearer abc")), Ok(()));
        assert_eq!(
            check_bearer(Some("abc"), &with("Bearer abd")),
            Err(BearerRefusal::Wrong)
        );
        assert_eq!(
            check_bearer(Some("abc"), &with("Bearer abcd")),
            Err(BearerRefusal::Wrong)
        );
        assert_eq!(
            check_bearer(Some("abc"), &HeaderMap::new()),
            Err(BearerRefusal::Wrong)
        );
        assert_eq!(
            check_bearer(None, &with("Bearer abc")),
            Err(BearerRefusal::Disabled)
        );
    }

    /// Players in CMCD header mode reach the origin directly when it is a
    /// steering pathway: the preflight must let their CMCD-* headers through
    /// (dash.js failed over to the next pathway on the CORS refusal).
    #[tokio::test]
    async fn the_preflight_allows_cmcd_headers() {
        let response = preflight().await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        let allowed = response.headers()[header::ACCESS_CONTROL_ALLOW_HEADERS]
            .to_str()
            .expect("ascii")
            .to_ascii_lowercase();
        for name in [
            "range",
            "cmcd-object",
            "cmcd-request",
            "cmcd-session",
            "cmcd-status",
        ] {
            assert!(allowed.contains(name), "{name} in {allowed}");
        }
    }
}
