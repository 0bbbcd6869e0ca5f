//! Encrypted output read back by real peers: ffmpeg plays AES-128 HLS with
//! keys fetched over HTTP from the origin, and decrypts our cenc and cbcs
//! CMAF given the key; without the key it cannot.
//!
//! Browser playback (hls.js, Shaka, dash.js with ClearKey) needs
//! `tests/browser/node_modules` (scripts/install-test-deps.sh) and fails
//! with that advice when it is missing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::support::{ffmpeg, make_flv};
use bytes::Bytes;
use prometheus_client::registry::Registry;
use strata_origin::drm::http::{DrmMetrics, OutcomeLabels};
use strata_origin::drm::{ChannelEncryption, Drm, EncryptionConfig, EncryptionScheme, LicenceAuth};
use strata_origin::http::{playback_router, HttpMetrics, PlaybackState};
use strata_origin::ingest::{PublishTarget, PublisherInfo, StreamName};
use strata_origin::keys::{KeyService, KeysConfig};
use strata_origin::media::{MediaEvent, Sample, TrackKind, TrackParams};
use strata_origin::store::{ManualClock, Store, StoreConfig};

const SECONDS: u32 = 6;
const FPS: u32 = 25;
const CHANNELS: [(&str, EncryptionScheme); 3] = [
    ("aes", EncryptionScheme::Aes128),
    ("cenc", EncryptionScheme::Cenc),
    ("cbcs", EncryptionScheme::Cbcs),
];

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("strata-e2e-drm-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// ffmpeg-made H.264/AAC as FLV → samples, the way RTMP ingest sees them.
fn source(dir: &Path, seconds: u32) -> (Vec<TrackParams>, Vec<(TrackKind, Sample)>) {
    let flv = dir.join("source.flv");
    make_flv(&flv, FPS, seconds);
    let (mut params, mut samples) = (Vec::new(), Vec::new());
    let data = Bytes::from(std::fs::read(&flv).expect("flv"));
    for e in strata_origin::media::flv::file_events(data).expect("flv") {
        match e {
            MediaEvent::Params(p) => params.push(p),
            MediaEvent::Sample(kind, s) => samples.push((kind, s)),
        }
    }
    (params, samples)
}

/// A store holding the same ended recording in every channel of [`CHANNELS`].
fn recorded_store(dir: &Path) -> Store {
    let (params, samples) = source(dir, SECONDS);
    let start = SystemTime::now() - Duration::from_secs(120);
    let clock = ManualClock::new(start);
    let store = Store::with_clock(StoreConfig::default(), Arc::new(clock.clone()));
    for (channel, _) in CHANNELS {
        clock.set(start);
        let (mut sink, ms) = publish_main(&store, channel, &params);
        for (kind, s) in &samples {
            clock.set(start + Duration::from_millis(ms(*kind, s) as u64));
            sink.sample(*kind, s.clone()).expect("sample");
        }
    }
    store
}

/// Publishes `{channel}.main` with `params`; also gives a sample's time in ms.
fn publish_main(
    store: &Store,
    channel: &str,
    params: &[TrackParams],
) -> (
    Box<dyn strata_origin::ingest::MediaSink>,
    impl Fn(TrackKind, &Sample) -> i64,
) {
    let name = StreamName {
        channel: channel.into(),
        rendition: "main".into(),
    };
    let info = PublisherInfo {
        remote: SocketAddr::from(([127, 0, 0, 1], 1935)),
        protocol: "rtmp",
    };
    let mut sink = store.publish(&name, info).expect("publish");
    for p in params {
        sink.params(p.clone());
    }
    let rate = params
        .iter()
        .find_map(|p| match p {
            TrackParams::Audio(a) => Some(i64::from(a.sample_rate)),
            TrackParams::Video(_) => None,
        })
        .expect("audio");
    let ms = move |kind: TrackKind, s: &Sample| match kind {
        TrackKind::Video => s.dts / 90,
        TrackKind::Audio => s.dts * 1000 / rate,
    };
    (sink, ms)
}

fn drm(state_dir: &Path) -> Drm {
    drm_rotating(state_dir, 0)
}

/// [`drm`] with a new key every `rotate_every` segments.
fn drm_rotating(state_dir: &Path, rotate_every: u64) -> Drm {
    let mut registry = Registry::default();
    let keys = KeyService::open(&KeysConfig {
        state_dir: Some(state_dir.to_owned()),
        rotate_every,
        ..KeysConfig::default()
    })
    .expect("keys");
    let config = EncryptionConfig {
        channels: CHANNELS
            .iter()
            .map(|(name, scheme)| {
                (
                    (*name).to_owned(),
                    ChannelEncryption {
                        scheme: *scheme,
                        ..ChannelEncryption::default()
                    },
                )
            })
            .collect(),
        // These tests are about packaging and key delivery, played straight
        // from an origin with no edge in front: the origin is opened as
        // `licence_auth = "none"` allows. Licences behind an entitlement are
        // tested in the drm unit tests and the root e2e `drm::` tests.
        licence_auth: LicenceAuth::None,
        ..EncryptionConfig::default()
    };
    Drm::new(config, keys, DrmMetrics::register(&mut registry))
}

/// Serves the playback routes on a loopback port until the runtime ends.
async fn serve(store: Store, drm: Arc<Drm>) -> SocketAddr {
    let mut registry = Registry::default();
    let router = playback_router(Arc::new(PlaybackState {
        store,
        metrics: HttpMetrics::register(&mut registry),
        drm,
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    addr
}

async fn ffmpeg_async(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ffmpeg(&args)
    })
    .await
    .expect("ffmpeg task")
}

/// Decode `input` with ffmpeg; returns (error text, decoded video frames).
async fn decode(input: String, extra: &[&str]) -> (String, u32) {
    let mut args: Vec<String> = ["-v", "error", "-stats_period", "100"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args.extend(
        ["-i", &input, "-map", "0:v:0", "-f", "framemd5", "-"]
            .iter()
            .map(|s| (*s).to_owned()),
    );
    let out = ffmpeg_async(args).await;
    let frames = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .count() as u32;
    let mut errors = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        errors.push_str(&format!("\nexit: {}", out.status));
    }
    (errors, frames)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_plays_aes128_hls_with_keys_fetched_from_the_origin() {
    let dir = scratch_dir("aes");
    let store = recorded_store(&dir);
    let drm = Arc::new(drm(&dir.join("state")));
    let addr = serve(store.clone(), drm.clone()).await;

    for master in ["master.m3u8", "master-ts.m3u8"] {
        let url = format!("http://{addr}/live/aes/{master}");
        let (errors, frames) = decode(url, &[]).await;
        assert!(errors.is_empty(), "{master}: {errors}");
        assert_eq!(frames, SECONDS * FPS, "{master}");
    }

    // A segment as served is ciphertext that only the key opens.
    let now = SystemTime::now();
    let playlist = store.render("aes", "main/ts.m3u8", now).expect("playlist");
    let first = String::from_utf8_lossy(&playlist.body)
        .lines()
        .find(|l| l.ends_with(".ts"))
        .expect("segment")
        .to_owned();
    let sequence: u64 = first.trim_end_matches(".ts").parse().expect("number");
    let clear = store
        .render("aes", &format!("main/{first}"), now)
        .expect("clear");
    let sealed = drm
        .protect("aes", &format!("main/{first}"), clear.clone())
        .expect("protect");
    // Clear MPEG-TS has a sync byte every 188 bytes; ciphertext has one at
    // a packet start by chance (1 in 256 each, so not at all of eight).
    let syncs = |body: &[u8]| (0..8).filter(|i| body.get(i * 188) == Some(&0x47)).count();
    assert_eq!(syncs(&clear.body), 8, "the clear segment is MPEG-TS");
    assert!(
        syncs(&sealed.body) < 8,
        "no TS sync bytes: not readable as MPEG-TS"
    );
    let sealed_file = dir.join("sealed.ts");
    std::fs::write(&sealed_file, &sealed.body).expect("write");
    let (errors, frames) = decode(sealed_file.display().to_string(), &[]).await;
    assert!(!errors.is_empty() || frames == 0, "ciphertext decoded");
    let key = drm.keys.key_for("aes", None).expect("key");
    let out = Command::new("openssl")
        .args([
            "enc",
            "-d",
            "-aes-128-cbc",
            "-K",
            &hex::encode(key.key),
            "-iv",
        ])
        .arg(format!("{sequence:032x}"))
        .arg("-in")
        .arg(&sealed_file)
        .output();
    if let Ok(out) = out {
        assert!(out.status.success(), "openssl decrypt");
        assert_eq!(
            out.stdout,
            clear.body.to_vec(),
            "decrypts to the clear segment"
        );
    }
    // DASH cannot carry AES-128: not offered rather than served clear.
    let mpd = drm.protect(
        "aes",
        "manifest.mpd",
        store.render("aes", "manifest.mpd", now).expect("mpd"),
    );
    assert!(mpd.is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_decrypts_cenc_and_cbcs_cmaf_only_with_the_key() {
    let dir = scratch_dir("cenc");
    let store = recorded_store(&dir);
    let drm = drm(&dir.join("state"));
    let now = SystemTime::now();
    for (channel, scheme) in [("cenc", "cenc"), ("cbcs", "cbcs")] {
        for kind in ["video", "audio"] {
            let playlist = store
                .render(channel, &format!("main/{kind}.m3u8"), now)
                .expect("playlist");
            let playlist = drm
                .protect(channel, &format!("main/{kind}.m3u8"), playlist)
                .expect("protected playlist");
            let text = String::from_utf8_lossy(&playlist.body).into_owned();
            assert!(text.contains("KEYFORMAT=\"org.w3.clearkey\""), "{text}");
            // ffmpeg 5.1 looks up encryption info in the fragment it parsed
            // last, not the packet's own, so it decrypts one fragment per
            // file: the init segment followed by that fragment.
            let mut init = Vec::new();
            let mut fragments = Vec::new();
            for line in text.lines() {
                if let Some(uri) = line
                    .strip_prefix("#EXT-X-MAP:URI=\"")
                    .map(|u| u.trim_end_matches('"'))
                {
                    let path = format!("main/{uri}");
                    let clear = store.render(channel, &path, now).expect("init");
                    init = drm
                        .protect(channel, &path, clear)
                        .expect("protect")
                        .body
                        .to_vec();
                } else if !line.starts_with('#') {
                    let path = format!("main/{line}");
                    let clear = store.render(channel, &path, now).expect("fragment");
                    let sealed = drm.protect(channel, &path, clear).expect("protect");
                    fragments.push([init.as_slice(), &sealed.body].concat());
                }
            }
            assert!(fragments.len() >= 3, "{text}");
            let key_hex = hex::encode(drm.keys.key_for(channel, None).expect("key").key);
            let mut frames = 0;
            for (i, file) in fragments.iter().enumerate() {
                let path = dir.join(format!("{channel}-{kind}-{i}.mp4"));
                std::fs::write(&path, file).expect("write");
                let input = path.display().to_string();
                if kind == "audio" {
                    let out = ffmpeg_async(
                        [
                            "-v",
                            "error",
                            "-decryption_key",
                            &key_hex,
                            "-i",
                            &input,
                            "-f",
                            "null",
                            "-",
                        ]
                        .iter()
                        .map(|s| (*s).to_owned())
                        .collect(),
                    )
                    .await;
                    let errors = String::from_utf8_lossy(&out.stderr);
                    assert!(
                        out.status.success() && errors.is_empty(),
                        "{scheme} audio {i} with the key: {errors}"
                    );
                    continue;
                }
                let (errors, decoded) = decode(input.clone(), &["-decryption_key", &key_hex]).await;
                assert!(
                    errors.is_empty(),
                    "{scheme} video {i} with the key: {errors}"
                );
                frames += decoded;
                // Without the key the slices are noise: ffmpeg reports errors.
                let (errors, _) = decode(input, &[]).await;
                assert!(
                    !errors.is_empty(),
                    "{scheme} video {i} decoded without a key"
                );
            }
            if kind == "video" {
                assert_eq!(frames, SECONDS * FPS, "{scheme}");
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Where a player takes ClearKey licences from.
#[derive(Clone)]
enum Licence {
    /// Nowhere: the stream is clear or AES-128.
    None,
    /// play.mjs's in-page server with these space-separated `KID:KEY` pairs.
    Keys(String),
    /// A real licence server at this URL; play.mjs holds no keys.
    Server(String),
}

/// One run of tests/browser/play.mjs; `None` when node cannot run it or it
/// printed no JSON report.
async fn play(player: &str, url: &str, licence: &Licence) -> Option<serde_json::Value> {
    let harness = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/browser");
    assert!(
        harness.join("node_modules").exists(),
        "tests/browser/node_modules is missing: run scripts/install-test-deps.sh (or npm ci in tests/browser)"
    );
    let mut args: Vec<String> = vec![
        harness.join("play.mjs").display().to_string(),
        "--player".into(),
        player.into(),
        "--url".into(),
        url.into(),
        "--seconds".into(),
        "4".into(),
        "--timeout".into(),
        "40".into(),
    ];
    match licence {
        Licence::None => {}
        Licence::Keys(pairs) => {
            args.push("--clearkey".into());
            args.extend(pairs.split_whitespace().map(str::to_owned));
        }
        Licence::Server(url) => args.extend(["--licence-url".into(), url.clone()]),
    }
    let out = tokio::process::Command::new("node")
        .args(&args)
        .output()
        .await
        .ok()?;
    let line = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()?
        .to_owned();
    serde_json::from_str(&line).ok()
}

async fn play_once(player: &str, url: &str, licence: &Licence) -> serde_json::Value {
    play(player, url, licence).await.unwrap_or_else(|| {
        panic!("node could not run play.mjs: install node and run scripts/install-test-deps.sh")
    })
}

/// Plays each `(player, path, licence, must_play)`; returns the cases
/// whose outcome was not `must_play`.
async fn play_cases<const N: usize>(
    addr: SocketAddr,
    cases: [(&str, &str, Licence, bool); N],
) -> Vec<String> {
    let mut failures = Vec::new();
    for (player, path, licence, must_play) in cases {
        let url = format!("http://{addr}/live/{path}");
        let mut result = play_once(player, &url, &licence).await;
        eprintln!("{player} {path}: {result}");
        if must_play && never_started(&result) {
            // The content is the same bytes every run, so a player that never
            // left readyState 1 without any error is a start-up race in the
            // player's EME set-up on a loaded machine (seen once in CI with
            // dash.js + cbcs), not a property of the stream: one more try,
            // reported. A stream that is really broken fails both.
            eprintln!("{player} {path}: did not start, without an error; trying once more");
            result = play_once(player, &url, &licence).await;
            eprintln!("{player} {path} (second try): {result}");
        }
        if result["ok"] != serde_json::Value::Bool(must_play) {
            failures.push(format!(
                "{player} {path} (expected ok={must_play}): {result}"
            ));
        }
    }
    failures
}

/// True when the only fatal error is play.mjs's "playback did not start".
fn never_started(result: &serde_json::Value) -> bool {
    let fatal: Vec<&serde_json::Value> = result["errors"]
        .as_array()
        .map(|errors| errors.iter().filter(|e| e["fatal"] == true).collect())
        .unwrap_or_default();
    fatal.len() == 1
        && fatal[0]["source"] == "harness"
        && fatal[0]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("playback did not start"))
}

/// hls.js plays AES-128 HLS (keys from the origin); Shaka and dash.js play
/// ClearKey cenc and cbcs DASH; hls.js plays ClearKey SAMPLE-AES-CTR and
/// SAMPLE-AES HLS (Chromium decrypts cbcs); a wrong key plays nothing. Runs where
/// `tests/browser/node_modules` exists (`npm ci` in tests/browser).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_play_encrypted_streams() {
    let dir = scratch_dir("browser");
    let store = recorded_store(&dir);
    let drm = Arc::new(drm(&dir.join("state")));
    let addr = serve(store, drm.clone()).await;
    let pair = |channel: &str| {
        let key = drm.keys.key_for(channel, None).expect("key");
        Licence::Keys(format!("{}:{}", key.kid.hex(), hex::encode(key.key)))
    };
    let wrong_key = |channel: &str| {
        let key = drm.keys.key_for(channel, None).expect("key");
        Licence::Keys(format!("{}:{}", key.kid.hex(), "00".repeat(16)))
    };
    let cases = [
        ("hls", "aes/master.m3u8", Licence::None, true),
        ("shaka", "cenc/manifest.mpd", pair("cenc"), true),
        ("dash", "cenc/manifest.mpd", pair("cenc"), true),
        ("hls", "cenc/master.m3u8", pair("cenc"), true),
        ("shaka", "cbcs/manifest.mpd", pair("cbcs"), true),
        ("dash", "cbcs/manifest.mpd", pair("cbcs"), true),
        ("hls", "cbcs/master.m3u8", pair("cbcs"), true),
        // The players really decrypt: the right key ID with a wrong key
        // plays nothing.
        ("shaka", "cenc/manifest.mpd", wrong_key("cenc"), false),
        ("dash", "cbcs/manifest.mpd", wrong_key("cbcs"), false),
    ];
    let failures = play_cases(addr, cases).await;
    assert!(failures.is_empty(), "{failures:#?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every object of `channel` a player would fetch (playlists, MPD, inits,
/// fragments), protected, by path: rendering them creates every key period's
/// key, as players fetching them would.
fn protect_all(store: &Store, drm: &Drm, channel: &str) -> Vec<(String, Bytes)> {
    let now = SystemTime::now();
    let mut out = Vec::new();
    let mut get = |path: String| {
        let clear = store.render(channel, &path, now).expect("clear");
        let body = drm.protect(channel, &path, clear).expect("protect").body;
        out.push((path, body.clone()));
        body
    };
    get("manifest.mpd".into());
    for kind in ["video", "audio"] {
        let playlist = get(format!("main/{kind}.m3u8"));
        for line in String::from_utf8_lossy(&playlist).lines() {
            if let Some(uri) = line
                .strip_prefix("#EXT-X-MAP:URI=\"")
                .map(|u| u.trim_end_matches('"'))
            {
                get(format!("main/{uri}"));
            } else if !line.starts_with('#') {
                get(format!("main/{line}"));
            }
        }
    }
    out
}

/// With `keys.rotate_every = 1` every segment of the recording has its own
/// key: the playlists change key at each segment, fragments name their key
/// in band, ffmpeg (which ignores `seig`) still decrypts the first period
/// with the default key and only that, and Shaka (DASH) and hls.js (HLS)
/// play across the key changes given every period's key, and fail with a
/// wrong key for the later periods.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn players_play_across_key_rotation() {
    let dir = scratch_dir("rotation");
    let store = recorded_store(&dir);
    let drm = Arc::new(drm_rotating(&dir.join("state"), 1));
    for channel in ["cenc", "cbcs"] {
        let objects = protect_all(&store, &drm, channel);
        let video: Vec<&(String, Bytes)> = objects
            .iter()
            .filter(|(p, _)| p.starts_with("main/video/") && p.ends_with(".m4s"))
            .collect();
        assert!(
            video.len() >= 3,
            "{channel}: {} video fragments",
            video.len()
        );
        let playlist = &objects
            .iter()
            .find(|(p, _)| p == "main/video.m3u8")
            .expect("playlist")
            .1;
        let text = String::from_utf8_lossy(playlist);
        assert_eq!(
            text.matches("KEYFORMAT=\"org.w3.clearkey\"").count(),
            video.len(),
            "a key line per segment: {text}"
        );
        // ffmpeg: init + first fragment decrypt with the default key (the
        // first period's); the next fragment, under another key, does not.
        let init = &objects
            .iter()
            .find(|(p, _)| p.starts_with("main/video/init-"))
            .expect("init")
            .1;
        let default = drm
            .keys
            .entries_of(channel)
            .into_iter()
            .find(|e| e.period.is_some())
            .expect("a period key")
            .key;
        let key_hex = hex::encode(default.key);
        for (i, (path, fragment)) in video.iter().take(2).enumerate() {
            let file = dir.join(format!("rot-{channel}-{i}.mp4"));
            std::fs::write(&file, [init.as_ref(), fragment.as_ref()].concat()).expect("write");
            let (errors, frames) =
                decode(file.display().to_string(), &["-decryption_key", &key_hex]).await;
            if i == 0 {
                assert!(errors.is_empty(), "{channel} {path}: {errors}");
                assert!(frames > 0, "{channel} {path}");
            } else {
                assert!(
                    !errors.is_empty(),
                    "{channel} {path} decrypted with the first key"
                );
            }
        }
    }
    let addr = serve(store, drm.clone()).await;
    let keys = |channel: &str, wrong_after_first: bool| {
        let mut first = true;
        drm.keys
            .entries_of(channel)
            .into_iter()
            .map(|e| {
                let wrong = wrong_after_first && e.period.is_some() && !std::mem::take(&mut first);
                let key = if wrong {
                    "00".repeat(16)
                } else {
                    hex::encode(e.key.key)
                };
                format!("{}:{key}", e.key.kid.hex())
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let cases = [
        ("shaka", "cenc/manifest.mpd", keys("cenc", false), true),
        ("shaka", "cbcs/manifest.mpd", keys("cbcs", false), true),
        ("hls", "cbcs/master.m3u8", keys("cbcs", false), true),
        ("hls", "cenc/master.m3u8", keys("cenc", false), true),
        // Right key for the first period only: no player gets far.
        ("shaka", "cenc/manifest.mpd", keys("cenc", true), false),
        ("hls", "cbcs/master.m3u8", keys("cbcs", true), false),
    ];
    let failures = play_cases(
        addr,
        cases.map(|(p, u, k, ok)| (p, u, Licence::Keys(k), ok)),
    )
    .await;
    assert!(failures.is_empty(), "{failures:#?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// With `keys.rotate_every = 1` and no keys in the player, hls.js (HLS
/// fMP4 cbcs) and Shaka (DASH cenc) play across every key change with
/// licences from the origin's `/drm/clearkey/{channel}`: each licence for a
/// rotating key carries the group's next and current keys too, which hls.js
/// needs (it may ask one period's session for the previous period's KID).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn players_take_rotating_licences_from_the_origin() {
    let dir = scratch_dir("licences");
    let store = recorded_store(&dir);
    let drm = Arc::new(drm_rotating(&dir.join("state"), 1).with_store(store.clone()));
    let addr = serve(store, drm.clone()).await;
    let server = |channel: &str| Licence::Server(format!("http://{addr}/drm/clearkey/{channel}"));
    let cases = [
        ("hls", "cbcs/master.m3u8", server("cbcs"), true),
        ("shaka", "cenc/manifest.mpd", server("cenc"), true),
    ];
    let failures = play_cases(addr, cases).await;
    assert!(failures.is_empty(), "{failures:#?}");
    let answered = |outcome| {
        drm.metrics
            .licence_requests
            .get_or_create(&OutcomeLabels { outcome })
            .get()
    };
    assert!(answered("ok") >= 2, "licences came from the origin");
    for channel in ["cbcs", "cenc"] {
        let periods = drm
            .keys
            .entries_of(channel)
            .iter()
            .filter(|e| e.period.is_some())
            .count();
        assert!(
            periods >= 3,
            "{channel}: {periods} period keys: the key did change"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A player (or an edge) asking for a live channel's playlist before the
/// channel can honour its presentation delay (three 2 s target durations of
/// media) is held until it can, not sent a 404 that caches keep for a
/// second nor a one-segment playlist that players start at the live edge
/// of; a playlist that never comes still gets its 404 after the bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_playlist_asked_for_before_the_presentation_delay_waits_for_it() {
    let dir = scratch_dir("hold");
    let (params, samples) = source(&dir, 10);
    let clock = ManualClock::new(SystemTime::now());
    let store = Store::with_clock(StoreConfig::default(), Arc::new(clock.clone()));
    let (mut sink, ms) = publish_main(&store, "plain", &params);
    let mut samples = samples.into_iter().peekable();
    let mut feed_until = |limit_ms: i64| {
        while let Some((kind, s)) = samples.next_if(|(k, s)| ms(*k, s) < limit_ms) {
            clock.set(SystemTime::now());
            sink.sample(kind, s).expect("sample");
        }
    };
    // Everything before the second keyframe (2 s GOP): no complete segment.
    feed_until(1900);
    let drm = Arc::new(drm(&dir.join("state")));
    let addr = serve(store.clone(), drm).await;
    let playlist = tokio::spawn(get(addr, "/live/plain/main/video.m3u8"));
    let mpd = tokio::spawn(get(addr, "/live/plain/manifest.mpd"));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        !playlist.is_finished(),
        "answered before there was a segment"
    );
    // Two segments, 4 s: still short of the 6 s delay.
    feed_until(5900);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        !playlist.is_finished() && !mpd.is_finished(),
        "answered with two segments, short of the presentation delay"
    );
    feed_until(i64::MAX);
    let (status, body) = playlist.await.expect("join");
    assert_eq!(status, 200, "{body}");
    assert!(body.matches("#EXTINF").count() >= 3, "{body}");
    let (status, body) = mpd.await.expect("join");
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("suggestedPresentationDelay=\"PT6.000S\""),
        "{body}"
    );
    // The clock: /time relative to the MPD first, then the time itself for
    // clients that cannot resolve it.
    let http_iso = body.find("urn:mpeg:dash:utc:http-iso:2014\" value=\"/time\"");
    let direct = body.find("urn:mpeg:dash:utc:direct:2014\" value=\"20");
    assert!(
        matches!((http_iso, direct), (Some(h), Some(d)) if h < d),
        "{body}"
    );
    // A rendition nobody publishes: the same wait, then the usual 404.
    let started = std::time::Instant::now();
    let (status, _) = get(addr, "/live/plain/nope/video.m3u8").await;
    assert_eq!(status, 404);
    assert!(started.elapsed() < Duration::from_secs(10));
    drop(sink);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `GET path` over HTTP/1.1 with `Connection: close`: (status, body).
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .expect("write");
    let mut reply = Vec::new();
    tcp.read_to_end(&mut reply).await.expect("read");
    let reply = String::from_utf8_lossy(&reply).into_owned();
    let status = reply
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = reply
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}
