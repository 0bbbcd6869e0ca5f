//! The Grafana dashboards in grafana/ only chart metrics the running edge and
//! origin really export, so they cannot rot silently.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::harness::client;
use crate::stack::{require_peers, start_stack, wait_for_segments, Publisher};

/// Family names from `# TYPE name kind` lines.
fn exported(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// `strata_…` names in a dashboard's queries, without sample suffixes.
fn charted(dashboard: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = dashboard;
    while let Some(at) = rest.find("strata_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let family = ["_total", "_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        names.insert(family.to_owned());
        rest = &tail[end..];
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboards_chart_only_exported_metrics() {
    require_peers();
    let stack = start_stack(|_| {}).await;
    // Families appear once they have a sample: publish, play a little, err once.
    let publisher = Publisher::start(&stack.rtmp_url("dash"), "flv", "320x180");
    wait_for_segments(&stack, "dash", "main", 1).await;
    for path in [
        "/live/dash/master.m3u8",
        // A player with CMCD on: the QoE families get their first samples.
        "/live/dash/master.m3u8?CMCD=bl%3D4000%2Cbr%3D800%2Cdl%3D3000%2Cmtp%3D9000%2Cot%3Dv%2Csf%3Dh%2Csid%3D%22d%22%2Csu",
        "/live/nope/master.m3u8",
    ] {
        client()
            .get(stack.edge(path))
            .send()
            .await
            .expect("request");
    }
    client()
        .post(stack.edge("/live/dash/master.m3u8"))
        .send()
        .await
        .expect("405");
    client()
        .get(stack.origin("/live/dash/manifest.mpd"))
        .send()
        .await
        .expect("origin request");
    publisher.stop().await;
    let edge = exported(&stack.edge.metrics().await);
    // The origin counts the publisher's disconnect when its connection task
    // sees the close, a moment after `stop` returns: wait for that family
    // (bounded; if it never comes, the assertion below names it).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let origin_text = loop {
        let text = client()
            .get(stack.api("/metrics"))
            .send()
            .await
            .expect("origin metrics")
            .text()
            .await
            .expect("text");
        if text.contains("strata_origin_ingest_publisher_disconnects")
            || tokio::time::Instant::now() > deadline
        {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let origin = exported(&origin_text);
    let root = env!("CARGO_MANIFEST_DIR");
    for (file, have) in [
        ("grafana/strata-edge.json", &edge),
        ("grafana/strata-origin.json", &origin),
        ("grafana/strata-qoe.json", &edge),
    ] {
        let text = std::fs::read_to_string(format!("{root}/{file}")).expect("dashboard");
        let _: serde_json::Value = serde_json::from_str(&text).expect("dashboard is JSON");
        let wanted = charted(&text);
        assert!(wanted.len() >= 5, "{file} charts something: {wanted:?}");
        let missing: Vec<_> = wanted.difference(have).collect();
        assert!(
            missing.is_empty(),
            "{file} charts metrics nobody exports: {missing:?}\nexported: {have:?}"
        );
    }
}
