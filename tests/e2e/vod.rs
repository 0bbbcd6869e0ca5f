//! VOD end to end: an MP4 made by ffmpeg, packaged by the origin under
//! `/vod/`, played through an edge by hls.js, dash.js and Shaka (default
//! settings) and decoded by ffmpeg.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use crate::harness::client;
use crate::stack::{assert_plays, require_peers, start_stack};

/// A scratch library, removed on drop.
struct Library(PathBuf);

impl Drop for Library {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `{root}/title.mp4`: 20 s of 640x360 and 320x180 H.264 (25 fps, 2 s GOPs,
/// B-frames) and AAC, in one progressive MP4, as an encoder would leave it.
async fn make_library() -> Library {
    let root = std::env::temp_dir().join(format!("strata-vod-browser-{}", std::process::id()));
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vod_title_plays_through_the_edge_in_every_player() {
    require_peers();
    let library = make_library().await;
    let root = library.0.clone();
    let stack = start_stack(move |c| {
        c.vod = Some(strata_origin::vod::VodConfig {
            root,
            segment_duration: Duration::from_secs(4),
            index_cache_entries: 16,
            index_cache_bytes: 64 << 20,
            max_moov_bytes: 16 << 20,
            remote: Vec::new(),
            thumbnails: Default::default(),
        });
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
        c.vod = Some(strata_origin::vod::VodConfig {
            root,
            segment_duration: Duration::from_secs(4),
            index_cache_entries: 16,
            index_cache_bytes: 64 << 20,
            max_moov_bytes: 16 << 20,
            remote: Vec::new(),
            thumbnails: Default::default(),
        });
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
