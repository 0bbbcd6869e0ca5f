//! `/vod/{path}/…` on the playback listener, VOD licences
//! (`POST /drm/clearkey/vod/{path}`) and AES-128 keys
//! (`GET /vod/{path}/key/{kid}.key`), CPIX export and import of a title's
//! keys on the admin listener (`GET`/`PUT /api/vod/keys/{path}`), and the
//! `strata_origin_vod_*` metrics. Keys and licences are counted in
//! `strata_origin_drm_*`, with live's.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use super::hevc_cenc::HevcParameterSets;
use super::protect::{key_channel, TitleDrm};
use super::{Library, VodError, VodObject, VodRequest};
use crate::drm::http::{count, licence_preflight, licence_response, not_entitled, private};
use crate::drm::EncryptionScheme;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResponseLabels {
    /// `playlist`, `manifest`, `init`, `segment`, `subtitles`, `none` (unparsable path)
    pub object: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// `bad_path`, `outside_root`, `corrupt`, `unsupported`, `too_large`, `io`,
    /// `set_malformed`, `set_escape`, `set_missing_file`, `bad_subtitles`
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    /// `hit`, `miss`, `evict`
    pub event: &'static str,
}

/// VOD metrics, registered under `strata_origin_vod`.
#[derive(Clone)]
pub struct VodMetrics {
    pub responses: Family<ResponseLabels, Counter>,
    pub errors: Family<ReasonLabels, Counter>,
    pub index_cache: Family<CacheLabels, Counter>,
    pub bytes_read: Counter,
    pub render_seconds: Histogram,
    pub remote: super::remote::RemoteMetrics,
    pub thumbnails: super::thumbnail::ThumbnailMetrics,
}

impl Default for VodMetrics {
    fn default() -> Self {
        VodMetrics {
            responses: Family::default(),
            errors: Family::default(),
            index_cache: Family::default(),
            bytes_read: Counter::default(),
            render_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 18)),
            remote: Default::default(),
            thumbnails: Default::default(),
        }
    }
}

impl VodMetrics {
    pub fn register(registry: &mut Registry) -> VodMetrics {
        let m = VodMetrics::default();
        let vod = registry.sub_registry_with_prefix("strata_origin_vod");
        vod.register(
            "responses",
            "VOD responses by object and status",
            m.responses.clone(),
        );
        vod.register(
            "errors",
            "VOD requests refused or failed, by reason",
            m.errors.clone(),
        );
        vod.register(
            "index_cache",
            "MP4 index cache lookups and evictions",
            m.index_cache.clone(),
        );
        vod.register(
            "read_bytes",
            "Bytes read from library files (moov boxes and segment samples)",
            m.bytes_read.clone(),
        );
        vod.register(
            "packaging_seconds",
            "Time to answer a VOD request, index parse and reads included",
            m.render_seconds.clone(),
        );
        m.remote.register(vod);
        m.thumbnails.register(vod);
        m
    }

    pub(crate) fn error(&self, reason: &'static str) {
        self.errors.get_or_create(&ReasonLabels { reason }).inc();
    }

    pub(crate) fn cache(&self, event: &'static str) {
        self.index_cache.get_or_create(&CacheLabels { event }).inc();
    }
}

/// What the `/vod/` handlers share: the library, and the encryption of
/// titles (`None`: every title clear).
pub struct Vod {
    pub library: Arc<Library>,
    pub drm: Option<Arc<TitleDrm>>,
}

/// The `/vod/` routes, every title clear.
pub fn routes(library: Arc<Library>) -> Router {
    protected_routes(library, None)
}

/// The `/vod/` routes with encrypted titles, and their licence route.
pub fn protected_routes(library: Arc<Library>, drm: Option<Arc<TitleDrm>>) -> Router {
    Router::new()
        .route(
            "/vod/{*path}",
            get(vod).head(vod).options(crate::http::preflight),
        )
        .route(
            "/drm/clearkey/vod/{*path}",
            post(clearkey).options(licence_preflight),
        )
        .with_state(Arc::new(Vod { library, drm }))
}

/// CPIX export and import of a title's keys (admin listener, bearer
/// `server.api_token`), as `/api/channels/{channel}/keys` for live.
pub fn admin_routes(vod: Arc<Vod>, api_token: Option<String>) -> Router {
    Router::new()
        .route("/api/vod/keys/{*path}", get(export_cpix).put(import_cpix))
        .with_state(Arc::new((vod, api_token)))
}

fn object_label(object: &VodObject) -> &'static str {
    match object {
        VodObject::Master | VodObject::MediaPlaylist { .. } => "playlist",
        VodObject::Manifest => "manifest",
        VodObject::Init { .. } => "init",
        VodObject::Fragment { .. } | VodObject::KeyFrame { .. } => "segment",
        VodObject::IFramePlaylist { .. } | VodObject::SubtitlePlaylist { .. } => "playlist",
        VodObject::SubtitleSegment { .. } | VodObject::SubtitleFile { .. } => "subtitles",
        VodObject::MasterTs | VodObject::TsPlaylist { .. } => "playlist",
        VodObject::TsSegment { .. } => "segment",
        VodObject::Key { .. } => "key",
        VodObject::Thumbnail { .. } => "thumbnail",
    }
}

async fn vod(
    State(vod): State<Arc<Vod>>,
    method: Method,
    Path(path): Path<String>,
    uri: Uri,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    request_headers: HeaderMap,
) -> Response {
    let library = &vod.library;
    let started = Instant::now();
    let parsed = path
        .parse::<VodRequest>()
        .and_then(|r| super::thumbnail::with_query(r, query.as_deref()));
    if let Ok(VodRequest {
        title,
        object: VodObject::Key { kid },
        ..
    }) = &parsed
    {
        // The key service may write its key file: off the async workers.
        let (state, title, kid) = (vod.clone(), title.clone(), *kid);
        return tokio::task::spawn_blocking(move || {
            key(&state, &title, &kid, &uri, &request_headers)
        })
        .await
        .unwrap_or_else(|_| refusal(StatusCode::INTERNAL_SERVER_ERROR, "key task failed"));
    }
    let object = parsed.as_ref().map_or("none", |r| object_label(&r.object));
    let rendered = match parsed {
        Ok(request) => {
            let (lib, drm) = (library.clone(), vod.drm.clone());
            let task = move || {
                let clear = lib.render(&request)?;
                match &drm {
                    Some(drm) => {
                        let sample_encrypted = matches!(
                            drm.scheme(&request.title),
                            EncryptionScheme::Cbcs | EncryptionScheme::Cenc
                        );
                        let hevc = if sample_encrypted {
                            hevc_parameter_sets(&lib, &request)?
                        } else {
                            None
                        };
                        Ok(drm.protect_with(&request, clear, hevc.as_ref())?)
                    }
                    None => Ok(clear),
                }
            };
            match tokio::task::spawn_blocking(task).await {
                Ok(result) => result,
                Err(e) => Err(VodError::Io(std::io::Error::other(format!(
                    "packaging task failed: {e}"
                )))),
            }
        }
        Err(e) => Err(e),
    };
    library
        .metrics
        .render_seconds
        .observe(started.elapsed().as_secs_f64());
    let mut response = match rendered {
        Ok(rendered) => crate::http::rendered_response(rendered, &method, &request_headers),
        Err(e) => error_response(library, &path, &e),
    };
    response.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    library
        .metrics
        .responses
        .get_or_create(&ResponseLabels {
            object,
            status: response.status().as_u16(),
        })
        .inc();
    response
}

/// The parameter sets of the HEVC rendition a fragment request names
/// (its slice headers stay clear when encrypted); `None` for anything else.
fn hevc_parameter_sets(
    library: &Library,
    request: &VodRequest,
) -> Result<Option<HevcParameterSets>, VodError> {
    let (VodObject::Fragment { track, .. } | VodObject::KeyFrame { track, .. }) = request.object
    else {
        return Ok(None);
    };
    let presentation = library.presentation(&request.title)?;
    Ok(
        match presentation.rendition(track).map(|r| &r.track().params) {
            Some(crate::media::TrackParams::Video(v)) if super::hevc::is_hevc(v) => {
                Some(HevcParameterSets::from_hvcc(&v.avc_config))
            }
            _ => None,
        },
    )
}

/// A JSON refusal that no cache keeps.
fn refusal(status: StatusCode, reason: &str) -> Response {
    let mut r = (status, axum::Json(serde_json::json!({ "error": reason }))).into_response();
    private(r.headers_mut());
    r
}

/// The title of an encrypted, existing title path (what follows `/vod/`
/// or `/drm/clearkey/vod/`), with its scheme; `None` for anything else,
/// so probing learns nothing about titles.
fn encrypted_title(vod: &Vod, path: &str) -> Option<(std::path::PathBuf, EncryptionScheme)> {
    let drm = vod.drm.as_ref()?;
    let request: VodRequest = format!("{path}/master.m3u8").parse().ok()?;
    if request.clip.is_some() {
        return None;
    }
    let scheme = drm.scheme(&request.title);
    if scheme == EncryptionScheme::None {
        return None;
    }
    vod.library.resolve(&request.title).ok()?;
    Some((request.title, scheme))
}

/// `GET /vod/{path}/key/{kid}.key`: an AES-128 title's 16 key bytes
/// (RFC 8216 §5.2), for a request entitled as live key requests are.
fn key(
    vod: &Vod,
    title: &std::path::Path,
    kid: &crate::keys::KeyId,
    uri: &Uri,
    headers: &HeaderMap,
) -> Response {
    let Some(drm) = &vod.drm else {
        return refusal(StatusCode::NOT_FOUND, "no such key");
    };
    let metrics = &drm.drm.metrics.key_requests;
    if let Err(reason) = drm.drm.entitled(uri, headers) {
        count(metrics, "unauthorised");
        return not_entitled(reason);
    }
    let found = (drm.scheme(title) == EncryptionScheme::Aes128
        && vod.library.resolve(title).is_ok())
    .then(|| drm.key(title));
    let key = match found {
        Some(Ok(key)) if key.kid == *kid => key,
        Some(Err(e)) => {
            tracing::error!(title = %title.display(), error = %e, "cannot read a VOD key");
            count(metrics, "error");
            return refusal(StatusCode::INTERNAL_SERVER_ERROR, "the key service failed");
        }
        _ => {
            count(metrics, "unknown_key");
            return refusal(StatusCode::NOT_FOUND, "no such key");
        }
    };
    count(metrics, "ok");
    let mut r = (StatusCode::OK, key.key.to_vec()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    private(r.headers_mut());
    r
}

/// `POST /drm/clearkey/vod/{path}`: a W3C ClearKey licence with the
/// title's key, as `/drm/clearkey/{channel}` answers for a channel.
async fn clearkey(
    State(vod): State<Arc<Vod>>,
    Path(path): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(drm) = vod.drm.clone() else {
        return refusal(StatusCode::NOT_FOUND, "no such title");
    };
    let metrics = &drm.drm.metrics.licence_requests;
    // Entitlement first: requests without a token create no keys.
    if let Err(reason) = drm.drm.entitled(&uri, &headers) {
        count(metrics, "unauthorised");
        return not_entitled(reason);
    }
    let found = {
        let vod = vod.clone();
        tokio::task::spawn_blocking(move || encrypted_title(&vod, &path))
            .await
            .ok()
            .flatten()
    };
    let Some((title, scheme)) = found else {
        count(metrics, "unknown_key");
        return refusal(StatusCode::NOT_FOUND, "no such encrypted title");
    };
    if scheme == EncryptionScheme::Aes128 {
        count(metrics, "unknown_key");
        return refusal(
            StatusCode::NOT_FOUND,
            "an AES-128 title has HLS keys, not licences",
        );
    }
    if let Err(e) = drm.key(&title) {
        tracing::error!(title = %title.display(), error = %e, "cannot create a VOD key");
        count(metrics, "error");
        return refusal(StatusCode::INTERNAL_SERVER_ERROR, "the key service failed");
    }
    licence_response(&drm.drm, Some(&key_channel(&title)), (&uri, &headers), body).await
}

type AdminVod = (Arc<Vod>, Option<String>);

/// The admin check and the title, or the refusal.
fn admin_title(
    state: &AdminVod,
    headers: &HeaderMap,
    path: &str,
) -> Result<(Arc<TitleDrm>, std::path::PathBuf), Box<Response>> {
    let (vod, api_token) = state;
    let drm = vod
        .drm
        .clone()
        .ok_or_else(|| Box::new(refusal(StatusCode::NOT_FOUND, "no such encrypted title")))?;
    let metrics = &drm.drm.metrics.cpix_requests;
    if let Err(e) = crate::http::check_bearer(api_token.as_deref(), headers) {
        count(metrics, "unauthorised");
        return Err(Box::new(match e {
            crate::http::BearerRefusal::Disabled => refusal(
                StatusCode::FORBIDDEN,
                "key export and import are disabled: set server.api_token",
            ),
            crate::http::BearerRefusal::Wrong => {
                refusal(StatusCode::UNAUTHORIZED, "missing or wrong bearer token")
            }
        }));
    }
    match encrypted_title(vod, path) {
        Some((title, _)) => Ok((drm, title)),
        None => {
            count(metrics, "unknown_key");
            Err(Box::new(refusal(
                StatusCode::NOT_FOUND,
                "no such encrypted title",
            )))
        }
    }
}

/// `GET /api/vod/keys/{path}`: the title's key as CPIX, created first if
/// no player has asked yet (so a DRM provider can have it before release).
async fn export_cpix(
    State(state): State<Arc<AdminVod>>,
    Path(path): Path<String>,
    headers: HeaderMap,
) -> Response {
    let (drm, title) = match admin_title(&state, &headers, &path) {
        Ok(found) => found,
        Err(r) => return *r,
    };
    let metrics = &drm.drm.metrics.cpix_requests;
    if let Err(e) = drm.key(&title) {
        tracing::error!(title = %title.display(), error = %e, "cannot create a VOD key");
        count(metrics, "error");
        return refusal(StatusCode::INTERNAL_SERVER_ERROR, "the key service failed");
    }
    let entries = drm.drm.keys.entries_of(&key_channel(&title));
    count(metrics, "ok");
    let mut r = crate::keys::write_cpix_entries(&entries).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml"),
    );
    private(r.headers_mut());
    r
}

/// `PUT /api/vod/keys/{path}` with a CPIX document of one clear key: the
/// title's key from now on; refused (409) once the title has a key.
async fn import_cpix(
    State(state): State<Arc<AdminVod>>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (drm, title) = match admin_title(&state, &headers, &path) {
        Ok(found) => found,
        Err(r) => return *r,
    };
    let metrics = &drm.drm.metrics.cpix_requests;
    let Ok(bytes) = axum::body::to_bytes(body, crate::drm::http::MAX_CPIX_DOCUMENT).await else {
        count(metrics, "too_large");
        return refusal(StatusCode::PAYLOAD_TOO_LARGE, "CPIX document too large");
    };
    let text = String::from_utf8_lossy(&bytes);
    match drm.drm.keys.import_cpix(&key_channel(&title), &text) {
        Ok(kids) => {
            count(metrics, "ok");
            let kids: Vec<String> = kids.iter().map(crate::keys::KeyId::uuid).collect();
            let mut r = axum::Json(serde_json::json!({ "imported": kids })).into_response();
            private(r.headers_mut());
            r
        }
        Err(e) => {
            use crate::keys::KeyError;
            let (status, outcome) = match e {
                KeyError::InUse(_) => (StatusCode::CONFLICT, "conflict"),
                KeyError::Io { .. } | KeyError::Random(_) | KeyError::Corrupt { .. } => {
                    (StatusCode::INTERNAL_SERVER_ERROR, "error")
                }
                _ => (StatusCode::BAD_REQUEST, "bad_request"),
            };
            count(metrics, outcome);
            refusal(status, &e.to_string())
        }
    }
}

/// The one place a [`VodError`] becomes a status: a reason in the body, a
/// log line and a count for everything but a plain 404.
fn error_response(library: &Library, path: &str, e: &VodError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let detail = match e {
        VodError::Io(source) => format!("{e}: {source}"),
        _ => e.to_string(),
    };
    match e {
        VodError::NotFound => {}
        VodError::BadPath(_) => {
            tracing::info!(path = %path.escape_debug(), reason = %detail, "VOD request refused");
            library.metrics.error(e.reason());
        }
        _ => {
            tracing::warn!(path = %path.escape_debug(), status = status.as_u16(), reason = %detail, "VOD title cannot be packaged");
            library.metrics.error(e.reason());
        }
    }
    let mut response = (status, format!("{detail}\n")).into_response();
    // A broken title may be replaced at any time; keep refusals short-lived.
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=5"),
    );
    response
}
