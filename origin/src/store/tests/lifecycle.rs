//! Publishers coming, going, returning, refused and kicked; channels ending and expiring.

use super::*;

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
    // The 5 s gap drifts past the tolerance: a new epoch, derived from the
    // return (9.04 s) less the media time the timeline continues at
    // (4.0533 s), rounded up to 5 s; the Period starts at 5 + 4.0533 s.
    assert!(
        mpd.contains("<Period id=\"1\" start=\"PT9.053S\">"),
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
fn a_publisher_returning_after_the_end_revives_and_a_new_channel_never_reuses_numbers() {
    let rig = rig(StoreConfig::default());
    let mut sink = rig.publish("main", true, true);
    rig.feed(&mut *sink, 0.0, 4.04, true, true);
    drop(sink);
    rig.clock.advance(Duration::from_secs(40));
    assert!(rig.text("main/video.m3u8").ends_with("#EXT-X-ENDLIST\n"));

    // Within retention: the channel goes on, after a discontinuity, with a
    // new epoch (ceil(44.04 − 4.0533) = 40 s) plus the media time, 4.0533 s.
    let mut sink = rig.publish("main", true, true);
    rig.feed(&mut *sink, 0.0, 2.04, true, true);
    let video = rig.text("main/video.m3u8");
    check::media_playlist(&video);
    assert!(!video.contains("#EXT-X-ENDLIST"));
    assert!(video.contains(&format!("#EXT-X-DISCONTINUITY\n#EXT-X-PROGRAM-DATE-TIME:2027-01-15T08:00:44.053Z\n#EXTINF:2.000,\nvideo/{}.m4s", START + 3)), "{video}");
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

#[test]
fn per_channel_ingest_progress_reaches_the_registry_at_scrape_time() {
    let rig = rig(StoreConfig::default());
    let mut registry = prometheus_client::registry::Registry::with_prefix("strata_origin");
    registry.register_collector(Box::new(crate::channel_metrics::ChannelCollector::new(
        rig.store.clone(),
    )));
    let scrape = |registry: &prometheus_client::registry::Registry, name: &str| {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).expect("encode");
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}{{channel=\"ch\"}} ")))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
    };
    let mut sink = rig.publish("main", true, true);
    rig.feed(&mut *sink, 0.0, 4.04, true, true);
    assert_eq!(scrape(&registry, "strata_origin_channel_publishing"), 1.0);
    // Two 2 s segments cut: progress is the end of the second.
    let last = scrape(
        &registry,
        "strata_origin_channel_last_progress_timestamp_seconds",
    );
    assert!((last - (START as f64 + 4.0)).abs() < 0.1, "{last}");
    // The publisher leaves: no longer publishing; its open segment was cut
    // (4.04 s of media in all), and that is the last progress.
    drop(sink);
    assert_eq!(scrape(&registry, "strata_origin_channel_publishing"), 0.0);
    let after = scrape(
        &registry,
        "strata_origin_channel_last_progress_timestamp_seconds",
    );
    assert!((after - (START as f64 + 4.04)).abs() < 0.01, "{after}");
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

#[test]
fn publishers_and_readers_on_many_threads_do_not_deadlock() {
    let store = Store::new(StoreConfig::default());
    let publishers: Vec<_> = (0..4)
        .map(|c| {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut sink = store
                    .publish(&name(&format!("ch{c}"), "main"), info())
                    .expect("publish");
                sink.params(video_params(640));
                sink.params(audio_params());
                for i in 0..300 {
                    let kind = if i % 2 == 0 {
                        TrackKind::Video
                    } else {
                        TrackKind::Audio
                    };
                    assert_eq!(sink.sample(kind, sample(kind, i / 2)), Ok(()));
                }
            })
        })
        .collect();
    let reader = {
        let store = store.clone();
        std::thread::spawn(move || {
            for i in 0..500 {
                let ch = format!("ch{}", i % 4);
                for path in [
                    "master.m3u8",
                    "manifest.mpd",
                    "main/video.m3u8",
                    "main/ts.m3u8",
                ] {
                    // Not found is fine while the channels fill; panics and deadlocks are not.
                    let _ = store.render(&ch, path, SystemTime::now());
                }
                let _ = store.channels();
            }
        })
    };
    for p in publishers {
        p.join().expect("publisher");
    }
    reader.join().expect("reader");
    assert_eq!(store.channels().len(), 4);
}
