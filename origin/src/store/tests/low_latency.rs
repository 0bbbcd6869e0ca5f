//! LL-HLS: parts, their playlist tags, blocking reload readiness, delta updates.

use super::*;
use crate::store::{ChannelStoreConfig, Reload};

fn ll_config() -> StoreConfig {
    StoreConfig {
        part_target: Duration::from_millis(500),
        ..StoreConfig::default()
    }
}

/// `(uri, duration, independent)` of every EXT-X-PART line.
fn parts(text: &str) -> Vec<(String, f64, bool)> {
    text.lines()
        .filter_map(|l| l.strip_prefix("#EXT-X-PART:"))
        .map(|attrs| {
            let duration = attrs
                .split(',')
                .find_map(|a| a.strip_prefix("DURATION="))
                .expect("DURATION")
                .parse()
                .expect("decimal");
            let uri = attrs
                .split("URI=\"")
                .nth(1)
                .and_then(|u| u.split('"').next())
                .expect("URI");
            (uri.to_owned(), duration, attrs.contains("INDEPENDENT=YES"))
        })
        .collect()
}

#[test]
fn part_hold_back_is_three_part_targets_unless_configured() {
    let mut config = ll_config();
    config.part_hold_back = Duration::from_millis(1000);
    config.channels.insert(
        "tight".into(),
        ChannelStoreConfig {
            part_hold_back: Some(Duration::from_millis(1200)),
            ..ChannelStoreConfig::default()
        },
    );
    config.validate().expect("valid hold-backs");
    assert_eq!(
        config.part_hold_back("any"),
        Some(Duration::from_millis(1000))
    );
    assert_eq!(
        config.part_hold_back("tight"),
        Some(Duration::from_millis(1200))
    );
    assert_eq!(
        ll_config().part_hold_back("any"),
        Some(Duration::from_millis(1500)),
        "three part targets by default"
    );
    assert_eq!(StoreConfig::default().part_hold_back("any"), None, "LL off");

    let rig = rig(config);
    let mut sink = rig.publish("main", true, true);
    rig.feed(&mut *sink, 0.0, 6.5, true, true);
    let video = rig.text("main/video.m3u8");
    assert_eq!(
        tag_value(&video, "#EXT-X-SERVER-CONTROL:"),
        "CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL=12.000,PART-HOLD-BACK=1.000"
    );
    let mpd = rig.text("manifest.mpd");
    assert!(mpd.contains("<Latency target=\"1000\""), "{mpd}");

    // RFC 8216bis §4.4.3.8: at least twice the part target.
    let mut low = ll_config();
    low.part_hold_back = Duration::from_millis(900);
    let err = low.validate().expect_err("below two part targets");
    assert!(err.contains("store.part_hold_back"), "{err}");
    let mut low = ll_config();
    low.channels.insert(
        "x".into(),
        ChannelStoreConfig {
            part_hold_back: Some(Duration::from_millis(700)),
            ..ChannelStoreConfig::default()
        },
    );
    let err = low.validate().expect_err("below two part targets");
    assert!(err.contains("store.channels.x.part_hold_back"), "{err}");
    // Where low latency is off, a hold-back is not checked.
    let off = StoreConfig {
        part_hold_back: Duration::from_millis(100),
        ..StoreConfig::default()
    };
    off.validate().expect("LL off");
}

#[test]
fn segments_are_also_offered_as_parts_within_the_part_target() {
    let rig = rig(ll_config());
    let mut sink = rig.publish("main", true, true);
    rig.feed(&mut *sink, 0.0, 10.5, true, true);

    let video = rig.text("main/video.m3u8");
    // The segments stay as they are for players without LL.
    let segments = check::media_playlist(&video);
    assert_eq!(segments.len(), 5, "{video}");
    assert_eq!(tag_value(&video, "#EXT-X-VERSION:"), "9");
    assert_eq!(tag_value(&video, "#EXT-X-PART-INF:"), "PART-TARGET=0.500");
    assert_eq!(
        tag_value(&video, "#EXT-X-SERVER-CONTROL:"),
        "CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL=12.000,PART-HOLD-BACK=1.500"
    );
    let listed = parts(&video);
    // Parts of the segments within three target durations of the end, then
    // the open segment's.
    assert!(listed.len() >= 12, "{video}");
    for (i, (uri, d, independent)) in listed.iter().enumerate() {
        // Only a segment's last part may be much shorter (§4.4.4.9).
        let segment_of = |u: &str| u.split('.').next().map(str::to_owned);
        let last_of_segment = listed
            .get(i + 1)
            .is_none_or(|(next, _, _)| segment_of(next) != segment_of(uri));
        assert!(*d <= 0.5 && (last_of_segment || *d > 0.425), "{uri}: {d}");
        // 2 s GOPs: only each segment's first part starts with a keyframe.
        assert_eq!(*independent, uri.ends_with(".0.m4s"), "{uri}");
    }
    // A segment's parts add up to it, and hold the same samples.
    let last = START + 4;
    let of_last: Vec<_> = listed
        .iter()
        .filter(|(u, _, _)| u.starts_with(&format!("video/{last}.")))
        .collect();
    let total: f64 = of_last.iter().map(|(_, d, _)| d).sum();
    assert!((total - 2.0).abs() < 0.001, "{total} {of_last:?}");
    let segment = rig.get(&format!("main/video/{last}.m4s")).expect("segment");
    let mdat = |b: &[u8]| {
        let at = b.windows(4).position(|w| w == b"mdat").expect("mdat");
        b.len() - at - 4
    };
    let part_bytes: usize = of_last
        .iter()
        .map(|(u, _, _)| mdat(&rig.get(&format!("main/{u}")).expect(u).body))
        .sum();
    assert_eq!(part_bytes, mdat(&segment.body));
    // LL-DASH's name for the segment is its parts as chunks (chunked CMAF):
    // the first part whole, then each later one's moof+mdat.
    let chunked_segment = rig
        .get(&format!("main/video/{last}-ll.m4s"))
        .expect("chunked");
    let mut chunked = Vec::new();
    for (i, (u, _, _)) in of_last.iter().enumerate() {
        let body = rig.get(&format!("main/{u}")).expect(u).body;
        let styp = if i == 0 {
            0
        } else {
            u32::from_be_bytes([body[0], body[1], body[2], body[3]]) as usize
        };
        chunked.extend_from_slice(&body[styp..]);
    }
    assert_eq!(chunked, chunked_segment.body.to_vec());
    // Open segment: 0.5 s in, one part cut so far, and the next hinted.
    let open = START + 5;
    assert!(video.contains(&format!(
        "#EXT-X-PART:DURATION=0.440,URI=\"video/{open}.0.m4s\",INDEPENDENT=YES\n"
    )));
    assert_eq!(
        tag_value(&video, "#EXT-X-PRELOAD-HINT:"),
        format!("TYPE=PART,URI=\"video/{open}.1.m4s\"")
    );
    assert_eq!(
        rig.get(&format!("main/video/{open}.1.m4s")),
        Err(RenderError::not_yet())
    );
    // A segment's parts never exceed the ones it has.
    assert_eq!(
        rig.get(&format!("main/video/{last}.9.m4s")),
        Err(RenderError::no_such_object())
    );
    rig.feed(&mut *sink, 10.5, 0.5, true, true);
    assert!(rig.get(&format!("main/video/{open}.1.m4s")).is_ok());

    // Audio parts follow the video's instants and stay within the target too.
    let audio = rig.text("main/audio.m3u8");
    check::media_playlist(&audio);
    let audio_parts = parts(&audio);
    assert!(audio_parts.len() >= 12, "{audio}");
    for (uri, d, independent) in &audio_parts {
        assert!(*d <= 0.5, "{uri}: {d}");
        assert!(independent);
    }
    // Each playlist reports the other one.
    assert!(
        audio.contains("#EXT-X-RENDITION-REPORT:URI=\"video.m3u8\",LAST-MSN="),
        "{audio}"
    );
    assert!(video.contains("#EXT-X-RENDITION-REPORT:URI=\"audio.m3u8\",LAST-MSN="));
}

#[test]
fn rendition_reports_name_the_last_part_of_every_other_playlist() {
    let rig = rig(ll_config());
    let mut main = rig.publish("main", true, true);
    let mut low = rig.publish("low", false, true);
    // One encoder, two outputs: both renditions arrive side by side (the
    // epoch rule numbers a rendition from the channel's clock, so feeding
    // one after the other with the clock set back is not a real publish).
    for step in 0..13 {
        let wall = rig.clock.now();
        rig.feed(&mut *main, f64::from(step) * 0.5, 0.5, true, true);
        rig.clock.set(wall);
        rig.feed(&mut *low, f64::from(step) * 0.5, 0.5, true, false);
    }
    let video = rig.text("main/video.m3u8");
    let open = START + 3;
    assert!(
        video.contains(&format!(
            "#EXT-X-RENDITION-REPORT:URI=\"../low/video.m3u8\",LAST-MSN={open},LAST-PART=0\n"
        )),
        "{video}"
    );
    let low_text = rig.text("low/video.m3u8");
    assert!(
        low_text.contains("URI=\"../main/audio.m3u8\""),
        "{low_text}"
    );
    assert!(
        low_text.contains("URI=\"../main/video.m3u8\""),
        "{low_text}"
    );
}

#[test]
fn blocking_reload_waits_for_the_part_and_refuses_the_far_future() {
    let rig = rig(ll_config());
    let mut sink = rig.publish("main", true, true);
    rig.feed(&mut *sink, 0.0, 4.5, true, true);
    let open = START + 2;
    let ask = |msn, part| rig.store.reload("ch", "main", TrackKind::Video, msn, part);
    assert_eq!(ask(START + 1, None), Some(Reload::Ready));
    assert_eq!(ask(open, None), Some(Reload::Wait));
    assert_eq!(ask(open, Some(0)), Some(Reload::Ready));
    assert_eq!(ask(open, Some(1)), Some(Reload::Wait));
    assert_eq!(ask(open + 1, Some(0)), Some(Reload::Wait));
    assert_eq!(ask(open + 2, None), Some(Reload::Wait));
    assert_eq!(ask(open + 3, None), Some(Reload::TooFar));
    // An old segment's part past its last counts as the next segment's first.
    assert_eq!(ask(START, Some(40)), Some(Reload::Ready));
    assert_eq!(ask(START + 1, Some(40)), Some(Reload::Ready));
    assert_eq!(
        rig.store.reload("ch", "nope", TrackKind::Video, 1, None),
        None
    );
    rig.feed(&mut *sink, 4.5, 0.5, true, true);
    assert_eq!(ask(open, Some(1)), Some(Reload::Ready));
    // The channel ends: everything is answered at once.
    drop(sink);
    rig.clock.advance(Duration::from_secs(31));
    assert_eq!(ask(open + 2, None), Some(Reload::Ready));
}

#[test]
fn delta_updates_skip_what_is_older_than_can_skip_until() {
    let rig = rig(ll_config());
    let mut sink = rig.publish("main", true, true);
    rig.feed(&mut *sink, 0.0, 20.5, true, true);
    let full = rig.text("main/video.m3u8");
    let delta = rig
        .store
        .render_with("ch", "main/video.m3u8", rig.clock.now(), true)
        .expect("delta");
    let delta = String::from_utf8(delta.body.to_vec()).expect("utf-8");
    // 10 segments of 2 s and a part open: those starting over 12 s before the end.
    assert_eq!(tag_value(&delta, "#EXT-X-SKIP:"), "SKIPPED-SEGMENTS=5");
    assert_eq!(
        tag_value(&delta, "#EXT-X-MEDIA-SEQUENCE:"),
        tag_value(&full, "#EXT-X-MEDIA-SEQUENCE:")
    );
    let first_listed = delta
        .lines()
        .skip_while(|l| !l.starts_with("#EXTINF"))
        .nth(1)
        .expect("a segment");
    assert_eq!(first_listed, format!("video/{}.m4s", START + 5));
    // The MAP is repeated after the skip, and the tail is the full playlist's.
    assert!(delta.contains("#EXT-X-MAP:"));
    let tail = |t: &str| t[t.find("#EXT-X-PART:").expect("parts")..].to_owned();
    assert_eq!(tail(&delta), tail(&full));
    assert!(!full.contains("#EXT-X-SKIP"));
}

#[test]
fn low_latency_is_per_channel_and_off_by_default() {
    let mut config = ll_config();
    config.part_target = Duration::ZERO;
    config.channels.insert(
        "ch".into(),
        ChannelStoreConfig {
            part_target: Some(Duration::from_millis(500)),
            ..ChannelStoreConfig::default()
        },
    );
    assert_eq!(config.part_target("other"), None);
    assert_eq!(config.part_target("ch"), Some(Duration::from_millis(500)));
    let rig = rig(config);
    let mut sink = rig.publish("main", true, true);
    rig.feed(&mut *sink, 0.0, 6.3, true, true);
    assert!(rig.text("main/video.m3u8").contains("#EXT-X-PART:"));

    let rig = super::rig(StoreConfig::default());
    let mut sink = rig.publish("main", true, true);
    rig.feed(&mut *sink, 0.0, 6.3, true, true);
    let plain = rig.text("main/video.m3u8");
    assert!(!plain.contains("#EXT-X-PART") && !plain.contains("SERVER-CONTROL"));
    assert_eq!(tag_value(&plain, "#EXT-X-VERSION:"), "7");
}

/// Top-level box types of an ISO BMFF byte string.
fn boxes(mut b: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    while b.len() >= 8 {
        let size = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
        out.push(String::from_utf8_lossy(&b[4..8]).into_owned());
        if size < 8 || size > b.len() {
            break;
        }
        b = &b[size..];
    }
    out
}

#[test]
fn ll_dash_segments_are_chunked_cmaf_announced_early_in_the_mpd() {
    use crate::store::SegmentProgress;
    let rig = rig(ll_config());
    let mut sink = rig.publish("main", true, true);
    rig.feed(&mut *sink, 0.0, 10.5, true, true);
    let last = START + 4;
    let open = START + 5;

    // A finished segment: one styp, then a moof+mdat per part; under its
    // plain name, one moof+mdat as before, for HLS and players without LL.
    let plain = rig.get(&format!("main/video/{last}.m4s")).expect("segment");
    assert_eq!(boxes(&plain.body), ["styp", "moof", "mdat"]);
    let segment = rig
        .get(&format!("main/video/{last}-ll.m4s"))
        .expect("segment");
    let kinds = boxes(&segment.body);
    assert_eq!(kinds[0], "styp");
    assert_eq!(
        kinds.iter().filter(|k| *k == "moof").count(),
        5,
        "{kinds:?}"
    );
    assert_eq!(kinds.iter().filter(|k| *k == "styp").count(), 1);
    assert_eq!(segment.cache_control, crate::package::IMMUTABLE);

    // Where segments stand, for in-progress requests.
    let progress = |seq: u64| {
        rig.store
            .segment_progress("ch", "main", TrackKind::Video, seq)
    };
    assert!(matches!(progress(last), Ok(SegmentProgress::Complete(p)) if p.len() == 5));
    assert!(matches!(progress(open), Ok(SegmentProgress::Open(p)) if p.len() == 1));
    assert!(matches!(progress(open + 1), Ok(SegmentProgress::Open(p)) if p.is_empty()));
    assert_eq!(progress(open + 2).err(), Some(RenderError::not_yet()));
    assert_eq!(
        rig.store
            .segment_progress("ch", "nope", TrackKind::Video, open)
            .err(),
        Some(RenderError::not_yet())
    );

    // The MPD: LL-DASH attributes, a ServiceDescription before the Period,
    // and the open segment and the next announced at the timeline's end.
    let mpd = rig.text("manifest.mpd");
    let order = [
        "<ServiceDescription id=\"0\">",
        "<Latency target=\"1500\" min=\"1000\" max=\"5500\"/>",
        "<PlaybackRate min=\"0.96\" max=\"1.04\"/>",
        "</ServiceDescription>",
        "<Period id=\"0\"",
        "media=\"main/video/$Number$-ll.m4s\" availabilityTimeOffset=\"1.5\" availabilityTimeComplete=\"false\">",
        // 5 segments cut + 2 announced, all 2 s.
        "<S t=\"0\" d=\"180000\" r=\"6\"/>",
        "availabilityTimeOffset=\"1.5\" availabilityTimeComplete=\"false\">",
        "<UTCTiming",
    ];
    assert_in_order(&mpd, &order);
}

/// `mfhd` sequence numbers of every `moof` in an ISO BMFF byte string.
fn fragment_numbers(mut b: &[u8]) -> Vec<u32> {
    let be32 = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let mut out = Vec::new();
    while b.len() >= 8 {
        let size = be32(b) as usize;
        if size < 8 || size > b.len() {
            break;
        }
        if &b[4..8] == b"moof" {
            // moof header, then mfhd: size, type, version+flags, number.
            assert_eq!(&b[12..16], b"mfhd");
            out.push(be32(&b[20..24]));
        }
        b = &b[size..];
    }
    out
}

#[test]
fn ll_dash_chunks_number_their_fragments_in_order() {
    let rig = rig(ll_config());
    let mut sink = rig.publish("main", true, true);
    rig.feed(&mut *sink, 0.0, 10.5, true, true);
    let mut numbers = Vec::new();
    for sequence in [START + 3, START + 4] {
        for kind in ["video", "audio"] {
            let body = rig
                .get(&format!("main/{kind}/{sequence}-ll.m4s"))
                .expect("chunked segment")
                .body;
            let of_segment = fragment_numbers(&body);
            assert!(of_segment.len() >= 4, "{kind} {sequence}: {of_segment:?}");
            // ISO/IEC 14496-12 §8.8.5: in increasing order within a track.
            assert!(
                of_segment.windows(2).all(|w| w[0] < w[1]),
                "{kind} {sequence}: {of_segment:?}"
            );
            // An LL-HLS part is the same fragment as its chunk.
            let part = rig
                .get(&format!("main/{kind}/{sequence}.1.m4s"))
                .expect("part")
                .body;
            assert_eq!(fragment_numbers(&part), [of_segment[1]]);
            if kind == "video" {
                numbers.extend(of_segment);
            }
        }
    }
    // … and on from one segment into the next.
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{numbers:?}");
}
