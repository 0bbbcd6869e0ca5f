//! How tokens travel: found in the request (query parameter or cookie),
//! removed from what is logged or cached, and carried on to every URI a
//! manifest leads to so a player's segment requests pass the same check.

use std::borrow::Cow;

use http::header::COOKIE;
use http::request::Parts;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use super::token::{Token, TokenError};

/// The token from the query parameter `param_name`, else from the cookie of
/// that name. `None` when neither is present; `Some(Err)` when one is present
/// but is not a token.
pub fn token_from_request(parts: &Parts, param_name: &str) -> Option<Result<Token, TokenError>> {
    let raw = token_in_query(parts, param_name).or_else(|| token_in_cookie(parts, param_name))?;
    Some(raw.parse())
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
        .get_all(COOKIE)
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

/// `query` without any `param=…` pair, for access logs and cache keys.
/// Borrows when there is nothing to remove.
pub fn strip_token_from_query<'a>(query: &'a str, param: &str) -> Cow<'a, str> {
    let is_token = |pair: &str| pair.split_once('=').map_or(pair, |(n, _)| n) == param;
    if !query.split('&').any(is_token) {
        return Cow::Borrowed(query);
    }
    let mut out = String::with_capacity(query.len());
    for pair in query.split('&').filter(|p| !is_token(p) && !p.is_empty()) {
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(pair);
    }
    Cow::Owned(out)
}

/// Characters a token may keep verbatim inside a query, a quoted HLS
/// attribute, an XML attribute and a DASH template alike.
fn is_verbatim_safe(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!*/:;,=@+%".contains(&b)
}

/// Everything but unreserved characters, for a token that needs encoding at all.
const ENCODE_ALL: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The token as it is appended to a URI. Tokens that came in a URI are safe
/// as they are; any other is encoded whole, `=` included, so the receiving
/// edge sees no literal `hmac=`, decodes it once and gets the original back.
fn query_value(token: &str) -> Cow<'_, str> {
    if token.bytes().all(is_verbatim_safe) {
        Cow::Borrowed(token)
    } else {
        Cow::Owned(utf8_percent_encode(token, ENCODE_ALL).to_string())
    }
}

/// Whether the token may be added to this URI: relative references only
/// (or absolute ones on `own_host`), never `data:`, `skd:` or other hosts.
fn is_ours(uri: &str, own_host: Option<&str>) -> bool {
    let uri = uri.trim();
    if uri.is_empty() || uri.starts_with('#') {
        return false;
    }
    let authority = if let Some(rest) = uri.strip_prefix("//") {
        rest
    } else if let Some((scheme, rest)) = uri.split_once(':') {
        let is_scheme = scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
            && !scheme.contains('/');
        if !is_scheme {
            return true;
        }
        if !(scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")) {
            return false;
        }
        match rest.strip_prefix("//") {
            Some(rest) => rest,
            None => return false,
        }
    } else {
        return true;
    };
    let host = authority.split(['/', '?', '#']).next().unwrap_or("");
    own_host.is_some_and(|own| host.eq_ignore_ascii_case(own))
}

/// Appends `param=value` to `uri`, replacing an existing `param`, keeping
/// any fragment last. `amp` is the pair separator as the container needs it
/// (`&`, or `&amp;` inside XML).
fn push_with_token(out: &mut String, uri: &str, param: &str, value: &str, amp: &str) {
    let (before_fragment, fragment) = match uri.find('#') {
        Some(at) => uri.split_at(at),
        None => (uri, ""),
    };
    let (path, query) = match before_fragment.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (before_fragment, None),
    };
    out.push_str(path);
    out.push('?');
    if let Some(query) = query {
        // In XML the pairs are joined by `&amp;`; split on that first.
        let kept: Vec<&str> = query
            .split(amp)
            .filter(|p| !p.is_empty() && p.split_once('=').map_or(*p, |(n, _)| n) != param)
            .collect();
        for pair in kept {
            out.push_str(pair);
            out.push_str(amp);
        }
    }
    out.push_str(param);
    out.push('=');
    out.push_str(value);
    out.push_str(fragment);
}

/// Adds the token to every URI line and every `URI="…"` attribute
/// (EXT-X-MAP, EXT-X-KEY, EXT-X-MEDIA, EXT-X-I-FRAME-STREAM-INF, EXT-X-PART,
/// …) of an HLS playlist (RFC 8216bis §4.1). Absolute URLs are left alone:
/// the token is not handed to another host.
pub fn rewrite_hls_playlist(text: &str, token_param: &str, token_value: &str) -> String {
    rewrite_hls(text, token_param, token_value, None)
}

/// [`rewrite_hls_playlist`], also tokenising absolute `http(s)` URLs whose
/// host (with port, if any) is `own_host`.
pub fn rewrite_hls_playlist_for_host(
    text: &str,
    token_param: &str,
    token_value: &str,
    own_host: &str,
) -> String {
    rewrite_hls(text, token_param, token_value, Some(own_host))
}

fn rewrite_hls(text: &str, param: &str, value: &str, own_host: Option<&str>) -> String {
    let value = query_value(value);
    let steered = text.contains("#EXT-X-CONTENT-STEERING:");
    let mut out = String::with_capacity(text.len() + text.len() / 4);
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches(['\r', '\n']);
        let ending = &line[body.len()..];
        if body.starts_with('#') {
            rewrite_uri_attributes(&mut out, body, param, &value, own_host, steered);
        } else if is_ours(body, own_host) || steered && is_http(body) {
            let trimmed = body.trim();
            push_with_token(&mut out, trimmed, param, &value, "&");
        } else {
            out.push_str(body);
        }
        out.push_str(ending);
    }
    out
}

fn rewrite_uri_attributes(
    out: &mut String,
    tag: &str,
    param: &str,
    value: &str,
    own_host: Option<&str>,
    steered: bool,
) {
    if !tag.starts_with("#EXT") {
        out.push_str(tag);
        return;
    }
    let name = if tag.starts_with("#EXT-X-CONTENT-STEERING:") {
        "SERVER-URI=\""
    } else {
        "URI=\""
    };
    let mut rest = tag;
    while let Some(at) = find_attribute(rest, name) {
        let value_start = at + name.len();
        let Some(len) = rest[value_start..].find('"') else {
            break;
        };
        let uri = &rest[value_start..value_start + len];
        out.push_str(&rest[..value_start]);
        if is_ours(uri, own_host) || steered && is_http(uri) {
            push_with_token(out, uri, param, value, "&");
        } else {
            out.push_str(uri);
        }
        rest = &rest[value_start + len..];
    }
    out.push_str(rest);
}

/// Content Steering (issue 9): a manifest that carries steering tags names
/// every CDN of the service (pathways) and its steering server by absolute
/// URL; the viewer's token goes to those too, or a player moved to another
/// CDN would be refused there.
fn is_http(uri: &str) -> bool {
    let uri = uri.trim().as_bytes();
    let starts = |p: &[u8]| uri.len() > p.len() && uri[..p.len()].eq_ignore_ascii_case(p);
    starts(b"http://") || starts(b"https://")
}

/// Position of attribute `name` (e.g. `URI="`) at an attribute boundary, so
/// `KEYURI="` or `X-URI="` is not mistaken for it.
fn find_attribute(haystack: &str, name: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(off) = haystack[from..].find(name) {
        let at = from + off;
        if at > 0 && matches!(haystack.as_bytes()[at - 1], b':' | b',' | b' ') {
            return Some(at);
        }
        from = at + name.len();
    }
    None
}

/// Adds the token to a DASH MPD (ISO/IEC 23009-1): the `media`,
/// `initialization` and `index` templates of SegmentTemplate, `sourceURL`
/// of Initialization/RepresentationIndex, `media`/`index` of SegmentURL, and
/// the text of BaseURL and Location. `$Number$`-style identifiers are kept;
/// a `$` in the token is encoded so it cannot start one.
pub fn rewrite_dash_mpd(text: &str, token_param: &str, token_value: &str) -> String {
    rewrite_dash(text, token_param, token_value, None)
}

/// [`rewrite_dash_mpd`], also tokenising absolute `http(s)` URLs on
/// `own_host`, which is what makes `Location` (always absolute) carry it.
pub fn rewrite_dash_mpd_for_host(
    text: &str,
    token_param: &str,
    token_value: &str,
    own_host: &str,
) -> String {
    rewrite_dash(text, token_param, token_value, Some(own_host))
}

fn rewrite_dash(
    text: &str,
    token_param: &str,
    token_value: &str,
    own_host: Option<&str>,
) -> String {
    let value = if token_value.contains('$') {
        Cow::Owned(utf8_percent_encode(token_value, ENCODE_ALL).to_string())
    } else {
        query_value(token_value)
    };
    let steered = text.contains("<ContentSteering");
    let mut out = String::with_capacity(text.len() + 256);
    let mut rest = text;
    while let Some(lt) = rest.find('<') {
        out.push_str(&rest[..lt]);
        rest = &rest[lt..];
        let Some(gt) = rest.find('>') else { break };
        let element = &rest[..=gt];
        let name = element[1..]
            .split(|c: char| c.is_whitespace() || c == '>' || c == '/')
            .next()
            .unwrap_or("");
        let local = name.rsplit(':').next().unwrap_or(name);
        let attributes: &[&str] = match local {
            "SegmentTemplate" => &["media", "initialization", "index"],
            "SegmentURL" => &["media", "index"],
            "Initialization" | "RepresentationIndex" => &["sourceURL"],
            _ => &[],
        };
        if attributes.is_empty() {
            out.push_str(element);
        } else {
            rewrite_xml_attributes(&mut out, element, attributes, token_param, &value, own_host);
        }
        rest = &rest[gt + 1..];
        if matches!(local, "BaseURL" | "Location" | "ContentSteering") && !element.ends_with("/>") {
            let Some(end) = rest.find('<') else { continue };
            let url = &rest[..end];
            let trimmed = url.trim();
            let pathway = steered && is_http(trimmed);
            if is_ours(trimmed, own_host) || pathway {
                push_with_token(&mut out, trimmed, token_param, &value, "&amp;");
            } else {
                out.push_str(url);
            }
            rest = &rest[end..];
        }
    }
    out.push_str(rest);
    out
}

fn rewrite_xml_attributes(
    out: &mut String,
    element: &str,
    names: &[&str],
    param: &str,
    value: &str,
    own_host: Option<&str>,
) {
    let mut rest = element;
    loop {
        let next = names
            .iter()
            .filter_map(|name| {
                let mut from = 0;
                while let Some(off) = rest[from..].find(name) {
                    let at = from + off;
                    let after = &rest[at + name.len()..];
                    let boundary = at > 0 && rest.as_bytes()[at - 1].is_ascii_whitespace();
                    if boundary && after.trim_start().starts_with('=') {
                        return Some((at, name.len()));
                    }
                    from = at + name.len();
                }
                None
            })
            .min();
        let Some((at, name_len)) = next else { break };
        let after_name = &rest[at + name_len..];
        let eq = after_name.find('=').unwrap_or(0);
        let after_eq = &after_name[eq + 1..];
        let ws = after_eq.len() - after_eq.trim_start().len();
        let Some(quote) = after_eq[ws..]
            .chars()
            .next()
            .filter(|c| *c == '"' || *c == '\'')
        else {
            break;
        };
        let value_start = at + name_len + eq + 1 + ws + 1;
        let Some(len) = rest[value_start..].find(quote) else {
            break;
        };
        let uri = &rest[value_start..value_start + len];
        out.push_str(&rest[..value_start]);
        if is_ours(uri, own_host) {
            push_with_token(out, uri, param, value, "&amp;");
        } else {
            out.push_str(uri);
        }
        rest = &rest[value_start + len..];
    }
    out.push_str(rest);
}

/// A `Set-Cookie` value carrying the token to the player, for
/// `propagate = "cookie"`.
pub fn token_cookie(param: &str, token: &str) -> String {
    format!("{param}={}; Path=/; HttpOnly", query_value(token))
}
