//! Akamai EdgeAuth 2.0 tokens, shared by Strata's edge (which checks them
//! on every protected request) and origin (which checks them again before
//! it hands out a content key or a licence).
//!
//! - [`path`]: the one normal form of a request path, and the decoded form
//!   token ACLs are matched against.
//! - [`token`]: tokens parsed (`FromStr`), then verified against a set of keys.
//! - [`mod@sign`]: minting tokens (`strata sign`), as akamai-edgeauth does.

pub mod path;
pub mod sign;
pub mod token;

pub use sign::{sign, SignError};

pub use path::{normalize_path, PathError};
pub use token::{
    acl_entry_matches, decode_secret, KeyConfig, KeyError, Rejection, Token, TokenError,
    TokenVerifier, MAX_TOKEN_LEN,
};
