//! Handlers of the control API: JSON in, JSON out, every change validated
//! whole before it is applied and echoed back as applied.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::cache::freshness::TtlOverride;
use crate::fleet::change::GeoRule;
use crate::fleet::{Change, Outcome, PurgeSpec};

use super::{AdminState, ApiError};

type Shared = State<Arc<AdminState>>;

/// Parse a JSON body; errors name the field (`rules[0].deny: invalid type…`).
fn parse<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge
        } else {
            ApiError::BadRequest(rejection.body_text())
        }
    })?;
    let mut json = serde_json::Deserializer::from_slice(&body);
    let value: T = serde_path_to_error::deserialize(&mut json).map_err(|e| {
        let path = e.path().to_string();
        // `.` is the top level, `?` a place serde could not name (bad syntax).
        if path == "." || path.starts_with('?') {
            ApiError::BadRequest(format!("body: {}", e.inner()))
        } else {
            ApiError::BadRequest(format!("{path}: {}", e.inner()))
        }
    })?;
    json.end()
        .map_err(|e| ApiError::BadRequest(format!("body: {e}")))?;
    Ok(value)
}

#[derive(Serialize)]
struct PurgeResponse {
    /// Cached objects selected in memory on this node (dropped, or marked
    /// stale when `soft`); the disk tier cannot count them, but is purged too.
    purged: usize,
    kind: &'static str,
    soft: bool,
    /// The fleet state version this purge created.
    version: u64,
}

/// `POST /api/purge`: exactly one of `urls`, `prefix`, `surrogate_keys`.
pub async fn purge(State(state): Shared, body: Result<Bytes, BytesRejection>) -> Response {
    let spec: PurgeSpec = match parse(body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let kind = match crate::fleet::purge_target(&state.edge, &spec) {
        Ok(t) => t.kind(),
        Err(e) => return e.into_response(),
    };
    let soft = spec.soft;
    match state.control.fleet.submit(Change::Purge(spec)).await {
        Ok(applied) => Json(PurgeResponse {
            purged: match applied.outcome {
                Outcome::Purged(n) => n,
                _ => 0,
            },
            kind,
            soft,
            version: applied.version,
        })
        .into_response(),
        Err(e) => e.into_response(),
    }
}

/// `GET /api/fleet`: the fleet state version this node runs, and its engine.
pub async fn fleet_status(State(state): Shared) -> Json<crate::fleet::FleetStatus> {
    Json(state.control.fleet.status())
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeoRules {
    rules: Vec<GeoRule>,
}

pub async fn geo_rules(State(state): Shared) -> Result<Json<GeoRules>, ApiError> {
    crate::fleet::geo_policy(&state.edge)?;
    Ok(Json(GeoRules {
        rules: state.control.fleet.geo_rules(),
    }))
}

pub async fn set_geo_rules(
    State(state): Shared,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<GeoRules>, ApiError> {
    crate::fleet::geo_policy(&state.edge)?;
    let request: GeoRules = parse(body)?;
    state
        .control
        .fleet
        .submit(Change::SetGeoRules {
            rules: request.rules.clone(),
        })
        .await?;
    Ok(Json(request))
}

#[derive(Serialize)]
pub struct KeyId {
    id: String,
}

/// Key ids only: secrets never leave the edge.
#[derive(Serialize)]
pub struct TokenKeys {
    keys: Vec<KeyId>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    id: String,
    secret: String,
}

fn key_list(policy: &crate::policy::Policy) -> TokenKeys {
    TokenKeys {
        keys: policy
            .key_ids()
            .into_iter()
            .map(|id| KeyId { id })
            .collect(),
    }
}

pub async fn token_keys(State(state): Shared) -> Result<Json<TokenKeys>, ApiError> {
    Ok(Json(key_list(crate::fleet::token_policy(&state.edge)?)))
}

pub async fn add_token_key(
    State(state): Shared,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<TokenKeys>), ApiError> {
    let policy = crate::fleet::token_policy(&state.edge)?;
    let key: NewKey = parse(body)?;
    state
        .control
        .fleet
        .submit(Change::AddTokenKey {
            id: key.id,
            secret: key.secret,
        })
        .await?;
    Ok((StatusCode::CREATED, Json(key_list(policy))))
}

pub async fn retire_token_key(
    State(state): Shared,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<TokenKeys>, ApiError> {
    let policy = crate::fleet::token_policy(&state.edge)?;
    let Path(id) = id.map_err(|e| ApiError::BadRequest(format!("id: {}", e.body_text())))?;
    state
        .control
        .fleet
        .submit(Change::RetireTokenKey { id })
        .await?;
    Ok(Json(key_list(policy)))
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TtlOverridesBody {
    overrides: Vec<TtlOverride>,
}

pub async fn ttl_overrides(State(state): Shared) -> Json<TtlOverridesBody> {
    Json(TtlOverridesBody {
        overrides: state.edge.ttl_overrides().entries().to_vec(),
    })
}

pub async fn set_ttl_overrides(
    State(state): Shared,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<TtlOverridesBody>, ApiError> {
    let request: TtlOverridesBody = parse(body)?;
    state
        .control
        .fleet
        .submit(Change::SetTtlOverrides {
            overrides: request.overrides,
        })
        .await?;
    Ok(Json(TtlOverridesBody {
        overrides: state.edge.ttl_overrides().entries().to_vec(),
    }))
}
