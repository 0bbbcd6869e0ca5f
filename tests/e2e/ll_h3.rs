//! LL-HLS over HTTP/3: Chromium, forced onto QUIC for the edge's origin,
//! plays an LL channel (`store.part_target = "0.5s"`) with hls.js
//! (low-latency mode, its default) through an edge: its blocking playlist
//! reloads and its parts come over h3, and the edge counts them under
//! `protocol="h3"`.

use std::time::Duration;

use crate::harness::{metric, TestCert};
use crate::stack::{require_peers, start_play_with, start_stack_with, wait_for_body, Publisher};

/// The edge's 2xx answers over h3, whatever their cache outcome.
fn h3_answers(metrics: &str) -> f64 {
    ["miss", "hit", "collapsed"]
        .iter()
        .filter_map(|cache| {
            metric(
                metrics,
                &format!(
                    "strata_edge_requests_total{{status=\"2xx\",cache=\"{cache}\",protocol=\"h3\"}}"
                ),
            )
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hls_js_plays_ll_hls_over_http3_through_an_edge() {
    require_peers();
    let cert = TestCert::for_browser();
    let certificate = cert.config.clone();
    let stack = start_stack_with(
        |c| c.store.part_target = Duration::from_millis(500),
        |c| c.server.certificates = vec![certificate],
    )
    .await;
    let publisher = Publisher::start(&stack.rtmp_url("llquic"), "flv", "640x360");
    wait_for_body(
        &stack.origin("/live/llquic/main/video.m3u8"),
        "an LL playlist",
        Duration::from_secs(30),
        |b| b.contains("#EXT-X-PRELOAD-HINT"),
    )
    .await;
    let port = stack.edge.quic.expect("edge serves HTTP/3").port();
    let master = format!("https://127.0.0.1:{port}/live/llquic/master.m3u8");
    let extra = vec![
        "--h3".to_owned(),
        format!("127.0.0.1:{port}"),
        "--h3-cert".to_owned(),
        cert.config.cert.display().to_string(),
        "--verbose".to_owned(),
    ];
    let before = h3_answers(&stack.edge.metrics().await);
    let (report, log) = start_play_with("hls", &master, 20, &extra)
        .await
        .finish_with_log()
        .await;
    let latency = &report["playerLatency"];
    println!(
        "hls.js over h3 through the edge, part_target 0.5s: latency {latency}, report {report}"
    );
    // Every media response came over h3 (the first may race QUIC's
    // handshake on h2 through Alt-Svc; none over HTTP/1.1).
    let h3 = report["protocols"]["h3"].as_u64().unwrap_or(0);
    assert!(h3 >= 20, "Chromium fetched over HTTP/3: {report}");
    assert_eq!(
        report["protocols"]
            .get("http/1.1")
            .and_then(|v| v.as_u64())
            .unwrap_or(0),
        0,
        "{report}"
    );
    let over_h3 = |l: &&str| l.contains(" response h3 200 ");
    let blocking = log
        .lines()
        .filter(over_h3)
        .filter(|l| l.contains("_HLS_msn="))
        .count();
    let parts = log
        .lines()
        .filter(over_h3)
        .filter(|l| {
            l.rsplit('/')
                .next()
                .and_then(|f| f.strip_suffix(".m4s"))
                .is_some_and(|f| f.contains('.'))
        })
        .count();
    assert!(
        blocking >= 10 && parts >= 10,
        "hls.js played low latency over h3: {blocking} blocking reloads, {parts} parts"
    );
    let served = h3_answers(&stack.edge.metrics().await) - before;
    assert!(
        served >= (blocking + parts) as f64,
        "the edge counted the player's requests under protocol=\"h3\" ({served})"
    );
    publisher.stop().await;
}
