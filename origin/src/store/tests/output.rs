//! What players read: segments, playlists, MPDs, status, memoisation.

use super::*;

#[test]
fn ten_seconds_make_five_two_second_segments() {
    let rig = rig(StoreConfig::default());
    let mut sink = rig.publish("main", true, true);
    rig.feed(&mut *sink, 0.0, 10.04, true, true);

    let video = rig.text("main/video.m3u8");
    let segments = check::media_playlist(&video);
    assert_eq!(segments.len(), 5, "{video}");
    for (i, (uri, d)) in segments.iter().enumerate() {
        assert_eq!(uri, &format!("video/{}.m4s", START + i as u64));
        assert_eq!(*d, 2.0);
    }
    assert_eq!(
        tag_value(&video, "#EXT-X-MEDIA-SEQUENCE:"),
        START.to_string()
    );
    assert_eq!(tag_value(&video, "#EXT-X-TARGETDURATION:"), "2");
    assert_eq!(
        tag_value(&video, "#EXT-X-MAP:URI="),
        format!("\"video/init-{START}.mp4\"")
    );
    assert_eq!(
        tag_value(&video, "#EXT-X-PROGRAM-DATE-TIME:"),
        "2027-01-15T08:00:00.000Z"
    );
    assert!(!video.contains("#EXT-X-ENDLIST"));
    assert!(!video.contains("#EXT-X-DISCONTINUITY\n"));

    let audio = rig.text("main/audio.m3u8");
    let audio_segments = check::media_playlist(&audio);
    assert_eq!(audio_segments.len(), 5);
    for (_, d) in &audio_segments {
        assert!((d - 2.0).abs() < 0.03, "audio segment {d}");
    }

    let master = rig.text("master.m3u8");
    assert_eq!(check::multivariant(&master), ["main/video.m3u8"]);
    let lines: Vec<&str> = master.lines().collect();
    assert_eq!(
        &lines[..3],
        ["#EXTM3U", "#EXT-X-VERSION:7", "#EXT-X-INDEPENDENT-SEGMENTS"]
    );
    assert_eq!(
        lines[3],
        "#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"audio\",NAME=\"main\",DEFAULT=YES,AUTOSELECT=YES,CHANNELS=\"2\",URI=\"main/audio.m3u8\""
    );
    let inf = lines[4];
    for attr in [
        "CODECS=\"avc1.64001f,mp4a.40.2\"",
        "RESOLUTION=1280x720",
        "FRAME-RATE=25.000",
        "AUDIO=\"audio\"",
        "AVERAGE-BANDWIDTH=",
    ] {
        assert!(inf.contains(attr), "{attr} in {inf}");
    }
    // 1004 bytes × 25 fps ≈ 200 kbit/s of video, 250 bytes × 46.875 ≈ 94 kbit/s of audio.
    let bandwidth: u64 = inf["#EXT-X-STREAM-INF:BANDWIDTH=".len()..]
        .split(',')
        .next()
        .and_then(|v| v.parse().ok())
        .expect("BANDWIDTH");
    assert!((280_000..320_000).contains(&bandwidth), "{bandwidth}");

    let seg = rig
        .get(&format!("main/video/{START}.m4s"))
        .expect("segment");
    assert_eq!(seg.content_type, "video/mp4");
    assert_eq!(seg.cache_control, "public, max-age=31536000, immutable");
    assert_eq!(seg.etag, Some(crate::package::strong_etag(&seg.body)));
    assert_eq!(&seg.body[4..8], b"styp");
    assert_eq!(rig.get(&format!("main/video/{START}.m4s")), Ok(seg));
    let init = rig
        .get(&format!("main/video/init-{START}.mp4"))
        .expect("init");
    assert_eq!(&init.body[4..8], b"ftyp");
    assert_eq!(init.cache_control, "public, max-age=31536000, immutable");
    let ts = rig.get(&format!("main/{START}.ts")).expect("ts");
    assert_eq!(ts.content_type, "video/mp2t");
    assert_eq!(ts.body[0], 0x47);
    assert_eq!(ts.body.len() % 188, 0);

    // The open segment is not there yet: short negative caching.
    assert_eq!(
        rig.get(&format!("main/video/{}.m4s", START + 5)),
        Err(RenderError::NotFound {
            cache_control: "public, max-age=1".into()
        })
    );
    assert_eq!(
        rig.get("main/video.m3u8").map(|r| r.cache_control),
        Ok("public, max-age=1".into())
    );
    assert!(matches!(
        rig.get("nonsense.txt"),
        Err(RenderError::NotFound { .. })
    ));
    assert_eq!(
        rig.store.render("other", "master.m3u8", rig.clock.now()),
        Err(RenderError::ChannelNotFound)
    );
}

#[test]
fn dvr_window_drops_old_segments() {
    let rig = rig(StoreConfig {
        dvr_window: Duration::from_secs(6),
        ..StoreConfig::default()
    });
    let mut sink = rig.publish("main", true, true);
    rig.feed(&mut *sink, 0.0, 20.04, true, true);
    let video = rig.text("main/video.m3u8");
    let segments = check::media_playlist(&video);
    assert_eq!(segments.len(), 3, "{video}");
    assert_eq!(
        tag_value(&video, "#EXT-X-MEDIA-SEQUENCE:"),
        (START + 7).to_string()
    );
    assert!(matches!(
        rig.get(&format!("main/video/{START}.m4s")),
        Err(RenderError::NotFound { cache_control }) if cache_control != "public, max-age=1"
    ));
    let mpd = rig.text("manifest.mpd");
    assert!(
        mpd.contains(&format!("startNumber=\"{}\"", START + 7)),
        "{mpd}"
    );
    assert!(mpd.contains("timeShiftBufferDepth=\"PT6.000S\""));
    assert!(
        mpd.contains("<S t=\"1260000\" d=\"180000\" r=\"2\"/>"),
        "{mpd}"
    );
}

#[test]
fn channel_status_reports_what_was_measured() {
    let rig = rig(StoreConfig::default());
    let mut sink = rig.publish("main", true, true);
    rig.feed(&mut *sink, 0.0, 10.04, true, true);
    let status = rig.store.channels();
    assert_eq!(status.len(), 1);
    let r = &status[0].renditions[0];
    assert_eq!(r.video_codec.as_deref(), Some("avc1.64001f"));
    assert_eq!(r.audio_codec.as_deref(), Some("mp4a.40.2"));
    assert_eq!((r.width, r.height), (Some(1280), Some(720)));
    assert_eq!(r.frame_rate, 25.0);
    assert_eq!(r.keyframe_interval, 2.0);
    assert!((280_000..310_000).contains(&r.bitrate), "{}", r.bitrate);
    let p = r.publisher.as_ref().expect("publisher");
    assert_eq!(
        (p.address.as_str(), p.protocol),
        ("192.0.2.7:50000", "rtmp")
    );
    assert_eq!(p.uptime_seconds, 10);
    let json = serde_json::to_value(&status).expect("json");
    assert_eq!(json[0]["state"], "live");
    assert_eq!(json[0]["renditions"][0]["frame_rate"], 25.0);
}

#[test]
fn playlists_are_memoised_per_window_version() {
    let rig = rig(StoreConfig::default());
    let mut sink = rig.publish("main", true, true);
    rig.feed(&mut *sink, 0.0, 4.04, true, true);
    let a = rig.get("manifest.mpd").expect("mpd");
    rig.feed(&mut *sink, 4.04, 0.5, true, true); // no new segment
    assert_eq!(rig.get("manifest.mpd"), Ok(a.clone()));
    rig.feed(&mut *sink, 4.54, 2.0, true, true);
    assert_ne!(rig.get("manifest.mpd").expect("mpd").etag, a.etag);
}

#[test]
fn mpd_follows_the_live_profile_layout() {
    let rig = rig(StoreConfig {
        utc_timing_url: "https://origin.example/time".into(),
        ..StoreConfig::default()
    });
    let mut main = rig.publish("main", true, true);
    let mut low = rig.publish("low", false, true);
    // One encoder, two outputs: both renditions arrive side by side.
    for step in 0..12 {
        let from = f64::from(step) * 0.5;
        let secs = if step == 11 { 0.54 } else { 0.5 };
        let wall = rig.clock.now();
        rig.feed(&mut *main, from, secs, true, true);
        rig.clock.set(wall);
        rig.feed(&mut *low, from, secs, true, false);
    }
    let mpd = rig.text("manifest.mpd");
    let order = [
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>",
        "<MPD xmlns=\"urn:mpeg:dash:schema:mpd:2011\" profiles=\"urn:mpeg:dash:profile:isoff-live:2011\" type=\"dynamic\"",
        "availabilityStartTime=\"2027-01-15T08:00:00.000Z\"",
        "publishTime=",
        "minimumUpdatePeriod=\"PT2.000S\"",
        "timeShiftBufferDepth=\"PT60.000S\"",
        "suggestedPresentationDelay=\"PT6.000S\"",
        "minBufferTime=\"PT2.000S\">",
        "<Period id=\"0\" start=\"PT0.000S\">",
        "<AdaptationSet id=\"0\" contentType=\"video\"",
        "<Representation id=\"low\" codecs=\"avc1.64001f\" bandwidth=",
        "width=\"1280\" height=\"720\" frameRate=\"25\"",
        "<SegmentTemplate timescale=\"90000\" presentationTimeOffset=\"0\"",
        "media=\"low/video/$Number$.m4s\"",
        "<SegmentTimeline>",
        "<S t=\"0\" d=\"180000\" r=\"2\"/>",
        "<Representation id=\"main\"",
        "<AdaptationSet id=\"1\" contentType=\"audio\"",
        "<Representation id=\"main-audio\" codecs=\"mp4a.40.2\"",
        "<AudioChannelConfiguration",
        "<SegmentTemplate timescale=\"48000\"",
        "initialization=\"main/audio/init-",
        "</Period>",
        "<UTCTiming schemeIdUri=\"urn:mpeg:dash:utc:http-iso:2014\" value=\"https://origin.example/time\"/>",
        "</MPD>",
    ];
    assert_in_order(&mpd, &order);
    let master = rig.text("master.m3u8");
    assert_eq!(
        check::multivariant(&master),
        ["low/video.m3u8", "main/video.m3u8"]
    );
    assert_eq!(
        master.matches("AUDIO=\"audio\"").count(),
        2,
        "video-only rungs share main's audio"
    );
    let ts_master = rig.text("master-ts.m3u8");
    assert_eq!(
        check::multivariant(&ts_master),
        ["low/ts.m3u8", "main/ts.m3u8"]
    );
    check::media_playlist(&rig.text("low/ts.m3u8"));
}
