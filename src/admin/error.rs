//! The control API's one error type, and the one place it becomes a status
//! and a `{"error": "..."}` body.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not the JSON the route takes; the message names the field.
    #[error("{0}")]
    BadRequest(String),
    /// Well-formed, but a value is refused; the message names the field.
    #[error("{0}")]
    Invalid(String),
    #[error("missing or wrong bearer token (Authorization: Bearer <server.admin_token>)")]
    Unauthorized,
    #[error("the admin API is read-only: set server.admin_token to allow changes")]
    ReadOnly,
    #[error("{0}")]
    NotFound(String),
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    /// The edge is not set up for this (no `[geo]`), or the change would
    /// clash with what is there (duplicate key id, last key).
    #[error("{0}")]
    Conflict(String),
    #[error("request body larger than {} bytes", super::MAX_BODY)]
    TooLarge,
    /// The fleet engine cannot take the change now; nothing was changed.
    #[error("{0}")]
    Unavailable(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::ReadOnly => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = (
            status,
            Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"strata-admin\""),
            );
        }
        response
    }
}
