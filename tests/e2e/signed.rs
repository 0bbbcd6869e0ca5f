//! A player holding only a signed master URL plays the whole stream through
//! a tokened edge: hls.js, dash.js and ffmpeg follow the token the edge
//! writes into every child URL, and the same URLs without it are refused.

use std::time::{Duration, SystemTime};

use crate::harness::client;
use crate::stack::{
    assert_decodes, assert_plays, require_peers, start_stack_with, wait_for_segments, Publisher,
};

const SECRET: &str = "00112233445566778899aabbccddeeff";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_master_url_is_enough_for_hls_js_dash_js_and_ffmpeg() {
    require_peers();
    let token_config: strata::policy::TokenConfig = toml::from_str(&format!(
        "keys = [{{ id = \"k1\", secret = \"{SECRET}\" }}]\nrequire = [\"/live/\"]\n"
    ))
    .expect("token config");
    let stack = start_stack_with(|_| {}, |c| c.token = Some(token_config)).await;
    let _publisher = Publisher::start(&stack.rtmp_url("paid"), "flv", "320x180");
    wait_for_segments(&stack, "paid", "main", 2).await;
    let token = strata::policy::sign(
        SECRET,
        "/live/paid/*",
        Duration::from_secs(600),
        SystemTime::now(),
        None,
        None,
    )
    .expect("sign");

    // Without the token every object is refused, and the reason says so.
    for path in [
        "/live/paid/master.m3u8",
        "/live/paid/manifest.mpd",
        "/live/paid/main/video.m3u8",
    ] {
        let r = client()
            .get(stack.edge(path))
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 403, "{path}");
        assert_eq!(r.headers()["strata-reject-reason"], "missing");
    }
    // A token for another channel does not open this one.
    let other = strata::policy::sign(
        SECRET,
        "/live/other/*",
        Duration::from_secs(600),
        SystemTime::now(),
        None,
        None,
    )
    .expect("sign");
    let r = client()
        .get(stack.edge(&format!("/live/paid/master.m3u8?token={other}")))
        .send()
        .await
        .expect("request");
    assert_eq!(r.headers()["strata-reject-reason"], "acl");

    assert_plays(
        "hls",
        &stack.edge(&format!("/live/paid/master.m3u8?token={token}")),
        8,
    )
    .await;
    assert_plays(
        "dash",
        &stack.edge(&format!("/live/paid/manifest.mpd?token={token}")),
        8,
    )
    .await;
    assert_decodes(
        &stack.edge(&format!("/live/paid/master.m3u8?token={token}")),
        4,
    )
    .await;

    let metrics = stack.edge.metrics().await;
    assert!(!metrics.contains(&token), "tokens never reach metrics");
}
