//! `Vary` (RFC 9110 §12.5.5, RFC 9111 §4.1): a stored response answers
//! only requests whose headers named in its `Vary` match those of the
//! request that fetched it. Other combinations are other *variants*,
//! stored and filled under [`CacheKey::with_variant`] keys, so
//! coalescing and the cache never hand one variant to a request for
//! another.
//!
//! [`CacheKey::with_variant`]: super::key::CacheKey::with_variant

use http::{header, HeaderMap, HeaderName};

/// The request headers a response varies on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Vary {
    /// `Vary: *`: no two requests are known to match; never shared.
    Any,
    /// Lower-case names, in the order the response gave them, no repeats.
    Headers(Box<[HeaderName]>),
}

impl Vary {
    /// The `Vary` of a response, if it has one that names anything.
    pub fn of(response: &HeaderMap) -> Option<Vary> {
        let mut names: Vec<HeaderName> = Vec::new();
        for value in response.get_all(header::VARY) {
            let Ok(value) = value.to_str() else {
                // Not a list of tokens: match nothing rather than guess.
                return Some(Vary::Any);
            };
            for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                if name == "*" {
                    return Some(Vary::Any);
                }
                let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
                    return Some(Vary::Any);
                };
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
        (!names.is_empty()).then(|| Vary::Headers(names.into_boxed_slice()))
    }

    /// What `request` sends in the headers this response varies on, in one
    /// string two requests share exactly when a cache may treat them alike
    /// (RFC 9111 §4.1: values combined as one field, whitespace around
    /// commas ignored; an absent header differs from an empty one).
    /// `None` for `Vary: *`.
    pub fn select(&self, request: &HeaderMap) -> Option<String> {
        let Vary::Headers(names) = self else {
            return None;
        };
        let mut selected = String::new();
        for name in names.iter() {
            selected.push_str(name.as_str());
            let mut values = request.get_all(name).iter().peekable();
            if values.peek().is_none() {
                selected.push('\u{1}');
            } else {
                selected.push(':');
            }
            let mut first = true;
            for value in values {
                for item in String::from_utf8_lossy(value.as_bytes()).split(',') {
                    if !first {
                        selected.push(',');
                    }
                    first = false;
                    selected.push_str(item.trim());
                }
            }
            selected.push('\u{2}');
        }
        Some(selected)
    }
}

/// The variant a stored or in-flight response is: its `Vary`, and what the
/// request that fetched it selected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Variant {
    pub vary: Vary,
    /// `vary.select(..)` of the fetching request; `None` for `Vary: *`.
    pub selected: Option<String>,
}

impl Variant {
    /// The variant `response` is for `request`, if it varies at all.
    pub fn of(response: &HeaderMap, request: &HeaderMap) -> Option<Variant> {
        let vary = Vary::of(response)?;
        let selected = vary.select(request);
        Some(Variant { vary, selected })
    }

    /// Whether this response may answer `request`; if not, what `request`
    /// selects (the variant key to look under), `None` for `Vary: *`.
    pub fn answers(&self, request: &HeaderMap) -> Result<(), Option<String>> {
        let theirs = self.vary.select(request);
        match (&self.selected, theirs) {
            (Some(ours), Some(theirs)) if *ours == theirs => Ok(()),
            (_, theirs) => Err(theirs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn variants_match_on_the_named_headers_only() {
        let response = headers(&[("vary", "Accept-Language, Foo"), ("vary", "foo")]);
        let fr = headers(&[("accept-language", "fr"), ("user-agent", "a")]);
        let variant = Variant::of(&response, &fr).expect("varies");
        assert_eq!(
            variant.vary,
            Vary::Headers(
                vec![
                    HeaderName::from_static("accept-language"),
                    HeaderName::from_static("foo")
                ]
                .into()
            )
        );
        assert_eq!(
            variant.answers(&headers(&[("accept-language", "fr"), ("user-agent", "b")])),
            Ok(())
        );
        assert!(variant
            .answers(&headers(&[("accept-language", "de")]))
            .is_err());
        // Absent differs from empty; list whitespace does not matter.
        assert!(variant
            .answers(&headers(&[("accept-language", "fr"), ("foo", "")]))
            .is_err());
        let two = Variant::of(&response, &headers(&[("foo", "a, b")])).expect("varies");
        assert_eq!(two.answers(&headers(&[("foo", "a,b")])), Ok(()));
        assert_eq!(two.answers(&headers(&[("foo", "a"), ("foo", "b")])), Ok(()));
    }

    #[test]
    fn vary_star_matches_nothing_and_no_vary_is_no_variant() {
        let star = Variant::of(&headers(&[("vary", "foo, *")]), &HeaderMap::new()).expect("varies");
        assert_eq!(star.answers(&HeaderMap::new()), Err(None));
        assert_eq!(
            Variant::of(&headers(&[("vary", " ")]), &HeaderMap::new()),
            None
        );
        assert_eq!(Variant::of(&HeaderMap::new(), &HeaderMap::new()), None);
    }
}
