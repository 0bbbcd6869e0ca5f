//! Timelines: rebasing, jumps, late frames, gaps, ladders and parameter changes.

use super::*;

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
