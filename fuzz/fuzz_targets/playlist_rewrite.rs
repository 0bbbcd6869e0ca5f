//! An upstream's playlist or MPD rewritten to carry the viewer's token (the
//! edge does this on every token-protected manifest): any text in, text out,
//! and the token is on every URI line the rewrite touched.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata::policy::transport::{
    rewrite_dash_mpd, rewrite_dash_mpd_for_host, rewrite_hls_playlist,
    rewrite_hls_playlist_for_host,
};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let token = "exp=1~acl=/*~hmac=00";
    let hls = rewrite_hls_playlist(text, "hdnts", token);
    for line in hls.lines() {
        if !line.is_empty() && !line.starts_with('#') && !text.lines().any(|l| l == line) {
            assert!(line.contains("hdnts="), "a rewritten URI line carries the token: {line}");
        }
    }
    let _ = rewrite_hls_playlist_for_host(text, "hdnts", token, "edge.example.com");
    let _ = rewrite_dash_mpd(text, "hdnts", token);
    let _ = rewrite_dash_mpd_for_host(text, "hdnts", token, "edge.example.com");
});
