//! The request path as policy sees it: decoded once and resolved, so that
//! `..`, `//` and percent-encoding cannot step around an ACL or a rule prefix.

use std::borrow::Cow;

/// Decodes `%XX` escapes once; `None` on a `%` not followed by two hex digits.
/// Borrows when there is nothing to decode.
pub(crate) fn percent_decode_strict(bytes: &[u8]) -> Option<Cow<'_, [u8]>> {
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

/// Why a request path cannot be matched against an ACL.
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

/// The path an ACL or a rule prefix is matched against: percent-decoded once,
/// `.` and `..` resolved, `//` collapsed. Borrows when the path is already
/// in that form, which is the common case.
pub fn normalize_path(path: &str) -> Result<Cow<'_, str>, PathError> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::Malformed);
    }
    if bytes.contains(&0) {
        return Err(PathError::EncodedSeparator);
    }
    let plain = !bytes.contains(&b'%') && !path.contains("//") && !path.contains("/.");
    if plain {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = percent_decode_strict(bytes).ok_or(PathError::Malformed)?;
    // A decoded separator must not be read as one: compare against the raw
    // escapes so `%2F` stays one segment and is refused instead.
    let mut i = 0;
    while let Some(off) = bytes[i..].iter().position(|&b| b == b'%') {
        let at = i + off;
        match (
            bytes[at + 1].to_ascii_uppercase(),
            bytes[at + 2].to_ascii_uppercase(),
        ) {
            (b'2', b'F') | (b'5', b'C') | (b'0', b'0') => return Err(PathError::EncodedSeparator),
            _ => {}
        }
        i = at + 3;
    }
    let decoded = std::str::from_utf8(&decoded).map_err(|_| PathError::Malformed)?;
    let mut out = String::with_capacity(decoded.len());
    let mut trailing_slash = false;
    for segment in decoded.split('/').skip(1) {
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
