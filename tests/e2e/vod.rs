//! VOD end to end: an MP4 made by ffmpeg, packaged by the origin under
//! `/vod/`, played through an edge by hls.js, dash.js and Shaka (default
//! settings) and decoded by ffmpeg.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use crate::harness::client;
use crate::stack::{assert_plays, require_peers, start_stack};

/// A scratch library, removed on drop.
pub(crate) struct Library(pub(crate) PathBuf);

impl Drop for Library {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `{root}/title.mp4`: 20 s of 640x360 and 320x180 H.264 (25 fps, 2 s GOPs,
/// B-frames) and AAC, in one progressive MP4, as an encoder would leave it.
async fn make_library() -> Library {
    make_library_in("strata-vod-browser").await
}

/// [`make_library`] in a scratch directory of its own, `{name}-{pid}`.
pub(crate) async fn make_library_in(name: &str) -> Library {
    let root = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).expect("library dir");
    let out = tokio::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-t", "20"])
        .args([
            "-filter_complex",
            "[0:v]split=2[hi][x];[x]scale=320:180[lo]",
        ])
        .args(["-map", "[hi]", "-map", "[lo]", "-map", "1:a"])
        .args([
            "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
        ])
        .args(["-g", "50", "-keyint_min", "50", "-sc_threshold", "0"])
        .args(["-c:a", "aac", "-b:a", "64k"])
        .arg(root.join("title.mp4"))
        .stdin(Stdio::null())
        .output()
        .await
        .expect("ffmpeg — run scripts/install-test-deps.sh");
    assert!(
        out.status.success(),
        "ffmpeg could not make the fixture: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Library(root)
}

/// The `[vod]` section these tests run with: the library at `root`, 4 s
/// segments, small index caches, nothing encrypted, no remote store.
pub(crate) fn test_vod_config(root: PathBuf) -> strata_origin::vod::VodConfig {
    strata_origin::vod::VodConfig {
        root: Some(root),
        segment_duration: Duration::from_secs(4),
        index_cache_entries: 16,
        index_cache_bytes: 64 << 20,
        max_moov_bytes: 16 << 20,
        encryption: Default::default(),
        remote: Vec::new(),
        thumbnails: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vod_title_plays_through_the_edge_in_every_player() {
    require_peers();
    let library = make_library().await;
    let root = library.0.clone();
    let stack = start_stack(move |c| {
        c.vod = Some(test_vod_config(root));
    })
    .await;
    let master = stack.edge("/vod/title.mp4/master.m3u8");
    let mpd = stack.edge("/vod/title.mp4/manifest.mpd");

    let response = client().get(&master).send().await.expect("GET master");
    assert_eq!(response.status(), 200);
    let text = response.text().await.expect("body");
    assert!(
        text.contains("RESOLUTION=640x360") && text.contains("RESOLUTION=320x180"),
        "{text}"
    );

    crate::stack::assert_decodes(&master, 8).await;
    crate::stack::assert_decodes(&mpd, 8).await;
    assert_plays("hls", &master, 8).await;
    assert_plays("dash", &mpd, 8).await;
    assert_plays("shaka", &mpd, 8).await;
}

/// `{root}/films/`: `tests/fixtures/make-vod-set.sh`'s mapped title (two
/// video renditions, English and French audio, English WebVTT and French
/// SubRip subtitles, `set.json`) of `seconds` seconds.
async fn make_set(seconds: u32) -> Library {
    let root = std::env::temp_dir().join(format!("strata-vod-set-browser-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/make-vod-set.sh");
    let out = tokio::process::Command::new("sh")
        .arg(&script)
        .arg(root.join("films"))
        .arg(seconds.to_string())
        .stdin(Stdio::null())
        .output()
        .await
        .expect("sh");
    assert!(
        out.status.success(),
        "{} failed (ffmpeg — run scripts/install-test-deps.sh): {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Library(root)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vod_set_plays_with_its_languages_and_subtitles_in_every_player() {
    require_peers();
    let library = make_set(20).await;
    let root = library.0.clone();
    let stack = start_stack(move |c| {
        c.vod = Some(test_vod_config(root));
    })
    .await;
    let master = stack.edge("/vod/films/set.json/master.m3u8");
    let mpd = stack.edge("/vod/films/set.json/manifest.mpd");

    crate::stack::assert_decodes(&master, 8).await;
    crate::stack::assert_decodes(&mpd, 8).await;
    for (player, url) in [("hls", &master), ("dash", &mpd), ("shaka", &mpd)] {
        let report = assert_plays(player, url, 6).await;
        assert_eq!(
            report["levels"], 2,
            "{player}: two video renditions: {report}"
        );
        let mut audio: Vec<String> = serde_json::from_value(report["audioLanguages"].clone())
            .unwrap_or_else(|_| panic!("{player}: audioLanguages: {report}"));
        audio.sort();
        assert_eq!(
            audio,
            ["en", "fr"],
            "{player}: both audio languages offered: {report}"
        );
        assert_eq!(
            report["audioLanguage"], "en",
            "{player}: the set's default audio (English) plays: {report}"
        );
        let mut text: Vec<String> = serde_json::from_value(report["textLanguages"].clone())
            .unwrap_or_else(|_| panic!("{player}: textLanguages: {report}"));
        text.sort();
        assert_eq!(
            text,
            ["en", "fr"],
            "{player}: both subtitle files offered: {report}"
        );
    }

    // A clip (4 s..12 s of the 20 s title, on 2 s keyframes) plays too:
    // its media keeps the title's timestamps.
    for (player, object) in [("hls", "master.m3u8"), ("dash", "manifest.mpd")] {
        let url = stack.edge(&format!(
            "/vod/films/set.json/clipFrom/4000/clipTo/12000/{object}"
        ));
        let report = assert_plays(player, &url, 5).await;
        assert_eq!(
            report["audioLanguage"], "en",
            "{player} on the clip: {report}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vod_title_plays_as_mpeg_ts() {
    require_peers();
    let library = make_library_in("strata-vod-ts").await;
    let root = library.0.clone();
    let stack = start_stack(move |c| {
        c.vod = Some(test_vod_config(root));
    })
    .await;
    let master = stack.edge("/vod/title.mp4/master-ts.m3u8");
    let text = client()
        .get(&master)
        .send()
        .await
        .expect("GET master-ts")
        .text()
        .await
        .expect("body");
    assert!(
        text.contains("RESOLUTION=640x360") && text.contains("ts.m3u8"),
        "{text}"
    );
    crate::stack::assert_decodes(&master, 8).await;
    assert_plays("hls", &master, 8).await;
}

/// `{root}/hevc.mp4`: 10 s of 640x360 HEVC (libx265, `hvc1`, 2 s GOPs) and AAC.
async fn make_hevc_library() -> Library {
    make_hevc_library_in("strata-vod-hevc").await
}

/// [`make_hevc_library`] in a scratch directory of its own, `{name}-{pid}`.
pub(crate) async fn make_hevc_library_in(name: &str) -> Library {
    let root = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).expect("library dir");
    let out = tokio::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-t", "10"])
        .args([
            "-c:v",
            "libx265",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
        ])
        .args([
            "-x265-params",
            "keyint=50:min-keyint=50:scenecut=0:log-level=error",
        ])
        .args(["-tag:v", "hvc1", "-c:a", "aac", "-b:a", "64k"])
        .arg(root.join("hevc.mp4"))
        .stdin(Stdio::null())
        .output()
        .await
        .expect("ffmpeg — run scripts/install-test-deps.sh");
    assert!(
        out.status.success(),
        "ffmpeg (with libx265) could not make the HEVC fixture: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Library(root)
}

/// HEVC: the manifests name it by its `hvcC` (checked by the `m3u8`
/// parser), ffmpeg decodes our CMAF from HLS and DASH, and MPEG-TS.
/// (Chromium here does not decode HEVC, so no browser plays it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vod_hevc_title_is_packaged_as_cmaf_with_its_codec_string() {
    require_peers();
    let library = make_hevc_library().await;
    let root = library.0.clone();
    let stack = start_stack(move |c| {
        c.vod = Some(test_vod_config(root));
    })
    .await;
    let master = stack.edge("/vod/hevc.mp4/master.m3u8");
    let mpd = stack.edge("/vod/hevc.mp4/manifest.mpd");
    let python = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    let out = tokio::process::Command::new(&python)
        .args([
            "-c",
            "import m3u8, sys\n\
             p = m3u8.load(sys.argv[1])\n\
             for v in p.playlists: print(v.stream_info.codecs, v.stream_info.resolution)\n\
             for v in p.iframe_playlists: print('iframe', v.iframe_stream_info.codecs)",
            &master,
        ])
        .output()
        .await
        .expect("python — run scripts/install-test-deps.sh");
    let listed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "m3u8 could not parse {master}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = listed.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("hvc1.1.6.L")
            && first.contains("mp4a.40.2")
            && first.ends_with("(640, 360)"),
        "Main profile HEVC with AAC at 640x360: {listed}"
    );
    assert!(listed.contains("iframe hvc1.1.6.L"), "{listed}");
    let text = client()
        .get(&mpd)
        .send()
        .await
        .expect("GET mpd")
        .text()
        .await
        .expect("body");
    assert!(text.contains("codecs=\"hvc1.1.6.L"), "{text}");
    let init = client()
        .get(stack.edge("/vod/hevc.mp4/t1/init.mp4"))
        .send()
        .await
        .expect("GET init")
        .bytes()
        .await
        .expect("body");
    assert!(
        init.windows(4).any(|w| w == b"hvc1") && init.windows(4).any(|w| w == b"hvcC"),
        "an hvc1 sample entry with its hvcC"
    );
    crate::stack::assert_decodes(&master, 8).await;
    crate::stack::assert_decodes(&mpd, 8).await;
    // MPEG-TS: stream type 0x24, Annex B with the parameter sets before
    // each keyframe, decoded by ffmpeg without an error.
    let master_ts = stack.edge("/vod/hevc.mp4/master-ts.m3u8");
    let text = client()
        .get(&master_ts)
        .send()
        .await
        .expect("GET master-ts")
        .text()
        .await
        .expect("body");
    assert!(
        text.contains("CODECS=\"hvc1.1.6.L") && text.contains("t1/ts.m3u8"),
        "{text}"
    );
    let segment = client()
        .get(stack.edge("/vod/hevc.mp4/t1/2.ts"))
        .send()
        .await
        .expect("GET ts")
        .bytes()
        .await
        .expect("body");
    assert!(
        segment.len() % 188 == 0 && segment.windows(3).any(|w| w == [0x24, 0xe1, 0x00]),
        "a PMT naming PID 0x100 as stream type 0x24"
    );
    let vps = [0, 0, 0, 1, 0x40, 0x01];
    assert!(
        segment.windows(6).any(|w| w == vps),
        "a VPS before the segment's keyframe"
    );
    crate::stack::assert_decodes(&master_ts, 8).await;
}
