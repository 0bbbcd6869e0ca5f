//! `/vod/{path}/…` on the playback listener, and the `strata_origin_vod_*`
//! metrics.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use super::{Library, VodError, VodObject, VodRequest};

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

/// The `/vod/` routes.
pub fn routes(library: Arc<Library>) -> Router {
    Router::new()
        .route(
            "/vod/{*path}",
            get(vod).head(vod).options(crate::http::preflight),
        )
        .with_state(library)
}

fn object_label(object: &VodObject) -> &'static str {
    match object {
        VodObject::Master | VodObject::MediaPlaylist { .. } => "playlist",
        VodObject::Manifest => "manifest",
        VodObject::Init { .. } => "init",
        VodObject::Fragment { .. } | VodObject::KeyFrame { .. } => "segment",
        VodObject::IFramePlaylist { .. } | VodObject::SubtitlePlaylist { .. } => "playlist",
        VodObject::SubtitleSegment { .. } | VodObject::SubtitleFile { .. } => "subtitles",
        VodObject::Thumbnail { .. } => "thumbnail",
    }
}

async fn vod(
    State(library): State<Arc<Library>>,
    method: Method,
    Path(path): Path<String>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    request_headers: HeaderMap,
) -> Response {
    let started = Instant::now();
    let parsed = path
        .parse::<VodRequest>()
        .and_then(|r| super::thumbnail::with_query(r, query.as_deref()));
    let object = parsed.as_ref().map_or("none", |r| object_label(&r.object));
    let rendered = match parsed {
        Ok(request) => {
            let lib = library.clone();
            match tokio::task::spawn_blocking(move || lib.render(&request)).await {
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
        Err(e) => error_response(&library, &path, &e),
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
