//! How long a response may be served from cache (RFC 9111 §4.2, RFC 5861).

use std::time::{Duration, SystemTime};

use http::{header, HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};

use crate::request::ObjectKind;

/// Lifetimes used when the upstream says nothing, per kind of object.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TtlDefaults {
    /// Live HLS media or multivariant playlists.
    #[serde(with = "humantime_serde")]
    pub playlist: Duration,
    /// DASH MPDs.
    #[serde(with = "humantime_serde")]
    pub manifest: Duration,
    /// Media segments (never change once published).
    #[serde(with = "humantime_serde")]
    pub segment: Duration,
    /// Initialisation segments.
    #[serde(with = "humantime_serde")]
    pub init: Duration,
    /// Anything else.
    #[serde(with = "humantime_serde")]
    pub other: Duration,
    /// 404 and 410 answers ("negative caching"), so a player polling for a
    /// segment that does not exist yet does not reach the origin every time.
    #[serde(with = "humantime_serde")]
    pub negative: Duration,
    /// stale-if-error applied when the upstream gives none.
    #[serde(with = "humantime_serde")]
    pub stale_if_error: Duration,
    /// stale-while-revalidate applied when the upstream gives none.
    #[serde(with = "humantime_serde")]
    pub stale_while_revalidate: Duration,
}

impl TtlDefaults {
    /// The lifetime of an object of `kind` whose upstream says nothing.
    pub fn for_kind(&self, kind: ObjectKind) -> Duration {
        match kind {
            ObjectKind::Playlist => self.playlist,
            ObjectKind::Manifest => self.manifest,
            ObjectKind::Init => self.init,
            ObjectKind::Segment => self.segment,
            ObjectKind::Key | ObjectKind::Other => self.other,
        }
    }
}

impl Default for TtlDefaults {
    fn default() -> Self {
        TtlDefaults {
            playlist: Duration::from_secs(1),
            manifest: Duration::from_secs(1),
            segment: Duration::from_secs(24 * 3600),
            init: Duration::from_secs(24 * 3600),
            other: Duration::from_secs(60),
            negative: Duration::from_secs(2),
            stale_if_error: Duration::from_secs(30),
            stale_while_revalidate: Duration::ZERO,
        }
    }
}

/// One `[[cache.ttl_overrides]]` entry: objects under `prefix` stay fresh for
/// `ttl`, whatever the upstream says about their lifetime.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TtlOverride {
    /// Path prefix (of the normalised path), e.g. `"/live/"`.
    pub prefix: String,
    /// Freshness lifetime, e.g. `"2s"`.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
}

/// A TTL override that cannot be used, naming the entry and field
/// (`cache.ttl_overrides[1].prefix`); a config error at start, a 400 from
/// the control API.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct InvalidOverride {
    pub key: String,
    pub message: String,
}

/// Validated TTL overrides; the longest matching prefix wins.
///
/// An override *replaces* the lifetime from `s-maxage`, `max-age`, `Expires`,
/// `no-cache` and the `[cache.ttl]` defaults. It does not make storable what
/// the upstream forbids a shared cache to keep (`no-store`, `private`, status
/// codes that are never cached), it leaves negative answers (404, 410) to
/// `cache.ttl.negative`, and the response's `Age` still counts against it,
/// so a shield and its edges agree on when an object expires. It applies to
/// objects fetched after it is set; a soft purge of the prefix applies it to
/// what is already cached.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TtlOverrides(Vec<TtlOverride>);

impl TtlOverrides {
    /// Longest override accepted: a year is already "forever" for a cache.
    pub const MAX_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

    /// Checks every entry; errors name `<at>[i].<field>`.
    pub fn new(entries: &[TtlOverride], at: &str) -> Result<TtlOverrides, InvalidOverride> {
        let invalid = |key: String, message: String| InvalidOverride { key, message };
        for (i, entry) in entries.iter().enumerate() {
            if entry.ttl > Self::MAX_TTL {
                return Err(invalid(format!("{at}[{i}].ttl"), "at most 365 days".into()));
            }
            if !entry.prefix.starts_with('/') {
                return Err(invalid(
                    format!("{at}[{i}].prefix"),
                    "must start with '/'".into(),
                ));
            }
            if let Some(j) = entries[..i].iter().position(|e| e.prefix == entry.prefix) {
                return Err(invalid(
                    format!("{at}[{i}].prefix"),
                    format!("{:?} is also given at {at}[{j}]", entry.prefix),
                ));
            }
        }
        Ok(TtlOverrides(entries.to_vec()))
    }

    /// The entries, in the order they were given.
    pub fn entries(&self) -> &[TtlOverride] {
        &self.0
    }

    /// The lifetime for `path`, if an override covers it.
    pub fn lookup(&self, path: &str) -> Option<Duration> {
        self.0
            .iter()
            .filter(|o| path.starts_with(o.prefix.as_str()))
            .max_by_key(|o| o.prefix.len())
            .map(|o| o.ttl)
    }
}

/// The verdict on one upstream response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Freshness {
    /// May it be stored at all (no `no-store`, `private`, uncacheable status)?
    pub storable: bool,
    /// Fresh for this long after it was received (already minus its `Age`).
    pub ttl: Duration,
    pub stale_while_revalidate: Duration,
    pub stale_if_error: Duration,
}

impl Freshness {
    pub const UNSTORABLE: Freshness = Freshness {
        storable: false,
        ttl: Duration::ZERO,
        stale_while_revalidate: Duration::ZERO,
        stale_if_error: Duration::ZERO,
    };
}

#[derive(Default)]
struct CacheControl {
    no_store: bool,
    no_cache: bool,
    private: bool,
    public: bool,
    must_revalidate: bool,
    max_age: Option<u64>,
    s_maxage: Option<u64>,
    swr: Option<u64>,
    sie: Option<u64>,
}

fn parse_cache_control(headers: &HeaderMap) -> CacheControl {
    let mut cc = CacheControl::default();
    for value in headers.get_all(header::CACHE_CONTROL) {
        let Ok(value) = value.to_str() else { continue };
        for directive in value.split(',') {
            let mut parts = directive.trim().splitn(2, '=');
            let name = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let arg = parts
                .next()
                .map(|a| a.trim().trim_matches('"'))
                .and_then(|a| a.parse::<u64>().ok());
            match name.as_str() {
                "no-store" => cc.no_store = true,
                // `no-cache` with field names restricts only those fields; a
                // shared cache may treat it as the unqualified form (safer).
                "no-cache" => cc.no_cache = true,
                "private" => cc.private = true,
                "public" => cc.public = true,
                "must-revalidate" => cc.must_revalidate = true,
                "max-age" => cc.max_age = arg.or(Some(0)),
                "s-maxage" => cc.s_maxage = arg.or(Some(0)),
                "stale-while-revalidate" => cc.swr = arg,
                "stale-if-error" => cc.sie = arg,
                _ => {}
            }
        }
    }
    cc
}

/// RFC 9111 §3.5: whether a response to a request with `Authorization`
/// may be stored and reused by a shared cache (`public`, `s-maxage` or
/// `must-revalidate` say so).
pub fn shared_despite_authorization(headers: &HeaderMap) -> bool {
    let cc = parse_cache_control(headers);
    cc.public || cc.must_revalidate || cc.s_maxage.is_some()
}

/// RFC 9110 §15.1: statuses a cache may store without explicit freshness.
fn heuristically_cacheable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// `ttl_override`: from [`TtlOverrides::lookup`], wins over the upstream's
/// lifetime for every storable, non-negative answer.
pub fn freshness(
    status: StatusCode,
    headers: &HeaderMap,
    kind: ObjectKind,
    defaults: &TtlDefaults,
    ttl_override: Option<Duration>,
    now: SystemTime,
) -> Freshness {
    let cc = parse_cache_control(headers);
    if cc.no_store || cc.private || !heuristically_cacheable(status) {
        return Freshness::UNSTORABLE;
    }
    let explicit = cc
        .s_maxage
        .or(cc.max_age)
        .map(Duration::from_secs)
        .or_else(|| {
            let expires = headers.get(header::EXPIRES)?.to_str().ok()?;
            // An invalid Expires (e.g. "0") means already expired (RFC 9111 §5.3).
            let Ok(expires) = httpdate::parse_http_date(expires) else {
                return Some(Duration::ZERO);
            };
            let date = headers
                .get(header::DATE)
                .and_then(|d| d.to_str().ok())
                .and_then(|d| httpdate::parse_http_date(d).ok())
                .unwrap_or(now);
            Some(expires.duration_since(date).unwrap_or(Duration::ZERO))
        });
    let negative = matches!(status.as_u16(), 404 | 410);
    let lifetime = if let Some(ttl) = ttl_override.filter(|_| !negative) {
        ttl
    } else if cc.no_cache {
        Duration::ZERO
    } else if let Some(explicit) = explicit {
        explicit
    } else if negative {
        defaults.negative
    } else {
        defaults.for_kind(kind)
    };
    // RFC 9111 §5.1: one non-negative integer. Anything else (a list, two
    // lines, a sign, a fraction, a parameter) is an Age we cannot trust:
    // the response is treated as stale, so it is revalidated.
    let mut ages = headers.get_all(header::AGE).iter();
    let age = match (ages.next(), ages.next()) {
        (None, _) => Some(Duration::ZERO),
        (Some(age), None) => age
            .to_str()
            .ok()
            .map(str::trim)
            .filter(|a| !a.is_empty() && a.bytes().all(|b| b.is_ascii_digit()))
            .map(|a| a.parse::<u64>().map_or(Duration::MAX, Duration::from_secs)),
        (Some(_), Some(_)) => None,
    };
    Freshness {
        storable: true,
        ttl: age.map_or(Duration::ZERO, |age| lifetime.saturating_sub(age)),
        stale_while_revalidate: cc
            .swr
            .map(Duration::from_secs)
            .unwrap_or(defaults.stale_while_revalidate),
        stale_if_error: if negative {
            Duration::ZERO
        } else {
            cc.sie
                .map(Duration::from_secs)
                .unwrap_or(defaults.stale_if_error)
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn fresh(status: u16, headers: &[(&'static str, &'static str)], kind: ObjectKind) -> Freshness {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(*k, HeaderValue::from_static(v));
        }
        let now = httpdate::parse_http_date("Wed, 25 Nov 2026 10:00:00 GMT").expect("date");
        freshness(
            StatusCode::from_u16(status).expect("status"),
            &map,
            kind,
            &TtlDefaults::default(),
            None,
            now,
        )
    }

    #[test]
    fn s_maxage_wins_over_max_age_and_age_is_subtracted() {
        let f = fresh(
            200,
            &[
                (
                    "cache-control",
                    "max-age=10, s-maxage=100, stale-if-error=5",
                ),
                ("age", "30"),
            ],
            ObjectKind::Segment,
        );
        assert_eq!(f.ttl, Duration::from_secs(70));
        assert_eq!(f.stale_if_error, Duration::from_secs(5));
    }

    #[test]
    fn no_store_and_private_are_never_stored_and_no_cache_revalidates() {
        assert!(!fresh(200, &[("cache-control", "no-store")], ObjectKind::Segment).storable);
        assert!(
            !fresh(
                200,
                &[("cache-control", "private, max-age=60")],
                ObjectKind::Other
            )
            .storable
        );
        let f = fresh(200, &[("cache-control", "no-cache")], ObjectKind::Segment);
        assert!(f.storable);
        assert_eq!(f.ttl, Duration::ZERO);
        assert!(!fresh(500, &[], ObjectKind::Segment).storable);
    }

    #[test]
    fn an_age_that_is_not_one_integer_makes_the_response_stale() {
        for age in ["abc", "-7200", "7200.0", "0,7200", "0, 0", "7200;foo=1", ""] {
            let mut headers = HeaderMap::new();
            headers.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("max-age=3600"),
            );
            headers.insert(header::AGE, HeaderValue::from_str(age).expect("value"));
            let f = freshness(
                StatusCode::OK,
                &headers,
                ObjectKind::Other,
                &TtlDefaults::default(),
                None,
                SystemTime::UNIX_EPOCH,
            );
            assert_eq!(f.ttl, Duration::ZERO, "Age: {age:?}");
        }
        let two = fresh(
            200,
            &[
                ("cache-control", "max-age=3600"),
                ("age", "0"),
                ("age", "0"),
            ],
            ObjectKind::Other,
        );
        assert_eq!(two.ttl, Duration::ZERO);
        let ok = fresh(
            200,
            &[("cache-control", "max-age=3600"), ("age", " 600 ")],
            ObjectKind::Other,
        );
        assert_eq!(ok.ttl, Duration::from_secs(3000));
    }

    #[test]
    fn authorized_responses_are_shared_only_when_they_say_so() {
        let with = |cc: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cc));
            shared_despite_authorization(&headers)
        };
        assert!(!with("max-age=3600"));
        assert!(with("max-age=3600, public"));
        assert!(with("max-age=3600, must-revalidate"));
        assert!(with("s-maxage=60"));
    }

    #[test]
    fn expires_and_kind_defaults_and_negative_caching() {
        let f = fresh(
            200,
            &[
                ("date", "Wed, 25 Nov 2026 10:00:00 GMT"),
                ("expires", "Wed, 25 Nov 2026 10:01:00 GMT"),
            ],
            ObjectKind::Other,
        );
        assert_eq!(f.ttl, Duration::from_secs(60));
        assert_eq!(
            fresh(200, &[("expires", "0")], ObjectKind::Other).ttl,
            Duration::ZERO
        );
        assert_eq!(
            fresh(200, &[], ObjectKind::Playlist).ttl,
            Duration::from_secs(1)
        );
        assert_eq!(
            fresh(200, &[], ObjectKind::Segment).ttl,
            Duration::from_secs(86400)
        );
        let nf = fresh(404, &[], ObjectKind::Segment);
        assert_eq!(nf.ttl, Duration::from_secs(2));
        assert_eq!(nf.stale_if_error, Duration::ZERO);
        let swr = fresh(
            200,
            &[(
                "cache-control",
                "max-age=1, stale-while-revalidate=4, immutable",
            )],
            ObjectKind::Playlist,
        );
        assert_eq!(swr.stale_while_revalidate, Duration::from_secs(4));
    }

    #[test]
    fn an_override_replaces_the_upstream_lifetime_but_not_no_store() {
        let overrides = TtlOverrides::new(
            &[
                TtlOverride {
                    prefix: "/live/".into(),
                    ttl: Duration::from_secs(2),
                },
                TtlOverride {
                    prefix: "/live/slow/".into(),
                    ttl: Duration::from_secs(30),
                },
            ],
            "cache.ttl_overrides",
        )
        .expect("valid");
        assert_eq!(
            overrides.lookup("/live/a/1.m4s"),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            overrides.lookup("/live/slow/1.m4s"),
            Some(Duration::from_secs(30))
        );
        assert_eq!(overrides.lookup("/vod/a.mp4"), None);
        let now = httpdate::parse_http_date("Wed, 25 Nov 2026 10:00:00 GMT").expect("date");
        let with = |status: u16, cc: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cc));
            freshness(
                StatusCode::from_u16(status).expect("status"),
                &headers,
                ObjectKind::Segment,
                &TtlDefaults::default(),
                overrides.lookup("/live/a/1.m4s"),
                now,
            )
        };
        assert_eq!(with(200, "max-age=3600").ttl, Duration::from_secs(2));
        assert_eq!(with(200, "no-cache").ttl, Duration::from_secs(2));
        assert!(!with(200, "no-store").storable);
        assert_eq!(with(404, "max-age=60").ttl, Duration::from_secs(60));
    }

    #[test]
    fn bad_overrides_name_the_entry() {
        let entry = |prefix: &str| TtlOverride {
            prefix: prefix.into(),
            ttl: Duration::from_secs(1),
        };
        let err = TtlOverrides::new(&[entry("live/")], "cache.ttl_overrides").expect_err("slash");
        assert_eq!(err.key, "cache.ttl_overrides[0].prefix");
        let err = TtlOverrides::new(&[entry("/a/"), entry("/a/")], "o").expect_err("duplicate");
        assert_eq!(err.key, "o[1].prefix");
        let forever = TtlOverride {
            prefix: "/vod/".into(),
            ttl: Duration::from_secs(400 * 24 * 3600),
        };
        let err = TtlOverrides::new(&[forever], "o").expect_err("too long");
        assert_eq!(err.key, "o[0].ttl");
    }
}
