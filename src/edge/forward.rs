//! Which headers cross the edge, in each direction (a leaf: rules only).
//!
//! Upstream, a fill carries the end-to-end request headers of the request
//! that started it (its *leader*), as the best shared caches do, so an
//! origin can vary on them (and say so with `Vary`, see
//! [`crate::cache::vary`]) and check `Authorization`. Left out:
//! hop-by-hop fields (RFC 9110 §7.6.1) and [`NEVER_UPSTREAM`], and for a
//! fill also [`EDGE_OWNED`]. See README "What the edge forwards".

use http::{header, HeaderMap, HeaderName};

/// Hop-by-hop headers never copied from upstream to client (with those
/// the upstream's `Connection` names). `Age` is copied: a miss reports the
/// upstream's age (RFC 9111 §5.1), a hit the age the edge computes.
const NOT_FORWARDED: [HeaderName; 8] = [
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    HeaderName::from_static("keep-alive"),
];

/// The upstream response's headers a client gets.
pub(super) fn client_headers(upstream: &HeaderMap) -> HeaderMap {
    let named = connection_names(upstream);
    let mut out = HeaderMap::with_capacity(upstream.len());
    for (name, value) in upstream {
        if !NOT_FORWARDED.contains(name) && !named.iter().any(|n| n == name.as_str()) {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// Field names a `Connection` header lists (hop-by-hop, RFC 9110 §7.6.1).
fn connection_names(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .collect()
}

/// Request headers no upstream request carries: hop-by-hop fields, what
/// the connection to the upstream sets itself (`Host`, framing), `Via`
/// (the edge writes its own) and `Cookie`, which carries viewer tokens
/// and per-viewer state that the cache key never includes.
const NEVER_UPSTREAM: [&str; 13] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "expect",
    "via",
    "cookie",
];

/// Request headers a fill leaves out because the edge speaks for itself
/// there: it fetches whole objects and makes its own conditional requests
/// (one client's `Range` or validators must not shape what every client
/// shares), it applies the client's cache directives itself rather than
/// passing one viewer's `no-cache` on to a shield, and CMCD is per-viewer
/// QoE data the edge reads.
const EDGE_OWNED: [&str; 8] = [
    "range",
    "if-range",
    "if-none-match",
    "if-modified-since",
    "if-match",
    "if-unmodified-since",
    "cache-control",
    "pragma",
];

/// What an upstream request is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Purpose {
    /// A shared, cacheable fill on behalf of its leader.
    Fill,
    /// One client's request passed through (never cached).
    Pass,
}

/// The headers of `client`'s request that go upstream for `purpose`.
pub(super) fn upstream_headers(client: &HeaderMap, purpose: Purpose) -> HeaderMap {
    let named = connection_names(client);
    let mut out = HeaderMap::with_capacity(client.len());
    for (name, value) in client {
        let n = name.as_str();
        let dropped = NEVER_UPSTREAM.contains(&n)
            || n.starts_with("cmcd-") && purpose == Purpose::Fill
            || purpose == Purpose::Fill && EDGE_OWNED.contains(&n)
            || named.iter().any(|c| c == n);
        if !dropped {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn end_to_end_headers_go_upstream_and_hop_by_hop_ones_do_not() {
        let mut client = HeaderMap::new();
        for (k, v) in [
            ("accept-language", "fr"),
            ("authorization", "Bearer x"),
            ("test-id", "t"),
            ("connection", "keep-alive, x-hop"),
            ("x-hop", "1"),
            ("cookie", "token=secret"),
            ("range", "bytes=0-1"),
            ("if-none-match", "\"a\""),
            ("cache-control", "no-cache"),
            ("cmcd-request", "bl=100"),
            ("host", "edge"),
            ("via", "1.1 a"),
        ] {
            client.append(k, HeaderValue::from_static(v));
        }
        let fill = upstream_headers(&client, Purpose::Fill);
        let names: Vec<&str> = fill.keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["accept-language", "authorization", "test-id"]);
        let pass = upstream_headers(&client, Purpose::Pass);
        let names: Vec<&str> = pass.keys().map(|n| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "accept-language",
                "authorization",
                "test-id",
                "range",
                "if-none-match",
                "cache-control",
                "cmcd-request"
            ]
        );
    }
}
