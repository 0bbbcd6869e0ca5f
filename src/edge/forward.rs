//! Which headers cross the edge, in each direction (a leaf: rules only).

use http::{header, HeaderName};

/// Hop-by-hop and per-hop headers never copied from upstream to client.
pub(super) const NOT_FORWARDED: [HeaderName; 9] = [
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::AGE,
    HeaderName::from_static("keep-alive"),
];
