//! The one normal form of a request path, computed once per request (the
//! edge's `MediaRequest::path`) and used by policy (token ACLs, `require`
//! and geo prefixes), the cache key, the upstream request and purges alike,
//! so none of them can read a path differently from the others.
//!
//! The form (RFC 3986 §6.2.2, then §5.2.4):
//! - a percent-escape of an unreserved character (`A–Z a–z 0–9 - . _ ~`) is
//!   decoded (`%61` → `a`, `%2e` → `.`); every other escape stays, with its
//!   hex digits in upper case (`%c3%a9` → `%C3%A9`), so the form is still a
//!   valid, unambiguous URI path to forward and to store under;
//! - then `.` and `..` segments are resolved (so `/a/%2e%2e/b` is `/b`) and
//!   empty segments (`//`) collapsed; a trailing `/` is kept.
//!
//! Refused, with 400 Bad Request (the client's fault, never forwarded):
//! a path that does not start with `/`, a `%` not followed by two hex
//! digits, bytes that are not UTF-8 once decoded, `%2F`, `%5C` or `%00` or a
//! literal NUL (a second separator syntax inside one segment, which servers
//! behind the edge may read differently), and a `..` that would climb above
//! `/` (a path that escapes the root names nothing the edge serves).
//!
//! Policy matches ACLs and prefixes against [`decoded`] of this form, which
//! is a function of it: two requests with the same normal form get the same
//! decision, the same cached object and the same upstream request.

use std::borrow::Cow;

/// The path an ACL or a rule prefix is matched against, from a path as
/// received: its normal form, decoded. The edge computes the normal form
/// once per request (`MediaRequest::decoded_path`); this is for callers
/// holding only a raw path (an origin, tests, `TokenVerifier::verify`).
pub fn normalize_path(path: &str) -> Result<Cow<'_, str>, PathError> {
    Ok(match canonical(path)? {
        Cow::Borrowed(path) => decoded(path),
        Cow::Owned(path) => Cow::Owned(decoded(&path).into_owned()),
    })
}

/// Why a request path has no normal form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Not absolute, bad percent-encoding, or not UTF-8 once decoded.
    #[error("malformed path")]
    Malformed,
    /// `..` would climb above `/`.
    #[error("path escapes the root")]
    EscapesRoot,
    /// `%2F`, `%5C` or `%00`, or a literal NUL: a second path syntax inside a segment.
    #[error("encoded slash or NUL in path")]
    EncodedSeparator,
}

/// The normal form of `raw` (see the module docs). Borrows when `raw` is
/// already in it, which is the common case.
pub fn canonical(raw: &str) -> Result<Cow<'_, str>, PathError> {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::Malformed);
    }
    if bytes.contains(&0) {
        return Err(PathError::EncodedSeparator);
    }
    if !raw.contains('%') && !raw.contains("//") && !raw.contains("/.") {
        return Ok(Cow::Borrowed(raw));
    }
    // Escapes first, so an encoded dot segment is resolved like a plain one.
    let mut escaped = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(at) = rest.find('%') {
        escaped.push_str(&rest[..at]);
        let tail = rest.as_bytes();
        let hi = tail.get(at + 1).copied().and_then(hex_val);
        let lo = tail.get(at + 2).copied().and_then(hex_val);
        let (Some(hi), Some(lo)) = (hi, lo) else {
            return Err(PathError::Malformed);
        };
        match hi << 4 | lo {
            b'/' | b'\\' | 0 => return Err(PathError::EncodedSeparator),
            b if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') => {
                escaped.push(char::from(b));
            }
            _ => {
                escaped.push('%');
                escaped.push(char::from(HEX[usize::from(hi)]));
                escaped.push(char::from(HEX[usize::from(lo)]));
            }
        }
        rest = &rest[at + 3..];
    }
    escaped.push_str(rest);
    if std::str::from_utf8(&percent_decode_strict(escaped.as_bytes()).ok_or(PathError::Malformed)?)
        .is_err()
    {
        return Err(PathError::Malformed);
    }
    let mut out = String::with_capacity(escaped.len());
    let mut trailing_slash = false;
    for segment in escaped.split('/').skip(1) {
        trailing_slash = matches!(segment, "" | "." | "..");
        match segment {
            "" | "." => {}
            ".." => {
                let cut = out.rfind('/').ok_or(PathError::EscapesRoot)?;
                out.truncate(cut);
            }
            _ => {
                out.push('/');
                out.push_str(segment);
            }
        }
    }
    if out.is_empty() || trailing_slash {
        out.push('/');
    }
    Ok(Cow::Owned(out))
}

/// A normal form with every escape decoded: what ACLs and rule prefixes,
/// written by people, are matched against. Borrows when there is no escape.
/// Cannot fail on a [`canonical`] path (checked there); on any other input a
/// bad escape is left as it is.
pub fn decoded(canonical: &str) -> Cow<'_, str> {
    match percent_decode_strict(canonical.as_bytes()) {
        Some(Cow::Borrowed(_)) | None => Cow::Borrowed(canonical),
        Some(Cow::Owned(bytes)) => match String::from_utf8(bytes) {
            Ok(text) => Cow::Owned(text),
            Err(_) => Cow::Borrowed(canonical),
        },
    }
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Decodes `%XX` escapes once; `None` on a `%` not followed by two hex digits.
/// Borrows when there is nothing to decode.
pub fn percent_decode_strict(bytes: &[u8]) -> Option<Cow<'_, [u8]>> {
    if !bytes.contains(&b'%') {
        return Some(Cow::Borrowed(bytes));
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = hex_val(*bytes.get(i + 1)?)?;
            let lo = hex_val(*bytes.get(i + 2)?)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(Cow::Owned(out))
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_forms() {
        let ok = |p: &str| canonical(p).expect(p).into_owned();
        assert_eq!(ok("/live/a/master.m3u8"), "/live/a/master.m3u8");
        assert_eq!(ok("/live//a/./b/../c.m3u8"), "/live/a/c.m3u8");
        assert_eq!(ok("/a/%2e%2e/b"), "/b");
        assert_eq!(ok("/a/%2E%2E/b"), "/b");
        assert_eq!(ok("/a/.%2e/b"), "/b");
        assert_eq!(ok("/live/%61/x"), "/live/a/x");
        assert_eq!(ok("/live/caf%c3%a9/"), "/live/caf%C3%A9/");
        assert_eq!(ok("/live/%252F"), "/live/%252F", "decoded once only");
        assert_eq!(ok("/live/a%20b"), "/live/a%20b");
        assert_eq!(ok("/live/a/.."), "/live/");
        assert_eq!(ok("//"), "/");
        assert_eq!(ok("/"), "/");
        assert_eq!(decoded("/live/caf%C3%A9/"), "/live/café/");
        assert_eq!(decoded("/live/%252F"), "/live/%2F");
        for (path, error) in [
            ("/../etc/passwd", PathError::EscapesRoot),
            ("/a/%2e%2e/%2e%2e/b", PathError::EscapesRoot),
            ("/a%2Fb", PathError::EncodedSeparator),
            ("/a%2fb", PathError::EncodedSeparator),
            ("/a%5cb", PathError::EncodedSeparator),
            ("/a%00", PathError::EncodedSeparator),
            ("/a\0", PathError::EncodedSeparator),
            ("/a%zz", PathError::Malformed),
            ("/a%f", PathError::Malformed),
            ("/a%ff", PathError::Malformed),
            ("a/b", PathError::Malformed),
            ("", PathError::Malformed),
        ] {
            assert_eq!(canonical(path), Err(error), "{path:?}");
        }
    }

    #[test]
    fn a_normal_form_is_its_own_normal_form() {
        for path in [
            "/a/%2e%2e/b",
            "/A/%7e/x%41",
            "/live/caf%c3%a9/./",
            "//x//y/",
            "/a/b/c/../../d",
        ] {
            let once = canonical(path).expect(path).into_owned();
            assert_eq!(canonical(&once).expect(path), once, "{path}");
        }
    }
}
