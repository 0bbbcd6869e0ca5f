//! The edge's disk tier (`[cache.disk]`): warm after a restart of the
//! `strata` process, purges that reach it (before and after a restart),
//! objects larger than memory, ranges and validators on disk hits, and a
//! disk that cannot be used.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::header;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::control::ADMIN_TOKEN;
use crate::harness::{client, content, metric, start_edge, start_origin, TestOrigin};

/// A directory removed when the test ends.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("strata-disk-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// A `strata edge` process with a disk tier under `dir/cache`.
struct EdgeProcess {
    child: Option<Child>,
    port: u16,
    admin: u16,
}

impl EdgeProcess {
    async fn start(origin: &TestOrigin, dir: &Path) -> EdgeProcess {
        let (port, admin) = (free_port(), free_port());
        let config = format!(
            "[server]\nlisten = [\"127.0.0.1:{port}\"]\nadmin = \"127.0.0.1:{admin}\"\n\
             node_id = \"disk-edge\"\nadmin_token = \"{ADMIN_TOKEN}\"\n\
             [upstream]\nurls = [\"{}\"]\n\
             [cache]\nsize = \"4MiB\"\nmax_object_size = \"3MiB\"\n\
             [cache.disk]\npath = \"{}\"\nsize = \"64MiB\"\n",
            origin.url(),
            dir.join("cache").display()
        );
        let file = dir.join("edge.toml");
        std::fs::write(&file, config).expect("write config");
        let child = Command::new(env!("CARGO_BIN_EXE_strata"))
            .args(["edge", "--config"])
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn strata edge");
        let edge = EdgeProcess {
            child: Some(child),
            port,
            admin,
        };
        let health = format!("http://127.0.0.1:{admin}/healthz");
        for attempt in 0.. {
            if let Ok(r) = client().get(&health).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            assert!(attempt < 200, "the edge never answered {health}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        edge
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    async fn metrics(&self) -> String {
        let url = format!("http://127.0.0.1:{}/metrics", self.admin);
        client()
            .get(url)
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    }

    async fn purge(&self, body: Value) {
        let url = format!("http://127.0.0.1:{}/api/purge", self.admin);
        let response = client()
            .post(url)
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
            .expect("purge");
        assert_eq!(response.status(), StatusCode::OK, "{body}");
    }

    /// SIGTERM, and a clean exit.
    async fn stop(mut self) {
        let mut child = self.child.take().expect("running");
        let pid = child.id().to_string();
        let killed = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(killed.success());
        let exit = tokio::task::spawn_blocking(move || child.wait())
            .await
            .expect("join")
            .expect("wait");
        assert!(exit.success(), "SIGTERM is a clean shutdown: {exit:?}");
    }
}

impl Drop for EdgeProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Wait until the metric line starting with `prefix` reaches `at_least`.
async fn wait_for_metric(metrics: impl AsyncFn() -> String, prefix: &str, at_least: f64) {
    for attempt in 0.. {
        let text = metrics().await;
        if metric(&text, prefix).unwrap_or(0.0) >= at_least {
            return;
        }
        assert!(
            attempt < 400,
            "{prefix} never reached {at_least}:\n{}",
            text.lines()
                .filter(|l| l.contains("cache_disk"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn name_of(path: &str) -> &str {
    let path = path.split('?').next().expect("path");
    path.rsplit('/').next().expect("name")
}

fn size_of(path: &str) -> usize {
    path.split("size=")
        .nth(1)
        .and_then(|s| s.split('&').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000)
}

fn cache_status(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("cache-status")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// GET `path`, check its bytes, and return its `Cache-Status`.
async fn fetch(url: &str) -> String {
    let response = client().get(url).send().await.expect("get");
    assert_eq!(response.status(), StatusCode::OK, "{url}");
    let status = cache_status(&response);
    let body = response.bytes().await.expect("body");
    let path = url
        .split_once("/obj/")
        .map(|(_, p)| p)
        .expect("an /obj/ url");
    assert!(
        body == content(name_of(path), size_of(path)),
        "{url}: wrong bytes"
    );
    status
}

const HOUR: &str = "cc=max-age%3D3600";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_edge_serves_from_its_disk_without_the_upstream() {
    let origin = start_origin().await;
    let dir = TempDir::new("restart");
    let plain = format!("/obj/warm-plain.m4s?size=2097152&{HOUR}");
    let ranged = format!("/obj/warm-range.m4s?size=1500000&{HOUR}");
    let validated = format!("/obj/warm-etag.m4s?size=400000&etag=v7&{HOUR}");
    let edge = EdgeProcess::start(&origin, &dir.0).await;
    for path in [&plain, &ranged, &validated] {
        fetch(&edge.url(path)).await;
    }
    wait_for_metric(
        async || edge.metrics().await,
        "strata_edge_cache_disk_writes_total",
        3.0,
    )
    .await;
    edge.stop().await;

    let edge = EdgeProcess::start(&origin, &dir.0).await;
    let status = fetch(&edge.url(&plain)).await;
    assert!(status.contains("hit; detail=disk"), "{status}");
    // A Range request answered from disk.
    let response = client()
        .get(edge.url(&ranged))
        .header(header::RANGE, "bytes=1000-1999")
        .send()
        .await
        .expect("range");
    assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        response.headers()[header::CONTENT_RANGE],
        "bytes 1000-1999/1500000"
    );
    let status = cache_status(&response);
    assert!(status.contains("hit; detail=disk"), "{status}");
    let body = response.bytes().await.expect("body");
    assert!(body == content("warm-range.m4s", 1_500_000).slice(1000..2000));
    // A conditional request answered from disk, with the stored ETag.
    let response = client()
        .get(edge.url(&validated))
        .header(header::IF_NONE_MATCH, "\"v7\"")
        .send()
        .await
        .expect("conditional");
    assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(response.headers()[header::ETAG], "\"v7\"");
    let status = cache_status(&response);
    assert!(status.contains("hit; detail=disk"), "{status}");
    // The age carried over the restart.
    let response = client()
        .get(edge.url(&validated))
        .send()
        .await
        .expect("get");
    assert!(response.headers().contains_key(header::AGE));
    assert!(
        cache_status(&response).contains("hit"),
        "{}",
        cache_status(&response)
    );

    for path in [&plain, &ranged, &validated] {
        let name = format!("/obj/{}", name_of(path));
        assert_eq!(
            origin.state.hits(&name),
            1,
            "{name}: one upstream fetch in all"
        );
    }
    let text = edge.metrics().await;
    assert_eq!(
        metric(&text, "strata_edge_cache_disk_hits_total"),
        Some(3.0)
    );
    assert_eq!(metric(&text, "strata_edge_cache_disk_up"), Some(1.0));
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purges_reach_the_disk_tier_before_and_after_a_restart() {
    let origin = start_origin().await;
    let dir = TempDir::new("purge");
    let path = |name: &str| format!("/obj/{name}?size=5000&{HOUR}");
    let before = [
        path("url-1.m4s"),
        path("pfx1-a.m4s"),
        format!("/obj/tag-1.m4s?size=5000&skey=t-one&{HOUR}"),
    ];
    let after = [
        path("url-2.m4s"),
        path("pfx2-a.m4s"),
        format!("/obj/tag-2.m4s?size=5000&skey=t-two&{HOUR}"),
    ];
    let keep = path("keep.m4s");
    let edge = EdgeProcess::start(&origin, &dir.0).await;
    for p in before.iter().chain(&after).chain([&keep]) {
        fetch(&edge.url(p)).await;
    }
    wait_for_metric(
        async || edge.metrics().await,
        "strata_edge_cache_disk_writes_total",
        7.0,
    )
    .await;
    // Purged while the first process runs: it must stay purged on disk.
    edge.purge(json!({ "urls": [before[0]] })).await;
    edge.purge(json!({ "prefix": "/obj/pfx1-" })).await;
    edge.purge(json!({ "surrogate_keys": ["t-one"] })).await;
    edge.stop().await;

    let edge = EdgeProcess::start(&origin, &dir.0).await;
    // Purged after the restart, with the objects on disk only.
    edge.purge(json!({ "urls": [after[0]] })).await;
    edge.purge(json!({ "prefix": "/obj/pfx2-" })).await;
    edge.purge(json!({ "surrogate_keys": ["t-two"] })).await;
    for p in before.iter().chain(&after) {
        let status = fetch(&edge.url(p)).await;
        assert!(status.contains("fwd=miss"), "{p}: {status}");
        let name = format!("/obj/{}", name_of(p));
        assert_eq!(origin.state.hits(&name), 2, "{name} was fetched again");
    }
    let status = fetch(&edge.url(&keep)).await;
    assert!(status.contains("hit; detail=disk"), "{status}");
    assert_eq!(origin.state.hits("/obj/keep.m4s"), 1);
    let text = edge.metrics().await;
    assert!(
        metric(&text, "strata_edge_cache_disk_purged_total").unwrap_or(0.0) >= 4.0,
        "prefix and tag purges are judged at lookup"
    );
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_larger_than_memory_is_served_from_disk() {
    let origin = start_origin().await;
    let dir = TempDir::new("large");
    let cache = dir.0.join("cache");
    let edge = start_edge(&[origin.url()], "disk-large", |c| {
        c.cache.size = strata::config::ByteSize(1 << 20);
        c.cache.max_object_size = strata::config::ByteSize(3 << 20);
        c.cache.disk = Some(strata::cache::disk::DiskConfig {
            path: cache,
            size: strata::config::ByteSize(64 << 20),
        });
    })
    .await;
    let url = edge.url(&format!("/obj/large.m4s?size=3000000&{HOUR}"));
    let status = fetch(&url).await;
    assert!(status.contains("fwd=miss"), "{status}");
    wait_for_metric(
        async || edge.metrics().await,
        "strata_edge_cache_disk_writes_total",
        1.0,
    )
    .await;
    for _ in 0..2 {
        let status = fetch(&url).await;
        assert!(status.contains("hit; detail=disk"), "{status}");
    }
    assert_eq!(origin.state.hits("/obj/large.m4s"), 1);
    let text = edge.metrics().await;
    assert_eq!(
        metric(&text, "strata_edge_cache_objects"),
        Some(0.0),
        "never in memory"
    );
    assert!(metric(&text, "strata_edge_cache_disk_hit_bytes_total") >= Some(6_000_000.0));
    edge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_disk_path_still_serves_everything_from_upstream() {
    let origin = start_origin().await;
    let dir = TempDir::new("unusable");
    // A path under a regular file can never be created.
    let file = dir.0.join("not-a-dir");
    std::fs::write(&file, b"x").expect("file");
    let edge = start_edge(&[origin.url()], "disk-broken", |c| {
        c.cache.disk = Some(strata::cache::disk::DiskConfig {
            path: file.join("cache"),
            size: strata::config::ByteSize(1 << 30),
        });
    })
    .await;
    let paths: Vec<String> = (0..3)
        .map(|i| format!("/obj/broken-{i}.m4s?size=20000&{HOUR}"))
        .collect();
    for path in &paths {
        let status = fetch(&edge.url(path)).await;
        assert!(status.contains("fwd=miss"), "{status}");
        // Memory still caches it.
        let status = fetch(&edge.url(path)).await;
        assert!(status.contains("hit"), "{status}");
    }
    let text = edge.metrics().await;
    assert_eq!(
        metric(&text, "strata_edge_cache_disk_errors_total{op=\"open\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &text,
            "strata_edge_cache_disk_dropped_total{reason=\"unavailable\"}"
        ),
        Some(3.0),
        "every object the disk should have kept is counted"
    );
    assert_eq!(metric(&text, "strata_edge_cache_disk_up"), Some(0.0));
    edge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_herd_costs_one_upstream_fetch_and_then_reads_the_disk() {
    let origin = start_origin().await;
    let dir = TempDir::new("herd");
    let cache = dir.0.join("cache");
    let edge = start_edge(&[origin.url()], "disk-herd", |c| {
        c.cache.size = strata::config::ByteSize(1 << 20);
        c.cache.max_object_size = strata::config::ByteSize(3 << 20);
        c.cache.disk = Some(strata::cache::disk::DiskConfig {
            path: cache,
            size: strata::config::ByteSize(64 << 20),
        });
    })
    .await;
    // A slow body (64 KiB every 20 ms): the herd arrives while it fills.
    let url = edge.url(&format!("/obj/herd.m4s?size=2000000&delay=20&{HOUR}"));
    let statuses = futures::future::join_all((0..20).map(|_| fetch(&url))).await;
    assert_eq!(origin.state.hits("/obj/herd.m4s"), 1, "{statuses:?}");
    wait_for_metric(
        async || edge.metrics().await,
        "strata_edge_cache_disk_writes_total",
        1.0,
    )
    .await;
    // Too large for memory: every one of the next herd reads the disk.
    let statuses = futures::future::join_all((0..20).map(|_| fetch(&url))).await;
    for status in &statuses {
        assert!(status.contains("hit; detail=disk"), "{status}");
    }
    assert_eq!(origin.state.hits("/obj/herd.m4s"), 1);
    edge.shutdown().await;
}
