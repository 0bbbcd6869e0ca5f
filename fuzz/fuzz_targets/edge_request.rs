//! The request line and headers a client sends, through the edge's one
//! parse: the normalised path, the cache key, Range, validators and the
//! token. Errors are fine (they become 400s); a panic is not. Properties that
//! hold for every input are asserted too: the normal form is a fixed point,
//! and a resolved range lies inside the body.
#![no_main]

use std::net::SocketAddr;
use std::str::FromStr;

use libfuzzer_sys::fuzz_target;
use strata::policy::token::{acl_entry_matches, Token};
use strata::request::{path, ByteRange, MediaRequest, Protocol, TokenSource};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Line 1: the request target; every later line: `name: value`.
    let mut lines = text.split('\n');
    let target = lines.next().unwrap_or_default();

    if let Ok(normal) = path::canonical(target) {
        let again = path::canonical(&normal).expect("a normal form is a valid path");
        assert_eq!(again, normal, "the normal form of a normal form is itself");
        let _ = path::decoded(&normal);
    }
    if let Some(range) = ByteRange::parse(target) {
        for len in [0u64, 1, 1000, u64::MAX] {
            if let Some((start, end)) = range.resolve(len) {
                assert!(start < end && end <= len, "{range:?} of {len} → {start}..{end}");
            }
        }
    }
    if let Ok(token) = Token::from_str(target) {
        let _ = (token.ip(), token.start(), token.expires(), token.id(), token.data());
        if let Some(acl) = token.acl() {
            for entry in acl.split('!') {
                let _ = acl_entry_matches(entry, "/live/a/index.m3u8");
            }
        }
    }

    let mut builder = http::Request::builder().uri(target);
    for line in lines.take(16) {
        if let Some((name, value)) = line.split_once(':') {
            builder = builder.header(name.trim(), value.trim());
        }
    }
    let Ok(request) = builder.body(()) else {
        return;
    };
    let (parts, ()) = request.into_parts();
    let client: SocketAddr = "192.0.2.1:40000".parse().expect("literal address");
    let ignored = ["CMCD".to_owned(), "_HLS_msn".to_owned()];
    let source = TokenSource {
        param: "hdnts",
        cookie: true,
    };
    if let Ok(parsed) = MediaRequest::parse(&parts, client, Protocol::Http1, &ignored, Some(source)) {
        let _ = (parsed.key.as_str(), parsed.signed_path(), parsed.decoded_path());
    }
});
