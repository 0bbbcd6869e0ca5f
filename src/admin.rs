//! The admin listener: metrics, liveness, readiness, and the CDN control API
//! under `/api` (purges, geo rules, token keys, TTL overrides, fleet status),
//! every change going through [`crate::fleet`]; described by
//! `api/openapi.yaml`.
//!
//! `/metrics`, `/healthz`, `/readyz` and `/api/openapi.yaml` are open. With
//! `server.admin_token` set, every other `/api` route needs
//! `Authorization: Bearer <token>`; without it, the API is read-only and
//! changes answer 403.

mod api;
mod auth;
pub mod error;
pub mod metrics;
pub mod token;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put, MethodRouter};
use axum::Router;
use prometheus_client::registry::Registry;

use crate::config::EdgeConfig;
use crate::edge::Edge;
use crate::fleet::Fleet;

pub use crate::fleet::change::GeoRule;
pub use error::ApiError;
pub use metrics::AdminMetrics;
use metrics::AdminRequestLabels;
pub use token::AdminToken;

/// Largest request body the control API reads.
pub const MAX_BODY: usize = 64 * 1024;

/// The OpenAPI 3.1 description of this listener, served at `/api/openapi.yaml`.
pub const OPENAPI_YAML: &str = include_str!("../api/openapi.yaml");

pub struct AdminState {
    pub registry: Registry,
    pub edge: Arc<Edge>,
    /// False until the listeners run, and again once shutdown began.
    pub ready: AtomicBool,
    pub control: Control,
}

/// What the control API needs beyond the edge itself.
pub struct Control {
    token: Option<AdminToken>,
    metrics: AdminMetrics,
    /// Where every change goes: this node alone, or the fleet.
    fleet: Arc<Fleet>,
}

impl Control {
    pub fn new(config: &EdgeConfig, metrics: AdminMetrics, fleet: Arc<Fleet>) -> Control {
        Control {
            token: config.server.admin_token.clone(),
            metrics,
            fleet,
        }
    }

    pub fn fleet(&self) -> &Arc<Fleet> {
        &self.fleet
    }
}

/// The geo rules of the config file, as the API shows them.
pub fn configured_geo_rules(config: &EdgeConfig) -> Vec<GeoRule> {
    config
        .geo
        .as_ref()
        .map(|g| g.rules.iter().map(GeoRule::from).collect())
        .unwrap_or_default()
}

/// Who may call a route.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    Open,
    /// Bearer token when one is configured; read-only without one.
    Api,
}

type Route = (&'static str, Method, Access, MethodRouter<Arc<AdminState>>);

/// Every route this listener serves; the router is built from this table,
/// and the OpenAPI test checks it against the spec.
fn routes() -> Vec<Route> {
    use Access::{Api, Open};
    vec![
        ("/metrics", Method::GET, Open, get(metrics)),
        ("/healthz", Method::GET, Open, get(|| async { "ok\n" })),
        ("/readyz", Method::GET, Open, get(readyz)),
        ("/api/openapi.yaml", Method::GET, Open, get(openapi)),
        ("/api/purge", Method::POST, Api, post(api::purge)),
        ("/api/fleet", Method::GET, Api, get(api::fleet_status)),
        ("/api/geo/rules", Method::GET, Api, get(api::geo_rules)),
        ("/api/geo/rules", Method::PUT, Api, put(api::set_geo_rules)),
        ("/api/token/keys", Method::GET, Api, get(api::token_keys)),
        (
            "/api/token/keys",
            Method::POST,
            Api,
            post(api::add_token_key),
        ),
        (
            "/api/token/keys/{id}",
            Method::DELETE,
            Api,
            delete(api::retire_token_key),
        ),
        (
            "/api/cache/ttl-overrides",
            Method::GET,
            Api,
            get(api::ttl_overrides),
        ),
        (
            "/api/cache/ttl-overrides",
            Method::PUT,
            Api,
            put(api::set_ttl_overrides),
        ),
    ]
}

/// `(path template, method)` of every route served (HEAD comes with GET).
pub fn served_routes() -> Vec<(&'static str, Method)> {
    routes()
        .into_iter()
        .map(|(path, method, _, _)| (path, method))
        .collect()
}

pub fn router(state: Arc<AdminState>) -> Router {
    let mut by_path: BTreeMap<&'static str, (Access, MethodRouter<Arc<AdminState>>)> =
        BTreeMap::new();
    for (path, _, access, handler) in routes() {
        match by_path.remove(path) {
            Some((known, merged)) => {
                debug_assert!(known == access, "{path}: one access rule per path");
                by_path.insert(path, (known, merged.merge(handler)));
            }
            None => {
                by_path.insert(path, (access, handler));
            }
        }
    }
    let mut open = Router::new();
    let mut api = Router::new();
    for (path, (access, handler)) in by_path {
        let handler = handler.fallback(|| async { ApiError::MethodNotAllowed });
        match access {
            Access::Open => open = open.route(path, handler),
            Access::Api => api = api.route(path, handler),
        }
    }
    let api = api.route_layer(middleware::from_fn_with_state(
        state.clone(),
        auth::authorize,
    ));
    open.merge(api)
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn_with_state(state.clone(), count_request))
        .with_state(state)
}

async fn count_request(
    State(state): State<Arc<AdminState>>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |m| m.as_str())
        .to_owned();
    let method = request.method().as_str().to_owned();
    let response = next.run(request).await;
    state
        .control
        .metrics
        .requests
        .get_or_create(&AdminRequestLabels {
            route,
            method,
            status: response.status().as_u16(),
        })
        .inc();
    response
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/yaml")], OPENAPI_YAML).into_response()
}

async fn metrics(State(state): State<Arc<AdminState>>) -> Response {
    let cache = state.edge.cache();
    cache.sync().await;
    let gauges = &state.edge.metrics().cache;
    gauges.objects.set(cache.object_count() as i64);
    gauges.bytes.set(cache.weighted_bytes() as i64);
    metrics_response(&state.registry)
}

/// The registry in the OpenMetrics text format Prometheus scrapes.
fn metrics_response(registry: &prometheus_client::registry::Registry) -> Response {
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, registry).is_err() {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "metrics encoding failed\n",
        )
            .into_response();
    }
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    ([(header::CONTENT_TYPE, content_type)], text).into_response()
}

async fn readyz(State(state): State<Arc<AdminState>>) -> Response {
    if !state.ready.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response();
    }
    if !state
        .edge
        .upstreams()
        .upstreams()
        .iter()
        .any(|u| u.is_available())
    {
        return (StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream\n").into_response();
    }
    "ready\n".into_response()
}
