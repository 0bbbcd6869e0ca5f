//! The edge's access policy, run on every request before the cache:
//! geo rules first (cheap, and a blocked country says so with 403/451), then
//! signed tokens on the paths that need one.
//!
//! - [`path`]: the normalised path that ACLs and rule prefixes match.
//! - [`token`]: EdgeAuth 2.0 tokens, parsed (`FromStr`) then verified.
//! - [`mod@sign`]: minting tokens (`strata sign`).
//! - [`transport`]: tokens in query/cookie, stripped for logs, carried into manifests.
//! - [`geo`]: MaxMind country lookups and rules, hot-reloadable.
//! - [`client`]: the client address behind trusted proxies (XFF, PROXY protocol).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use http::StatusCode;
use parking_lot::RwLock;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::Deserialize;

use crate::request::{MediaRequest, TokenSource};

pub mod client;
pub mod geo;
pub mod path;
pub mod sign;
pub mod token;
pub mod transport;

#[cfg(test)]
mod tests;

pub use client::{client_ip, parse_proxy_header, ProxyError, ProxyHeader};
pub use geo::{
    CountryCode, GeoConfig, GeoDb, GeoError, GeoPolicy, GeoRejection, GeoRuleConfig, UnknownCountry,
};
pub use path::{normalize_path, PathError};
pub use sign::{sign, SignError};
pub use token::{KeyConfig, Propagate, Rejection, Token, TokenConfig, TokenError, TokenVerifier};
pub use transport::{
    rewrite_dash_mpd, rewrite_dash_mpd_for_host, rewrite_hls_playlist,
    rewrite_hls_playlist_for_host, strip_token_from_query, token_cookie, token_from_request,
};

/// Header naming why a request was refused.
pub const REJECT_REASON_HEADER: &str = "strata-reject-reason";

pub use crate::error::ConfigError;

/// The `[token]` and `[geo]` sections; either may be absent (no check).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Signed-token check; absent means no path needs a token.
    #[serde(default)]
    pub token: Option<TokenConfig>,
    /// Country rules; absent means no geo check.
    #[serde(default)]
    pub geo: Option<GeoConfig>,
}

/// A request may proceed. When `token` is set, the manifests it fetches are
/// to carry it on, as `propagate` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The token as it arrived (query value or cookie value).
    pub token: Option<String>,
    /// How to carry it on.
    pub propagate: Propagate,
}

impl Grant {
    const OPEN: Grant = Grant {
        token: None,
        propagate: Propagate::Off,
    };
}

/// A request is refused: answer `status` with `Strata-Reject-Reason: reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Denied {
    /// 403, or 451 for a geo rule so configured.
    pub status: StatusCode,
    /// `missing`, `malformed`, `expired`, `not-yet-valid`, `acl`, `ip`,
    /// `signature` or `geo`; `malformed` also for a request path that cannot
    /// be normalised (escapes the root, encoded slash or NUL).
    pub reason: &'static str,
}

impl From<Rejection> for Denied {
    fn from(r: Rejection) -> Self {
        Denied {
            status: StatusCode::FORBIDDEN,
            reason: r.as_str(),
        }
    }
}

impl From<GeoRejection> for Denied {
    fn from(r: GeoRejection) -> Self {
        Denied {
            status: r.status,
            reason: r.as_str(),
        }
    }
}

/// Counters for the policy; registered, not global.
#[derive(Debug, Clone, Default)]
pub struct PolicyMetrics {
    rejections: Family<[(&'static str, &'static str); 1], Counter>,
}

impl PolicyMetrics {
    /// Registers `policy_rejections_total{reason}` in `registry`.
    /// Every reason starts at 0 so dashboards see the series before the
    /// first refusal.
    pub fn register(registry: &mut Registry) -> PolicyMetrics {
        let metrics = PolicyMetrics::default();
        for reason in Rejection::ALL.iter().map(|r| r.as_str()).chain(["geo"]) {
            let _ = metrics.rejections.get_or_create(&[("reason", reason)]);
        }
        registry.register(
            "policy_rejections",
            "Requests refused by the access policy, by reason",
            metrics.rejections.clone(),
        );
        metrics
    }

    /// Counts one refusal.
    pub fn record(&self, denied: &Denied) {
        self.rejections
            .get_or_create(&[("reason", denied.reason)])
            .inc();
    }

    /// How many refusals were counted for `reason`.
    pub fn rejections(&self, reason: &'static str) -> u64 {
        self.rejections.get_or_create(&[("reason", reason)]).get()
    }
}

/// The token half of the policy: the static settings plus a verifier that
/// the admin API can swap.
struct TokenGate {
    param: String,
    cookie: bool,
    require: Vec<String>,
    propagate: Propagate,
    verifier: RwLock<Arc<TokenVerifier>>,
}

/// The live access policy.
pub struct Policy {
    token: Option<TokenGate>,
    geo: Option<RwLock<Arc<GeoPolicy>>>,
    metrics: Option<PolicyMetrics>,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field(
                "token",
                &self.token.as_ref().map(|t| t.verifier.read().clone()),
            )
            .field("geo", &self.geo.as_ref().map(|g| g.read().clone()))
            .finish()
    }
}

impl Policy {
    /// Validates both sections and opens the geo database.
    pub fn init(cfg: PolicyConfig) -> Result<Policy, ConfigError> {
        let token = match cfg.token {
            Some(t) => {
                let verifier = t.init()?;
                Some(TokenGate {
                    param: t.param,
                    cookie: t.cookie,
                    require: t.require,
                    propagate: t.propagate,
                    verifier: RwLock::new(Arc::new(verifier)),
                })
            }
            None => None,
        };
        let geo = match cfg.geo {
            Some(g) => Some(RwLock::new(Arc::new(g.init()?))),
            None => None,
        };
        Ok(Policy {
            token,
            geo,
            metrics: None,
        })
    }

    /// Counts refusals in `metrics` from now on.
    pub fn with_metrics(mut self, metrics: PolicyMetrics) -> Policy {
        self.metrics = Some(metrics);
        self
    }

    /// The query parameter / cookie name tokens travel in, if tokens are on.
    pub fn token_param(&self) -> Option<&str> {
        self.token.as_ref().map(|t| t.param.as_str())
    }

    /// Where tokens travel, for [`MediaRequest::parse`] to pick the token
    /// out; `None` when tokens are off.
    pub fn token_source(&self) -> Option<TokenSource<'_>> {
        self.token.as_ref().map(|t| TokenSource {
            param: &t.param,
            cookie: t.cookie,
        })
    }

    /// Decides on one parsed request (its normalised path and the token
    /// [`MediaRequest::parse`] found where [`Policy::token_source`] says);
    /// `client_ip` comes from [`client_ip`].
    pub fn check(
        &self,
        request: &MediaRequest,
        client_ip: IpAddr,
        now: SystemTime,
    ) -> Result<Grant, Denied> {
        let outcome = self.decide(request, client_ip, now);
        if let (Err(denied), Some(metrics)) = (&outcome, &self.metrics) {
            metrics.record(denied);
        }
        outcome
    }

    fn decide(
        &self,
        request: &MediaRequest,
        client_ip: IpAddr,
        now: SystemTime,
    ) -> Result<Grant, Denied> {
        let path = request.decoded_path();
        if let Some(geo) = &self.geo {
            let geo = Arc::clone(&geo.read());
            geo.check(&path, client_ip)?;
        }
        let Some(gate) = &self.token else {
            return Ok(Grant::OPEN);
        };
        if !gate
            .require
            .iter()
            .any(|prefix| path.starts_with(prefix.as_str()))
        {
            return Ok(Grant::OPEN);
        }
        let raw = request.token.as_deref().ok_or(Rejection::Missing)?;
        let verifier = Arc::clone(&gate.verifier.read());
        verifier.verify_normalised(raw, request.signed_path(), &path, client_ip, now)?;
        Ok(Grant {
            token: (gate.propagate != Propagate::Off).then(|| raw.to_owned()),
            propagate: gate.propagate,
        })
    }

    /// Adds a verification key at run time (admin API).
    pub fn add_key(&self, id: &str, secret_hex: &str) -> Result<(), ConfigError> {
        let gate = self
            .token
            .as_ref()
            .ok_or_else(|| ConfigError::new("token", "not configured"))?;
        let mut verifier = gate.verifier.write();
        let next = verifier
            .with_key(id, secret_hex)
            .map_err(|e| ConfigError::from(e).under("key"))?;
        *verifier = Arc::new(next);
        Ok(())
    }

    /// Whether [`Policy::add_key`] would take this key, changing nothing;
    /// errors are relative (`id: …`, `secret: …`).
    pub fn check_new_key(&self, id: &str, secret_hex: &str) -> Result<(), ConfigError> {
        let gate = self
            .token
            .as_ref()
            .ok_or_else(|| ConfigError::new("token", "not configured"))?;
        let verifier = Arc::clone(&gate.verifier.read());
        verifier
            .with_key(id, secret_hex)
            .map(|_| ())
            .map_err(ConfigError::from)
    }

    /// Removes a verification key at run time; the last key cannot go.
    pub fn retire_key(&self, id: &str) -> Result<(), ConfigError> {
        let gate = self
            .token
            .as_ref()
            .ok_or_else(|| ConfigError::new("token", "not configured"))?;
        let mut verifier = gate.verifier.write();
        let next = verifier
            .without_key(id)
            .map_err(|e| ConfigError::from(e).under("key"))?;
        *verifier = Arc::new(next);
        Ok(())
    }

    /// The ids of the verification keys, in the order they are tried.
    pub fn key_ids(&self) -> Vec<String> {
        self.token
            .as_ref()
            .map(|g| g.verifier.read().key_ids().map(str::to_owned).collect())
            .unwrap_or_default()
    }

    /// Replaces the geo rules at run time, all or nothing.
    pub fn set_geo_rules(&self, rules: &[GeoRuleConfig]) -> Result<(), ConfigError> {
        let geo = self
            .geo
            .as_ref()
            .ok_or_else(|| ConfigError::new("geo", "not configured"))?;
        let parsed = geo::parse_rules(rules, "rules")?;
        let mut current = geo.write();
        *current = Arc::new(current.with_rules(parsed));
        Ok(())
    }

    /// The proxies whose `X-Forwarded-For` is believed (`geo.trusted_proxies`;
    /// none without a `[geo]` section).
    pub fn trusted_proxies(&self) -> Vec<ipnet::IpNet> {
        self.geo
            .as_ref()
            .map(|g| g.read().trusted_proxies().to_vec())
            .unwrap_or_default()
    }

    /// The geo database, for [`GeoDb::reload`] (SIGHUP) and [`GeoDb::watch`].
    pub fn geo_db(&self) -> Option<Arc<GeoDb>> {
        self.geo.as_ref().map(|g| Arc::clone(g.read().db()))
    }
}
