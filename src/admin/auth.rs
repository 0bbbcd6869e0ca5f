//! Bearer-token authentication of the control API.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{AdminState, ApiError};

/// Reads need the token when one is set; changes need it, and are refused
/// outright when none is set.
pub async fn authorize(
    State(state): State<Arc<AdminState>>,
    request: Request,
    next: Next,
) -> Response {
    let changes = !matches!(*request.method(), Method::GET | Method::HEAD);
    match &state.control.token {
        Some(token) if !token.accepts(request.headers()) => ApiError::Unauthorized.into_response(),
        None if changes => ApiError::ReadOnly.into_response(),
        _ => next.run(request).await,
    }
}
