//! A player's request, parsed once into what the pipeline needs: the one
//! normalised path ([`path`]), the cache key, the object kind, the token.

use std::net::SocketAddr;

use http::{header, request::Parts, Method};

use crate::cache::key::CacheKey;
use crate::error::EdgeError;

pub mod path;

pub use path::PathError;

/// Which front door a request came through (a metrics label; behaviour never depends on it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    Http1,
    Http2,
    Http3,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http1 => "h1",
            Protocol::Http2 => "h2",
            Protocol::Http3 => "h3",
        }
    }
}

/// What kind of streaming object a path names; picks default lifetimes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectKind {
    Playlist,
    Manifest,
    Init,
    Segment,
    Key,
    Other,
}

impl ObjectKind {
    pub fn from_path(path: &str) -> ObjectKind {
        // Licences and keys, whatever their last name looks like: a VOD
        // licence is `/drm/clearkey/vod/{title}.mp4`, and a key request keeps
        // the viewer's token on its way upstream.
        if path.starts_with("/drm/") {
            return ObjectKind::Key;
        }
        let file = path.rsplit('/').next().unwrap_or(path);
        // Lower-cased on the stack: this runs on every request.
        let mut lower = [0u8; 4];
        let ext = match file.rsplit_once('.') {
            Some((_, ext)) if ext.len() <= lower.len() => {
                let lower = &mut lower[..ext.len()];
                lower.copy_from_slice(ext.as_bytes());
                lower.make_ascii_lowercase();
                std::str::from_utf8(lower).ok()
            }
            _ => None,
        };
        match ext {
            Some("m3u8") => ObjectKind::Playlist,
            Some("mpd") => ObjectKind::Manifest,
            Some("mp4" | "m4i" | "cmfi") if file.starts_with("init") => ObjectKind::Init,
            Some(
                "m4s" | "ts" | "mp4" | "m4a" | "m4v" | "aac" | "cmfv" | "cmfa" | "vtt" | "webm",
            ) => ObjectKind::Segment,
            Some("key") => ObjectKind::Key,
            _ => ObjectKind::Other,
        }
    }
}

/// A `Range` header reduced to what we serve: one range (RFC 9110 §14.1.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ByteRange {
    /// `bytes=first-` or `bytes=first-last`
    From { first: u64, last: Option<u64> },
    /// `bytes=-n`
    Suffix(u64),
}

impl ByteRange {
    /// `None` for anything we do not serve as a range (RFC 9110 lets a server
    /// ignore Range): other units, several ranges, syntax errors.
    pub fn parse(value: &str) -> Option<ByteRange> {
        let spec = value.trim().strip_prefix("bytes=")?.trim();
        if spec.contains(',') {
            return None;
        }
        let (first, last) = spec.split_once('-')?;
        let (first, last) = (first.trim(), last.trim());
        if first.is_empty() {
            return last.parse().ok().map(ByteRange::Suffix);
        }
        let first: u64 = first.parse().ok()?;
        if last.is_empty() {
            return Some(ByteRange::From { first, last: None });
        }
        let last: u64 = last.parse().ok()?;
        (last >= first).then_some(ByteRange::From {
            first,
            last: Some(last),
        })
    }

    /// `[start, end)` within a body of `len` bytes, never empty, or `None`
    /// if unsatisfiable (416). An empty body has no satisfiable range.
    pub fn resolve(self, len: u64) -> Option<(u64, u64)> {
        if len == 0 {
            return None;
        }
        match self {
            ByteRange::From { first, last } => {
                if first >= len {
                    return None;
                }
                let end = last.map_or(len, |l| l.saturating_add(1).min(len));
                Some((first, end))
            }
            ByteRange::Suffix(0) => None,
            ByteRange::Suffix(n) => Some((len.saturating_sub(n), len)),
        }
    }
}

/// Whether `method` is one the edge never answers from its cache: passed
/// through on `cache.pass_through` prefixes (its body read first), refused
/// elsewhere. GET and HEAD are served, OPTIONS is the CORS preflight.
pub fn passes_through(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Largest request head (URI plus header names and values) the edge accepts.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// Where tokens travel: the query parameter (and cookie) named `param`.
#[derive(Clone, Copy, Debug)]
pub struct TokenSource<'a> {
    pub param: &'a str,
    /// Also look in the cookie of that name.
    pub cookie: bool,
}

/// A request as the core sees it.
#[derive(Clone, Debug)]
pub struct MediaRequest {
    pub method: Method,
    /// The one normalised path ([`path`]): what policy decides on, what the
    /// cache key, the upstream request and purges use.
    pub path: String,
    /// The path as received when it differs from `path`, for what must see
    /// it verbatim (a `url=` token's signature covers it; see
    /// [`MediaRequest::signed_path`]); nothing else reads it.
    pub raw_path: Option<String>,
    /// The original query, token included.
    pub query: Option<String>,
    /// The token as received (query parameter first, then cookie), when
    /// tokens are configured.
    pub token: Option<String>,
    pub key: CacheKey,
    pub kind: ObjectKind,
    pub range: Option<ByteRange>,
    pub if_none_match: Option<String>,
    pub if_modified_since: Option<std::time::SystemTime>,
    pub client: SocketAddr,
    pub protocol: Protocol,
    /// `Via` values seen on the request, to refuse loops between tiers.
    pub via: Vec<String>,
}

impl MediaRequest {
    /// Parse `parts`; a path with no normal form is a 400 ([`path`]).
    pub fn parse(
        parts: &Parts,
        client: SocketAddr,
        protocol: Protocol,
        ignored_params: &[String],
        token: Option<TokenSource<'_>>,
    ) -> Result<MediaRequest, EdgeError> {
        let head_bytes = parts.uri.path_and_query().map_or(0, |pq| pq.as_str().len())
            + parts
                .headers
                .iter()
                .map(|(k, v)| k.as_str().len() + v.len() + 4)
                .sum::<usize>();
        if head_bytes > MAX_HEADER_BYTES {
            return Err(EdgeError::HeadersTooLarge(head_bytes));
        }
        let (path, raw_path) = match path::canonical(parts.uri.path())? {
            std::borrow::Cow::Borrowed(path) => (path.to_owned(), None),
            std::borrow::Cow::Owned(path) => (path, Some(parts.uri.path().to_owned())),
        };
        let query = parts.uri.query().map(str::to_owned);
        let header = |name: header::HeaderName| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let range = header(header::RANGE).and_then(|r| ByteRange::parse(&r));
        let found = token.as_ref().and_then(|source| {
            token_in_query(parts, source.param)
                .or_else(|| {
                    source
                        .cookie
                        .then(|| token_in_cookie(parts, source.param))
                        .flatten()
                })
                .map(str::to_owned)
        });
        let kind = ObjectKind::from_path(&path);
        let key = match kind {
            ObjectKind::Key => {
                let param = token.as_ref().map_or(DEFAULT_TOKEN_PARAM, |s| s.param);
                key_request_key(parts, &path, ignored_params, param, found.as_deref())
            }
            _ => CacheKey::new(&path, query.as_deref(), ignored_params),
        };
        Ok(MediaRequest {
            method: parts.method.clone(),
            key,
            kind,
            range,
            if_none_match: header(header::IF_NONE_MATCH),
            if_modified_since: header(header::IF_MODIFIED_SINCE)
                .and_then(|d| httpdate::parse_http_date(&d).ok()),
            via: parts
                .headers
                .get_all(header::VIA)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(|v| v.trim().to_owned())
                .collect(),
            raw_path,
            path,
            query,
            token: found,
            client,
            protocol,
        })
    }

    /// The path as received, which a `url=` token's signature covers.
    pub fn signed_path(&self) -> &str {
        self.raw_path.as_deref().unwrap_or(&self.path)
    }

    /// The normalised path with every escape decoded, for matching ACLs and
    /// rule prefixes written by people ([`path::decoded`]).
    pub fn decoded_path(&self) -> std::borrow::Cow<'_, str> {
        path::decoded(&self.path)
    }
}

/// The token parameter the origin looks for when the edge has no `[token]`.
const DEFAULT_TOKEN_PARAM: &str = "token";

/// The upstream URL (and key) of a content key or licence request: like any
/// other, but with the viewer's token kept, because the origin checks it
/// again before a key leaves it (README "Encryption"). A token that came in
/// a cookie (which never goes upstream) is added to the query. These
/// responses are `private, no-store`, so per-token keys store nothing.
fn key_request_key(
    parts: &Parts,
    path: &str,
    ignored: &[String],
    param: &str,
    token: Option<&str>,
) -> CacheKey {
    let ignored: Vec<String> = ignored
        .iter()
        .filter(|p| !p.eq_ignore_ascii_case(param))
        .cloned()
        .collect();
    let query = parts.uri.query();
    let from_cookie = token.filter(|_| token_in_query(parts, param).is_none());
    match from_cookie {
        // Only a token that is safe verbatim in a query (EdgeAuth tokens are).
        Some(t)
            if t.bytes()
                .all(|b| b.is_ascii_graphic() && !matches!(b, b'&' | b'#')) =>
        {
            let query = match query {
                Some(q) if !q.is_empty() => format!("{q}&{param}={t}"),
                _ => format!("{param}={t}"),
            };
            CacheKey::new(path, Some(&query), &ignored)
        }
        _ => CacheKey::new(path, query, &ignored),
    }
}

/// The raw value of the first `param_name=` query parameter.
pub fn token_in_query<'a>(parts: &'a Parts, param_name: &str) -> Option<&'a str> {
    parts.uri.query()?.split('&').find_map(|pair| {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        (name == param_name).then_some(value)
    })
}

/// The raw value of the first cookie named `name` (RFC 6265 §5.4: all
/// `Cookie` header fields, `; `-separated pairs, optional double quotes).
pub fn token_in_cookie<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (n, v) = pair.trim().split_once('=')?;
            (n.trim() == name).then(|| {
                let v = v.trim();
                v.strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(v)
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_rfc_9110() {
        assert_eq!(
            ByteRange::parse("bytes=0-99").and_then(|r| r.resolve(1000)),
            Some((0, 100))
        );
        assert_eq!(
            ByteRange::parse("bytes=900-").and_then(|r| r.resolve(1000)),
            Some((900, 1000))
        );
        assert_eq!(
            ByteRange::parse("bytes=-10").and_then(|r| r.resolve(1000)),
            Some((990, 1000))
        );
        assert_eq!(
            ByteRange::parse("bytes=0-99999999999999999").and_then(|r| r.resolve(10)),
            Some((0, 10))
        );
        assert_eq!(
            ByteRange::parse("bytes=1000-").and_then(|r| r.resolve(1000)),
            None
        );
        // An empty body: nothing to select (the fuzz target's first find:
        // `bytes=-10` of 0 bytes was an empty window, and `end - 1` underflowed).
        assert_eq!(
            ByteRange::parse("bytes=-10").and_then(|r| r.resolve(0)),
            None
        );
        assert_eq!(ByteRange::parse("bytes=5-1"), None);
        assert_eq!(ByteRange::parse("bytes=0-1,5-6"), None);
        assert_eq!(ByteRange::parse("items=0-1"), None);
        assert_eq!(ByteRange::parse("bytes=99999999999999999999999-"), None);
    }

    #[test]
    fn paths_are_normalised_and_cannot_climb_out() {
        let normalise = |p: &str| path::canonical(p).map(|c| c.into_owned());
        assert_eq!(
            normalise("/live//a/./b/../c.m3u8").ok().as_deref(),
            Some("/live/a/c.m3u8")
        );
        assert!(normalise("/../etc/passwd").is_err());
        assert_eq!(normalise("/").ok().as_deref(), Some("/"));
    }

    #[test]
    fn object_kinds_from_names() {
        for (path, kind) in [
            ("/live/a/master.m3u8", ObjectKind::Playlist),
            ("/live/a/manifest.mpd", ObjectKind::Manifest),
            ("/live/a/main/video/init.mp4", ObjectKind::Init),
            // The origin versions its init names: init-{n}.mp4.
            ("/live/a/main/video/init-1795600000.mp4", ObjectKind::Init),
            ("/live/a/main/video/12.m4s", ObjectKind::Segment),
            ("/live/a/main/12.ts", ObjectKind::Segment),
            ("/live/a/key/0123.key", ObjectKind::Key),
            ("/drm/clearkey", ObjectKind::Key),
            ("/time", ObjectKind::Other),
            // Extensions match in any case, and only whole.
            ("/live/a/MASTER.M3U8", ObjectKind::Playlist),
            ("/v/clip.WebM", ObjectKind::Segment),
            ("/live/a/main/video/init.MP4", ObjectKind::Init),
            ("/live/a/x.m3u8x", ObjectKind::Other),
            ("/live/a/x.m3u", ObjectKind::Other),
            ("/live/a/x.", ObjectKind::Other),
            ("/live/a/noext", ObjectKind::Other),
            ("/drm/x.toolong", ObjectKind::Key),
            // A VOD title's ClearKey licence: a key request, not a segment.
            ("/drm/clearkey/vod/cenc/title.mp4", ObjectKind::Key),
        ] {
            assert_eq!(ObjectKind::from_path(path), kind, "{path}");
        }
    }

    #[test]
    fn key_and_licence_requests_keep_the_viewers_token_upstream() {
        let ignored = ["token".to_owned(), "CMCD".to_owned()];
        let source = TokenSource {
            param: "token",
            cookie: true,
        };
        let parse = |uri: &str, cookie: Option<&str>| {
            let mut builder = http::Request::get(uri);
            if let Some(c) = cookie {
                builder = builder.header(header::COOKIE, c);
            }
            let (parts, ()) = builder.body(()).expect("request").into_parts();
            let client = SocketAddr::from(([127, 0, 0, 1], 1));
            MediaRequest::parse(&parts, client, Protocol::Http1, &ignored, Some(source))
                .expect("parses")
        };
        // A segment: shared by every viewer, no token upstream.
        let segment = parse("/live/a/1.m4s?token=T1&CMCD=br%3D1", None);
        assert_eq!(segment.key.as_str(), "/live/a/1.m4s");
        // A key and a licence: the origin checks the token again.
        let key = parse("/live/a/key/00.key?token=T1&CMCD=br%3D1", None);
        assert_eq!(key.key.as_str(), "/live/a/key/00.key?token=T1");
        let licence = parse("/drm/clearkey/a", Some("other=1; token=T2"));
        assert_eq!(licence.key.as_str(), "/drm/clearkey/a?token=T2");
        // Without a [token] section the parameter is still kept.
        let (parts, ()) = http::Request::get("/drm/clearkey/a?token=T3")
            .body(())
            .expect("request")
            .into_parts();
        let open = MediaRequest::parse(
            &parts,
            SocketAddr::from(([127, 0, 0, 1], 1)),
            Protocol::Http1,
            &ignored,
            None,
        )
        .expect("parses");
        assert_eq!(open.key.as_str(), "/drm/clearkey/a?token=T3");
    }
}
