//! Mapped VOD titles end to end at the origin: a set file naming two video
//! renditions, two audio languages and two subtitle files (WebVTT and SubRip),
//! all made by `tests/fixtures/make-vod-set.sh` (ffmpeg), packaged as one
//! master playlist and one MPD; Python's `m3u8` parses the playlists (the
//! I-frame playlists included) and ffmpeg decodes the outputs.

use std::path::Path;
use std::process::Stdio;

use tokio::process::Command;

use crate::support::FFMPEG;
use crate::vod::{decoded_seconds, get, run_m3u8_script, start_origin, Library};

/// `{root}/films/`: the fixture set of `seconds` seconds.
async fn make_set(name: &str, seconds: u32) -> Library {
    assert!(
        Path::new(FFMPEG).exists(),
        "install ffmpeg: apt-get install ffmpeg"
    );
    let root = std::env::temp_dir().join(format!("strata-vod-set-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/make-vod-set.sh"
    );
    let out = Command::new("sh")
        .arg(script)
        .arg(root.join("films"))
        .arg(seconds.to_string())
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run sh");
    assert!(
        out.status.success(),
        "{script} failed (install ffmpeg: apt-get install ffmpeg): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Library(root)
}

/// Python `m3u8` reads the master playlist and every playlist it names
/// (media, I-frame, subtitle) and reports what it found as JSON.
async fn parse_set_with_m3u8(url: &str) -> serde_json::Value {
    const SCRIPT: &str = r#"
import json, sys, m3u8
master = m3u8.load(sys.argv[1])
out = {"variants": [], "media": [], "iframes": []}
for p in master.playlists:
    out["variants"].append({"resolution": list(p.stream_info.resolution or []),
        "audio": p.stream_info.audio, "subtitles": p.stream_info.subtitles,
        "codecs": p.stream_info.codecs})
for m in master.media:
    media = m3u8.load(m.absolute_uri)
    out["media"].append({"type": m.type, "language": m.language, "name": m.name,
        "default": m.default, "group": m.group_id, "playlist_type": media.playlist_type,
        "endlist": media.is_endlist, "segments": [s.absolute_uri for s in media.segments],
        "seconds": sum(s.duration for s in media.segments)})
for p in master.iframe_playlists:
    media = m3u8.load(p.absolute_uri)
    out["iframes"].append({"uri": p.absolute_uri,
        "resolution": list(p.iframe_stream_info.resolution or []),
        "codecs": p.iframe_stream_info.codecs,
        "bandwidth": p.iframe_stream_info.bandwidth,
        "iframes_only": media.is_i_frames_only, "endlist": media.is_endlist,
        "map": media.segment_map[0].uri if media.segment_map else None,
        "segments": len(media.segments),
        "seconds": sum(s.duration for s in media.segments)})
print(json.dumps(out))
"#;
    run_m3u8_script(SCRIPT, url).await
}

/// Frames ffmpeg decodes from `url`, and its complaints.
async fn decoded_frames(url: &str) -> (u64, String) {
    let out = Command::new(FFMPEG)
        .args(["-hide_banner", "-nostdin", "-v", "error", "-i", url])
        .args(["-map", "0:v:0", "-progress", "pipe:1", "-f", "null", "-"])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .expect("ffmpeg runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "ffmpeg failed on {url}: {stderr}");
    let frames = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("frame="))
        .filter_map(|v| v.trim().parse().ok())
        .next_back()
        .unwrap_or(0);
    (frames, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_is_one_title_with_languages_subtitles_and_trick_play() {
    crate::support::init_logs();
    let library = make_set("play", 12).await;
    let (addr, admin, _stop) = start_origin(&library.0).await;
    let base = format!("http://{addr}/vod/films/set.json");

    let parsed = parse_set_with_m3u8(&format!("{base}/master.m3u8")).await;
    let variants = parsed["variants"].as_array().expect("variants");
    assert_eq!(variants.len(), 2, "two video renditions: {parsed}");
    for v in variants {
        assert_eq!(v["audio"], "audio", "{v}");
        assert_eq!(v["subtitles"], "subs", "{v}");
    }
    let media = parsed["media"].as_array().expect("media");
    let find = |kind: &str, lang: &str| {
        media
            .iter()
            .find(|m| m["type"] == kind && m["language"] == lang)
            .unwrap_or_else(|| panic!("no {kind} rendition in {lang}: {parsed}"))
    };
    let (en, fr) = (find("AUDIO", "en"), find("AUDIO", "fr"));
    assert_eq!(
        (&en["name"], &en["default"]),
        (&"English".into(), &"YES".into())
    );
    assert_eq!(
        (&fr["name"], &fr["default"]),
        (&"Français".into(), &"NO".into())
    );
    let (sub_en, sub_fr) = (find("SUBTITLES", "en"), find("SUBTITLES", "fr"));
    for m in media {
        assert_eq!(m["playlist_type"], "vod", "{m}");
        assert_eq!(m["endlist"], true, "{m}");
        let seconds = m["seconds"].as_f64().expect("seconds");
        assert!((seconds - 12.0).abs() < 0.1, "{seconds} s listed: {m}");
    }
    // Subtitle segments are WebVTT cut where the video is cut (4 s), with
    // the cues showing in each; the SubRip file arrives converted.
    assert_eq!(sub_en["segments"].as_array().map(Vec::len), Some(3));
    let segment = |m: &serde_json::Value, n: usize| {
        let url = m["segments"][n].as_str().expect("segment URI").to_owned();
        async move {
            let response = reqwest_get(&url).await;
            assert_eq!(response.0, 200, "{url}");
            response.1
        }
    };
    let first = segment(sub_en, 0).await;
    assert!(
        first.starts_with("WEBVTT\nX-TIMESTAMP-MAP=MPEGTS:0,LOCAL:00:00:00.000\n")
            && first.contains("00:00:02.000 --> 00:00:03.500 line:0\nEnglish cue at 2 s\n")
            && !first.contains("at 4 s"),
        "{first}"
    );
    let second_fr = segment(sub_fr, 1).await;
    assert!(
        second_fr.contains("00:00:04.000 --> 00:00:05.500\nSous-titre à 4 s\n")
            && !second_fr.contains("à 2 s"),
        "{second_fr}"
    );

    // Trick play: an I-frame playlist per video rendition, one keyframe
    // (every 2 s) per segment, covering the title.
    let iframes = parsed["iframes"].as_array().expect("iframes");
    assert_eq!(iframes.len(), 2, "{parsed}");
    for i in iframes {
        assert_eq!(i["iframes_only"], true, "{i}");
        assert_eq!(i["endlist"], true, "{i}");
        assert_eq!(i["segments"], 6, "{i}");
        assert!((i["seconds"].as_f64().expect("seconds") - 12.0).abs() < 0.1);
        assert!(i["codecs"].as_str().is_some_and(|c| c.starts_with("avc1.")));
        assert!(i["map"].as_str().is_some_and(|m| m.ends_with("/init.mp4")));
        assert!(i["bandwidth"].as_u64().is_some_and(|b| b > 1000), "{i}");
    }
    let hi = iframes
        .iter()
        .find(|i| i["resolution"] == serde_json::json!([640, 360]))
        .expect("a 640x360 I-frame playlist");
    let (frames, stderr) = decoded_frames(hi["uri"].as_str().expect("uri")).await;
    assert!(stderr.trim().is_empty(), "{stderr}");
    assert_eq!(frames, 6, "ffmpeg decodes one picture per keyframe");

    let (status, mpd) = get(addr, "/vod/films/set.json/manifest.mpd").await;
    assert_eq!(status, 200);
    let mpd = String::from_utf8(mpd).expect("utf-8");
    for needle in [
        "contentType=\"audio\" mimeType=\"audio/mp4\" lang=\"en\"",
        "contentType=\"audio\" mimeType=\"audio/mp4\" lang=\"fr\"",
        "<Label>Français</Label>",
        "contentType=\"text\" mimeType=\"text/vtt\" lang=\"en\"",
        "contentType=\"text\" mimeType=\"text/vtt\" lang=\"fr\"",
        "<BaseURL>s2.vtt</BaseURL>",
    ] {
        assert!(mpd.contains(needle), "{needle} in {mpd}");
    }
    let (status, vtt) = get(addr, "/vod/films/set.json/s2.vtt").await;
    assert_eq!(status, 200);
    let vtt = String::from_utf8(vtt).expect("utf-8");
    assert!(
        vtt.starts_with("WEBVTT\n\n00:00:00.000 --> 00:00:01.500\nSous-titre à 0 s\n"),
        "{vtt}"
    );

    for url in [
        format!("{base}/master.m3u8"),
        format!("{base}/manifest.mpd"),
    ] {
        let seconds = decoded_seconds(&url).await;
        assert!((seconds - 12.0).abs() < 0.5, "{url}: decoded {seconds} s");
    }

    let (_, metrics) = get(admin, "/metrics").await;
    let metrics = String::from_utf8(metrics).expect("utf-8");
    assert!(
        metrics.contains("strata_origin_vod_index_cache_total{event=\"miss\"} 4\n"),
        "each of the four MP4s indexed once: {metrics}"
    );
}

/// A GET through reqwest-free plain HTTP: status and body as text.
async fn reqwest_get(url: &str) -> (u16, String) {
    let rest = url.strip_prefix("http://").expect("http URL");
    let (host, path) = rest.split_at(rest.find('/').expect("path"));
    let addr = host.parse().expect("host:port");
    let (status, body) = get(addr, path).await;
    (status, String::from_utf8(body).expect("utf-8"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_set_files_get_a_4xx_with_a_reason_and_a_count() {
    crate::support::init_logs();
    let library = make_set("bad", 2).await;
    let films = library.0.join("films");
    let outside = library.0.with_extension("outside.mp4");
    std::fs::copy(films.join("video-180p.mp4"), &outside).expect("copy");
    std::os::unix::fs::symlink(&outside, films.join("link.mp4")).expect("symlink");
    for (name, body) in [
        ("malformed.json", "{\"video\": [{\"file\": \"video-180p.mp4\"}"),
        ("unknown.json", "{\"video\": [{\"file\": \"video-180p.mp4\", \"bitrate\": 5}]}"),
        ("missing.json", "{\"video\": [{\"file\": \"video-180p.mp4\"}], \"audio\": [{\"file\": \"nope.m4a\"}]}"),
        ("missing-subs.json", "{\"video\": [{\"file\": \"video-180p.mp4\"}], \"subtitles\": [{\"file\": \"nope.vtt\", \"language\": \"de\"}]}"),
        ("dotdot.json", "{\"video\": [{\"file\": \"../films/video-180p.mp4\"}]}"),
        ("absolute.json", "{\"video\": [{\"file\": \"/etc/passwd\"}]}"),
        ("link.json", "{\"video\": [{\"file\": \"link.mp4\"}]}"),
        ("no-audio.json", "{\"video\": [{\"file\": \"video-180p.mp4\"}], \"audio\": [{\"file\": \"video-360p.mp4\"}]}"),
    ] {
        std::fs::write(films.join(name), body).expect("write set");
    }
    let (addr, admin, _stop) = start_origin(&library.0).await;

    for (set, status, reason) in [
        (
            "malformed.json",
            422,
            "malformed set file: EOF while parsing",
        ),
        (
            "unknown.json",
            422,
            "malformed set file: unknown field `bitrate`",
        ),
        (
            "missing.json",
            404,
            "set file names a missing file: nope.m4a",
        ),
        (
            "missing-subs.json",
            404,
            "set file names a missing file: nope.vtt",
        ),
        (
            "dotdot.json",
            422,
            "set file names a path outside its directory: ../films/video-180p.mp4",
        ),
        (
            "absolute.json",
            422,
            "set file names a path outside its directory: /etc/passwd",
        ),
        (
            "link.json",
            422,
            "set file names a path outside its directory: link.mp4",
        ),
        (
            "no-audio.json",
            422,
            "malformed set file: video-360p.mp4 has no audio track",
        ),
    ] {
        for object in ["master.m3u8", "manifest.mpd"] {
            let path = format!("/vod/films/{set}/{object}");
            let (got, body) = get(addr, &path).await;
            let body = String::from_utf8_lossy(&body);
            assert_eq!(got, status, "{path}: {body}");
            assert!(body.starts_with(reason), "{path}: {body}");
        }
    }
    // A good set's renditions that do not exist are plain 404s.
    for path in ["t9.m3u8", "s3.m3u8", "i3.m3u8", "s1/99.vtt", "i1/99.m4s"] {
        let (got, _) = get(addr, &format!("/vod/films/set.json/{path}")).await;
        assert_eq!(got, 404, "{path}");
    }
    let (_, metrics) = get(admin, "/metrics").await;
    let metrics = String::from_utf8(metrics).expect("utf-8");
    for line in [
        "strata_origin_vod_errors_total{reason=\"set_malformed\"} 6",
        "strata_origin_vod_errors_total{reason=\"set_missing_file\"} 4",
        "strata_origin_vod_errors_total{reason=\"set_escape\"} 6",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
    assert!(crate::support::logged_lines()
        .iter()
        .any(|l| l.contains("VOD title cannot be packaged") && l.contains("malformed.json")));
    let _ = std::fs::remove_file(outside);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clips_are_cut_on_keyframes() {
    crate::support::init_logs();
    let library = make_set("clip", 12).await;
    let (addr, _admin, _stop) = start_origin(&library.0).await;
    // 2 s GOPs: 3 s..9 s widens to the keyframes at 2 s and 10 s.
    let base = format!("http://{addr}/vod/films/set.json/clipFrom/3000/clipTo/9000");

    let parsed = parse_set_with_m3u8(&format!("{base}/master.m3u8")).await;
    for m in parsed["media"].as_array().expect("media") {
        let seconds = m["seconds"].as_f64().expect("seconds");
        assert!((seconds - 8.0).abs() < 0.1, "{seconds} s listed: {m}");
    }
    for i in parsed["iframes"].as_array().expect("iframes") {
        assert_eq!(i["segments"], 6, "trick play keeps the whole title: {i}");
    }
    let sub_en = parsed["media"]
        .as_array()
        .expect("media")
        .iter()
        .find(|m| m["type"] == "SUBTITLES" && m["language"] == "en")
        .expect("English subtitles");
    let first = reqwest_get(sub_en["segments"][0].as_str().expect("uri"))
        .await
        .1;
    assert!(
        first.contains("English cue at 2 s") && !first.contains("English cue at 0 s"),
        "{first}"
    );

    let (status, mpd) = get(
        addr,
        "/vod/films/set.json/clipFrom/3000/clipTo/9000/manifest.mpd",
    )
    .await;
    assert_eq!(status, 200);
    let mpd = String::from_utf8(mpd).expect("utf-8");
    assert!(
        mpd.contains("mediaPresentationDuration=\"PT8.0")
            && mpd.contains("presentationTimeOffset=\"180000\""),
        "{mpd}"
    );
    // DASH times side-loaded cues from the clip's start.
    let (_, vtt) = get(addr, "/vod/films/set.json/clipFrom/3000/clipTo/9000/s1.vtt").await;
    let vtt = String::from_utf8(vtt).expect("utf-8");
    assert!(
        vtt.starts_with("WEBVTT\n\n00:00:00.000 --> 00:00:01.500 line:0\nEnglish cue at 2 s\n"),
        "{vtt}"
    );

    for url in [
        format!("{base}/master.m3u8"),
        format!("{base}/manifest.mpd"),
        format!("http://{addr}/vod/films/video-360p.mp4/clipFrom/4000/master.m3u8"),
    ] {
        let seconds = decoded_seconds(&url).await;
        assert!((seconds - 8.0).abs() < 0.5, "{url}: decoded {seconds} s");
    }

    for (path, status) in [
        ("clipFrom/20000/master.m3u8", 400),
        ("clipFrom/5000/clipTo/4000/master.m3u8", 400),
        ("clipFrom/05/master.m3u8", 400),
        ("clipTo/0/master.m3u8", 400),
        ("clipFrom/-5/master.m3u8", 400),
    ] {
        let (got, body) = get(addr, &format!("/vod/films/set.json/{path}")).await;
        assert_eq!(got, status, "{path}: {}", String::from_utf8_lossy(&body));
    }
}
