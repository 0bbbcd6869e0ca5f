//! VOD unit tests over MP4s crafted byte by byte: well-formed ones, and ones
//! that lie (truncated, counts past their boxes, unsupported codecs).

use std::path::Path;
use std::time::Duration;

use bytes::{BufMut, BytesMut};

use super::fragments;
use super::mp4::{self, IndexLimits, Mp4Error};
use super::plan;
use super::*;
use crate::media::fmp4::{begin_box, begin_full_box, end_box};
use crate::media::h264::tests::{PPS, SPS_MAIN_360P};
use crate::media::TrackKind;

/// What a crafted track holds.
#[derive(Clone)]
struct Track {
    id: u32,
    /// `avc1`, `mp4a` or anything else (an unsupported sample entry).
    codec: &'static [u8; 4],
    timescale: u32,
    /// (size, duration, composition offset, sync)
    samples: Vec<(u32, u32, i32, bool)>,
    /// `elst` media_time, if any.
    edit: Option<i64>,
    /// Samples per chunk (`stsc`); chunks are laid out one after another.
    per_chunk: u32,
}

fn video(id: u32, frames: usize, gop: usize) -> Track {
    Track {
        id,
        codec: b"avc1",
        timescale: 12_800,
        samples: (0..frames)
            .map(|i| (100 + i as u32 % 7, 512, 1024, i % gop == 0))
            .collect(),
        edit: Some(1024),
        per_chunk: 5,
    }
}

fn audio(id: u32, frames: usize) -> Track {
    Track {
        id,
        codec: b"mp4a",
        timescale: 44_100,
        samples: (0..frames).map(|_| (20, 1024, 0, true)).collect(),
        edit: None,
        per_chunk: 10,
    }
}

fn full(buf: &mut BytesMut, kind: &[u8; 4], body: impl FnOnce(&mut BytesMut)) {
    let at = begin_full_box(buf, kind, 0, 0);
    body(buf);
    end_box(buf, at);
}

fn plain(buf: &mut BytesMut, kind: &[u8; 4], body: impl FnOnce(&mut BytesMut)) {
    let at = begin_box(buf, kind);
    body(buf);
    end_box(buf, at);
}

/// An MP4: ftyp, mdat (each track's chunks in turn, bytes = track id), moov.
fn mp4_file(tracks: &[Track]) -> Vec<u8> {
    let mut buf = BytesMut::new();
    plain(&mut buf, b"ftyp", |b| b.put_slice(b"isom\0\0\0\0isom"));
    let mdat = begin_box(&mut buf, b"mdat");
    let mut chunk_offsets = Vec::new();
    for t in tracks {
        let mut offsets = Vec::new();
        for (i, s) in t.samples.iter().enumerate() {
            if i % t.per_chunk as usize == 0 {
                offsets.push(buf.len() as u32);
            }
            buf.put_bytes(t.id as u8, s.0 as usize);
        }
        chunk_offsets.push(offsets);
    }
    end_box(&mut buf, mdat);
    plain(&mut buf, b"moov", |b| {
        full(b, b"mvhd", |b| b.put_bytes(0, 96));
        for (t, offsets) in tracks.iter().zip(&chunk_offsets) {
            write_trak(b, t, offsets);
        }
    });
    buf.to_vec()
}

fn write_trak(b: &mut BytesMut, t: &Track, offsets: &[u32]) {
    plain(b, b"trak", |b| {
        full(b, b"tkhd", |b| {
            b.put_u64(0);
            b.put_u32(t.id);
            b.put_bytes(0, 68);
        });
        if let Some(media_time) = t.edit {
            plain(b, b"edts", |b| {
                full(b, b"elst", |b| {
                    b.put_u32(1);
                    b.put_u32(0);
                    b.put_i32(media_time as i32);
                    b.put_u32(0x0001_0000);
                });
            });
        }
        plain(b, b"mdia", |b| {
            full(b, b"mdhd", |b| {
                b.put_u64(0);
                b.put_u32(t.timescale);
                b.put_u32(0);
                b.put_u16(0x15c7); // "eng"
                b.put_u16(0);
            });
            full(b, b"hdlr", |b| {
                b.put_u32(0);
                b.put_slice(if t.codec == b"mp4a" { b"soun" } else { b"vide" });
                b.put_bytes(0, 13);
            });
            plain(b, b"minf", |b| {
                plain(b, b"stbl", |b| write_stbl(b, t, offsets));
            });
        });
    });
}

fn write_stbl(b: &mut BytesMut, t: &Track, offsets: &[u32]) {
    full(b, b"stsd", |b| {
        b.put_u32(1);
        match t.codec {
            b"mp4a" => plain(b, b"mp4a", |b| {
                b.put_bytes(0, 6);
                b.put_u16(1);
                b.put_bytes(0, 8);
                b.put_u16(2);
                b.put_u16(16);
                b.put_u32(0);
                b.put_u32(44_100 << 16);
                full(b, b"esds", |b| {
                    // ES_Descriptor > DecoderConfigDescriptor > ASC (AAC LC, 44.1 kHz, stereo)
                    b.put_slice(&[0x03, 25, 0, 1, 0, 0x04, 17, 0x40, 0x15]);
                    b.put_bytes(0, 11);
                    b.put_slice(&[0x05, 2, 0x12, 0x10, 0x06, 1, 2]);
                });
            }),
            codec => plain(b, codec, |b| {
                b.put_bytes(0, 6);
                b.put_u16(1);
                b.put_bytes(0, 16);
                b.put_u16(640);
                b.put_u16(360);
                b.put_bytes(0, 50);
                plain(b, b"avcC", |b| {
                    b.put_slice(&[1, 0x4d, 0x40, 0x1e, 0xff, 0xe1]);
                    b.put_u16(SPS_MAIN_360P.len() as u16);
                    b.put_slice(SPS_MAIN_360P);
                    b.put_u8(1);
                    b.put_u16(PPS.len() as u16);
                    b.put_slice(PPS);
                });
            }),
        }
    });
    full(b, b"stts", |b| {
        b.put_u32(t.samples.len() as u32);
        for s in &t.samples {
            b.put_u32(1);
            b.put_u32(s.1);
        }
    });
    if t.samples.iter().any(|s| s.2 != 0) {
        full(b, b"ctts", |b| {
            b.put_u32(t.samples.len() as u32);
            for s in &t.samples {
                b.put_u32(1);
                b.put_i32(s.2);
            }
        });
    }
    if t.samples.iter().any(|s| !s.3) {
        full(b, b"stss", |b| {
            let sync: Vec<usize> = (0..t.samples.len()).filter(|&i| t.samples[i].3).collect();
            b.put_u32(sync.len() as u32);
            for i in sync {
                b.put_u32(i as u32 + 1);
            }
        });
    }
    full(b, b"stsz", |b| {
        b.put_u32(0);
        b.put_u32(t.samples.len() as u32);
        for s in &t.samples {
            b.put_u32(s.0);
        }
    });
    full(b, b"stsc", |b| {
        let rest = t.samples.len() as u32 % t.per_chunk;
        b.put_u32(if rest == 0 { 1 } else { 2 });
        b.put_u32(1);
        b.put_u32(t.per_chunk);
        b.put_u32(1);
        if rest != 0 {
            // The last chunk is a short one.
            b.put_u32(offsets.len() as u32);
            b.put_u32(rest);
            b.put_u32(1);
        }
    });
    full(b, b"stco", |b| {
        b.put_u32(offsets.len() as u32);
        for &o in offsets {
            b.put_u32(o);
        }
    });
}

/// Indexes a whole file held in memory, as the library does from disk.
fn index(file: &[u8]) -> Result<mp4::Mp4Index, Mp4Error> {
    let limits = IndexLimits::default();
    let moov = mp4::locate_moov(file.len() as u64, &limits, |at, n| {
        let at = at as usize;
        Ok(file[at..(at + n).min(file.len())].to_vec())
    })
    .map_err(|e| match e {
        mp4::LocateError::Mp4(e) => e,
        mp4::LocateError::Io(e) => panic!("{e}"),
    })?;
    mp4::parse_moov(&file[moov.start as usize..moov.end as usize], &limits)
}

/// 10 s of 25 fps video (GOP 2 s) and 10 s of 44.1 kHz AAC.
fn title_file() -> Vec<u8> {
    mp4_file(&[video(1, 250, 50), audio(2, 431)])
}

#[test]
fn indexes_sample_tables_of_both_tracks() {
    let file = title_file();
    let index = index(&file).expect("indexes");
    assert_eq!(index.tracks.len(), 2);
    let v = &index.tracks[0];
    assert_eq!(
        (v.kind(), v.track_id, v.timescale),
        (TrackKind::Video, 1, 12_800)
    );
    assert_eq!(v.params.codec(), "avc1.4d401e");
    assert_eq!(v.language, "eng");
    assert_eq!(v.samples.len(), 250);
    assert_eq!(v.samples[3].dts, 3 * 512);
    assert!(v.samples[0].sync && v.samples[50].sync && !v.samples[51].sync);
    // The edit list starts presentation at the first frame's composition time.
    assert_eq!(v.presentation_shift, 1024);
    // Samples sit where the chunk offsets put them: every byte is the track's ID.
    for s in [&v.samples[0], &v.samples[7], &v.samples[249]] {
        let bytes = &file[s.offset as usize..(s.offset + u64::from(s.size)) as usize];
        assert!(bytes.iter().all(|&b| b == 1));
    }
    let a = &index.tracks[1];
    assert_eq!(
        (a.kind(), a.params.codec()),
        (TrackKind::Audio, "mp4a.40.2")
    );
    assert_eq!(a.samples.len(), 431);
    let last = a.samples[430];
    assert!(file[last.offset as usize..][..20].iter().all(|&b| b == 2));
}

#[test]
fn cuts_every_track_at_the_same_keyframe_instants() {
    let index = index(&title_file()).expect("indexes");
    let plans = plan::plan(&index, Duration::from_secs(4));
    let (v, a) = (&plans[0], &plans[1]);
    // GOPs of 2 s, target 4 s: cuts at 0, 4, 8 s; the last segment is short.
    let video_seconds: Vec<f64> = v.segments.iter().map(|s| v.seconds(s)).collect();
    assert_eq!(video_seconds, vec![4.0, 4.0, 2.0]);
    assert_eq!(v.out_timescale, 90_000);
    assert_eq!(v.segments[1].start, 360_000);
    assert_eq!(a.segments.len(), 3);
    for (vs, as_) in v.segments.iter().zip(&a.segments) {
        let vt = vs.start as f64 / 90_000.0;
        let at = as_.start as f64 / 44_100.0;
        assert!((vt - at).abs() < 1024.0 / 44_100.0, "{vt} vs {at}");
    }
    // Output timing: 90 kHz, composition shifted so the first frame presents at 0.
    let track = &index.tracks[0];
    let seg = v.segments[0];
    let data = (seg.first..seg.end).map(|_| bytes::Bytes::new()).collect();
    let samples = plan::segment_samples(track, &seg, data).expect("samples");
    assert_eq!(samples.len(), 100);
    assert_eq!(
        (samples[0].dts, samples[0].cts, samples[0].duration),
        (0, 0, 3600)
    );
    assert_eq!(samples[1].dts, 3600);
}

#[test]
fn clips_and_keyframes_cut_on_keyframes() {
    let index = index(&title_file()).expect("indexes");
    let (v, a) = (&index.tracks[0], &index.tracks[1]);
    // 25 fps (512 ticks of 12 800), a keyframe every 2 s (50 frames).
    assert_eq!(plan::keyframes(v), vec![0, 50, 100, 150, 200]);
    // 3 s..5 s widens to the keyframes at 2 s and 6 s.
    assert_eq!(plan::clip_range(v, 3000, Some(5000)), Some((50, 150)));
    assert_eq!(plan::clip_range(v, 4000, None), Some((100, 250)));
    assert_eq!(plan::clip_range(v, 10_000, None), None, "past the end");
    // Audio: every sample is a keyframe.
    let (first, end) = plan::clip_range(a, 2000, Some(6000)).expect("audio clip");
    assert!(plan::sample_ms(a, first) <= 2000 && plan::sample_ms(a, first + 1) > 2000);
    assert!(plan::sample_ms(a, end) >= 6000 && plan::sample_ms(a, end - 1) < 6000);
    let clipped = plan::plan_range(v, Duration::from_secs(4), 50, 150);
    let seconds: Vec<f64> = clipped
        .segments
        .iter()
        .map(|s| clipped.seconds(s))
        .collect();
    assert_eq!(seconds, vec![4.0]);
    assert_eq!(
        clipped.segments[0].start, 180_000,
        "media keeps its timestamps"
    );
    // The I-frame segment of the second keyframe lasts until the third.
    let k = plan::keyframe_segment(v, 1).expect("keyframe 2");
    assert_eq!(
        (k.first, k.end, k.start, k.duration),
        (50, 51, 180_000, 180_000)
    );
    assert!(plan::keyframe_segment(v, 5).is_none());
}

#[test]
fn refuses_files_that_lie_without_panicking() {
    let good = title_file();
    let moov_at = good.windows(4).rposition(|w| w == b"moov").expect("moov") - 4;
    // Every truncation of the file: an error, never a panic.
    for cut in (0..good.len()).step_by(7) {
        let truncated = &good[..cut];
        assert!(index(truncated).is_err(), "cut at {cut}");
    }
    // Flip each byte of moov in turn: Ok or Err, never a panic.
    for i in (moov_at..good.len()).step_by(3) {
        let mut bad = good.clone();
        bad[i] ^= 0xff;
        let _ = index(&bad);
    }
    // stsz claiming four billion samples in a few hundred bytes.
    let stsz = good.windows(4).rposition(|w| w == b"stsz").expect("stsz");
    let mut lying = good.clone();
    lying[stsz + 12..stsz + 16].copy_from_slice(&u32::MAX.to_be_bytes());
    match index(&lying) {
        Err(Mp4Error::Corrupt(why)) => assert!(why.contains("claims"), "{why}"),
        other => panic!("{other:?}"),
    }
    // A moov whose size runs past the end of the file.
    let mut long = good.clone();
    long[moov_at..moov_at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(index(&long), Err(Mp4Error::Corrupt(_))));
    // No moov at all.
    assert!(matches!(index(&good[..moov_at]), Err(Mp4Error::Corrupt(_))));
}

#[test]
fn refuses_unsupported_codecs_by_name() {
    // HEVC is packaged, but an `hvc1` entry needs its `hvcC`.
    let mut hevc = video(1, 10, 5);
    hevc.codec = b"hvc1";
    match index(&mp4_file(&[hevc])) {
        Err(Mp4Error::Corrupt(why)) => assert!(why.contains("hvcC"), "{why}"),
        other => panic!("{other:?}"),
    }
    let mut vp9 = video(1, 10, 5);
    vp9.codec = b"vp09";
    match index(&mp4_file(&[vp9])) {
        Err(Mp4Error::Unsupported(why)) => assert!(why.contains("vp09"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn limits_the_sample_count() {
    let file = title_file();
    let limits = IndexLimits {
        max_samples: 300,
        ..IndexLimits::default()
    };
    let moov = mp4::locate_moov(file.len() as u64, &limits, |at, n| {
        Ok(file[at as usize..(at as usize + n).min(file.len())].to_vec())
    })
    .expect("moov");
    let err = mp4::parse_moov(&file[moov.start as usize..moov.end as usize], &limits);
    assert!(matches!(err, Err(Mp4Error::TooLarge(_))), "{err:?}");
}

#[test]
fn parses_paths_and_refuses_escapes() {
    let r: VodRequest = "films/a b.mp4/master.m3u8".parse().expect("master");
    assert_eq!(r.title, Path::new("films/a b.mp4"));
    assert_eq!(r.object, VodObject::Master);
    let r: VodRequest = "x.MOV/t2/17.m4s".parse().expect("fragment");
    assert_eq!(
        (r.title.as_path(), r.object),
        (
            Path::new("x.MOV"),
            VodObject::Fragment {
                track: 2,
                number: 17
            }
        )
    );
    let r: VodRequest = "x.mp4/t1/init.mp4".parse().expect("init");
    assert_eq!(r.object, VodObject::Init { track: 1 });
    for (path, object) in [
        (
            "films/set.json/i1.m3u8",
            VodObject::IFramePlaylist { track: 1 },
        ),
        (
            "films/set.json/i1/3.m4s",
            VodObject::KeyFrame {
                track: 1,
                number: 3,
            },
        ),
        (
            "films/set.json/s2.m3u8",
            VodObject::SubtitlePlaylist { id: 2 },
        ),
        (
            "films/set.json/s2/4.vtt",
            VodObject::SubtitleSegment { id: 2, number: 4 },
        ),
        ("films/set.json/s2.vtt", VodObject::SubtitleFile { id: 2 }),
    ] {
        let r: VodRequest = path.parse().expect(path);
        assert_eq!(r.title, Path::new("films/set.json"));
        assert_eq!(r.object, object, "{path}");
    }
    for (path, clip) in [
        (
            "a.mp4/clipFrom/0/clipTo/5000/master.m3u8",
            Clip {
                from: 0,
                to: Some(5000),
            },
        ),
        (
            "a.mp4/clipFrom/10000/t1/3.m4s",
            Clip {
                from: 10000,
                to: None,
            },
        ),
        (
            "a.mp4/clipTo/7000/manifest.mpd",
            Clip {
                from: 0,
                to: Some(7000),
            },
        ),
    ] {
        let r: VodRequest = path.parse().expect(path);
        assert_eq!(r.clip, Some(clip), "{path}");
    }
    for bad in [
        "../etc/passwd.mp4/master.m3u8",
        "a/../../x.mp4/master.m3u8",
        "/etc/x.mp4/master.m3u8",
        "a//x.mp4/master.m3u8",
        "%2e%2e/x.mp4/master.m3u8",
        "./x.mp4/master.m3u8",
        "a\\..\\x.mp4/master.m3u8",
        "x.mp4/clipFrom/007/master.m3u8",
        "x.mp4/clipFrom/9/clipTo/9/master.m3u8",
        "x.mp4/clipFrom/1e3/master.m3u8",
    ] {
        let err = bad.parse::<VodRequest>().expect_err(bad);
        assert_eq!(err.status(), 400, "{bad}: {err}");
    }
    for missing in [
        "x.mp4",
        "x.mp4/t0/1.m4s",
        "x.mp4/t1/01.m4s",
        "x.mp4/t1/0.m4s",
        "x.mp4/video.m3u8",
        "x.txt/master.m3u8",
        "x.json/t1.vtt",
        "x.json/s1/1.m4s",
        "x.json/i1/1.vtt",
        "x.json/s1/init.mp4.vtt",
    ] {
        let err = missing.parse::<VodRequest>().expect_err(missing);
        assert_eq!(err.status(), 404, "{missing}");
    }
}

/// A scratch library root, removed on drop.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("strata-vod-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("lib")).expect("scratch dir");
        Scratch(dir)
    }

    fn library(&self, entries: usize) -> Library {
        Library::new(
            VodConfig {
                root: Some(self.0.join("lib")),
                segment_duration: Duration::from_secs(4),
                index_cache_entries: entries,
                index_cache_bytes: 1 << 30,
                max_moov_bytes: 1 << 20,
                encryption: Default::default(),
                remote: Vec::new(),
                thumbnails: Default::default(),
            },
            http::VodMetrics::default(),
        )
        .expect("library")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn get(library: &Library, path: &str) -> Result<crate::package::Rendered, VodError> {
    library.render(&path.parse()?)
}

#[test]
fn serves_playlists_and_segments_from_a_library() {
    let scratch = Scratch::new("serve");
    std::fs::create_dir_all(scratch.0.join("lib/films")).expect("dir");
    std::fs::write(scratch.0.join("lib/films/t.mp4"), title_file()).expect("write");
    let library = scratch.library(8);
    let master = get(&library, "films/t.mp4/master.m3u8").expect("master");
    let text = std::str::from_utf8(&master.body).expect("utf-8");
    assert!(text.contains("CODECS=\"avc1.4d401e,mp4a.40.2\""), "{text}");
    assert!(
        text.contains("URI=\"t2.m3u8\"") && text.contains("\nt1.m3u8\n"),
        "{text}"
    );
    let playlist = get(&library, "films/t.mp4/t1.m3u8").expect("playlist");
    let text = std::str::from_utf8(&playlist.body).expect("utf-8");
    assert!(text.contains("#EXT-X-PLAYLIST-TYPE:VOD\n"), "{text}");
    assert!(text.ends_with("t1/3.m4s\n#EXT-X-ENDLIST\n"), "{text}");
    let mpd = get(&library, "films/t.mp4/manifest.mpd").expect("mpd");
    let text = std::str::from_utf8(&mpd.body).expect("utf-8");
    assert!(
        text.contains("type=\"static\"") && text.contains("<S t=\"0\" d=\"360000\" r=\"1\"/>"),
        "{text}"
    );
    let init = get(&library, "films/t.mp4/t1/init.mp4").expect("init");
    assert_eq!(&init.body[4..8], b"ftyp");
    let segment = get(&library, "films/t.mp4/t1/2.m4s").expect("segment");
    // The mdat holds exactly the segment's 100 samples, all bytes of track 1.
    let mdat = segment
        .body
        .windows(4)
        .position(|w| w == b"mdat")
        .expect("mdat")
        + 4;
    let payload = &segment.body[mdat..];
    let expected: u32 = (100..200).map(|i| 100 + i % 7).sum();
    assert_eq!(payload.len(), expected as usize);
    assert!(payload.iter().all(|&b| b == 1));
    assert!(matches!(
        get(&library, "films/t.mp4/t1/4.m4s"),
        Err(VodError::NotFound)
    ));
    assert!(matches!(
        get(&library, "films/t.mp4/t9.m3u8"),
        Err(VodError::NotFound)
    ));
    assert!(matches!(
        get(&library, "films/none.mp4/master.m3u8"),
        Err(VodError::NotFound)
    ));
}

#[test]
fn never_reads_outside_the_root() {
    let scratch = Scratch::new("escape");
    std::fs::write(scratch.0.join("secret.mp4"), title_file()).expect("write");
    std::os::unix::fs::symlink(scratch.0.join("secret.mp4"), scratch.0.join("lib/link.mp4"))
        .expect("symlink");
    std::os::unix::fs::symlink(&scratch.0, scratch.0.join("lib/up")).expect("symlink");
    let library = scratch.library(8);
    for path in ["link.mp4/master.m3u8", "up/secret.mp4/master.m3u8"] {
        assert!(
            matches!(get(&library, path), Err(VodError::NotFound)),
            "{path}"
        );
    }
    assert_eq!(
        library
            .metrics
            .errors
            .get_or_create(&http::ReasonLabels {
                reason: "outside_root"
            })
            .get(),
        2
    );
    // A link that stays inside the root is followed.
    std::fs::copy(scratch.0.join("secret.mp4"), scratch.0.join("lib/real.mp4")).expect("copy");
    std::os::unix::fs::symlink(
        scratch.0.join("lib/real.mp4"),
        scratch.0.join("lib/alias.mp4"),
    )
    .expect("symlink");
    assert!(get(&library, "alias.mp4/master.m3u8").is_ok());
}

#[test]
fn index_cache_keeps_the_most_recent_titles() {
    let scratch = Scratch::new("cache");
    for name in ["a", "b", "c"] {
        std::fs::write(scratch.0.join(format!("lib/{name}.mp4")), title_file()).expect("write");
    }
    let library = scratch.library(2);
    for name in ["a", "b", "a", "c", "a"] {
        get(&library, &format!("{name}.mp4/master.m3u8")).expect("master");
    }
    let count = |event| {
        library
            .metrics
            .index_cache
            .get_or_create(&http::CacheLabels { event })
            .get()
    };
    // a, b parsed; a hit; c parsed, evicting b (least recent); a hit.
    assert_eq!((count("miss"), count("hit"), count("evict")), (3, 2, 1));
    assert_eq!(library.cached().0, 2);
    // A replaced file is parsed again.
    std::fs::write(scratch.0.join("lib/a.mp4"), mp4_file(&[audio(1, 100)])).expect("write");
    let master = get(&library, "a.mp4/master.m3u8").expect("master");
    assert!(!std::str::from_utf8(&master.body)
        .expect("utf-8")
        .contains("avc1"));
}

#[test]
fn a_truncated_file_is_a_500_with_a_reason() {
    let scratch = Scratch::new("truncated");
    let mut file = title_file();
    // Keep moov, drop the middle of mdat: samples now point past the end.
    let moov_at = file.windows(4).rposition(|w| w == b"moov").expect("moov") - 4;
    let moov = file.split_off(moov_at);
    let mut short = file[..file.len() / 3].to_vec();
    short.extend_from_slice(&moov);
    std::fs::write(scratch.0.join("lib/short.mp4"), short).expect("write");
    let library = scratch.library(2);
    let err = get(&library, "short.mp4/master.m3u8").expect_err("corrupt");
    assert_eq!(err.status(), 500);
    assert!(err.to_string().starts_with("corrupt MP4"), "{err}");
}

#[test]
fn the_vod_section_is_checked_with_the_rest_of_the_config() {
    let dir = std::env::temp_dir();
    let config = crate::config::OriginConfig::parse(&format!(
        "[vod]\nroot = \"{}\"\nsegment_duration = \"4s\"\n",
        dir.display()
    ))
    .expect("valid [vod]");
    let vod = config.vod.expect("vod");
    assert_eq!(vod.segment_duration, Duration::from_secs(4));
    assert_eq!(vod.index_cache_entries, 256);
    for (text, key) in [
        ("[vod]\nroot = \"relative/dir\"\n", "vod.root"),
        ("[vod]\nroot = \"/nonexistent/strata-vod\"\n", "vod.root"),
        (
            "[vod]\nroot = \"/tmp\"\nsegment_duration = \"0s\"\n",
            "vod.segment_duration",
        ),
        ("[vod]\nroot = \"/tmp\"\nroots = \"/tmp\"\n", "roots"),
    ] {
        let err = crate::config::OriginConfig::parse(text).expect_err(text);
        assert!(err.to_string().contains(key), "{text}: {err}");
    }
}

/// `vod.root` may be left out when remote stores are configured; then a
/// path outside every store's prefix is a 404, never a read of the disk.
#[test]
fn a_remote_only_vod_section_needs_no_root() {
    let config = crate::config::OriginConfig::parse(
        "[vod]\n[[vod.remote]]\nprefix = \"s3\"\nurl = \"http://127.0.0.1:9/bucket/\"\n",
    )
    .expect("a remote-only [vod] is valid");
    let vod = config.vod.expect("vod");
    assert_eq!(vod.root, None);
    let err = crate::config::OriginConfig::parse("[vod]\nsegment_duration = \"4s\"\n")
        .expect_err("neither a root nor a store");
    assert!(err.to_string().contains("vod.root"), "{err}");
    let library = Library::new(vod, http::VodMetrics::default()).expect("library");
    for path in [
        "films/t.mp4/master.m3u8",
        "t.mp4/t1/1.m4s",
        "films/set.json/manifest.mpd",
        "etc/passwd.mp4/master.m3u8",
    ] {
        let err = get(&library, path).expect_err(path);
        assert_eq!(err.status(), 404, "{path}: {err}");
    }
}

/// A `moof` with one `traf` for track 1: `tfhd`, `tfdt` and a `trun` of
/// `count` samples of which `listed` are written out (duration, size, flags).
fn moof(count: u32, listed: u32) -> Vec<u8> {
    let mut b = BytesMut::new();
    plain(&mut b, b"moof", |b| {
        plain(b, b"traf", |b| {
            let tfhd = begin_full_box(b, b"tfhd", 0, 0x02_0000);
            b.put_u32(1);
            end_box(b, tfhd);
            full(b, b"tfdt", |b| b.put_u32(0));
            let trun = begin_full_box(b, b"trun", 0, 0x01 | 0x100 | 0x200 | 0x400);
            b.put_u32(count);
            b.put_u32(200);
            for i in 0..listed {
                b.put_u32(512);
                b.put_u32(10);
                b.put_u32(if i == 0 { 0x0200_0000 } else { 0x0101_0000 });
            }
            end_box(b, trun);
        });
    });
    b.to_vec()
}

#[test]
fn indexes_fragments_and_refuses_lying_truns() {
    let mut empty = video(1, 0, 1);
    empty.samples.clear();
    let file = mp4_file(&[empty]);
    let moov_at = file.windows(4).rposition(|w| w == b"moov").expect("moov") + 4;
    let moov = &file[moov_at..];
    let limits = IndexLimits::default();
    let index =
        fragments::parse_fragmented(moov, &[(1000, moof(3, 3)), (2000, moof(3, 3))], &limits)
            .expect("fragments");
    let t = &index.tracks[0];
    assert_eq!(t.samples.len(), 6);
    assert_eq!(
        (
            t.samples[0].offset,
            t.samples[1].offset,
            t.samples[3].offset
        ),
        (1200, 1210, 2200)
    );
    assert!(t.samples[0].sync && !t.samples[1].sync && t.samples[3].sync);
    // tfdt 0 in both fragments: decode times restart where the file says.
    assert_eq!(
        (t.samples[2].dts, t.samples[3].dts, t.end_dts),
        (1024, 0, 1536)
    );
    match fragments::parse_fragmented(moov, &[(0, moof(u32::MAX, 2))], &limits) {
        Err(Mp4Error::Corrupt(why)) => assert!(why.contains("claims"), "{why}"),
        other => panic!("{other:?}"),
    }
    // A fragmented file indexed as progressive says so, for the library to follow up.
    assert!(matches!(
        mp4::parse_moov(moov, &limits),
        Err(Mp4Error::Fragmented) | Err(Mp4Error::Unsupported(_))
    ));
}

/// A title's objects through [`protect::TitleDrm`] with keys derived from
/// `secret`, for titles under `aes/` (AES-128) and `cenc/` (cenc).
fn title_drm(secret: &str) -> protect::TitleDrm {
    let keys = crate::keys::KeyService::open(&crate::keys::KeysConfig {
        key_secret: Some(crate::keys::KeySecret::new(secret).expect("secret")),
        ..crate::keys::KeysConfig::default()
    })
    .expect("keys");
    let drm = crate::drm::Drm::new(
        crate::drm::EncryptionConfig::default(),
        keys,
        crate::drm::http::DrmMetrics::default(),
    );
    protect::TitleDrm::new(
        protect::VodEncryption {
            prefixes: [
                ("aes".to_owned(), crate::drm::EncryptionScheme::Aes128),
                ("cenc".to_owned(), crate::drm::EncryptionScheme::Cenc),
            ]
            .into_iter()
            .collect(),
            ..protect::VodEncryption::default()
        },
        std::sync::Arc::new(drm),
    )
}

#[test]
fn encrypted_titles_protect_what_the_packager_renders() {
    use cbc::cipher::{BlockDecryptMut, KeyIvInit};
    let scratch = Scratch::new("protect");
    for dir in ["aes", "cenc"] {
        std::fs::create_dir_all(scratch.0.join("lib").join(dir)).expect("dir");
        std::fs::write(scratch.0.join("lib").join(dir).join("t.mp4"), title_file()).expect("write");
    }
    let library = scratch.library(8);
    let secret = "0123456789abcdef0123456789abcdef-vod";
    let titles = title_drm(secret);
    let protected = |path: &str| -> Result<crate::package::Rendered, VodError> {
        let request: VodRequest = path.parse()?;
        let clear = library.render(&request)?;
        Ok(titles.protect(&request, clear)?)
    };
    let text =
        |path: &str| String::from_utf8(protected(path).expect(path).body.to_vec()).expect("utf-8");

    // AES-128: the key after the MAP, fragments whole, IV = segment number.
    let key = titles.key(Path::new("aes/t.mp4")).expect("key");
    let playlist = text("aes/t.mp4/t1.m3u8");
    let tag = format!(
        "#EXT-X-MAP:URI=\"t1/init.mp4\"\n#EXT-X-KEY:METHOD=AES-128,URI=\"key/{}.key\"\n",
        key.kid.hex()
    );
    assert!(playlist.contains(&tag), "{playlist}");
    let clear = get(&library, "aes/t.mp4/t1/2.m4s").expect("clear");
    let sealed = protected("aes/t.mp4/t1/2.m4s").expect("sealed");
    let iv = 2u128.to_be_bytes();
    let opened = cbc::Decryptor::<aes::Aes128>::new(&key.key.into(), &iv.into())
        .decrypt_padded_vec_mut::<cbc::cipher::block_padding::Pkcs7>(&sealed.body)
        .expect("decrypts with IV 2");
    assert_eq!(opened, clear.body.to_vec());
    assert_eq!(
        protected("aes/t.mp4/t1/init.mp4").expect("init").body,
        get(&library, "aes/t.mp4/t1/init.mp4").expect("init").body,
        "the init segment stays clear"
    );
    let e = protected("aes/t.mp4/manifest.mpd").expect_err("no DASH");
    assert_eq!(e.status(), 404, "{e}");
    let ts = text("aes/t.mp4/t1/ts.m3u8");
    assert!(ts.contains("URI=\"../key/"), "{ts}");

    // cenc: ContentProtection with the title's licence URL, encv/enca
    // sample entries, senc in fragments, no MPEG-TS.
    let key = titles.key(Path::new("cenc/t.mp4")).expect("key");
    let mpd = text("cenc/t.mp4/manifest.mpd");
    assert!(
        mpd.contains(&format!("cenc:default_KID=\"{}\"", key.kid.uuid()))
            && mpd.contains("/drm/clearkey/vod/cenc/t.mp4"),
        "{mpd}"
    );
    let hls = text("cenc/t.mp4/t2.m3u8");
    assert!(
        hls.contains("#EXT-X-KEY:METHOD=SAMPLE-AES-CTR")
            && hls.find("#EXT-X-KEY") < hls.find("#EXT-X-MAP"),
        "{hls}"
    );
    let init = protected("cenc/t.mp4/t2/init.mp4").expect("audio init");
    assert!(init.body.windows(4).any(|w| w == b"enca"));
    let fragment = protected("cenc/t.mp4/t2/1.m4s").expect("audio fragment");
    assert!(fragment.body.windows(4).any(|w| w == b"senc"));
    let e = protected("cenc/t.mp4/t1/1.ts").expect_err("no TS");
    assert_eq!(e.status(), 404, "{e}");
    // Subtitles and the master stay clear.
    assert!(!text("cenc/t.mp4/master.m3u8").contains("EXT-X-KEY"));

    // A second origin with the same secret holds the same key per title;
    // titles differ.
    let other = title_drm(secret);
    assert_eq!(other.key(Path::new("cenc/t.mp4")).expect("key"), key);
    assert_ne!(other.key(Path::new("aes/t.mp4")).expect("key"), key);
}

#[test]
fn mpeg_ts_segments_mux_the_rendition_with_the_default_audio() {
    let scratch = Scratch::new("ts");
    std::fs::write(scratch.0.join("lib/t.mp4"), title_file()).expect("write");
    let library = scratch.library(8);
    let master = get(&library, "t.mp4/master-ts.m3u8").expect("master");
    let text = std::str::from_utf8(&master.body).expect("utf-8");
    assert!(
        text.contains("CODECS=\"avc1.4d401e,mp4a.40.2\"") && text.contains("\nt1/ts.m3u8\n"),
        "{text}"
    );
    let playlist = get(&library, "t.mp4/t1/ts.m3u8").expect("playlist");
    let text = std::str::from_utf8(&playlist.body).expect("utf-8");
    assert!(text.ends_with("\n3.ts\n#EXT-X-ENDLIST\n"), "{text}");
    let segment = get(&library, "t.mp4/t1/2.ts").expect("segment");
    assert_eq!(segment.content_type, "video/mp2t");
    assert_eq!(segment.body.len() % 188, 0);
    assert!(segment.body.chunks(188).all(|p| p[0] == 0x47));
    let pids: std::collections::BTreeSet<u16> = segment
        .body
        .chunks(188)
        .map(|p| u16::from_be_bytes([p[1] & 0x1f, p[2]]))
        .collect();
    assert!(
        pids.contains(&crate::media::mpegts::VIDEO_PID)
            && pids.contains(&crate::media::mpegts::AUDIO_PID),
        "video and audio: {pids:?}"
    );
    assert!(matches!(
        get(&library, "t.mp4/t2/ts.m3u8"),
        Err(VodError::NotFound)
    ));
}
