//! The request path as policy sees it: the request's one normal form
//! ([`crate::request::path`]) with every escape decoded, so that `..`, `//`
//! and percent-encoding cannot step around an ACL or a rule prefix, and the
//! path a decision was made on is the path that is cached and fetched.

use std::borrow::Cow;

use crate::request::path::{canonical, decoded};
pub use crate::request::path::{percent_decode_strict, PathError};

/// The path an ACL or a rule prefix is matched against, from a path as
/// received: its normal form, decoded. The edge computes the normal form
/// once per request ([`crate::request::MediaRequest::decoded_path`]); this is
/// for callers holding only a raw path (tests, `TokenVerifier::verify`).
pub fn normalize_path(path: &str) -> Result<Cow<'_, str>, PathError> {
    Ok(match canonical(path)? {
        Cow::Borrowed(path) => decoded(path),
        Cow::Owned(path) => Cow::Owned(decoded(&path).into_owned()),
    })
}
