//! Cache keys: path plus the query parameters that change content.

use std::fmt;

/// Query parameters that never change the bytes of a response (`token`,
/// `CMCD`, …) are left out, so every viewer shares one cached copy. A key
/// may also name one *variant* of a response that varies on request
/// headers (RFC 9111 §4.1, see [`super::vary`]): stored and filled apart,
/// but the same URL upstream and for purges.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CacheKey(String);

impl CacheKey {
    /// `path` must already be normalised; `ignored` is matched case-insensitively.
    pub fn new(path: &str, query: Option<&str>, ignored: &[String]) -> Self {
        let kept = filtered_query(query, ignored);
        if kept.is_empty() {
            CacheKey(path.to_owned())
        } else {
            CacheKey(format!("{path}?{kept}"))
        }
    }

    /// This key's variant for the request header values `selected` (a
    /// [`super::vary::Vary::select`] result).
    pub fn with_variant(&self, selected: &str) -> CacheKey {
        CacheKey(format!("{}{VARIANT}{selected}", self.as_str()))
    }

    /// Whether this key names one variant of a varying response.
    pub fn is_variant(&self) -> bool {
        self.0.contains(VARIANT)
    }

    /// The whole key, variant included: what a store indexes it by.
    pub fn stored(&self) -> &str {
        &self.0
    }

    /// Path and kept query: also what the edge asks its upstream for.
    pub fn as_str(&self) -> &str {
        self.0.split(VARIANT).next().unwrap_or(&self.0)
    }

    pub fn path(&self) -> &str {
        let url = self.as_str();
        url.split('?').next().unwrap_or(url)
    }
}

/// Separates a URL from its variant: a line break never occurs in a
/// request target.
const VARIANT: char = '\n';

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The query without ignored parameters, sorted so order does not split the cache.
pub fn filtered_query(query: Option<&str>, ignored: &[String]) -> String {
    let Some(query) = query else {
        return String::new();
    };
    let mut kept: Vec<&str> = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter(|pair| {
            let name = pair.split('=').next().unwrap_or(pair);
            !ignored.iter().any(|i| i.eq_ignore_ascii_case(name))
        })
        .collect();
    kept.sort_unstable();
    kept.join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_cmcd_do_not_split_the_cache() {
        let ignored = vec!["token".to_owned(), "CMCD".to_owned()];
        let a = CacheKey::new("/live/a/1.m4s", Some("token=abc&CMCD=br%3D300"), &ignored);
        let b = CacheKey::new("/live/a/1.m4s", Some("cmcd=x&token=zzz"), &ignored);
        assert_eq!(a, b);
        assert_eq!(a.as_str(), "/live/a/1.m4s");
        let c = CacheKey::new("/vod/x.m3u8", Some("b=2&a=1&token=t"), &ignored);
        assert_eq!(c.as_str(), "/vod/x.m3u8?a=1&b=2");
        assert_eq!(c.path(), "/vod/x.m3u8");
        let v = c.with_variant("accept-language=fr");
        assert_ne!(v, c);
        assert!(v.is_variant() && !c.is_variant());
        assert_eq!(v.as_str(), "/vod/x.m3u8?a=1&b=2");
        assert_eq!(v.path(), "/vod/x.m3u8");
    }
}
