//! The store driven by synthetic publishers: 25 fps H.264 with a keyframe
//! every 2 s and 48 kHz AAC, on a manual clock that follows media time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::{Clock, ManualClock, Store, StoreConfig};
use crate::ingest::{
    MediaSink, PublishRefused, PublishTarget, PublisherInfo, SinkError, StreamName,
};
use crate::media::{AudioParams, Sample, TrackKind, TrackParams, VideoParams};
use crate::package::hls::check;
use crate::package::{RenderError, Rendered};

const START: u64 = 1_800_000_000;
const FRAME: i64 = 3600; // 25 fps at 90 kHz
const AAC_FRAME: i64 = 1024;

fn t0() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(START)
}

struct Rig {
    store: Store,
    clock: ManualClock,
}

fn rig(config: StoreConfig) -> Rig {
    let clock = ManualClock::new(t0());
    Rig {
        store: Store::with_clock(config, Arc::new(clock.clone())),
        clock,
    }
}

fn video_params(width: u16) -> TrackParams {
    TrackParams::Video(VideoParams {
        codec: "avc1.64001f".into(),
        width,
        height: 720,
        avc_config: Bytes::from_static(&[
            1, 0x64, 0, 0x1f, 0xff, 0xe1, 0, 2, 0x67, 0x64, 1, 0, 2, 0x68, 0xee,
        ]),
        sps: vec![Bytes::from_static(&[0x67, 0x64])],
        pps: vec![Bytes::from_static(&[0x68, 0xee])],
    })
}

fn audio_params() -> TrackParams {
    TrackParams::Audio(AudioParams {
        codec: "mp4a.40.2".into(),
        sample_rate: 48_000,
        channels: 2,
        asc: Bytes::from_static(&[0x11, 0x90]),
    })
}

fn info() -> PublisherInfo {
    PublisherInfo {
        remote: SocketAddr::from(([192, 0, 2, 7], 50_000)),
        protocol: "rtmp",
    }
}

fn name(channel: &str, rendition: &str) -> StreamName {
    StreamName {
        channel: channel.into(),
        rendition: rendition.into(),
    }
}

impl Rig {
    fn publish(&self, rendition: &str, audio: bool, video: bool) -> Box<dyn MediaSink> {
        let mut sink = self
            .store
            .publish(&name("ch", rendition), info())
            .expect("publish");
        if video {
            sink.params(video_params(1280));
        }
        if audio {
            sink.params(audio_params());
        }
        sink
    }

    /// Feed `[from, from + secs)` seconds of publisher time, interleaved by
    /// time, moving the clock along with the media.
    fn feed(&self, sink: &mut dyn MediaSink, from: f64, secs: f64, video: bool, audio: bool) {
        let wall = self.clock.now();
        let mut events: Vec<(f64, TrackKind, i64)> = Vec::new();
        if video {
            let first = (from * 25.0).round() as i64;
            let n = (secs * 25.0).round() as i64;
            events.extend((first..first + n).map(|i| (i as f64 / 25.0, TrackKind::Video, i)));
        }
        if audio {
            let first = (from * 48_000.0 / 1024.0).ceil() as i64;
            let last = ((from + secs) * 48_000.0 / 1024.0).ceil() as i64;
            events
                .extend((first..last).map(|i| (i as f64 * 1024.0 / 48_000.0, TrackKind::Audio, i)));
        }
        events.sort_by(|a, b| a.0.total_cmp(&b.0));
        for (t, kind, i) in events {
            self.clock.set(wall + Duration::from_secs_f64(t - from));
            let result = sink.sample(kind, sample(kind, i));
            assert_eq!(result, Ok(()));
        }
        self.clock.set(wall + Duration::from_secs_f64(secs));
    }

    fn get(&self, path: &str) -> Result<Rendered, RenderError> {
        self.store.render("ch", path, self.clock.now())
    }

    fn text(&self, path: &str) -> String {
        let r = self.get(path).unwrap_or_else(|e| panic!("{path}: {e:?}"));
        String::from_utf8(r.body.to_vec()).expect("utf-8")
    }
}

fn sample(kind: TrackKind, i: i64) -> Sample {
    match kind {
        TrackKind::Video => {
            let key = i % 50 == 0;
            let mut data = vec![0, 0, 0x03, 0xe8, if key { 0x65 } else { 0x41 }];
            data.resize(4 + 1000, 0x5a);
            Sample {
                dts: i * FRAME,
                cts: 0,
                duration: 0,
                keyframe: key,
                data: Bytes::from(data),
            }
        }
        TrackKind::Audio => Sample {
            dts: i * AAC_FRAME,
            cts: 0,
            duration: AAC_FRAME as u32,
            keyframe: true,
            data: Bytes::from(vec![0x21; 250]),
        },
    }
}

fn tag_value<'a>(text: &'a str, tag: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(tag))
        .unwrap_or_else(|| panic!("{tag} in\n{text}"))
}

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
fn fragments_continue_the_timeline() {
    let rig = rig(StoreConfig::default());
    let mut sink = rig.publish("main", true, true);
    rig.feed(&mut *sink, 0.0, 6.04, true, true);
    let tfdt = |path: &str| {
        let body = rig.get(path).expect("fragment").body;
        let at = body.windows(4).position(|w| w == b"tfdt").expect("tfdt") + 8;
        u64::from_be_bytes(body[at..at + 8].try_into().expect("8 bytes"))
    };
    assert_eq!(tfdt(&format!("main/video/{START}.m4s")), 0);
    assert_eq!(tfdt(&format!("main/video/{}.m4s", START + 1)), 180_000);
    assert_eq!(tfdt(&format!("main/video/{}.m4s", START + 2)), 360_000);
    let a1 = tfdt(&format!("main/audio/{}.m4s", START + 1));
    assert!(
        (a1 as i64 - 96_000).abs() <= 1024,
        "audio aligned to video cut: {a1}"
    );
}

#[test]
fn publisher_drop_and_return_continues_with_a_discontinuity() {
    let rig = rig(StoreConfig::default());
    let mut sink = rig.publish("main", true, true);
    rig.feed(&mut *sink, 0.0, 4.04, true, true);
    drop(sink); // flushes the open 0.04 s as a segment
    rig.clock.advance(Duration::from_secs(5));
    let status = rig.store.channels();
    assert_eq!(status[0].state, "reconnecting");
    assert!(status[0].live);

    let mut sink = rig.publish("main", true, true);
    rig.feed(&mut *sink, 0.0, 4.04, true, true); // the encoder restarted its clock
    let video = rig.text("main/video.m3u8");
    let segments = check::media_playlist(&video);
    let uris: Vec<String> = segments.iter().map(|(u, _)| u.clone()).collect();
    let expect: Vec<String> = (0..5).map(|i| format!("video/{}.m4s", START + i)).collect();
    assert_eq!(uris, expect, "numbers never go back");
    let lines: Vec<&str> = video.lines().collect();
    let disc = lines
        .iter()
        .position(|l| *l == "#EXT-X-DISCONTINUITY")
        .expect("discontinuity");
    assert!(
        lines[disc + 1].starts_with("#EXT-X-PROGRAM-DATE-TIME:2027-01-15T08:00:09"),
        "{video}"
    );
    assert_eq!(lines[disc + 3], format!("video/{}.m4s", START + 3));
    assert_eq!(video.matches("#EXT-X-DISCONTINUITY\n").count(), 1);
    assert_eq!(tag_value(&video, "#EXT-X-DISCONTINUITY-SEQUENCE:"), "0");

    let mpd = rig.text("manifest.mpd");
    assert_eq!(mpd.matches("<Period ").count(), 2, "{mpd}");
    assert!(
        mpd.contains("<Period id=\"1\" start=\"PT9.040S\">"),
        "{mpd}"
    );
    assert!(mpd.contains("type=\"dynamic\""));

    // The new session's first fragment decodes after the old one ended.
    let body = rig
        .get(&format!("main/video/{}.m4s", START + 3))
        .expect("fragment")
        .body;
    let at = body.windows(4).position(|w| w == b"tfdt").expect("tfdt") + 8;
    let tfdt = u64::from_be_bytes(body[at..at + 8].try_into().expect("8 bytes"));
    // Audio ran to 190 × 1024 / 48 kHz = 4.0533 s: both tracks continue from there.
    assert_eq!(tfdt, 190 * 1024 * 90_000 / 48_000);
}

#[test]
fn channel_ends_after_the_reconnect_timeout_then_expires() {
    let rig = rig(StoreConfig::default());
    let mut sink = rig.publish("main", true, true);
    rig.feed(&mut *sink, 0.0, 6.04, true, true);
    drop(sink);
    let gone = rig.clock.now();
    let at = |secs: u64| gone + Duration::from_secs(secs);
    let playlist = |t| rig.store.render("ch", "main/video.m3u8", t);

    let live = playlist(at(29)).expect("live");
    assert!(!String::from_utf8_lossy(&live.body).contains("#EXT-X-ENDLIST"));
    let ended = playlist(at(31)).expect("ended");
    let text = String::from_utf8_lossy(&ended.body).into_owned();
    check::media_playlist(&text);
    assert!(text.ends_with("#EXT-X-ENDLIST\n"), "{text}");
    assert_eq!(ended.cache_control, "public, max-age=60");
    assert!(String::from_utf8_lossy(
        &rig.store
            .render("ch", "main/audio.m3u8", at(31))
            .expect("audio")
            .body
    )
    .ends_with("#EXT-X-ENDLIST\n"));
    assert!(String::from_utf8_lossy(
        &rig.store
            .render("ch", "main/ts.m3u8", at(31))
            .expect("ts")
            .body
    )
    .ends_with("#EXT-X-ENDLIST\n"));

    let mpd = String::from_utf8_lossy(
        &rig.store
            .render("ch", "manifest.mpd", at(31))
            .expect("mpd")
            .body,
    )
    .into_owned();
    assert!(mpd.contains("type=\"static\""), "{mpd}");
    assert!(
        mpd.contains("mediaPresentationDuration=\"PT6.040S\""),
        "{mpd}"
    );
    assert!(!mpd.contains("minimumUpdatePeriod"));

    assert!(rig
        .store
        .render("ch", &format!("main/video/{START}.m4s"), at(3600))
        .is_ok());
    assert_eq!(
        rig.store.render("ch", "master.m3u8", at(30 + 3600)),
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
fn a_second_publisher_is_refused_unless_takeover() {
    let rig = rig(StoreConfig::default());
    let mut first = rig.publish("main", true, true);
    assert_eq!(
        rig.store.publish(&name("ch", "main"), info()).err(),
        Some(PublishRefused::Busy("ch".into()))
    );
    assert!(
        rig.store.publish(&name("ch", "low"), info()).is_ok(),
        "other rendition"
    );
    assert!(matches!(
        rig.store.publish(&name("ch/x", "main"), info()).err(),
        Some(PublishRefused::BadName(_))
    ));

    let rig2 = self::rig(StoreConfig {
        takeover: true,
        ..StoreConfig::default()
    });
    let mut old = rig2.publish("main", true, true);
    rig2.feed(&mut *old, 0.0, 2.04, true, true);
    let kicked = old.kicked();
    let _new = rig2.publish("main", true, true);
    assert!(*kicked.borrow());
    assert_eq!(
        old.sample(TrackKind::Audio, sample(TrackKind::Audio, 999)),
        Err(SinkError::Closed)
    );
    drop(old); // must not end the new publisher's session
    assert_eq!(rig2.store.channels()[0].state, "live");
    drop(first.sample(TrackKind::Video, sample(TrackKind::Video, 0)));
}

#[test]
fn kick_disconnects_the_publisher() {
    let rig = rig(StoreConfig::default());
    let mut sink = rig.publish("main", true, true);
    rig.feed(&mut *sink, 0.0, 2.04, true, true);
    let kicked = sink.kicked();
    assert!(!*kicked.borrow());
    assert!(rig.store.kick("ch"));
    assert!(*kicked.borrow());
    assert_eq!(
        sink.sample(TrackKind::Video, sample(TrackKind::Video, 51)),
        Err(SinkError::Closed)
    );
    assert!(!rig.store.kick("ch"), "nobody left");
    assert!(!rig.store.kick("nope"));
    assert_eq!(rig.store.channels()[0].state, "reconnecting");
}

#[test]
fn timestamp_jumps_and_late_frames_do_not_break_the_window() {
    let rig = rig(StoreConfig::default());
    let mut sink = rig.publish("main", true, true);
    rig.feed(&mut *sink, 0.0, 4.04, true, true);
    // Late frames (behind the last taken) are dropped and counted.
    for i in [95, 96] {
        assert_eq!(
            sink.sample(TrackKind::Video, sample(TrackKind::Video, i)),
            Ok(())
        );
    }
    // The publisher's clock leaps an hour ahead, then back to zero.
    rig.feed(&mut *sink, 3600.0, 4.04, true, true);
    rig.feed(&mut *sink, 0.0, 4.04, true, true);
    let video = rig.text("main/video.m3u8");
    let segments = check::media_playlist(&video);
    assert!(segments.len() >= 6, "{video}");
    assert!(
        segments.iter().all(|(_, d)| *d <= 2.0 + 1e-9 && *d > 0.0),
        "{video}"
    );
    assert_eq!(
        video.matches("#EXT-X-DISCONTINUITY\n").count(),
        2,
        "{video}"
    );
    let status = &rig.store.channels()[0].renditions[0];
    assert_eq!(status.late_frames, 2);
    assert_eq!(status.discontinuities, 2);
    // Every fragment's decode time is past the previous one's end.
    let mut last_end = 0;
    for (uri, d) in segments {
        let body = rig.get(&format!("main/{uri}")).expect("fragment").body;
        let at = body.windows(4).position(|w| w == b"tfdt").expect("tfdt") + 8;
        let tfdt = u64::from_be_bytes(body[at..at + 8].try_into().expect("8"));
        assert!(tfdt >= last_end, "{uri}: {tfdt} < {last_end}");
        last_end = tfdt + (d * 90_000.0).round() as u64;
    }
}

#[test]
fn audio_only_renditions_cut_on_duration() {
    let rig = rig(StoreConfig::default());
    let mut sink = rig.publish("radio", true, false);
    rig.feed(&mut *sink, 0.0, 6.1, false, true);
    let audio = rig.text("radio/audio.m3u8");
    let segments = check::media_playlist(&audio);
    assert_eq!(segments.len(), 3, "{audio}");
    assert!(segments.iter().all(|(_, d)| (2.0..2.03).contains(d)));
    let master = rig.text("master.m3u8");
    assert_eq!(check::multivariant(&master), ["radio/audio.m3u8"]);
    assert!(master.contains("CODECS=\"mp4a.40.2\""));
    assert!(!master.contains("#EXT-X-MEDIA:"));
    let mpd = rig.text("manifest.mpd");
    assert!(mpd.contains("contentType=\"audio\"") && !mpd.contains("contentType=\"video\""));
}

#[test]
fn new_decoder_parameters_get_a_new_init_name() {
    let rig = rig(StoreConfig::default());
    let mut sink = rig.publish("main", true, true);
    rig.feed(&mut *sink, 0.0, 4.04, true, true);
    sink.params(video_params(1280)); // unchanged: no effect
    sink.params(video_params(1920));
    rig.feed(&mut *sink, 4.04, 4.0, true, true);
    let video = rig.text("main/video.m3u8");
    check::media_playlist(&video);
    let maps: Vec<&str> = video
        .lines()
        .filter(|l| l.starts_with("#EXT-X-MAP:"))
        .collect();
    assert_eq!(maps.len(), 2, "{video}");
    assert_ne!(maps[0], maps[1]);
    let second = maps[1]
        .trim_start_matches("#EXT-X-MAP:URI=\"")
        .trim_end_matches('"');
    let init = rig.get(&format!("main/{second}")).expect("new init");
    let w = init
        .body
        .windows(4)
        .position(|w| w == b"avc1")
        .expect("avc1")
        + 4
        + 24;
    assert_eq!(u16::from_be_bytes([init.body[w], init.body[w + 1]]), 1920);
    // The old header stays reachable while segments use it.
    let first = maps[0]
        .trim_start_matches("#EXT-X-MAP:URI=\"")
        .trim_end_matches('"');
    assert!(rig.get(&format!("main/{first}")).is_ok());
    assert!(video.contains("#EXT-X-DISCONTINUITY\n#EXT-X-MAP:"));
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
    let mut at = 0;
    for needle in order {
        let found = mpd[at..]
            .find(needle)
            .unwrap_or_else(|| panic!("{needle} after {at} in\n{mpd}"));
        at += found + needle.len();
    }
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

#[test]
fn config_reads_humane_durations_and_rejects_unknown_keys() {
    let c: StoreConfig =
        toml::from_str("dvr_window = \"2m\"\ntarget_duration = \"4s\"\n").expect("toml");
    assert_eq!(c.dvr_window, Duration::from_secs(120));
    assert_eq!(c.target_duration, Duration::from_secs(4));
    assert_eq!(c.reconnect_timeout, Duration::from_secs(30));
    assert_eq!(c.ended_retention, Duration::from_secs(3600));
    assert!(!c.takeover);
    assert_eq!(c.utc_timing_url, "/time");
    let err = toml::from_str::<StoreConfig>("dvr_windw = \"2m\"").expect_err("unknown key");
    assert!(err.to_string().contains("dvr_windw"), "{err}");
}

/// Tiny deterministic generator for the hostile-publisher test.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
}

#[test]
fn hostile_timestamps_never_panic_and_playlists_stay_valid() {
    let rig = rig(StoreConfig {
        dvr_window: Duration::from_secs(20),
        ..StoreConfig::default()
    });
    let mut sink = rig.publish("main", true, true);
    let mut rng = Lcg(7);
    let (mut v, mut a) = (0i64, 0i64);
    for i in 0..3000 {
        rig.clock.advance(Duration::from_millis(20));
        let roll = rng.next() % 1000;
        let jitter = match roll {
            0..=4 => -(rng.next() as i64 % 200_000),       // backwards
            5..=7 => (rng.next() as i64) % 10_000_000_000, // far ahead
            8 => i64::MIN / 4,
            _ => 0,
        };
        if i % 3 == 0 {
            a += AAC_FRAME + jitter / 2;
            let s = Sample {
                dts: a,
                ..sample(TrackKind::Audio, 0)
            };
            assert_eq!(sink.sample(TrackKind::Audio, s), Ok(()));
        } else {
            v += FRAME + jitter;
            let mut s = sample(
                TrackKind::Video,
                i64::from(rng.next().is_multiple_of(40)) * 50,
            );
            s.dts = v;
            s.cts = (rng.next() % 7200) as i32 - 1800;
            assert_eq!(sink.sample(TrackKind::Video, s), Ok(()));
        }
        if i == 1500 {
            drop(sink);
            rig.clock.advance(Duration::from_secs(3));
            sink = rig.publish("main", true, true);
        }
    }
    for path in ["main/video.m3u8", "main/audio.m3u8", "main/ts.m3u8"] {
        let text = rig.text(path);
        let segments = check::media_playlist(&text);
        assert!(segments.len() >= 5, "{text}");
        for (uri, _) in segments {
            let r = rig.get(&format!("main/{uri}"));
            assert!(r.is_ok(), "{uri}: {r:?}");
        }
    }
    check::multivariant(&rig.text("master.m3u8"));
    assert!(rig.text("manifest.mpd").ends_with("</MPD>\n"));
    let status = &rig.store.channels()[0].renditions[0];
    assert!(status.late_frames + status.dropped_frames > 0);
}

#[test]
fn a_publisher_returning_after_the_end_revives_and_a_new_channel_never_reuses_numbers() {
    let rig = rig(StoreConfig::default());
    let mut sink = rig.publish("main", true, true);
    rig.feed(&mut *sink, 0.0, 4.04, true, true);
    drop(sink);
    rig.clock.advance(Duration::from_secs(40));
    assert!(rig.text("main/video.m3u8").ends_with("#EXT-X-ENDLIST\n"));

    // Within retention: the channel goes on, after a discontinuity.
    let mut sink = rig.publish("main", true, true);
    rig.feed(&mut *sink, 0.0, 2.04, true, true);
    let video = rig.text("main/video.m3u8");
    check::media_playlist(&video);
    assert!(!video.contains("#EXT-X-ENDLIST"));
    assert!(video.contains(&format!("#EXT-X-DISCONTINUITY\n#EXT-X-PROGRAM-DATE-TIME:2027-01-15T08:00:44.040Z\n#EXTINF:2.000,\nvideo/{}.m4s", START + 3)), "{video}");
    assert_eq!(rig.store.channels()[0].state, "live");
    drop(sink);

    // Past retention the channel is gone; the next one numbers from its own start time.
    rig.clock.advance(Duration::from_secs(30 + 3600));
    rig.store.sweep(rig.clock.now());
    assert!(rig.store.channels().is_empty());
    let mut sink = rig.publish("main", true, true);
    rig.feed(&mut *sink, 0.0, 2.04, true, true);
    let video = rig.text("main/video.m3u8");
    let first: u64 = tag_value(&video, "#EXT-X-MEDIA-SEQUENCE:")
        .parse()
        .expect("number");
    assert!(first > START + 4, "{first}");
    assert!(!video.contains("#EXT-X-DISCONTINUITY\n"));
}

#[test]
fn readers_can_wait_for_the_next_segment() {
    let rig = rig(StoreConfig::default());
    assert!(rig.store.updates("ch").is_none());
    let mut sink = rig.publish("main", true, true);
    let mut updates = rig.store.updates("ch").expect("channel");
    rig.feed(&mut *sink, 0.0, 1.0, true, true);
    assert!(!updates.has_changed().expect("open"), "no segment yet");
    rig.feed(&mut *sink, 1.0, 1.04, true, true);
    assert!(updates.has_changed().expect("open"));
    let version = *updates.borrow_and_update();
    drop(sink);
    assert!(updates.has_changed().expect("open"), "publisher left");
    assert!(*updates.borrow() > version);
}

#[test]
fn a_ladder_reconnecting_together_stays_aligned() {
    let rig = rig(StoreConfig::default());
    let side_by_side = |main: &mut dyn MediaSink, low: &mut dyn MediaSink, secs: u32| {
        for step in 0..secs * 2 {
            let from = f64::from(step) * 0.5;
            let wall = rig.clock.now();
            rig.feed(main, from, 0.5, true, true);
            rig.clock.set(wall);
            rig.feed(low, from, 0.5, true, false);
        }
    };
    let (mut main, mut low) = (
        rig.publish("main", true, true),
        rig.publish("low", false, true),
    );
    side_by_side(&mut *main, &mut *low, 4);
    drop((main, low));
    rig.clock.advance(Duration::from_secs(2));
    let (mut main, mut low) = (
        rig.publish("main", true, true),
        rig.publish("low", false, true),
    );
    side_by_side(&mut *main, &mut *low, 5);

    let mpd = rig.text("manifest.mpd");
    let period = &mpd[mpd.find("<Period id=\"1\"").expect("period 1")..];
    let video = &period[..period.find("</AdaptationSet>").expect("video set")];
    let starts: Vec<&str> = video
        .lines()
        .filter_map(|l| l.trim().strip_prefix("<S t=\""))
        .collect();
    assert_eq!(starts.len(), 2, "{mpd}");
    assert_eq!(
        starts[0], starts[1],
        "both renditions cut at the same times"
    );
    let ptos: Vec<&str> = video
        .split("presentationTimeOffset=\"")
        .skip(1)
        .map(|s| &s[..s.find('"').expect("quote")])
        .collect();
    assert_eq!(ptos.len(), 2);
    assert_eq!(ptos[0], ptos[1]);
    assert_eq!(
        mpd.matches("<Period ").count(),
        2,
        "one new Period for the whole ladder"
    );
}

#[test]
fn a_stalled_video_track_leaves_gaps_not_renumbering() {
    let rig = rig(StoreConfig::default());
    let mut sink = rig.publish("main", true, true);
    rig.feed(&mut *sink, 0.0, 4.04, true, true);
    rig.feed(&mut *sink, 4.04, 11.0, false, true); // the camera froze, the microphone did not
    rig.feed(&mut *sink, 15.04, 4.04, true, true);
    let video = rig.text("main/video.m3u8");
    check::media_playlist(&video);
    assert!(video.contains("#EXT-X-GAP\n"), "{video}");
    let numbers: Vec<u64> = video
        .lines()
        .filter_map(|l| l.strip_prefix("video/")?.strip_suffix(".m4s")?.parse().ok())
        .collect();
    let first: u64 = tag_value(&video, "#EXT-X-MEDIA-SEQUENCE:")
        .parse()
        .expect("number");
    let expect: Vec<u64> = (first..first + numbers.len() as u64).collect();
    assert_eq!(
        numbers, expect,
        "position in the playlist is the segment number"
    );
    let gap = video.lines().position(|l| l == "#EXT-X-GAP").expect("gap");
    let gap_uri = video.lines().nth(gap + 3).expect("uri");
    assert!(
        rig.get(&format!("main/{gap_uri}")).is_err(),
        "a gap has no media"
    );
    // DASH keeps $Number$ in step across the gap: the time the timeline
    // gives number n is the decode time inside fragment n.
    let mpd = rig.text("manifest.mpd");
    let attr = |text: &str, name: &str| -> Option<u64> {
        text.split(&format!(" {name}=\""))
            .nth(1)?
            .split('"')
            .next()?
            .parse()
            .ok()
    };
    let mut checked = 0;
    for rep in mpd.split("<Representation id=\"main\"").skip(1) {
        let mut number = attr(rep, "startNumber").expect("startNumber");
        let mut t = 0;
        let body = &rep[..rep.find("</Representation>").expect("end")];
        for s in body.lines().filter(|l| l.trim_start().starts_with("<S ")) {
            t = attr(s, "t").unwrap_or(t);
            let d = attr(s, "d").expect("d");
            for _ in 0..=attr(s, "r").unwrap_or(0) {
                if let Ok(fragment) = rig.get(&format!("main/video/{number}.m4s")) {
                    let at = fragment
                        .body
                        .windows(4)
                        .position(|w| w == b"tfdt")
                        .expect("tfdt")
                        + 8;
                    let tfdt = u64::from_be_bytes(fragment.body[at..at + 8].try_into().expect("8"));
                    assert_eq!(tfdt, t, "number {number}\n{mpd}");
                    checked += 1;
                }
                number += 1;
                t += d;
            }
        }
    }
    assert!(checked >= 4, "{mpd}");
}

#[test]
fn counters_reach_the_registry() {
    let rig = rig(StoreConfig::default());
    let mut registry = prometheus_client::registry::Registry::with_prefix("strata_origin");
    rig.store.metrics().register(&mut registry);
    let mut sink = rig.publish("main", true, true);
    rig.feed(&mut *sink, 0.0, 4.04, true, true);
    assert!(rig.store.publish(&name("ch", "main"), info()).is_err());
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
    for line in [
        "strata_origin_store_segments_total 2",
        "strata_origin_store_publishes_total 1",
        "strata_origin_store_publishes_refused_total 1",
        "strata_origin_store_channels 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
    }
}
