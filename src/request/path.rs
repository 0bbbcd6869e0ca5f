//! The one normal form of a request path, computed once per request
//! ([`super::MediaRequest::path`]) and used by policy, the cache key, the
//! upstream request and purges alike. It lives in `strata-edgeauth`, beside
//! the token ACLs it is matched against, so the origin reads a path exactly
//! as the edge does.

pub use strata_edgeauth::path::{canonical, decoded, percent_decode_strict, PathError};
