//! HTTP/1.1 message framing rules the edge enforces before a request reaches
//! the core, so that the edge and anything behind or in front of it cannot
//! disagree on where one request ends (request smuggling).
//!
//! Pingora already refuses duplicate `Content-Length`, obs-fold, bare CR and a
//! `Transfer-Encoding` it does not understand; these are the cases it lets
//! through. (With both `Content-Length` and `Transfer-Encoding` it drops the
//! former from the parsed head, so that case is read from the raw head.)

use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::request::Parts;
use http::Version;

/// Why an HTTP/1.x request head is refused with 400, or `None` if its framing
/// and `Host` are unambiguous. `raw` is the head as received.
pub fn framing_error(parts: &Parts, raw: &[u8]) -> Option<&'static str> {
    let headers = &parts.headers;
    // RFC 9112 §6.1: a message with both may be an attempt at smuggling; a
    // server MAY reject it, and then must close the connection.
    if headers.contains_key(TRANSFER_ENCODING)
        && (headers.contains_key(CONTENT_LENGTH) || raw_has_field(raw, CONTENT_LENGTH.as_str()))
    {
        return Some("both Content-Length and Transfer-Encoding");
    }
    let mut hosts = headers.get_all(HOST).iter();
    match (hosts.next(), hosts.next()) {
        // RFC 9112 §3.2: more than one Host, or none in HTTP/1.1, is a 400.
        (Some(_), Some(_)) => Some("more than one Host header"),
        (None, _) if parts.version == Version::HTTP_11 => Some("HTTP/1.1 request without Host"),
        (Some(host), None) if !valid_host(host.as_bytes()) => Some("malformed Host header"),
        _ => None,
    }
}

/// Whether a field line of the raw head is named `name` (lower-case).
fn raw_has_field(raw: &[u8], name: &str) -> bool {
    raw.split(|&b| b == b'\n').skip(1).any(|line| {
        line.len() > name.len()
            && line[name.len()] == b':'
            && line[..name.len()].eq_ignore_ascii_case(name.as_bytes())
    })
}

/// `uri-host [ ":" port ]` (RFC 9110 §7.2): reg-name, IPv4 or a bracketed IPv6
/// literal; no spaces, controls, userinfo or path.
fn valid_host(host: &[u8]) -> bool {
    !host.is_empty()
        && host.iter().all(|&b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'-' | b'.'
                        | b'_'
                        | b'~'
                        | b':'
                        | b'['
                        | b']'
                        | b'%'
                        | b'!'
                        | b'$'
                        | b'&'
                        | b'\''
                        | b'('
                        | b')'
                        | b'*'
                        | b'+'
                        | b','
                        | b';'
                        | b'='
                )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(version: Version, headers: &[(&str, &str)]) -> Parts {
        let mut builder = http::Request::builder()
            .uri("/live/a.m3u8")
            .version(version);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).expect("request").into_parts().0
    }

    fn raw(parts: &Parts) -> Vec<u8> {
        let mut raw = b"GET /live/a.m3u8 HTTP/1.1\r\n".to_vec();
        for (name, value) in &parts.headers {
            raw.extend_from_slice(format!("{name}: ").as_bytes());
            raw.extend_from_slice(value.as_bytes());
            raw.extend_from_slice(b"\r\n");
        }
        raw.extend_from_slice(b"\r\n");
        raw
    }

    fn check(parts: &Parts) -> Option<&'static str> {
        framing_error(parts, &raw(parts))
    }

    #[test]
    fn ambiguous_heads_are_refused() {
        let v11 = Version::HTTP_11;
        for (headers, why) in [
            (
                vec![
                    ("host", "a"),
                    ("content-length", "4"),
                    ("transfer-encoding", "chunked"),
                ],
                "both Content-Length and Transfer-Encoding",
            ),
            (
                vec![("host", "a"), ("host", "b")],
                "more than one Host header",
            ),
            (vec![], "HTTP/1.1 request without Host"),
            (vec![("host", "a b")], "malformed Host header"),
            (vec![("host", "a/b")], "malformed Host header"),
            (vec![("host", "user@a")], "malformed Host header"),
        ] {
            assert_eq!(check(&head(v11, &headers)), Some(why), "{headers:?}");
        }
    }

    #[test]
    fn ordinary_heads_pass() {
        for host in [
            "edge.example.com",
            "127.0.0.1:8080",
            "[::1]:443",
            "xn--bcher-kva.example",
        ] {
            assert_eq!(
                check(&head(Version::HTTP_11, &[("host", host)])),
                None,
                "{host}"
            );
        }
        assert_eq!(check(&head(Version::HTTP_10, &[])), None);
        let chunked = [("host", "a"), ("transfer-encoding", "chunked")];
        assert_eq!(check(&head(Version::HTTP_11, &chunked)), None);
    }
}
