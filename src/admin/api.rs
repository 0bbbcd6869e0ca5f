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
use crate::cache::purge::PurgeTarget;
use crate::policy::GeoRuleConfig;

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

/// An optional field that, when present, must not be `null`: `{"allow":
/// null}` is a mistake to report, not a way to say "absent".
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// `POST /api/purge`: exactly one of `urls`, `prefix`, `surrogate_keys`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PurgeRequest {
    #[serde(default, deserialize_with = "present")]
    urls: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    prefix: Option<String>,
    #[serde(default, deserialize_with = "present")]
    surrogate_keys: Option<Vec<String>>,
    #[serde(default)]
    soft: bool,
}

#[derive(Serialize)]
struct PurgeResponse {
    /// Cached objects selected in memory (dropped, or marked stale when
    /// `soft`); the disk tier cannot count them, but is purged too.
    purged: usize,
    kind: &'static str,
    soft: bool,
}

pub async fn purge(State(state): Shared, body: Result<Bytes, BytesRejection>) -> Response {
    let request: PurgeRequest = match parse(body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let target = match purge_target(&state, request.urls, request.prefix, request.surrogate_keys) {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    let kind = target.kind();
    let purged = state.edge.purge(target, request.soft).await;
    state.control.metrics.purged(kind, request.soft);
    tracing::info!(kind, soft = request.soft, purged, "purge");
    Json(PurgeResponse {
        purged,
        kind,
        soft: request.soft,
    })
    .into_response()
}

fn purge_target(
    state: &AdminState,
    urls: Option<Vec<String>>,
    prefix: Option<String>,
    surrogate_keys: Option<Vec<String>>,
) -> Result<PurgeTarget, ApiError> {
    match (urls, prefix, surrogate_keys) {
        (Some(urls), None, None) => {
            if urls.is_empty() {
                return Err(ApiError::Invalid("urls: empty".into()));
            }
            let keys = urls
                .iter()
                .enumerate()
                .map(|(i, url)| {
                    state
                        .edge
                        .cache_key_for(url)
                        .map_err(|e| ApiError::Invalid(format!("urls[{i}]: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(PurgeTarget::Keys(keys))
        }
        (None, Some(prefix), None) => {
            if !prefix.starts_with('/') {
                return Err(ApiError::Invalid("prefix: must start with '/'".into()));
            }
            // The normal form the cache keys are in, so `/a/%2e%2e/b/` purges `/b/…`.
            let prefix = crate::request::path::canonical(&prefix)
                .map_err(|e| ApiError::Invalid(format!("prefix: {e}")))?
                .into_owned();
            Ok(PurgeTarget::Prefix(prefix))
        }
        (None, None, Some(tags)) => {
            if tags.is_empty() {
                return Err(ApiError::Invalid("surrogate_keys: empty".into()));
            }
            // Surrogate-Key is a header of space-separated tokens.
            if let Some(i) = tags
                .iter()
                .position(|t| t.is_empty() || !t.bytes().all(|b| b.is_ascii_graphic()))
            {
                return Err(ApiError::Invalid(format!(
                    "surrogate_keys[{i}]: must be visible ASCII, without spaces"
                )));
            }
            Ok(PurgeTarget::SurrogateKeys(tags))
        }
        _ => Err(ApiError::BadRequest(
            "body: give exactly one of urls, prefix, surrogate_keys".into(),
        )),
    }
}

/// One geo rule, as the API shows and takes it (the `[[geo.rules]]` shape).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeoRule {
    pub prefix: String,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub deny: Option<Vec<String>>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub allow: Option<Vec<String>>,
}

impl From<&GeoRuleConfig> for GeoRule {
    fn from(rule: &GeoRuleConfig) -> Self {
        GeoRule {
            prefix: rule.prefix.clone(),
            deny: rule.deny.clone(),
            allow: rule.allow.clone(),
        }
    }
}

impl From<&GeoRule> for GeoRuleConfig {
    fn from(rule: &GeoRule) -> Self {
        GeoRuleConfig {
            prefix: rule.prefix.clone(),
            deny: rule.deny.clone(),
            allow: rule.allow.clone(),
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeoRules {
    rules: Vec<GeoRule>,
}

fn geo_policy(state: &AdminState) -> Result<&crate::policy::Policy, ApiError> {
    state
        .edge
        .policy()
        .filter(|p| p.geo_db().is_some())
        .ok_or_else(|| ApiError::Conflict("geo: this edge has no [geo] section".into()))
}

pub async fn geo_rules(State(state): Shared) -> Result<Json<GeoRules>, ApiError> {
    geo_policy(&state)?;
    Ok(Json(GeoRules {
        rules: state.control.geo_rules.lock().clone(),
    }))
}

pub async fn set_geo_rules(
    State(state): Shared,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<GeoRules>, ApiError> {
    let policy = geo_policy(&state)?;
    let request: GeoRules = parse(body)?;
    let configs: Vec<GeoRuleConfig> = request.rules.iter().map(GeoRuleConfig::from).collect();
    let mut applied = state.control.geo_rules.lock();
    policy
        .set_geo_rules(&configs)
        .map_err(|e| ApiError::Invalid(e.to_string()))?;
    *applied = request.rules.clone();
    drop(applied);
    tracing::info!(rules = request.rules.len(), "geo rules replaced");
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

fn token_policy(state: &AdminState) -> Result<&crate::policy::Policy, ApiError> {
    state
        .edge
        .policy()
        .filter(|p| p.token_param().is_some())
        .ok_or_else(|| ApiError::Conflict("token: this edge has no [token] section".into()))
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
    Ok(Json(key_list(token_policy(&state)?)))
}

pub async fn add_token_key(
    State(state): Shared,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<TokenKeys>), ApiError> {
    let policy = token_policy(&state)?;
    let key: NewKey = parse(body)?;
    let _one_change = state.control.key_changes.lock();
    if policy.key_ids().contains(&key.id) {
        return Err(ApiError::Conflict(format!(
            "id: a key {:?} already exists; retire it first",
            key.id
        )));
    }
    // Errors are `key.id: …` / `key.secret: …`; the secret itself is never echoed.
    policy.add_key(&key.id, &key.secret).map_err(|e| {
        let text = e.to_string();
        ApiError::Invalid(text.strip_prefix("key.").unwrap_or(&text).to_owned())
    })?;
    tracing::info!(id = %key.id, "token key added");
    Ok((StatusCode::CREATED, Json(key_list(policy))))
}

pub async fn retire_token_key(
    State(state): Shared,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<TokenKeys>, ApiError> {
    let policy = token_policy(&state)?;
    let Path(id) = id.map_err(|e| ApiError::BadRequest(format!("id: {}", e.body_text())))?;
    let _one_change = state.control.key_changes.lock();
    let ids = policy.key_ids();
    if !ids.contains(&id) {
        return Err(ApiError::NotFound(format!("id: no key {id:?}")));
    }
    if ids.len() == 1 {
        return Err(ApiError::Conflict(format!(
            "id: {id:?} is the only key; add its successor first"
        )));
    }
    policy
        .retire_key(&id)
        .map_err(|e| ApiError::Conflict(e.to_string()))?;
    tracing::info!(%id, "token key retired");
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
    let applied = state
        .edge
        .set_ttl_overrides(&request.overrides, "overrides")
        .map_err(|e| ApiError::Invalid(e.to_string()))?;
    tracing::info!(
        overrides = applied.entries().len(),
        "TTL overrides replaced"
    );
    Ok(Json(TtlOverridesBody {
        overrides: applied.entries().to_vec(),
    }))
}
