//! The `[token]` config section. Tokens themselves (Akamai EdgeAuth 2.0:
//! parsing, verification, the verified-token memo) live in
//! `strata-edgeauth`, which the origin uses too to check a licence's
//! entitlement.

use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;
pub use strata_edgeauth::token::{
    acl_entry_matches, decode_secret, KeyConfig, KeyError, Rejection, Token, TokenError,
    TokenVerifier, MAX_TOKEN_LEN,
};

/// How a granted token reaches the requests a manifest leads to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Propagate {
    /// Append the token to every URI in HLS playlists and DASH MPDs.
    #[default]
    Query,
    /// Set a cookie named `param` carrying the token.
    Cookie,
    /// Leave manifests untouched.
    Off,
}

/// The `[token]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Query parameter (and cookie) name that carries the token.
    #[serde(default = "default_param")]
    pub param: String,
    /// Also accept the token from a cookie named `param`.
    #[serde(default = "default_true")]
    pub cookie: bool,
    /// HMAC-SHA256 keys; a token signed by any of them is accepted, so a new
    /// key can be added before tokens use it and the old one retired after.
    pub keys: Vec<KeyConfig>,
    /// Path prefixes (of the normalised path) that need a token; by default
    /// `/live/` and `/drm/` (licences).
    #[serde(default = "default_require")]
    pub require: Vec<String>,
    /// How far `st` and `exp` may be off because clocks disagree.
    #[serde(default = "default_clock_skew", with = "humantime_serde")]
    pub clock_skew: Duration,
    /// Refuse tokens without `ip=`. A token that has `ip=` is always bound to it.
    #[serde(default)]
    pub bind_ip: bool,
    /// How a granted token is carried to the segments and child manifests.
    #[serde(default)]
    pub propagate: Propagate,
}

fn default_param() -> String {
    "token".to_owned()
}
fn default_true() -> bool {
    true
}
fn default_require() -> Vec<String> {
    // Licences are keys: an origin with encryption on wants a token for
    // them too (README "Encryption").
    vec!["/live/".to_owned(), "/drm/".to_owned()]
}
fn default_clock_skew() -> Duration {
    Duration::from_secs(30)
}

impl TokenConfig {
    /// Checks every field and builds the verifier. Errors name the key, e.g.
    /// `token.keys[0].secret: not hex`.
    pub fn init(&self) -> Result<TokenVerifier, ConfigError> {
        let valid_name = !self.param.is_empty()
            && self
                .param
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if !valid_name {
            return Err(ConfigError::new(
                "token.param",
                "must be non-empty letters, digits, '_', '-' or '.'",
            ));
        }
        for (i, prefix) in self.require.iter().enumerate() {
            if !prefix.starts_with('/') {
                return Err(ConfigError::new(
                    format!("token.require[{i}]"),
                    "must start with '/'",
                ));
            }
        }
        if self.keys.is_empty() {
            return Err(ConfigError::new("token.keys", "at least one key is needed"));
        }
        let mut verifier = TokenVerifier::new(self.clock_skew, self.bind_ip);
        for (i, key) in self.keys.iter().enumerate() {
            verifier = verifier
                .with_key(&key.id, &key.secret)
                .map_err(|e| ConfigError::from(e).under(&format!("token.keys[{i}]")))?;
        }
        Ok(verifier)
    }
}
