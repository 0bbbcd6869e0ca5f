//! Live end to end: ffmpeg publishes into an in-process origin over RTMP and
//! SRT, and ffmpeg, hls.js, dash.js and Shaka play it back through an edge.

use std::time::Duration;

use crate::harness::client;
use crate::stack::{
    assert_decodes, assert_live_mpd_plays, assert_plays, get_json, install_message, missing_peers,
    require_peers, start_play_logged, start_stack, wait_for_body, wait_for_segments, Publisher,
    Stack, API_TOKEN,
};

const PASSPHRASE: &str = "live-e2e-passphrase";

/// Decodes every playback format of `channel` through the edge: HLS with
/// ffmpeg, the live MPD with GStreamer (see [`assert_live_mpd_plays`]).
async fn assert_every_format_decodes(stack: &Stack, channel: &str) {
    for path in ["master.m3u8", "master-ts.m3u8"] {
        assert_decodes(&stack.edge(&format!("/live/{channel}/{path}")), 4).await;
    }
    assert_live_mpd_plays(&stack.edge(&format!("/live/{channel}/manifest.mpd")), 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtmp_publish_plays_through_the_edge_in_every_format() {
    require_peers();
    let stack = start_stack(|_| {}).await;
    let _publisher = Publisher::start(&stack.rtmp_url("rtmp"), "flv", "320x180");
    wait_for_segments(&stack, "rtmp", "main", 2).await;

    assert_every_format_decodes(&stack, "rtmp").await;
    assert_plays("hls", &stack.edge("/live/rtmp/master.m3u8"), 10).await;
    assert_plays("hls", &stack.edge("/live/rtmp/master-ts.m3u8"), 10).await;
    assert_plays("dash", &stack.edge("/live/rtmp/manifest.mpd"), 10).await;
    assert_plays("shaka", &stack.edge("/live/rtmp/manifest.mpd"), 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srt_publish_plays_through_the_edge() {
    require_peers();
    let stack = start_stack(|_| {}).await;
    let _publisher = Publisher::start(&stack.srt_url("srt", ""), "mpegts", "320x180");
    wait_for_segments(&stack, "srt", "main", 2).await;
    assert_every_format_decodes(&stack, "srt").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srt_publish_with_passphrase_plays_through_the_edge() {
    require_peers();
    let stack = start_stack(|c| c.ingest.srt_passphrase = Some(PASSPHRASE.into())).await;
    let url = stack.srt_url("secret", &format!("&passphrase={PASSPHRASE}&pbkeylen=16"));
    let _publisher = Publisher::start(&url, "mpegts", "320x180");
    wait_for_segments(&stack, "secret", "main", 2).await;
    assert_every_format_decodes(&stack, "secret").await;
}

/// Stops the publisher while `player` plays and starts it again within the
/// reconnect timeout; the player must not notice.
async fn play_across_reconnect(stack: &Stack, channel: &str, player: &str, path: &str) {
    let mut publisher = Publisher::start(&stack.rtmp_url(channel), "flv", "320x180");
    wait_for_segments(stack, channel, "main", 2).await;
    let playback =
        start_play_logged(player, &stack.edge(&format!("/live/{channel}/{path}")), 16).await;
    // Let the browser start and play a few seconds of the first session.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(publisher.exited().is_none(), "publisher died early");
    publisher.stop().await;
    wait_for_body(
        &stack.api(&format!("/api/channels/{channel}")),
        "channel to wait for its publisher",
        Duration::from_secs(10),
        |b| b.contains("\"state\":\"reconnecting\""),
    )
    .await;
    let _publisher = Publisher::start(&stack.rtmp_url(channel), "flv", "320x180");
    let playlist = wait_for_body(
        &stack.origin(&format!("/live/{channel}/main/video.m3u8")),
        "a discontinuity after the reconnect",
        Duration::from_secs(20),
        |b| {
            b.split("#EXT-X-DISCONTINUITY\n")
                .nth(1)
                .is_some_and(|after| crate::stack::segment_count(after) >= 1)
        },
    )
    .await;
    let (_, log) = playback.finish_with_log().await;
    // The player went on into the second session: it fetched its video.
    let first_after: u64 = playlist
        .split("#EXT-X-DISCONTINUITY\n")
        .nth(1)
        .and_then(|after| after.lines().find(|l| l.ends_with(".m4s")))
        .and_then(|uri| uri.trim_start_matches("video/").strip_suffix(".m4s"))
        .and_then(|n| n.parse().ok())
        .expect("segment after the discontinuity");
    let fetched_after = log
        .lines()
        .filter(|l| l.contains("response") && l.contains(&format!("/live/{channel}/main/video/")))
        .filter_map(|l| {
            l.rsplit('/')
                .next()?
                .strip_suffix(".m4s")?
                .parse::<u64>()
                .ok()
        })
        .any(|n| n >= first_after);
    assert!(
        fetched_after,
        "{player} never fetched video from segment {first_after} on (after the reconnect):\n{log}"
    );

    // The manifests say so too, through the edge.
    let http = client();
    let get = |path: String| {
        let http = http.clone();
        let url = stack.edge(&path);
        async move {
            http.get(&url)
                .send()
                .await
                .expect("GET")
                .text()
                .await
                .expect("body")
        }
    };
    for playlist in ["main/video.m3u8", "main/audio.m3u8", "main/ts.m3u8"] {
        let text = get(format!("/live/{channel}/{playlist}")).await;
        assert!(
            text.contains("#EXT-X-DISCONTINUITY\n"),
            "{playlist} has no discontinuity:\n{text}"
        );
    }
    let mpd = get(format!("/live/{channel}/manifest.mpd")).await;
    assert!(
        mpd.matches("<Period ").count() >= 2,
        "the MPD has no new Period:\n{mpd}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hls_js_plays_across_a_publisher_reconnect() {
    require_peers();
    let stack = start_stack(|_| {}).await;
    play_across_reconnect(&stack, "again", "hls", "master.m3u8").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dash_js_plays_across_a_publisher_reconnect() {
    require_peers();
    let stack = start_stack(|_| {}).await;
    play_across_reconnect(&stack, "again", "dash", "manifest.mpd").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abr_ladder_of_two_renditions_is_listed_and_plays() {
    require_peers();
    let stack = start_stack(|_| {}).await;
    let _hi = Publisher::start(&stack.rtmp_url("ladder.hi"), "flv", "640x360");
    let _lo = Publisher::start(&stack.rtmp_url("ladder.lo"), "flv", "320x180");
    wait_for_segments(&stack, "ladder", "hi", 2).await;
    wait_for_segments(&stack, "ladder", "lo", 2).await;

    let master = wait_for_body(
        &stack.edge("/live/ladder/master.m3u8"),
        "both rungs in the multivariant playlist",
        Duration::from_secs(10),
        |b| b.matches("#EXT-X-STREAM-INF:").count() == 2,
    )
    .await;
    for resolution in ["RESOLUTION=640x360", "RESOLUTION=320x180"] {
        let line = master
            .lines()
            .find(|l| l.starts_with("#EXT-X-STREAM-INF:") && l.contains(resolution))
            .unwrap_or_else(|| panic!("no {resolution} in\n{master}"));
        assert!(line.contains("CODECS=\"avc1."), "{line}");
    }
    let mpd = wait_for_body(
        &stack.edge("/live/ladder/manifest.mpd"),
        "both rungs in the MPD",
        Duration::from_secs(10),
        |b| b.matches("width=").count() >= 2,
    )
    .await;
    for size in [
        "width=\"640\" height=\"360\"",
        "width=\"320\" height=\"180\"",
    ] {
        assert!(mpd.contains(size), "no {size} Representation in\n{mpd}");
    }

    for rendition in ["hi", "lo"] {
        assert_decodes(
            &stack.edge(&format!("/live/ladder/{rendition}/video.m3u8")),
            4,
        )
        .await;
    }
    let report = assert_plays("hls", &stack.edge("/live/ladder/master.m3u8"), 10).await;
    assert_eq!(report["levels"], 2, "hls.js saw one rung: {report}");
    let played = report["playedLevels"].as_array().expect("playedLevels");
    assert!(
        played
            .iter()
            .all(|l| [360, 180].contains(&l["height"].as_u64().unwrap_or(0))),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_api_describes_the_channel_and_kicks_with_a_token() {
    require_peers();
    let stack = start_stack(|_| {}).await;
    let mut publisher = Publisher::start(&stack.rtmp_url("api"), "flv", "320x180");
    wait_for_segments(&stack, "api", "main", 2).await;

    let http = client();
    let status: serde_json::Value = get_json(&stack.api("/api/channels/api")).await;
    assert_eq!(status["live"], true, "{status}");
    let main = &status["renditions"][0];
    assert_eq!(main["name"], "main", "{status}");
    assert!(
        main["video_codec"]
            .as_str()
            .is_some_and(|c| c.starts_with("avc1.")),
        "{status}"
    );
    assert!(
        main["audio_codec"]
            .as_str()
            .is_some_and(|c| c.starts_with("mp4a.")),
        "{status}"
    );
    assert_eq!(
        (main["width"].as_u64(), main["height"].as_u64()),
        (Some(320), Some(180)),
        "{status}"
    );
    let fps = main["frame_rate"].as_f64().unwrap_or(0.0);
    assert!((fps - 25.0).abs() < 1.0, "frame rate {fps}: {status}");
    let gop = main["keyframe_interval"].as_f64().unwrap_or(0.0);
    assert!((gop - 2.0).abs() < 0.2, "keyframe interval {gop}: {status}");
    assert_eq!(main["publisher"]["protocol"], "rtmp", "{status}");
    let listed: serde_json::Value = get_json(&stack.api("/api/channels")).await;
    assert!(
        listed
            .as_array()
            .is_some_and(|a| a.iter().any(|c| c["name"] == "api")),
        "{listed}"
    );

    let kick = stack.api("/api/channels/api/kick");
    let refused = http.post(&kick).send().await.expect("kick");
    assert_eq!(refused.status(), 401);
    let wrong = http
        .post(&kick)
        .bearer_auth("not-the-token-at-all")
        .send()
        .await
        .expect("kick");
    assert_eq!(wrong.status(), 401);
    assert!(
        publisher.exited().is_none(),
        "refused kicks must not disconnect"
    );

    let kicked = http
        .post(&kick)
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .expect("kick");
    assert_eq!(kicked.status(), 200);
    assert!(
        publisher.wait_exit(Duration::from_secs(10)).await.is_some(),
        "ffmpeg still publishing 10 s after the kick"
    );
    let status: serde_json::Value = get_json(&stack.api("/api/channels/api")).await;
    // The channel waits for its publisher to come back; nobody publishes.
    assert_eq!(status["state"], "reconnecting", "{status}");
    assert_eq!(status["renditions"][0]["live"], false, "{status}");
    assert!(status["renditions"][0]["publisher"].is_null(), "{status}");
    // The short segment the kick cut off is not a GOP of its own.
    let gop = status["renditions"][0]["keyframe_interval"]
        .as_f64()
        .unwrap_or(0.0);
    assert!((gop - 2.0).abs() < 0.2, "keyframe interval {gop}: {status}");
}

#[test]
fn missing_peers_fail_with_an_install_hint() {
    let missing = missing_peers(
        &["strata-no-such-program"],
        &["/nonexistent/node_modules/hls.js".into()],
    );
    assert_eq!(missing.len(), 2, "{missing:?}");
    let message = install_message(&missing);
    assert!(message.contains("strata-no-such-program"), "{message}");
    assert!(
        message.contains("run scripts/install-test-deps.sh"),
        "{message}"
    );
    assert!(missing_peers(&["sh"], &[]).is_empty());
}
