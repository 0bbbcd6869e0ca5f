//! The request path as policy sees it: the request's one normal form
//! ([`crate::request::path`]) with every escape decoded, so that `..`, `//`
//! and percent-encoding cannot step around an ACL or a rule prefix, and the
//! path a decision was made on is the path that is cached and fetched.

pub use strata_edgeauth::path::{normalize_path, percent_decode_strict, PathError};
