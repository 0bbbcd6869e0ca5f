//! Who may have a content key: the same Akamai EdgeAuth 2.0 token the edge
//! checks, checked again here before a ClearKey licence or an HLS key
//! leaves the origin, so keys are safe by default even where no edge
//! stands in front (README "Encryption": licences need a token).
//!
//! The token arrives as players and edges send it: the query parameter
//! `licence_token.param` (the edge keeps it on key and licence requests),
//! or a cookie of that name. Its ACL must cover the request path (e.g.
//! `/drm/clearkey/news` or `/live/news/*`). The `ip=` binding is the edge's
//! to check: the origin sees the edge's address, not the viewer's.

use std::time::SystemTime;

use axum::http::{header, HeaderMap, Uri};
use strata_edgeauth::{normalize_path, Rejection, TokenVerifier};

use super::{EncryptionConfig, LicenceAuth};

/// The check, built once from `[encryption]`.
pub enum Entitlement {
    /// `licence_auth = "none"`: anyone who asks.
    Open,
    /// A token signed by one of these keys, whose ACL covers the path.
    Token {
        param: String,
        cookie: bool,
        verifier: TokenVerifier,
    },
    /// Tokens are required but none can be verified (no keys, or keys that
    /// do not parse: a config that skipped validation). Fails closed.
    Closed,
}

/// Why a request gets no key: the `Strata-Reject-Reason` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotEntitled(pub &'static str);

impl Entitlement {
    pub fn new(config: &EncryptionConfig) -> Entitlement {
        match config.licence_auth {
            LicenceAuth::None => Entitlement::Open,
            LicenceAuth::Token => match config.licence_token.verifier() {
                Ok(verifier) if verifier.key_ids().next().is_some() => Entitlement::Token {
                    param: config.licence_token.param.clone(),
                    cookie: config.licence_token.cookie,
                    verifier,
                },
                _ => Entitlement::Closed,
            },
        }
    }

    /// Checks the request for `uri` at `now`.
    pub fn check(
        &self,
        uri: &Uri,
        headers: &HeaderMap,
        now: SystemTime,
    ) -> Result<(), NotEntitled> {
        let (param, cookie, verifier) = match self {
            Entitlement::Open => return Ok(()),
            Entitlement::Closed => return Err(NotEntitled("no-keys")),
            Entitlement::Token {
                param,
                cookie,
                verifier,
            } => (param, *cookie, verifier),
        };
        let token = uri
            .query()
            .and_then(|q| in_query(q, param))
            .or_else(|| cookie.then(|| in_cookie(headers, param)).flatten())
            .ok_or(NotEntitled(Rejection::Missing.as_str()))?;
        let path = uri.path();
        let acl_path = normalize_path(path).map_err(|_| NotEntitled(Rejection::Acl.as_str()))?;
        verifier
            .verify_behind_edge(token, path, &acl_path, now)
            .map_err(|r| NotEntitled(r.as_str()))
    }
}

/// The first non-empty `name=` value of a query, as sent.
fn in_query<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, v)| *k == name && !v.is_empty())
        .map(|(_, v)| v)
}

/// The first non-empty cookie `name`, quotes removed.
fn in_cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, v)| *k == name && !v.is_empty())
        .map(|(_, v)| {
            v.strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v)
        })
}
