//! Shaka Player in low-latency mode (`streaming.lowLatencyMode`, its
//! documented switch, which a site playing LL streams sets: play.mjs
//! `--low-latency`) plays LL-HLS and LL-DASH from an origin with
//! `store.part_target = "0.5s"` through a shield and an edge: LL-HLS by
//! parts, LL-DASH by chunked segments, no stall.

use std::time::Duration;

use crate::harness::start_edge;
use crate::stack::{require_peers, start_play_with, start_stack, wait_for_body, Publisher};

/// play.mjs flags: Shaka's low-latency mode, and the response log.
fn low_latency() -> Vec<String> {
    vec!["--low-latency".to_owned(), "--verbose".to_owned()]
}

/// Successful responses in a play.mjs `--verbose` log whose file name
/// satisfies `file`.
fn responses(log: &str, file: impl Fn(&str) -> bool) -> usize {
    log.lines()
        .filter(|l| l.contains(" response ") && l.contains(" 200 "))
        .filter(|l| l.rsplit('/').next().is_some_and(&file))
        .count()
}

/// `123.4.m4s` (query aside): an LL-HLS part.
fn is_part(file: &str) -> bool {
    let file = file.split('?').next().unwrap_or(file);
    file.strip_suffix(".m4s")
        .and_then(|f| f.split_once('.'))
        .is_some_and(|(msn, part)| {
            [msn, part]
                .iter()
                .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shaka_plays_ll_hls_and_ll_dash_through_shield_and_edge_in_low_latency_mode() {
    require_peers();
    let stack = start_stack(|c| c.store.part_target = Duration::from_millis(500)).await;
    let shield = start_edge(&[stack.origin("")], "shaka-shield", |_| {}).await;
    let edge = start_edge(&[shield.url("")], "shaka-edge", |_| {}).await;
    let publisher = Publisher::start(&stack.rtmp_url("llshaka"), "flv", "640x360");
    wait_for_body(
        &edge.url("/live/llshaka/main/video.m3u8"),
        "an LL playlist through both tiers",
        Duration::from_secs(30),
        |b| b.contains("#EXT-X-PRELOAD-HINT"),
    )
    .await;

    // LL-HLS: Shaka fetches parts, not only whole segments.
    let (report, log) = start_play_with(
        "shaka",
        &edge.url("/live/llshaka/master.m3u8"),
        20,
        &low_latency(),
    )
    .await
    .finish_with_log()
    .await;
    let parts = responses(&log, is_part);
    let blocking = log
        .lines()
        .filter(|l| l.contains(" response ") && l.contains("_HLS_msn="))
        .count();
    println!(
        "Shaka, LL-HLS through shield + edge: {parts} parts, {blocking} blocking reloads, wall latency {}, report {report}",
        report["wallLatency"]
    );
    assert!(parts >= 10, "Shaka loaded {parts} LL-HLS parts");

    // LL-DASH: Shaka fetches the chunked segments as they are cut.
    let (report, log) = start_play_with(
        "shaka",
        &edge.url("/live/llshaka/manifest.mpd"),
        20,
        &low_latency(),
    )
    .await
    .finish_with_log()
    .await;
    let chunked = responses(&log, |f| f.ends_with("-ll.m4s"));
    println!(
        "Shaka, LL-DASH through shield + edge: {chunked} chunked segments, wall latency {}, report {report}",
        report["wallLatency"]
    );
    assert!(chunked >= 5, "Shaka loaded {chunked} LL-DASH segments");

    publisher.stop().await;
    edge.shutdown().await;
    shield.shutdown().await;
}

#[test]
fn tells_parts_from_segments() {
    assert!(is_part("123.4.m4s"));
    assert!(is_part("123.0.m4s?x=1"));
    assert!(!is_part("123.m4s"));
    assert!(!is_part("123-ll.m4s"));
    assert!(!is_part("init-5.mp4"));
}
