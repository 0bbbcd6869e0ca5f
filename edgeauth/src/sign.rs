//! Minting tokens, behind `strata sign`: the same string akamai-edgeauth's
//! `EdgeAuth(key=…, start_time=…, window_seconds=…, ip=…, session_id=…)
//! .generate_acl_token(acl)` returns (default `escape_early=False`).

use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::token::decode_secret;

/// Why a token could not be minted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// The secret is not usable (the text says why).
    #[error("secret: {0}")]
    Secret(&'static str),
    /// The ACL is empty.
    #[error("acl: empty")]
    EmptyAcl,
    /// A field contains `~`, the field separator, which would forge fields.
    #[error("{0}: contains '~'")]
    Separator(&'static str),
    /// The lifetime is under one second (tokens count whole seconds).
    #[error("ttl: must be at least 1s")]
    Ttl,
    /// The start time is not after the Unix epoch.
    #[error("start: must be after 1970-01-01")]
    Start,
}

/// Mints an ACL token valid from `start` for `ttl` (whole seconds), for the
/// `!`-separated `acl`, optionally bound to `ip` and carrying session `id`.
pub fn sign(
    secret_hex: &str,
    acl: &str,
    ttl: Duration,
    start: SystemTime,
    ip: Option<IpAddr>,
    id: Option<&str>,
) -> Result<String, SignError> {
    let secret = decode_secret(secret_hex).map_err(SignError::Secret)?;
    if acl.is_empty() {
        return Err(SignError::EmptyAcl);
    }
    if acl.contains('~') {
        return Err(SignError::Separator("acl"));
    }
    if id.is_some_and(|id| id.contains('~')) {
        return Err(SignError::Separator("id"));
    }
    if ttl.as_secs() == 0 {
        return Err(SignError::Ttl);
    }
    let start = start
        .duration_since(UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs())
        .filter(|&s| s > 0)
        .ok_or(SignError::Start)?;
    let expires = start.saturating_add(ttl.as_secs());

    let mut token = String::with_capacity(128 + acl.len());
    if let Some(ip) = ip {
        let _ = write!(token, "ip={ip}~");
    }
    let _ = write!(token, "st={start}~exp={expires}~acl={acl}");
    if let Some(id) = id.filter(|id| !id.is_empty()) {
        let _ = write!(token, "~id={id}");
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(&secret)
        .map_err(|_| SignError::Secret("unusable as an HMAC key"))?;
    mac.update(token.as_bytes());
    token.push_str("~hmac=");
    token.push_str(&hex::encode(mac.finalize().into_bytes()));
    Ok(token)
}
