//! Cache keys: path plus the query parameters that change content.

use std::fmt;

/// Query parameters that never change the bytes of a response (`token`,
/// `CMCD`, …) are left out, so every viewer shares one cached copy.
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

    /// Path and kept query: also what the edge asks its upstream for.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn path(&self) -> &str {
        self.0.split('?').next().unwrap_or(&self.0)
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
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
    }
}
