//! The admin listener: metrics, liveness, readiness.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::registry::Registry;

use crate::edge::Edge;

pub struct AdminState {
    pub registry: Registry,
    pub edge: Arc<Edge>,
    /// False until the listeners run, and again once shutdown began.
    pub ready: AtomicBool,
}

pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn metrics(State(state): State<Arc<AdminState>>) -> Response {
    let cache = state.edge.cache();
    cache.sync().await;
    let gauges = &state.edge.metrics().cache;
    gauges.objects.set(cache.object_count() as i64);
    gauges.bytes.set(cache.weighted_bytes() as i64);
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, &state.registry).is_err() {
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
