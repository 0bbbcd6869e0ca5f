//! Redundant origins: two stores fed the same publisher's samples, arriving
//! tens of milliseconds apart, publish the same playlists, MPDs, headers and
//! segments byte for byte, so a shield can take any request from either.

use super::*;

/// An origin whose clock reads `offset` past the other's at the same media.
fn origin_at(offset: Duration) -> Rig {
    let clock = ManualClock::new(t0() + offset);
    Rig {
        store: Store::with_clock(StoreConfig::default(), Arc::new(clock.clone())),
        clock,
    }
}

const OBJECTS: [&str; 6] = [
    "master.m3u8",
    "master-ts.m3u8",
    "main/video.m3u8",
    "main/audio.m3u8",
    "main/ts.m3u8",
    "manifest.mpd",
];

fn uris(playlist: &str) -> Vec<String> {
    check::media_playlist(playlist)
        .into_iter()
        .map(|(u, _)| u)
        .collect()
}

fn same_bytes(a: &Rig, b: &Rig, path: &str) {
    let (x, y) = (a.get(path), b.get(path));
    match (x, y) {
        (Ok(x), Ok(y)) => assert_eq!(x.body, y.body, "{path} differs"),
        (x, y) => assert_eq!(
            x.is_ok(),
            y.is_ok(),
            "{path}: {:?} vs {:?}",
            x.err(),
            y.err()
        ),
    }
}

#[test]
fn two_origins_fed_one_stream_publish_identical_output() {
    // The ~40 ms measured between two origins behind ffmpeg `tee`.
    let a = origin_at(Duration::from_millis(300));
    let b = origin_at(Duration::from_millis(340));
    let mut sa = a.publish("main", true, true);
    let mut sb = b.publish("main", true, true);
    a.feed(&mut *sa, 0.0, 20.04, true, true);
    b.feed(&mut *sb, 0.0, 20.04, true, true);

    for path in OBJECTS {
        same_bytes(&a, &b, path);
    }
    for uri in uris(&a.text("main/ts.m3u8")) {
        same_bytes(&a, &b, &format!("main/{uri}"));
    }
    let video = a.text("main/video.m3u8");
    assert!(video.contains("#EXT-X-PROGRAM-DATE-TIME:2027-01-15T08:00:01.000Z"));
    let mpd = a.text("manifest.mpd");
    assert!(
        mpd.contains("availabilityStartTime=\"2027-01-15T08:00:01.000Z\""),
        "{mpd}"
    );
    for uri in uris(&video) {
        same_bytes(&a, &b, &format!("main/{uri}"));
    }
    let audio = a.text("main/audio.m3u8");
    for uri in uris(&audio) {
        same_bytes(&a, &b, &format!("main/{uri}"));
    }
    let init = tag_value(&video, "#EXT-X-MAP:URI=\"").trim_end_matches('"');
    same_bytes(&a, &b, &format!("main/{init}"));
    assert_eq!(init, format!("video/init-{}.mp4", START + 1));
}

#[test]
fn an_origin_joining_late_names_the_same_media_alike() {
    // Origin B (re)starts while the encoder is 10 s in, its timestamps
    // going on (an SRT caller reconnecting, a second encoder output).
    let a = origin_at(Duration::from_millis(300));
    let mut sa = a.publish("main", true, true);
    a.feed(&mut *sa, 0.0, 20.04, true, true);
    let b = origin_at(Duration::from_millis(10_330));
    let mut sb = b.publish("main", true, true);
    b.feed(&mut *sb, 10.0, 10.04, true, true);

    let (va, vb) = (a.text("main/video.m3u8"), b.text("main/video.m3u8"));
    let (ua, ub) = (uris(&va), uris(&vb));
    assert!(ub.len() >= 5, "{vb}");
    assert!(
        ua.ends_with(&ub),
        "B's segments are A's newest:\n{va}\n{vb}"
    );
    // The same lines (date, duration, name) from B's first segment on.
    let tail = |p: &str| p[p.find("#EXT-X-PROGRAM-DATE-TIME").unwrap_or(0)..].to_owned();
    let from = va
        .find("#EXT-X-PROGRAM-DATE-TIME:2027-01-15T08:00:11.000Z")
        .expect("A has B's first segment");
    assert_eq!(&va[from..], tail(&vb));
    assert_eq!(
        tag_value(&va, "#EXT-X-MAP:URI="),
        tag_value(&vb, "#EXT-X-MAP:URI="),
        "the same header name"
    );
    for uri in &ub {
        same_bytes(&a, &b, &format!("main/{uri}"));
    }
    let (ma, mb) = (a.text("manifest.mpd"), b.text("manifest.mpd"));
    for attr in ["availabilityStartTime=\"", "<Period id=\"0\" start=\""] {
        let value = |mpd: &str| {
            let at = mpd.find(attr).map(|i| i + attr.len()).expect(attr);
            mpd[at..].split('"').next().unwrap_or_default().to_owned()
        };
        assert_eq!(value(&ma), value(&mb), "{attr}");
    }
}

#[test]
fn an_encoder_restarting_on_one_side_only_is_a_clean_discontinuity() {
    let a = origin_at(Duration::from_millis(300));
    let b = origin_at(Duration::from_millis(340));
    let mut sa = a.publish("main", true, true);
    let mut sb = b.publish("main", true, true);
    a.feed(&mut *sa, 0.0, 10.04, true, true);
    b.feed(&mut *sb, 0.0, 10.04, true, true);
    // B's encoder restarts its clock after a second's outage; A's goes on.
    drop(sb);
    a.feed(&mut *sa, 10.04, 10.0, true, true);
    b.clock.advance(Duration::from_secs(1));
    let mut sb = b.publish("main", true, true);
    b.feed(&mut *sb, 0.0, 9.04, true, true);

    let (va, vb) = (a.text("main/video.m3u8"), b.text("main/video.m3u8"));
    assert!(!va.contains("#EXT-X-DISCONTINUITY\n"));
    assert_eq!(vb.matches("#EXT-X-DISCONTINUITY\n").count(), 1, "{vb}");
    // Up to the restart both list the same segments; after it B's are its
    // own, each one B lists is served (no name that 404s), and numbers go on
    // without going back, so a player switched over sees the discontinuity.
    // (B's last segment before it is the partial one its publisher's
    // departure flushed.)
    let split = vb.find("#EXT-X-DISCONTINUITY\n").expect("discontinuity");
    let before = &vb[..split];
    let flushed = before.rfind("#EXT-X-PROGRAM-DATE-TIME").expect("pdt");
    let first = before.find("#EXT-X-PROGRAM-DATE-TIME").expect("pdt");
    assert!(
        va.contains(&before[first..flushed]),
        "the same segments before the restart:\n{va}\n{vb}"
    );
    let ub = uris(&vb);
    for uri in &ub {
        assert!(
            b.get(&format!("main/{uri}")).is_ok(),
            "{uri} listed and served"
        );
    }
    let numbers: Vec<u64> = ub
        .iter()
        .filter_map(|u| u.strip_prefix("video/")?.strip_suffix(".m4s")?.parse().ok())
        .collect();
    assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "{numbers:?}");
}

/// A peer's epoch as the redundancy endpoint reports it.
fn epoch_of(rig: &Rig) -> super::super::ChannelEpoch {
    rig.store.epoch_of("ch").expect("an epoch")
}

fn ll_origin_at(offset: Duration) -> Rig {
    let clock = ManualClock::new(t0() + offset);
    let config = StoreConfig {
        part_target: Duration::from_millis(500),
        ..StoreConfig::default()
    };
    Rig {
        store: Store::with_clock(config, Arc::new(clock.clone())),
        clock,
    }
}

/// Two origins whose estimates fall either side of a whole second
/// (arrivals .980 and 1.020 past the start) derive epochs a second apart;
/// asking each other before the first segment, both settle on the earlier
/// one, whichever asks first, and then publish identical output — parts of
/// the open segment (LL-HLS) included.
#[test]
fn a_pair_split_by_a_second_settles_on_one_epoch_before_publishing() {
    use super::super::Settled;
    for (ll, b_asks_first) in [(false, false), (false, true), (true, false), (true, true)] {
        let make = if ll { ll_origin_at } else { origin_at };
        let a = make(Duration::from_millis(980));
        let b = make(Duration::from_millis(1020));
        let mut sa = a.publish("main", true, true);
        let mut sb = b.publish("main", true, true);
        // Over a second of media: LL parts exist, no segment is cut yet.
        a.feed(&mut *sa, 0.0, 1.2, true, true);
        b.feed(&mut *sb, 0.0, 1.2, true, true);
        let (ea, eb) = (epoch_of(&a), epoch_of(&b));
        assert_eq!(ea.epoch, t0() + Duration::from_secs(1));
        assert_eq!(eb.epoch, t0() + Duration::from_secs(2), "the split");
        assert!(!ea.published && !eb.published);
        if b_asks_first {
            assert_eq!(b.store.settle_epoch("ch", ea), Settled::Adopted);
            assert_eq!(a.store.settle_epoch("ch", epoch_of(&b)), Settled::Agreed);
        } else {
            assert_eq!(a.store.settle_epoch("ch", eb), Settled::Kept);
            assert_eq!(b.store.settle_epoch("ch", ea), Settled::Adopted);
        }
        a.feed(&mut *sa, 1.2, 19.0, true, true);
        b.feed(&mut *sb, 1.2, 19.0, true, true);
        let mut objects: Vec<String> = OBJECTS.iter().map(|p| p.to_string()).collect();
        for playlist in ["main/video.m3u8", "main/audio.m3u8", "main/ts.m3u8"] {
            let text = a.text(playlist);
            objects.extend(uris(&text).into_iter().map(|u| format!("main/{u}")));
            if ll {
                objects.extend(
                    text.lines()
                        .filter_map(|l| l.split("URI=\"").nth(1)?.split('"').next())
                        .map(|u| format!("main/{u}")),
                );
            }
        }
        assert!(objects.len() > 20, "{objects:?}");
        for path in &objects {
            same_bytes(&a, &b, path);
        }
        let video = a.text("main/video.m3u8");
        assert!(
            video.contains("#EXT-X-PROGRAM-DATE-TIME:2027-01-15T08:00:01.000Z"),
            "{video}"
        );
        assert_eq!(
            tag_value(&video, "#EXT-X-MAP:URI=\"").trim_end_matches('"'),
            format!("video/init-{}.mp4", START + 1)
        );
        if ll {
            assert!(video.contains("#EXT-X-PART:"), "{video}");
        }
    }
}

/// A restarted origin joining late adopts the epoch its peer published
/// under, even when its own estimate rounds to the next second.
#[test]
fn a_late_joiner_adopts_the_published_epoch() {
    use super::super::Settled;
    let a = origin_at(Duration::from_millis(300));
    let mut sa = a.publish("main", true, true);
    a.feed(&mut *sa, 0.0, 20.04, true, true);
    // B's first sample (media 10 s) arrives 10.75 s after A's start: its own
    // estimate 0.75 + 0.3 rounds to START + 2, A published START + 1.
    let b = origin_at(Duration::from_millis(11_050));
    let mut sb = b.publish("main", true, true);
    b.feed(&mut *sb, 10.0, 0.5, true, true);
    assert_eq!(epoch_of(&b).epoch, t0() + Duration::from_secs(2));
    a.text("main/video.m3u8"); // a player's request: A's names are out
    let published = epoch_of(&a);
    assert!(published.published);
    assert_eq!(b.store.settle_epoch("ch", published), Settled::Adopted);
    b.feed(&mut *sb, 10.5, 9.54, true, true);
    let (va, vb) = (a.text("main/video.m3u8"), b.text("main/video.m3u8"));
    let ub = uris(&vb);
    assert!(ub.len() >= 4, "{vb}");
    assert!(uris(&va).ends_with(&ub), "B's names are A's:\n{va}\n{vb}");
    for uri in &ub {
        same_bytes(&a, &b, &format!("main/{uri}"));
    }
    // Once both published, a different epoch is reported, never adopted.
    let other = super::super::ChannelEpoch {
        epoch: published.epoch + Duration::from_secs(1),
        published: true,
    };
    assert_eq!(b.store.settle_epoch("ch", other), Settled::Disagreed);
    assert_eq!(epoch_of(&b).epoch, published.epoch);
    // Another session of the encoder (epochs far apart) is not this one.
    let c = origin_at(Duration::from_millis(300));
    let mut sc = c.publish("main", true, true);
    c.feed(&mut *sc, 0.0, 0.5, true, true);
    let far = super::super::ChannelEpoch {
        epoch: t0() - Duration::from_secs(60),
        published: true,
    };
    assert_eq!(c.store.settle_epoch("ch", far), Settled::Kept);
}

/// A publisher that bursts at start (a relay's probe, a replayed GOP cache)
/// delivers its first frame late and the rest on time: the epoch follows
/// the earliest estimate before the first segment, so the first segment's
/// date is not a second or more behind the rest (two segments one date).
#[test]
fn a_burst_at_start_leaves_the_epoch_at_the_earliest_estimate() {
    let a = origin_at(Duration::from_millis(3_500));
    let mut sa = a.publish("main", true, true);
    a.feed(&mut *sa, 0.0, 0.04, true, true);
    assert_eq!(epoch_of(&a).epoch, t0() + Duration::from_secs(4));
    a.clock.set(t0() + Duration::from_millis(1_340));
    a.feed(&mut *sa, 0.04, 20.0, true, true);
    assert_eq!(epoch_of(&a).epoch, t0() + Duration::from_secs(2));
    let video = a.text("main/video.m3u8");
    let dates: Vec<&str> = video
        .lines()
        .filter_map(|l| l.strip_prefix("#EXT-X-PROGRAM-DATE-TIME:"))
        .collect();
    assert!(dates.len() >= 9, "{video}");
    assert_eq!(dates[0], "2027-01-15T08:00:02.000Z", "{video}");
    assert!(dates.windows(2).all(|w| w[0] < w[1]), "{video}");
    assert_eq!(
        tag_value(&video, "#EXT-X-MAP:URI=\"").trim_end_matches('"'),
        format!("video/init-{}.mp4", START + 2)
    );
}

/// A restarted origin whose publisher bursts at start (a relay's probe
/// buffer: 4 s of media at once, 3.5 s late) cuts a segment before it
/// hears from its peer; nothing was shown yet, so it still adopts the
/// peer's published epoch and re-numbers what it cut.
#[test]
fn a_late_joiner_that_cut_in_a_burst_renumbers_what_it_cut() {
    use super::super::Settled;
    let a = origin_at(Duration::from_millis(300));
    let mut sa = a.publish("main", true, true);
    a.feed(&mut *sa, 0.0, 30.04, true, true);
    a.text("main/video.m3u8");
    let b = origin_at(Duration::from_millis(13_500));
    let mut sb = b.publish("main", true, true);
    let burst_at = b.clock.now();
    for i in 0..100 {
        b.clock.set(burst_at);
        b.feed(&mut *sb, f64::from(250 + i) / 25.0, 0.04, true, true);
    }
    let before = epoch_of(&b);
    assert_eq!(before.epoch, t0() + Duration::from_secs(2), "its own, late");
    assert!(!before.published);
    let cut = b.store.segment_spans("ch");
    assert!(!cut.is_empty(), "the burst cut a segment before the answer");
    assert_eq!(b.store.settle_epoch("ch", epoch_of(&a)), Settled::Adopted);
    let renamed = b.store.segment_spans("ch");
    assert_eq!(
        renamed[0].oldest,
        cut[0].oldest - 1,
        "{cut:?} → {renamed:?}"
    );
    b.clock.set(t0() + Duration::from_millis(14_300));
    b.feed(&mut *sb, 14.0, 6.04, true, true);
    let (va, vb) = (a.text("main/video.m3u8"), b.text("main/video.m3u8"));
    let ub = uris(&vb);
    assert!(ub.len() >= 4, "{vb}");
    assert!(
        uris(&va).iter().any(|u| u == &ub[0]),
        "B's first segment renamed as A's:\n{va}\n{vb}"
    );
    for uri in &ub {
        same_bytes(&a, &b, &format!("main/{uri}"));
    }
    let dated = |p: &str, uri: &str| {
        let at = p.find(uri).expect(uri);
        p[..at]
            .rsplit("#EXT-X-PROGRAM-DATE-TIME:")
            .next()
            .map(str::to_owned)
    };
    for uri in &ub {
        assert_eq!(dated(&va, uri), dated(&vb, uri), "{uri}");
    }
    assert_eq!(
        tag_value(&va, "#EXT-X-MAP:URI=\""),
        tag_value(&vb, "#EXT-X-MAP:URI=\"")
    );
}

/// A start-up burst longer than a segment (3.8 s of media at once, 4.1 s
/// after the encoder started): the first segment is cut under a late
/// epoch, the second shows the drift; nothing was shown yet, so both move
/// to the right epoch, dates one segment apart and one header throughout.
#[test]
fn a_burst_longer_than_a_segment_moves_what_was_cut() {
    let a = origin_at(Duration::from_millis(4_100));
    let mut sa = a.publish("main", true, true);
    let burst_at = a.clock.now();
    for i in 0..95 {
        a.clock.set(burst_at);
        a.feed(&mut *sa, f64::from(i) / 25.0, 0.04, true, true);
    }
    a.feed(&mut *sa, 3.8, 16.24, true, true);
    assert_eq!(epoch_of(&a).epoch, t0() + Duration::from_secs(1));
    let video = a.text("main/video.m3u8");
    let dates: Vec<&str> = video
        .lines()
        .filter_map(|l| l.strip_prefix("#EXT-X-PROGRAM-DATE-TIME:"))
        .collect();
    assert!(dates.len() >= 9, "{video}");
    assert_eq!(dates[0], "2027-01-15T08:00:01.000Z", "{video}");
    assert_eq!(dates[1], "2027-01-15T08:00:03.000Z", "{video}");
    assert_eq!(video.matches("#EXT-X-MAP:").count(), 1, "{video}");
    assert_eq!(
        tag_value(&video, "#EXT-X-MAP:URI=\"").trim_end_matches('"'),
        format!("video/init-{}.mp4", START + 1)
    );
    assert_eq!(
        tag_value(&video, "#EXT-X-MEDIA-SEQUENCE:"),
        (START + 1).to_string()
    );
    for uri in uris(&video) {
        a.get(&format!("main/{uri}")).expect("listed and served");
    }
}

/// A late joiner whose publisher starts mid-GOP: audio from 8.5 s, video's
/// first keyframe at 10 s. Its first segment starts at the keyframe and is
/// named as the origin that saw the start named it.
#[test]
fn a_late_joiner_starting_mid_gop_names_its_first_segment_alike() {
    let a = origin_at(Duration::from_millis(300));
    let mut sa = a.publish("main", true, true);
    a.feed(&mut *sa, 0.0, 20.04, true, true);
    let b = origin_at(Duration::from_millis(8_800));
    let mut sb = b.publish("main", true, true);
    b.feed(&mut *sb, 8.5, 1.5, false, true);
    b.feed(&mut *sb, 10.0, 10.04, true, true);
    let (va, vb) = (a.text("main/video.m3u8"), b.text("main/video.m3u8"));
    let ub = uris(&vb);
    assert!(ub.len() >= 4, "{vb}");
    assert!(uris(&va).ends_with(&ub), "B's names are A's:\n{va}\n{vb}");
    for uri in &ub {
        same_bytes(&a, &b, &format!("main/{uri}"));
    }
}

/// A channel nobody watches is settled for `SETTLE_WINDOW` only, not
/// asked about for ever; a watched one stops as soon as it is shown.
#[test]
fn epochs_are_settled_while_young_and_unshown() {
    let a = origin_at(Duration::from_millis(300));
    let mut sa = a.publish("main", true, true);
    a.feed(&mut *sa, 0.0, 5.0, true, true);
    assert_eq!(a.store.unsettled_epochs(), vec!["ch".to_owned()]);
    a.feed(&mut *sa, 5.0, 26.0, true, true);
    assert!(a.store.unsettled_epochs().is_empty(), "past the window");

    let b = origin_at(Duration::from_millis(300));
    let mut sb = b.publish("main", true, true);
    b.feed(&mut *sb, 0.0, 7.0, true, true);
    assert_eq!(b.store.unsettled_epochs(), vec!["ch".to_owned()]);
    b.text("main/video.m3u8");
    assert!(b.store.unsettled_epochs().is_empty(), "shown");
}

/// Once a playlist went out (an LL channel's comes before its first
/// segment), later samples implying an earlier epoch no longer move it:
/// the names a player holds stay valid.
#[test]
fn a_shown_epoch_never_moves() {
    let a = ll_origin_at(Duration::from_millis(3_500));
    let mut sa = a.publish("main", true, true);
    a.feed(&mut *sa, 0.0, 0.04, true, true);
    let _ = a.get("main/video.m3u8");
    a.clock.set(t0() + Duration::from_millis(1_340));
    a.feed(&mut *sa, 0.04, 1.0, true, true);
    assert_eq!(epoch_of(&a).epoch, t0() + Duration::from_secs(4));
    assert!(epoch_of(&a).published);
}
