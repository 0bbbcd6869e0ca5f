//! VOD end to end at the origin: ffmpeg makes an MP4 (two H.264 renditions
//! and AAC), the origin packages it under `/vod/`, Python's `m3u8` parses the
//! playlists independently, and ffmpeg decodes the HLS and DASH outputs.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use strata_origin::config::OriginConfig;
use strata_origin::server::{OriginListeners, RunOptions};
use strata_origin::vod::VodConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use crate::support::FFMPEG;

const SECONDS: f64 = 12.0;

/// A scratch library, removed on drop.
pub(crate) struct Library(pub(crate) PathBuf);

impl Drop for Library {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `{root}/films/two.mp4`: 12 s of 640x360 and 320x180 H.264 (24 fps, GOP 2 s,
/// B-frames) and 48 kHz AAC, as a progressive MP4 with `moov` at the end.
async fn make_library(name: &str) -> Library {
    assert!(
        Path::new(FFMPEG).exists(),
        "install ffmpeg: apt-get install ffmpeg"
    );
    let root = std::env::temp_dir().join(format!("strata-vod-e2e-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("films")).expect("library dir");
    let out = Command::new(FFMPEG)
        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=24"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-t", &SECONDS.to_string()])
        .args([
            "-filter_complex",
            "[0:v]split=2[hi][x];[x]scale=320:180[lo]",
        ])
        .args(["-map", "[hi]", "-map", "[lo]", "-map", "1:a"])
        .args([
            "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
        ])
        .args(["-g", "48", "-keyint_min", "48", "-sc_threshold", "0"])
        .args(["-c:a", "aac", "-b:a", "64k"])
        .arg(root.join("films/two.mp4"))
        .stdin(Stdio::null())
        .output()
        .await
        .expect("install ffmpeg: apt-get install ffmpeg");
    assert!(
        out.status.success(),
        "ffmpeg could not make the fixture: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The same media as a fragmented MP4 (moof per keyframe), as a packager
    // or a recorder leaves it.
    let out = Command::new(FFMPEG)
        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-i"])
        .arg(root.join("films/two.mp4"))
        .args(["-map", "0", "-c", "copy"])
        .args(["-movflags", "frag_keyframe+empty_moov+default_base_moof"])
        .arg(root.join("films/fragmented.mp4"))
        .stdin(Stdio::null())
        .output()
        .await
        .expect("install ffmpeg: apt-get install ffmpeg");
    assert!(
        out.status.success(),
        "ffmpeg could not fragment the fixture: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Library(root)
}

/// Runs an origin with `[vod] root` on loopback; returns its playback address
/// and admin address, and a sender that stops it.
pub(crate) async fn start_origin(
    root: &Path,
) -> (
    std::net::SocketAddr,
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
) {
    let tcp = || std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let (http, admin) = (tcp(), tcp());
    let (http_addr, admin_addr) = (
        http.local_addr().expect("addr"),
        admin.local_addr().expect("addr"),
    );
    let mut config = OriginConfig::default();
    config.ingest.allow_anonymous = true;
    config.server.http = http_addr;
    config.server.admin = Some(admin_addr);
    config.vod = Some(VodConfig {
        root: Some(root.to_owned()),
        segment_duration: Duration::from_secs(4),
        index_cache_entries: 16,
        index_cache_bytes: 64 << 20,
        max_moov_bytes: 16 << 20,
        encryption: Default::default(),
        remote: Vec::new(),
        thumbnails: Default::default(),
    });
    let listeners = OriginListeners {
        http,
        admin: Some(admin),
        rtmp: None,
        srt: None,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        strata_origin::server::run(config, listeners, RunOptions::default(), async move {
            let _ = stopped.await;
        })
        .await
        .expect("origin run");
    });
    (http_addr, admin_addr, stop)
}

/// A plain HTTP/1.0 GET: status and body.
pub(crate) async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, Vec<u8>) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .expect("request");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("response");
    let head_end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("response head");
    let head = String::from_utf8_lossy(&response[..head_end]);
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    (status, response[head_end + 4..].to_vec())
}

/// Decodes `url` to the end with ffmpeg; returns the decoded duration (s).
pub(crate) async fn decoded_seconds(url: &str) -> f64 {
    let out = Command::new(FFMPEG)
        .args(["-hide_banner", "-nostdin", "-v", "error", "-i", url])
        .args(["-progress", "pipe:1", "-f", "null", "-"])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), out)
        .await
        .unwrap_or_else(|_| panic!("ffmpeg decode of {url} did not finish"))
        .expect("ffmpeg runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ffmpeg failed on {url}: {stderr}");
    assert!(
        stderr.trim().is_empty(),
        "ffmpeg reported errors decoding {url}:\n{stderr}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("out_time_us="))
        .filter_map(|v| v.trim().parse::<f64>().ok())
        .next_back()
        .expect("ffmpeg progress")
        / 1e6
}

/// ffmpeg decodes the title's HLS and DASH outputs to the end, and each
/// lasts as long as the source.
async fn assert_hls_and_dash_decode_whole(base: &str) {
    for url in [
        format!("{base}/master.m3u8"),
        format!("{base}/manifest.mpd"),
    ] {
        let seconds = decoded_seconds(&url).await;
        assert!(
            (seconds - SECONDS).abs() < 0.5,
            "{url}: decoded {seconds} s of {SECONDS}"
        );
    }
}

fn python() -> String {
    std::env::var("STRATA_PYTHON")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../.venv/bin/python").to_owned())
}

/// Python `m3u8` (an independent parser) loads the master playlist and every
/// media playlist it names, and reports what it found as JSON.
async fn parse_with_m3u8(url: &str) -> serde_json::Value {
    const SCRIPT: &str = r#"
import json, sys, m3u8
master = m3u8.load(sys.argv[1])
out = {"variant": master.is_variant, "variants": [], "audio": []}
for p in master.playlists:
    media = m3u8.load(p.absolute_uri)
    out["variants"].append({
        "resolution": list(p.stream_info.resolution or []),
        "codecs": p.stream_info.codecs,
        "type": media.playlist_type, "endlist": media.is_endlist,
        "map": media.segment_map[0].uri if media.segment_map else None,
        "seconds": sum(s.duration for s in media.segments),
        "segments": len(media.segments),
        "target": media.target_duration,
        "longest": max(s.duration for s in media.segments),
    })
for m in master.media:
    media = m3u8.load(m.absolute_uri)
    out["audio"].append({"language": m.language, "type": media.playlist_type,
        "endlist": media.is_endlist, "seconds": sum(s.duration for s in media.segments)})
print(json.dumps(out))
"#;
    run_m3u8_script(SCRIPT, url).await
}

/// Runs a Python script that prints JSON with `url` as its argument.
pub(crate) async fn run_m3u8_script(script: &str, url: &str) -> serde_json::Value {
    let out = Command::new(python())
        .args(["-c", script, url])
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run python: scripts/install-test-deps.sh makes .venv");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "python m3u8 failed on {url} (pip install -r tests/requirements.txt into .venv): {stderr}"
    );
    serde_json::from_slice(&out.stdout).expect("JSON from the m3u8 script")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vod_mp4_plays_as_hls_and_dash() {
    crate::support::init_logs();
    let library = make_library("play").await;
    let (addr, admin, _stop) = start_origin(&library.0).await;
    let base = format!("http://{addr}/vod/films/two.mp4");

    let parsed = parse_with_m3u8(&format!("{base}/master.m3u8")).await;
    assert_eq!(parsed["variant"], true, "{parsed}");
    let variants = parsed["variants"].as_array().expect("variants");
    assert_eq!(variants.len(), 2, "two renditions: {parsed}");
    let resolutions: Vec<_> = variants.iter().map(|v| v["resolution"].clone()).collect();
    assert!(
        resolutions.contains(&serde_json::json!([640, 360]))
            && resolutions.contains(&serde_json::json!([320, 180])),
        "{parsed}"
    );
    for v in variants
        .iter()
        .chain(parsed["audio"].as_array().expect("audio"))
    {
        assert_eq!(v["type"], "vod", "{v}");
        assert_eq!(v["endlist"], true, "{v}");
        let seconds = v["seconds"].as_f64().expect("seconds");
        assert!((seconds - SECONDS).abs() < 0.1, "{seconds} s listed: {v}");
    }
    for v in variants {
        assert!(
            v["codecs"]
                .as_str()
                .is_some_and(|c| c.starts_with("avc1.") && c.ends_with(",mp4a.40.2")),
            "{v}"
        );
        // 2 s GOPs, 4 s target: three 4 s segments, none past the target duration.
        assert_eq!(v["segments"], 3, "{v}");
        assert!(
            v["longest"].as_f64().expect("longest") <= v["target"].as_f64().expect("target") + 0.5
        );
        assert!(
            v["map"].as_str().is_some_and(|m| m.ends_with("/init.mp4")),
            "{v}"
        );
    }
    assert_eq!(
        parsed["audio"].as_array().map(Vec::len),
        Some(1),
        "{parsed}"
    );

    let (status, mpd) = get(addr, "/vod/films/two.mp4/manifest.mpd").await;
    assert_eq!(status, 200);
    let mpd = String::from_utf8(mpd).expect("utf-8");
    assert!(
        mpd.contains("type=\"static\"") && mpd.contains("mediaPresentationDuration=\"PT12.0"),
        "{mpd}"
    );

    assert_hls_and_dash_decode_whole(&base).await;

    // A fragmented MP4 of the same media: the same playlists, the same decode.
    let fragmented = format!("http://{addr}/vod/films/fragmented.mp4");
    let parsed_fragmented = parse_with_m3u8(&format!("{fragmented}/master.m3u8")).await;
    assert_eq!(
        parsed_fragmented["variants"], parsed["variants"],
        "{parsed_fragmented}"
    );
    assert_hls_and_dash_decode_whole(&fragmented).await;

    let (status, metrics) = get(admin, "/metrics").await;
    assert_eq!(status, 200);
    let metrics = String::from_utf8(metrics).expect("utf-8");
    assert!(
        metrics.contains("strata_origin_vod_index_cache_total{event=\"miss\"} 2\n"),
        "each title parsed once: {metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_vod_requests_get_a_reason_and_a_count() {
    crate::support::init_logs();
    let library = make_library("bad").await;
    let outside = library.0.with_extension("outside.mp4");
    std::fs::copy(library.0.join("films/two.mp4"), &outside).expect("copy");
    std::os::unix::fs::symlink(&outside, library.0.join("films/link.mp4")).expect("symlink");
    let good = std::fs::read(library.0.join("films/two.mp4")).expect("read");
    std::fs::write(library.0.join("films/short.mp4"), &good[..good.len() / 2]).expect("write");
    std::fs::write(library.0.join("films/text.mp4"), b"not an mp4 at all").expect("write");
    let (addr, admin, _stop) = start_origin(&library.0).await;

    for (path, status, reason) in [
        (
            "/vod/films/../../etc/passwd.mp4/master.m3u8",
            400,
            "bad VOD path",
        ),
        (
            "/vod/films/%2e%2e/%2e%2e/x.mp4/master.m3u8",
            400,
            "bad VOD path",
        ),
        (
            "/vod/films/%252e%252e/x.mp4/master.m3u8",
            400,
            "bad VOD path",
        ),
        ("/vod/films/link.mp4/master.m3u8", 404, "not found"),
        ("/vod/films/none.mp4/master.m3u8", 404, "not found"),
        ("/vod/films/short.mp4/master.m3u8", 500, "corrupt MP4"),
        ("/vod/films/text.mp4/master.m3u8", 500, "corrupt MP4"),
        ("/vod/films/two.mp4/t1/99.m4s", 404, "not found"),
    ] {
        let (got, body) = get(addr, path).await;
        let body = String::from_utf8_lossy(&body);
        assert_eq!(got, status, "{path}: {body}");
        assert!(body.starts_with(reason), "{path}: {body}");
    }
    let (_, metrics) = get(admin, "/metrics").await;
    let metrics = String::from_utf8(metrics).expect("utf-8");
    for line in [
        "strata_origin_vod_errors_total{reason=\"bad_path\"} 3",
        "strata_origin_vod_errors_total{reason=\"outside_root\"} 1",
        "strata_origin_vod_errors_total{reason=\"corrupt\"} 2",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
    assert!(crate::support::logged_lines()
        .iter()
        .any(|l| l.contains("VOD title cannot be packaged") && l.contains("short.mp4")));
    let _ = std::fs::remove_file(outside);
}
