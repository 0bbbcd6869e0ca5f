//! VOD from a remote store: an MP4 kept behind an HTTP range server (an
//! S3 stand-in, in this process, counting every byte it sends) packaged by
//! the origin under `/vod/{prefix}/…` and played through an edge by hls.js;
//! the store's failures become clear statuses; thumbnails decode.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, Request, StatusCode};
use axum::response::Response;
use bytes::Bytes;

use crate::harness::{client, metric};
use crate::stack::{assert_plays, require_peers, start_stack};

/// One request the store answered.
#[derive(Clone, Debug)]
struct Served {
    key: String,
    range: Option<String>,
    bytes: u64,
}

/// An object store answering `GET /bucket/{key}` with `Range` and
/// `If-Match`, like S3. Keys named `fail-…` always answer 503, `flaky-…`
/// answer 503 once, `slow-…` stall, `cut-…` break off half way, `whole-…`
/// ignore `Range`.
#[derive(Default)]
struct Store {
    objects: Mutex<HashMap<String, (Bytes, String)>>,
    log: Mutex<Vec<Served>>,
    bytes: AtomicU64,
    flaky: AtomicU32,
    /// When set, every request must carry a valid SigV4 `Authorization`
    /// by this secret (checked as S3 does: recomputed over the signed
    /// headers as received), else 403.
    s3_secret: Mutex<Option<String>>,
    /// Requests refused for their signature.
    refused: AtomicU32,
}

/// Whether `request` is signed with SigV4 by `secret`, recomputed from
/// what arrived (the signed header list and credential scope it names).
fn signed_by(request: &Request<Body>, secret: &str) -> bool {
    let h = request.headers();
    let Some(auth) = h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let field = |name: &str| {
        auth.split(", ")
            .find_map(|p| p.split_once(&format!("{name}=")).map(|(_, v)| v.to_owned()))
    };
    let (Some(credential), Some(signed)) = (field("Credential"), field("SignedHeaders")) else {
        return false;
    };
    let scope: Vec<&str> = credential.split('/').collect();
    let Some(date) = h.get("x-amz-date").and_then(|v| v.to_str().ok()) else {
        return false;
    };
    if scope.len() != 5 || !signed.contains("range") || !signed.contains("host") {
        return false;
    }
    let values: Vec<(String, String)> = signed
        .split(';')
        .map(|n| {
            let v = h
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            (n.to_owned(), v)
        })
        .collect();
    let pairs: Vec<(&str, &str)> = values
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let expected = strata_origin::vod::sigv4::Signer {
        access_key_id: scope[0],
        secret,
        region: scope[2],
        service: scope[3],
    }
    .authorization(&strata_origin::vod::sigv4::Request {
        method: "GET",
        path: request.uri().path(),
        query: "",
        headers: &pairs,
        payload_sha256: strata_origin::vod::sigv4::EMPTY_SHA256,
        amz_date: date,
    });
    expected == auth
}

impl Store {
    fn put(&self, key: &str, body: Bytes, etag: &str) {
        self.objects
            .lock()
            .expect("lock")
            .insert(key.into(), (body, format!("\"{etag}\"")));
    }

    fn served(&self, key: &str) -> Vec<Served> {
        let log = self.log.lock().expect("lock");
        log.iter().filter(|s| s.key == key).cloned().collect()
    }
}

async fn serve(State(store): State<Arc<Store>>, request: Request<Body>) -> Response {
    let secret = store.s3_secret.lock().expect("lock").clone();
    if let Some(secret) = secret {
        if !signed_by(&request, &secret) {
            store.refused.fetch_add(1, Ordering::SeqCst);
            return Response::builder()
                .status(StatusCode::FORBIDDEN)
                .body(Body::from("SignatureDoesNotMatch"))
                .expect("response");
        }
    }
    let key = request
        .uri()
        .path()
        .strip_prefix("/bucket/")
        .unwrap_or("")
        .to_owned();
    let range = request
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (status, headers, body) = answer(&store, &key, range.as_deref(), request.headers()).await;
    store.bytes.fetch_add(body.len() as u64, Ordering::SeqCst);
    store.log.lock().expect("lock").push(Served {
        key: key.clone(),
        range,
        bytes: body.len() as u64,
    });
    let mut response = Response::builder().status(status);
    for (name, value) in headers {
        response = response.header(name, value);
    }
    if key.starts_with("cut-") && status == StatusCode::PARTIAL_CONTENT {
        // Announce the whole range, send half, and close.
        let half = body.slice(..body.len() / 2);
        let stream = futures::stream::iter(vec![
            Ok::<_, std::io::Error>(half),
            Err(std::io::Error::other("connection reset")),
        ]);
        return response.body(Body::from_stream(stream)).expect("response");
    }
    response.body(Body::from(body)).expect("response")
}

async fn answer(
    store: &Store,
    key: &str,
    range: Option<&str>,
    request: &HeaderMap,
) -> (StatusCode, Vec<(&'static str, String)>, Bytes) {
    let Some((object, etag)) = store.objects.lock().expect("lock").get(key).cloned() else {
        return (StatusCode::NOT_FOUND, vec![], Bytes::new());
    };
    if key.starts_with("fail-")
        || (key.starts_with("flaky-") && store.flaky.fetch_add(1, Ordering::SeqCst) == 0)
    {
        return (StatusCode::SERVICE_UNAVAILABLE, vec![], Bytes::new());
    }
    if key.starts_with("slow-") {
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
    if request
        .get(header::IF_MATCH)
        .is_some_and(|v| v.to_str().ok() != Some(etag.as_str()))
    {
        return (StatusCode::PRECONDITION_FAILED, vec![], Bytes::new());
    }
    let len = object.len() as u64;
    let parsed = range
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.split_once('-'))
        .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)));
    match parsed {
        Some((a, b)) if !key.starts_with("whole-") => {
            if a >= len {
                return (
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    vec![("content-range", format!("bytes */{len}"))],
                    Bytes::new(),
                );
            }
            let b = b.min(len - 1);
            (
                StatusCode::PARTIAL_CONTENT,
                vec![
                    ("content-range", format!("bytes {a}-{b}/{len}")),
                    ("etag", etag),
                ],
                object.slice(a as usize..=b as usize),
            )
        }
        _ => (StatusCode::OK, vec![("etag", etag)], object),
    }
}

/// Starts the store on loopback; returns its base URL (`…/bucket/`).
async fn start_store(store: Arc<Store>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = axum::Router::new().fallback(serve).with_state(store);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}/bucket/")
}

/// A scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `seconds` of 640x360 H.264 (25 fps, 2 s GOPs, B-frames) and AAC, `moov`
/// at the end as ffmpeg leaves it by default.
async fn encode(dir: &Path, name: &str, seconds: u32, rate: &str) -> Bytes {
    let path = dir.join(name);
    let out = tokio::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-t", &seconds.to_string()])
        .args([
            "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
        ])
        .args([
            "-b:v",
            rate,
            "-g",
            "50",
            "-keyint_min",
            "50",
            "-sc_threshold",
            "0",
        ])
        .args(["-c:a", "aac", "-b:a", "64k"])
        .arg(&path)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("ffmpeg — run scripts/install-test-deps.sh");
    assert!(
        out.status.success(),
        "ffmpeg could not make the fixture: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(&path).expect("fixture").into()
}

fn scratch(name: &str) -> Scratch {
    let dir = std::env::temp_dir().join(format!("strata-vod-remote-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("lib")).expect("scratch");
    Scratch(dir)
}

fn vod_config(
    root: PathBuf,
    store_url: &str,
    tweak: impl FnOnce(&mut strata_origin::vod::remote::RemoteStoreConfig),
) -> strata_origin::vod::VodConfig {
    let mut remote = strata_origin::vod::remote::RemoteStoreConfig::new("s3", store_url);
    tweak(&mut remote);
    strata_origin::vod::VodConfig {
        root: Some(root),
        segment_duration: Duration::from_secs(4),
        index_cache_entries: 16,
        index_cache_bytes: 64 << 20,
        max_moov_bytes: 16 << 20,
        remote: vec![remote],
        thumbnails: Default::default(),
        encryption: Default::default(),
    }
}

/// ffprobe's `codec_name,width,height` of an image.
async fn probe_image(path: &Path) -> String {
    let out = tokio::process::Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_entries"])
        .args(["stream=codec_name,width,height", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .await
        .expect("ffprobe — run scripts/install-test-deps.sh");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// PSNR (dB, `inf` as 100) between two images of the same size, compared
/// as RGB: ffmpeg's `format=yuv420p` does not convert a JPEG's full-range
/// `yuvj420p` to limited range, which made the same frame score about 20 dB.
async fn psnr(a: &Path, b: &Path) -> f64 {
    let out = tokio::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-i"])
        .arg(a)
        .arg("-i")
        .arg(b)
        .args([
            "-lavfi",
            "[0:v]format=rgb24[x];[1:v]format=rgb24[y];[x][y]psnr",
        ])
        .args(["-f", "null", "-"])
        .output()
        .await
        .expect("ffmpeg");
    let text = String::from_utf8_lossy(&out.stderr);
    let average = text
        .split("average:")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("no PSNR in ffmpeg's output: {text}"));
    if average == "inf" {
        100.0
    } else {
        average.parse().expect("PSNR")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_title_plays_through_the_edge_from_byte_ranges_only() {
    require_peers();
    let dir = scratch("play");
    let title = encode(&dir.0, "title.mp4", 40, "2500k").await;
    let len = title.len() as u64;
    let store = Arc::new(Store::default());
    store.put("films/title.mp4", title.clone(), "v1");
    let url = start_store(store.clone()).await;
    let root = dir.0.join("lib");
    let stack = start_stack(move |c| c.vod = Some(vod_config(root, &url, |_| {}))).await;
    let http = client();

    let master = stack.edge("/vod/s3/films/title.mp4/master.m3u8");
    let response = http.get(&master).send().await.expect("GET master");
    assert_eq!(response.status(), 200);
    let text = response.text().await.expect("body");
    assert!(text.contains("RESOLUTION=640x360"), "{text}");
    let indexing: u64 = store
        .served("films/title.mp4")
        .iter()
        .map(|s| s.bytes)
        .sum();
    // The first 64 KiB, then the moov at the end (with its header): never mdat.
    assert!(
        indexing < len / 8,
        "indexing read {indexing} of {len} bytes: {:?}",
        store.served("films/title.mp4")
    );
    let playlist = http
        .get(stack.edge("/vod/s3/films/title.mp4/t1.m3u8"))
        .send()
        .await
        .expect("GET playlist")
        .text()
        .await
        .expect("body");
    let segments = playlist.lines().filter(|l| l.ends_with(".m4s")).count();
    assert!(segments >= 9, "{playlist}");
    let before = store.bytes.load(Ordering::SeqCst);
    let segment = http
        .get(stack.edge("/vod/s3/films/title.mp4/t1/5.m4s"))
        .send()
        .await
        .expect("GET segment");
    assert_eq!(segment.status(), 200);
    let segment = segment.bytes().await.expect("segment");
    let read = store.bytes.load(Ordering::SeqCst) - before;
    // One segment's samples (plus at most a few small audio chunks between
    // its video chunks), of a title of about ten segments.
    assert!(
        read >= segment.len() as u64 / 2 && read < len / 4,
        "a {} byte segment read {read} of {len} bytes",
        segment.len()
    );

    assert_plays("hls", &master, 8).await;

    // The thumbnail of the remote title at 5 s is ffmpeg's own frame at 5 s.
    let jpeg = http
        .get(stack.edge("/vod/s3/films/title.mp4/thumb/5000.jpg"))
        .send()
        .await
        .expect("GET thumbnail");
    assert_eq!(jpeg.status(), 200);
    assert_eq!(
        jpeg.headers()[header::CONTENT_TYPE].to_str().ok(),
        Some("image/jpeg")
    );
    let thumb = dir.0.join("thumb.jpg");
    std::fs::write(&thumb, jpeg.bytes().await.expect("jpeg")).expect("write");
    assert_eq!(probe_image(&thumb).await, "mjpeg,640,360");
    let reference = dir.0.join("reference.png");
    let out = tokio::process::Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-nostdin",
            "-loglevel",
            "error",
            "-y",
            "-ss",
            "5",
            "-i",
        ])
        .arg(dir.0.join("title.mp4"))
        .args(["-frames:v", "1"])
        .arg(&reference)
        .output()
        .await
        .expect("ffmpeg");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let same = psnr(&thumb, &reference).await;
    let other = dir.0.join("other.png");
    let out = tokio::process::Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-nostdin",
            "-loglevel",
            "error",
            "-y",
            "-ss",
            "5.2",
            "-i",
        ])
        .arg(dir.0.join("title.mp4"))
        .args(["-frames:v", "1"])
        .arg(&other)
        .output()
        .await
        .expect("ffmpeg");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let different = psnr(&thumb, &other).await;
    println!(
        "thumbnail at 5 s: PSNR {same} dB against ffmpeg's frame at 5 s, {different} dB at 5.2 s"
    );
    // (Both were 19 dB once: `psnr` compared the JPEG's full-range YUV as
    // limited range, and the title's B-pyramid timeline was two frames late.)
    assert!(
        same >= 30.0 && different < 25.0,
        "the thumbnail at 5 s is not ffmpeg's frame at 5 s: {same:.1} dB (5.2 s: {different:.1} dB)"
    );

    let log = store.served("films/title.mp4");
    assert!(
        log.iter().all(|s| s.range.is_some()),
        "a request without Range: {log:?}"
    );
    let total: u64 = log.iter().map(|s| s.bytes).sum();
    assert!(
        log.iter().all(|s| s.bytes < len / 2),
        "one response carried half the file: {log:?}"
    );
    println!(
        "remote title of {len} bytes: {} range requests, {total} bytes read (hls.js played it, one thumbnail)",
        log.len()
    );
    let metrics = client()
        .get(format!("http://{}/metrics", stack.admin))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    let requests = metric(
        &metrics,
        "strata_origin_vod_remote_requests_total{store=\"s3\",outcome=\"ok\"}",
    )
    .unwrap_or(0.0);
    assert_eq!(requests as usize, log.len(), "{metrics}");
    let bytes = metric(
        &metrics,
        "strata_origin_vod_remote_bytes_total{store=\"s3\"}",
    );
    assert_eq!(bytes, Some(total as f64), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_store_failures_become_clear_statuses() {
    let dir = scratch("errors");
    let title = encode(&dir.0, "title.mp4", 12, "800k").await;
    let other = encode(&dir.0, "other.mp4", 16, "400k").await;
    let store = Arc::new(Store::default());
    for key in [
        "title.mp4",
        "fail-a.mp4",
        "flaky-a.mp4",
        "slow-a.mp4",
        "cut-a.mp4",
        "whole-a.mp4",
    ] {
        store.put(key, title.clone(), "v1");
    }
    store.put("replaced.mp4", title.clone(), "v1");
    store.put("empty.mp4", Bytes::new(), "e");
    store.put(
        "junk.mp4",
        Bytes::from_static(b"not an mp4 at all, just bytes"),
        "j",
    );
    let url = start_store(store.clone()).await;
    let root = dir.0.join("lib");
    let stack = start_stack(move |c| {
        c.vod = Some(vod_config(root, &url, |r| {
            r.timeout = Duration::from_millis(1500);
            r.retries = 1;
        }))
    })
    .await;
    let origin = |path: &str| format!("http://{}/vod/s3/{path}", stack.origin_http);
    let http = client();
    let get = |path: String| {
        let http = http.clone();
        async move {
            let r = http.get(&path).send().await.expect("response");
            let status = r.status().as_u16();
            (status, r.text().await.unwrap_or_default())
        }
    };

    assert_eq!(get(origin("title.mp4/master.m3u8")).await.0, 200);
    assert_eq!(get(origin("missing.mp4/master.m3u8")).await.0, 404);
    let (status, body) = get(origin("fail-a.mp4/master.m3u8")).await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("answered 503"), "{body}");
    assert_eq!(store.served("fail-a.mp4").len(), 2, "one try and one retry");
    let (status, body) = get(origin("flaky-a.mp4/master.m3u8")).await;
    assert_eq!(status, 200, "a 503 then a 200 is retried: {body}");
    let (status, body) = get(origin("slow-a.mp4/master.m3u8")).await;
    assert_eq!(status, 504, "{body}");
    let (status, body) = get(origin("whole-a.mp4/master.m3u8")).await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("Range"), "{body}");
    let (status, body) = get(origin("empty.mp4/master.m3u8")).await;
    assert!((500..600).contains(&status), "{status} {body}");
    let (status, body) = get(origin("junk.mp4/master.m3u8")).await;
    assert_eq!(status, 500, "{body}");
    // A body that breaks off half way (twice: the retry too).
    let (status, body) = get(origin("cut-a.mp4/master.m3u8")).await;
    // hyper reports the break as a truncated body or a closed connection.
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("sent") || body.contains("closed"), "{body}");

    // An object replaced after it was indexed: the stale index is dropped
    // (If-Match → 412) and the segment comes from the new object.
    assert_eq!(get(origin("replaced.mp4/t1.m3u8")).await.0, 200);
    store.put("replaced.mp4", other.clone(), "v2");
    let (status, body) = get(origin("replaced.mp4/t1/2.m4s")).await;
    assert_eq!(status, 200, "{body}");
    let playlist = get(origin("replaced.mp4/t1.m3u8")).await.1;
    assert!(playlist.contains("4.m4s"), "{playlist}");

    let metrics = http
        .get(format!("http://{}/metrics", stack.admin))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    for (line, at_least) in [
        (
            "strata_origin_vod_remote_errors_total{store=\"s3\",outcome=\"remote_5xx\"}",
            1.0,
        ),
        (
            "strata_origin_vod_remote_errors_total{store=\"s3\",outcome=\"remote_timeout\"}",
            1.0,
        ),
        (
            "strata_origin_vod_remote_requests_total{store=\"s3\",outcome=\"remote_changed\"}",
            1.0,
        ),
        ("strata_origin_vod_remote_retries_total{store=\"s3\"}", 3.0),
    ] {
        let value = metric(&metrics, line).unwrap_or(0.0);
        assert!(value >= at_least, "{line} = {value}:\n{metrics}");
    }
}

/// ffmpeg's own frame at `seconds` of `source` (`-ss` then one frame), as PNG.
async fn ffmpeg_frame(source: &Path, seconds: &str, png: &Path) {
    let out = tokio::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y"])
        .args(["-ss", seconds, "-i"])
        .arg(source)
        .args(["-frames:v", "1"])
        .arg(png)
        .output()
        .await
        .expect("ffmpeg — run scripts/install-test-deps.sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `thumb/{ms}.jpg` is the frame shown at `{ms}`: a title whose every second
/// has its own hue (testsrc2, moving every frame, hue turned per second;
/// 24 fps so 3.5 s starts a frame; 2 s GOPs with B-frames, so 3.5 s is in
/// the middle of one) gives at 3500 ms ffmpeg's own frame at 3.5 s (the
/// neighbouring frames score under 20 dB), and at 1000 ms a different one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thumbnails_show_the_frame_at_their_time() {
    let dir = scratch("thumb-frame");
    let source = dir.0.join("lib/seconds.mp4");
    let out = tokio::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y"])
        .args([
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=24,hue=H=2*PI*floor(t)/7",
            "-t",
            "8",
        ])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-pix_fmt",
            "yuv420p",
            "-g",
            "48",
            "-keyint_min",
            "48",
            "-sc_threshold",
            "0",
            "-bf",
            "3",
        ])
        .arg(&source)
        .output()
        .await
        .expect("ffmpeg — run scripts/install-test-deps.sh");
    assert!(
        out.status.success(),
        "ffmpeg could not make the fixture: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let root = dir.0.join("lib");
    let stack =
        start_stack(move |c| c.vod = Some(vod_config(root, "http://127.0.0.1:9/unused/", |_| {})))
            .await;
    let http = client();
    let thumb = |ms: u32| {
        let (http, url) = (
            http.clone(),
            stack.origin(&format!("/vod/seconds.mp4/thumb/{ms}.jpg")),
        );
        let file = dir.0.join(format!("thumb-{ms}.jpg"));
        async move {
            let r = http.get(&url).send().await.expect("thumbnail");
            assert_eq!(r.status(), 200, "{url}");
            std::fs::write(&file, r.bytes().await.expect("jpeg")).expect("write");
            assert_eq!(probe_image(&file).await, "mjpeg,320,240", "{url}");
            file
        }
    };
    let at_3500 = thumb(3500).await;
    let at_1000 = thumb(1000).await;
    let reference = dir.0.join("ffmpeg-3.5.png");
    ffmpeg_frame(&source, "3.5", &reference).await;
    let same = psnr(&at_3500, &reference).await;
    let early = psnr(&at_1000, &reference).await;
    println!("thumbnail at 3500 ms: {same:.1} dB against ffmpeg's frame at 3.5 s; at 1000 ms: {early:.1} dB");
    assert!(
        same >= 30.0,
        "the thumbnail at 3500 ms is not ffmpeg's frame at 3.5 s: PSNR {same:.1} dB"
    );
    assert!(
        early < 20.0,
        "the thumbnail at 1000 ms looks like the frame at 3.5 s: PSNR {early:.1} dB"
    );
    // The frames either side of 3.5 s are not it (so a thumbnail off by one
    // frame would fail above), and 3520 ms (between frames) shows the frame
    // that started at 3.5 s: the last one starting at or before the time.
    for (seconds, why) in [("3.45", "the frame before"), ("3.51", "the frame after")] {
        let other = dir.0.join(format!("ffmpeg-{seconds}.png"));
        ffmpeg_frame(&source, seconds, &other).await;
        let score = psnr(&at_3500, &other).await;
        assert!(
            score < 25.0,
            "{why} scores {score:.1} dB: the fixture does not tell frames apart"
        );
    }
    let between = thumb(3520).await;
    let score = psnr(&between, &reference).await;
    assert!(
        score >= 30.0,
        "the thumbnail at 3520 ms is not the frame shown then (started at 3.5 s): {score:.1} dB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thumbnails_decode_at_the_asked_size_and_bad_times_are_refused() {
    let dir = scratch("thumbs");
    encode(&dir.0.join("lib"), "title.mp4", 12, "800k").await;
    let root = dir.0.join("lib");
    let stack =
        start_stack(move |c| c.vod = Some(vod_config(root, "http://127.0.0.1:9/unused/", |_| {})))
            .await;
    let origin = |path: &str| format!("http://{}/vod/title.mp4/{path}", stack.origin_http);
    let http = client();
    for (path, size) in [
        ("thumb/0.jpg", "640,360"),
        ("thumb/7300.jpg?width=320", "320,180"),
        ("thumb/11900.jpg?width=160", "160,90"),
    ] {
        let r = http.get(origin(path)).send().await.expect("thumbnail");
        assert_eq!(r.status(), 200, "{path}");
        let file = dir.0.join("t.jpg");
        std::fs::write(&file, r.bytes().await.expect("jpeg")).expect("write");
        assert_eq!(probe_image(&file).await, format!("mjpeg,{size}"), "{path}");
    }
    // The same frame again comes from the cache, byte for byte.
    let a = http
        .get(origin("thumb/7300.jpg?width=320"))
        .send()
        .await
        .expect("get");
    let b = http
        .get(origin("thumb/7310.jpg?width=320"))
        .send()
        .await
        .expect("get");
    assert_eq!(a.bytes().await.expect("a"), b.bytes().await.expect("b"));
    for (path, status) in [
        ("thumb/60000.jpg", 404),
        ("thumb/01.jpg", 400),
        ("thumb/-5.jpg", 400),
        ("thumb/abc.jpg", 400),
        ("thumb/1000.jpg?width=5", 400),
        ("thumb/1000.jpg?width=abc", 400),
        ("thumb/1000.png", 404),
    ] {
        let r = http.get(origin(path)).send().await.expect("response");
        assert_eq!(r.status().as_u16(), status, "{path}");
    }
    let metrics = http
        .get(format!("http://{}/metrics", stack.admin))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    assert_eq!(
        metric(
            &metrics,
            "strata_origin_vod_thumbnails_total{outcome=\"made\"}"
        ),
        Some(3.0),
        "{metrics}"
    );
}

/// A set file on a remote store, read over HTTP as a local one is read:
/// its MP4s and subtitle are objects beside it; one master playlist names
/// both renditions, the subtitles and the audio, and ffmpeg decodes it.
/// A set too big, malformed, naming a missing object, missing itself or
/// failing at the store is a clear 4xx/5xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_set_files_are_read_over_http() {
    require_peers();
    let dir = scratch("set");
    let hi = encode(&dir.0, "hi.mp4", 10, "800k").await;
    let lo = encode(&dir.0, "lo.mp4", 10, "300k").await;
    let store = Arc::new(Store::default());
    store.put("films/hi.mp4", hi, "h");
    store.put("films/lo.mp4", lo, "l");
    store.put(
        "films/en.vtt",
        Bytes::from_static(b"WEBVTT\n\n00:00:01.000 --> 00:00:03.000\nHello\n"),
        "v",
    );
    let set = r#"{"video": [{"file": "hi.mp4"}, {"file": "./lo.mp4"}],
        "audio": [{"file": "hi.mp4", "language": "en", "name": "English"}],
        "subtitles": [{"file": "en.vtt", "language": "en", "name": "English"}]}"#;
    store.put("films/film.json", Bytes::from(set), "s");
    store.put("fail-set.json", Bytes::from(set), "s");
    store.put(
        "films/missing.json",
        Bytes::from_static(br#"{"video": [{"file": "nowhere.mp4"}]}"#),
        "m",
    );
    store.put("films/bad.json", Bytes::from_static(b"{not json"), "b");
    store.put(
        "films/escape.json",
        Bytes::from_static(br#"{"video": [{"file": "../hi.mp4"}]}"#),
        "e",
    );
    let mut big = String::from(r#"{"video": [{"file": "hi.mp4"}], "x": ""#);
    big.push_str(&" ".repeat(70 << 10));
    big.push_str("\"}");
    store.put("films/big.json", Bytes::from(big), "g");
    let url = start_store(store.clone()).await;
    let root = dir.0.join("lib");
    let stack = start_stack(move |c| {
        c.vod = Some(vod_config(root, &url, |r| r.retries = 0));
    })
    .await;
    let http = client();
    let get = |path: &str| {
        let (http, url) = (http.clone(), stack.origin(&format!("/vod/s3/{path}")));
        async move {
            let r = http.get(&url).send().await.expect("response");
            let status = r.status().as_u16();
            (status, r.text().await.unwrap_or_default())
        }
    };
    let (status, master) = get("films/film.json/master.m3u8").await;
    assert_eq!(status, 200, "{master}");
    assert_eq!(
        master.matches("#EXT-X-STREAM-INF").count(),
        2,
        "two video renditions: {master}"
    );
    assert!(
        master.contains("TYPE=SUBTITLES") && master.contains("TYPE=AUDIO"),
        "{master}"
    );
    let (status, vtt) = get("films/film.json/s1/1.vtt").await;
    assert_eq!(status, 200, "{vtt}");
    assert!(vtt.contains("Hello"), "{vtt}");
    crate::stack::assert_decodes(&stack.edge("/vod/s3/films/film.json/master.m3u8"), 8).await;
    for (path, want) in [
        ("films/missing.json/master.m3u8", 404),
        ("films/nothing.json/master.m3u8", 404),
        ("films/bad.json/master.m3u8", 422),
        ("films/escape.json/master.m3u8", 422),
        ("films/big.json/master.m3u8", 422),
        ("fail-set.json/master.m3u8", 502),
    ] {
        let (status, body) = get(path).await;
        assert_eq!(status, want, "{path}: {body}");
        assert!(!body.is_empty(), "{path}: a reason");
    }
    let big: u64 = store.served("films/big.json").iter().map(|s| s.bytes).sum();
    assert!(
        big <= 64 << 10,
        "a set over the limit is not read whole: {big} bytes"
    );
}

/// `[vod.remote.s3]`: a store that checks SigV4 signatures serves a title
/// to an origin with the right secret (read from a file) and refuses one
/// with a wrong secret (read from an environment variable), a clear 502
/// naming the store's 403.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_signed_range_gets_are_verified_by_the_store() {
    require_peers();
    let dir = scratch("sigv4");
    let title = encode(&dir.0, "title.mp4", 8, "500k").await;
    let store = Arc::new(Store::default());
    store.put("films/title.mp4", title, "t");
    *store.s3_secret.lock().expect("lock") =
        Some("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into());
    let url = start_store(store.clone()).await;
    let secret_file = dir.0.join("secret");
    std::fs::write(&secret_file, "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n").expect("secret");
    let wrong_var = format!("STRATA_TEST_WRONG_S3_SECRET_{}", std::process::id());
    std::env::set_var(&wrong_var, "not-the-secret");
    let root = dir.0.join("lib");
    let (good_url, var) = (url.clone(), wrong_var.clone());
    let stack = start_stack(move |c| {
        let mut config = vod_config(root, &good_url, |r| {
            r.s3 = Some(strata_origin::vod::remote::S3Signing {
                region: "eu-west-1".into(),
                access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
                secret_file: Some(secret_file),
                secret_env: None,
                service: "s3".into(),
            });
        });
        let mut wrong = strata_origin::vod::remote::RemoteStoreConfig::new("wrong", &good_url);
        wrong.retries = 0;
        wrong.s3 = Some(strata_origin::vod::remote::S3Signing {
            region: "eu-west-1".into(),
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_file: None,
            secret_env: Some(var),
            service: "s3".into(),
        });
        config.remote.push(wrong);
        c.vod = Some(config);
    })
    .await;
    let master = stack.edge("/vod/s3/films/title.mp4/master.m3u8");
    crate::stack::assert_decodes(&master, 6).await;
    assert_eq!(
        store.refused.load(Ordering::SeqCst),
        0,
        "every signed read verified"
    );
    let r = client()
        .get(stack.origin("/vod/wrong/films/title.mp4/master.m3u8"))
        .send()
        .await
        .expect("GET");
    let status = r.status().as_u16();
    let body = r.text().await.unwrap_or_default();
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("403"), "{body}");
    assert!(!body.contains("not-the-secret"), "{body}");
    assert!(store.refused.load(Ordering::SeqCst) >= 1);
    std::env::remove_var(&wrong_var);
}

/// `[vod.remote.s3]` against a real S3-compatible server that verifies
/// SigV4 itself: moto's server (tests/e2e/moto_s3.py), with IAM auth on
/// after its set-up (an IAM user, its access key, a policy allowing
/// `s3:GetObject` on the bucket, the bucket, the MP4 uploaded).
mod s3_real {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

    /// The interpreter with moto: `$STRATA_PYTHON`, else the repo's `.venv`.
    fn python() -> PathBuf {
        std::env::var_os("STRATA_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"))
    }

    /// What moto_s3.py printed once its set-up was done.
    struct Moto {
        _child: tokio::process::Child,
        endpoint: String,
        bucket: String,
        access_key_id: String,
        secret: String,
        region: String,
        /// moto_s3.py's stderr so far (a line per refused request).
        log: Arc<Mutex<String>>,
    }

    impl Moto {
        fn log(&self) -> String {
            self.log.lock().expect("lock").clone()
        }
    }

    async fn start_moto(puts: &[(&str, &Path)]) -> Moto {
        let python = python();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/moto_s3.py");
        let mut command = tokio::process::Command::new(&python);
        command.arg(&script);
        for (key, file) in puts {
            command
                .arg("--put")
                .arg(format!("{key}={}", file.display()));
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {} for moto: {e}; run scripts/install-test-deps.sh \
                     (installs moto[server] into .venv)",
                    python.display()
                )
            });
        let log = Arc::new(Mutex::new(String::new()));
        let mut stderr = BufReader::new(child.stderr.take().expect("piped"));
        let sink = log.clone();
        tokio::spawn(async move {
            let mut line = String::new();
            while stderr.read_line(&mut line).await.unwrap_or(0) > 0 {
                sink.lock().expect("lock").push_str(&line);
                line.clear();
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut first = String::new();
        let read =
            tokio::time::timeout(Duration::from_secs(120), stdout.read_line(&mut first)).await;
        if first.trim().is_empty() {
            // Give stderr a moment to arrive, then say why.
            let status = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
            let mut rest = String::new();
            let _ = tokio::time::timeout(Duration::from_secs(1), stdout.read_to_string(&mut rest))
                .await;
            panic!(
                "moto's S3 server did not start ({read:?}, {status:?}): run \
                 scripts/install-test-deps.sh (installs moto[server] into .venv; \
                 or set STRATA_PYTHON to a python that has it):\n{}{rest}",
                log.lock().expect("lock")
            );
        }
        let v: serde_json::Value = serde_json::from_str(first.trim())
            .unwrap_or_else(|e| panic!("moto_s3.py printed {first:?}: {e}"));
        let field = |name: &str| {
            v[name]
                .as_str()
                .unwrap_or_else(|| panic!("{name} in {v}"))
                .to_owned()
        };
        Moto {
            endpoint: field("endpoint"),
            bucket: field("bucket"),
            access_key_id: field("access_key_id"),
            secret: field("secret_access_key"),
            region: field("region"),
            _child: child,
            log,
        }
    }

    /// The first rendition's playlist and its first media segment (and
    /// init segment) under `base` (`…/title.mp4/`), as bytes.
    async fn first_segment(base: &str) -> (Bytes, Bytes) {
        let http = client();
        let get = |url: String| {
            let http = http.clone();
            async move {
                let r = http.get(&url).send().await.expect("GET");
                assert_eq!(r.status(), 200, "{url}");
                r.bytes().await.expect("body")
            }
        };
        let master = get(format!("{base}master.m3u8")).await;
        let master = String::from_utf8_lossy(&master);
        let playlist = master
            .lines()
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .unwrap_or_else(|| panic!("no variant in {master}"));
        let text = get(format!("{base}{playlist}")).await;
        let text = String::from_utf8_lossy(&text);
        let dir = playlist
            .rsplit_once('/')
            .map(|(d, _)| format!("{d}/"))
            .unwrap_or_default();
        let init = text
            .lines()
            .find_map(|l| l.strip_prefix("#EXT-X-MAP:URI=\""))
            .and_then(|l| l.split('"').next())
            .unwrap_or_else(|| panic!("no EXT-X-MAP in {text}"));
        let segment = text
            .lines()
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .unwrap_or_else(|| panic!("no segment in {text}"));
        (
            get(format!("{base}{dir}{init}")).await,
            get(format!("{base}{dir}{segment}")).await,
        )
    }

    /// A title in moto's bucket plays through the edge (ffmpeg decodes it)
    /// and its segment is byte for byte the local copy's; an origin with a
    /// wrong secret gets a clear 502 naming the store's 403, and moto says
    /// the signature did not match.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn moto_verifies_the_signed_range_gets() {
        require_peers();
        let dir = scratch("moto");
        let lib = dir.0.join("lib");
        std::fs::create_dir_all(lib.join("films")).expect("films");
        encode(&lib.join("films"), "title.mp4", 8, "500k").await;
        let moto = start_moto(&[("films/title.mp4", &lib.join("films/title.mp4"))]).await;
        let store_url = format!("{}/{}/", moto.endpoint, moto.bucket);
        let good_secret = dir.0.join("good-secret");
        std::fs::write(&good_secret, format!("{}\n", moto.secret)).expect("secret");
        let wrong_secret = dir.0.join("wrong-secret");
        std::fs::write(&wrong_secret, "not-the-secret\n").expect("secret");
        let (root, key, region) = (lib.clone(), moto.access_key_id.clone(), moto.region.clone());
        let signing = move |secret_file: PathBuf| strata_origin::vod::remote::S3Signing {
            region: region.clone(),
            access_key_id: key.clone(),
            secret_file: Some(secret_file),
            secret_env: None,
            service: "s3".into(),
        };
        let stack = start_stack(move |c| {
            let mut config = vod_config(root, &store_url, |r| {
                r.s3 = Some(signing(good_secret));
            });
            let mut wrong = strata_origin::vod::remote::RemoteStoreConfig::new("wrong", &store_url);
            wrong.retries = 0;
            wrong.s3 = Some(signing(wrong_secret));
            config.remote.push(wrong);
            c.vod = Some(config);
        })
        .await;

        crate::stack::assert_decodes(&stack.edge("/vod/s3/films/title.mp4/master.m3u8"), 6).await;
        let remote = first_segment(&stack.origin("/vod/s3/films/title.mp4/")).await;
        let local = first_segment(&stack.origin("/vod/films/title.mp4/")).await;
        assert!(
            remote.0 == local.0 && remote.1 == local.1,
            "the segment from moto ({} + {} bytes) is not the local title's ({} + {} bytes)",
            remote.0.len(),
            remote.1.len(),
            local.0.len(),
            local.1.len()
        );
        assert!(
            !moto.log().contains("moto:"),
            "moto refused a request signed with the right secret:\n{}",
            moto.log()
        );

        let r = client()
            .get(stack.origin("/vod/wrong/films/title.mp4/master.m3u8"))
            .send()
            .await
            .expect("GET");
        let status = r.status().as_u16();
        let body = r.text().await.unwrap_or_default();
        assert_eq!(status, 502, "{body}");
        assert!(body.contains("403"), "{body}");
        assert!(!body.contains("not-the-secret"), "{body}");
        // moto logs the refusal as its request returns: wait for the line.
        for _ in 0..50 {
            if moto.log().contains("SignatureDoesNotMatch") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let log = moto.log();
        assert!(
            log.contains("moto: GET /strata-vod/films/title.mp4 -> 403 SignatureDoesNotMatch"),
            "moto did not refuse the wrong signature:\n{log}"
        );
    }
}
