//! Issue 11: the `strata edge` process (its real allocator, mimalloc) holds
//! no more than its cache size plus 100 MB after far more than that passed
//! through it, and its cache reports no more than its size. A memory bound,
//! not a speed one: the debug build holds the same buffers as the release.
//! What is asserted is the anonymous RSS (`RssAnon`): the debug executable's
//! own mapped pages (~30 MiB, ~3x the release's) are not the cache's doing.
//! Figures for the release build, total RSS: `benches/load/memory.py`.

use std::process::Stdio;
use std::time::Duration;

use futures::StreamExt;

use crate::harness::{client, metric, start_origin};

const MIB: u64 = 1024 * 1024;
const CACHE: u64 = 64 * MIB;
const OBJECT: u64 = 2 * MIB;
/// 800 MB through the edge: twelve times its cache.
const OBJECTS: u64 = 400;

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// A field of `/proc/PID/status` in bytes (`VmRSS`, `VmHWM`).
fn status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or_else(|| panic!("{field} missing from:\n{status}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rss_stays_within_the_cache_size_plus_100_mb() {
    let origin = start_origin().await;
    let (port, admin) = (free_port(), free_port());
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_strata"))
        .args([
            "edge",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--admin",
            &format!("127.0.0.1:{admin}"),
            "--upstream",
            &origin.url(),
            "--cache-size",
            "64MiB",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn strata edge");
    let pid = child.id().expect("pid");
    let http = client();
    let mut up = false;
    for _ in 0..300 {
        let url = format!("http://127.0.0.1:{port}/obj/warm?size=10");
        if http.get(&url).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "the edge never answered");
    let start = status_bytes(pid, "VmRSS");

    let sizes: Vec<u64> = futures::stream::iter(0..OBJECTS)
        .map(|i| {
            let http = http.clone();
            async move {
                let url = format!(
                    "http://127.0.0.1:{port}/obj/mem-{i}.m4s?size={OBJECT}&cc=max-age%3D600"
                );
                let response = http.get(&url).send().await.expect("request");
                assert_eq!(response.status(), 200, "{url}");
                response.bytes().await.expect("body").len() as u64
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    assert!(sizes.iter().all(|&n| n == OBJECT), "every body complete");

    // The edge's own figure first (a scrape lets moka apply what is pending,
    // as any later request would), then the process's.
    let metrics = http
        .get(format!("http://127.0.0.1:{admin}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    let cached = metric(&metrics, "strata_edge_cache_bytes").expect("cache_bytes");
    let objects = metric(&metrics, "strata_edge_cache_objects").expect("cache_objects");
    let rss = status_bytes(pid, "VmRSS");
    let anon = status_bytes(pid, "RssAnon");
    let peak = status_bytes(pid, "VmHWM");
    let figures = format!(
        "cache {:.1} MiB in {objects} objects; RSS {:.1} MiB, anonymous {:.1} MiB \
         (RSS at start {:.1} MiB, peak {:.1} MiB)",
        cached / MIB as f64,
        rss as f64 / MIB as f64,
        anon as f64 / MIB as f64,
        start as f64 / MIB as f64,
        peak as f64 / MIB as f64,
    );
    println!("{figures}");
    assert!(
        cached <= CACHE as f64,
        "the cache outgrew its size: {figures}"
    );
    assert!(
        objects >= 10.0,
        "the cache kept what it could hold: {figures}"
    );
    let bound = CACHE + 100 * 1000 * 1000;
    assert!(
        anon <= bound,
        "anonymous RSS above the cache size + 100 MB ({:.1} MiB): {figures}",
        bound as f64 / MIB as f64
    );
    drop(child);
}
