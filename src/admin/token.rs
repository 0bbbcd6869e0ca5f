//! `server.admin_token`, the control API's bearer token: a leaf the config
//! parses and the admin listener checks.

use std::fmt;

use axum::http::{header, HeaderMap};
use serde::{Deserialize, Deserializer};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Shortest `server.admin_token` accepted: long enough not to be guessed.
pub const MIN_TOKEN_LEN: usize = 16;

/// `server.admin_token`: the bearer token the control API requires. Never
/// printed (`Debug` redacts it).
#[derive(Clone)]
pub struct AdminToken(String);

/// Why a string cannot be the admin token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WeakAdminToken {
    #[error("shorter than {MIN_TOKEN_LEN} characters")]
    TooShort,
    #[error("only visible ASCII characters, no spaces")]
    NotVisibleAscii,
}

impl AdminToken {
    pub fn new(token: &str) -> Result<AdminToken, WeakAdminToken> {
        if token.len() < MIN_TOKEN_LEN {
            return Err(WeakAdminToken::TooShort);
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(WeakAdminToken::NotVisibleAscii);
        }
        Ok(AdminToken(token.to_owned()))
    }

    /// Whether `Authorization: Bearer …` carries this token. Both sides are
    /// hashed first so the comparison takes the same time whatever the
    /// presented token's length or content.
    pub fn accepts(&self, headers: &HeaderMap) -> bool {
        let Some(presented) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, token) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
        else {
            return false;
        };
        let expected = Sha256::digest(self.0.as_bytes());
        let presented = Sha256::digest(presented.as_bytes());
        expected.as_slice().ct_eq(presented.as_slice()).into()
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

impl<'de> Deserialize<'de> for AdminToken {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        AdminToken::new(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn only_the_exact_bearer_token_passes() {
        let token = AdminToken::new("s3cret-admin-token-0123").expect("token");
        assert!(token.accepts(&with("Bearer s3cret-admin-token-0123")));
        assert!(token.accepts(&with("bearer  s3cret-admin-token-0123 ")));
        assert!(!token.accepts(&with("Bearer s3cret-admin-token-012")));
        assert!(!token.accepts(&with("Basic s3cret-admin-token-0123")));
        assert!(!token.accepts(&HeaderMap::new()));
        assert!(!format!("{token:?}").contains("s3cret"));
    }

    #[test]
    fn weak_tokens_are_refused() {
        assert!(AdminToken::new("short").is_err());
        assert!(AdminToken::new("has a space in it, long enough").is_err());
    }
}
