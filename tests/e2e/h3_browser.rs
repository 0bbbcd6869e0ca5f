//! Chromium, forced onto QUIC for the edge's origin, plays a live stream with
//! hls.js over HTTP/3, and the edge's metrics show the requests came over h3.

use crate::harness::{metric, TestCert};
use crate::stack::{
    require_peers, start_play_with, start_stack_with, wait_for_segments, Publisher,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_plays_hls_over_http3_through_the_edge() {
    require_peers();
    let cert = TestCert::for_browser();
    let certificate = cert.config.clone();
    let stack = start_stack_with(|_| {}, |c| c.server.certificates = vec![certificate]).await;
    let publisher = Publisher::start(&stack.rtmp_url("quic"), "flv", "320x180");
    wait_for_segments(&stack, "quic", "main", 2).await;
    let port = stack.edge.quic.expect("edge serves HTTP/3").port();
    let url = format!("https://127.0.0.1:{port}/live/quic/master.m3u8");
    let extra = vec![
        "--h3".to_owned(),
        format!("127.0.0.1:{port}"),
        "--h3-cert".to_owned(),
        cert.config.cert.display().to_string(),
    ];
    let report = start_play_with("hls", &url, 8, &extra).await.finish().await;
    let h3 = report["protocols"]["h3"].as_u64().unwrap_or(0);
    assert!(h3 > 0, "Chromium fetched over HTTP/3: {report}");
    assert_eq!(
        report["protocols"]
            .get("http/1.1")
            .and_then(|v| v.as_u64())
            .unwrap_or(0),
        0,
        "{report}"
    );
    let metrics = stack.edge.metrics().await;
    let served = metric(
        &metrics,
        "strata_edge_requests_total{status=\"2xx\",cache=\"miss\",protocol=\"h3\"}",
    )
    .unwrap_or(0.0)
        + metric(
            &metrics,
            "strata_edge_requests_total{status=\"2xx\",cache=\"hit\",protocol=\"h3\"}",
        )
        .unwrap_or(0.0)
        + metric(
            &metrics,
            "strata_edge_requests_total{status=\"2xx\",cache=\"collapsed\",protocol=\"h3\"}",
        )
        .unwrap_or(0.0);
    assert!(
        served >= 3.0,
        "the edge counted the player's requests under protocol=\"h3\":\n{metrics}"
    );
    publisher.stop().await;
}
