//! Real H.264/AAC from ffmpeg through the store and packagers, and back into
//! ffmpeg: every output format must decode without a single error.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use crate::support::{ffmpeg, make_flv};
use bytes::Bytes;
use strata_origin::ingest::{PublishTarget, PublisherInfo, StreamName};
use strata_origin::media::{AudioParams, Sample, TrackKind, TrackParams, VideoParams};
use strata_origin::store::{Clock, ManualClock, Store, StoreConfig};

const SECONDS: u32 = 6;
const FPS: u32 = 25;

fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("strata-e2e-packaging-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// One FLV tag as the test needs it (the real FLV parser lives in `media::flv`).
enum Tag {
    AvcConfig(Bytes),
    Video {
        ms: i64,
        cts_ms: i64,
        key: bool,
        data: Bytes,
    },
    AacConfig(Bytes),
    Audio {
        ms: i64,
        data: Bytes,
    },
}

/// Minimal FLV tag walk (FLV spec v10.1 §E.4): AVC and AAC tags only.
fn flv_tags(flv: &[u8]) -> Vec<Tag> {
    assert_eq!(&flv[..3], b"FLV");
    let mut at = u32::from_be_bytes([flv[5], flv[6], flv[7], flv[8]]) as usize + 4;
    let mut tags = Vec::new();
    while at + 11 <= flv.len() {
        let kind = flv[at];
        let size = u32::from_be_bytes([0, flv[at + 1], flv[at + 2], flv[at + 3]]) as usize;
        let ms = i64::from(u32::from_be_bytes([
            flv[at + 7],
            flv[at + 4],
            flv[at + 5],
            flv[at + 6],
        ]));
        let body = Bytes::copy_from_slice(&flv[at + 11..at + 11 + size]);
        at += 11 + size + 4;
        match kind {
            9 if body[0] & 0x0f == 7 => {
                let cts = i32::from_be_bytes([body[2], body[3], body[4], 0]) >> 8;
                match body[1] {
                    0 => tags.push(Tag::AvcConfig(body.slice(5..))),
                    1 => tags.push(Tag::Video {
                        ms,
                        cts_ms: i64::from(cts),
                        key: body[0] >> 4 == 1,
                        data: body.slice(5..),
                    }),
                    _ => {}
                }
            }
            8 if body[0] >> 4 == 10 => match body[1] {
                0 => tags.push(Tag::AacConfig(body.slice(2..))),
                _ => tags.push(Tag::Audio {
                    ms,
                    data: body.slice(2..),
                }),
            },
            _ => {}
        }
    }
    tags
}

fn video_params(avcc: &Bytes) -> VideoParams {
    // AVCDecoderConfigurationRecord (ISO/IEC 14496-15 §5.3.3.1).
    let take = |count: u8, at: &mut usize| -> Vec<Bytes> {
        (0..count)
            .map(|_| {
                let len = usize::from(u16::from_be_bytes([avcc[*at], avcc[*at + 1]]));
                *at += 2 + len;
                avcc.slice(*at - len..*at)
            })
            .collect()
    };
    let mut at = 6;
    let sps = take(avcc[5] & 0x1f, &mut at);
    let pps_count = avcc[at];
    at += 1;
    let pps = take(pps_count, &mut at);
    VideoParams {
        codec: format!("avc1.{:02x}{:02x}{:02x}", avcc[1], avcc[2], avcc[3]),
        width: 320,
        height: 240,
        avc_config: avcc.clone(),
        sps,
        pps,
    }
}

fn audio_params(asc: &Bytes) -> AudioParams {
    const RATES: [u32; 13] = [
        96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
    ];
    AudioParams {
        codec: format!("mp4a.40.{}", asc[0] >> 3),
        sample_rate: RATES[usize::from(((asc[0] & 7) << 1) | (asc[1] >> 7))],
        channels: (asc[1] >> 3) & 0xf,
        asc: asc.clone(),
    }
}

/// Render `path` and everything the playlist names under `dir`.
fn mirror(store: &Store, now: std::time::SystemTime, dir: &Path, path: &str) -> String {
    let rendered = store
        .render("e2e", path, now)
        .unwrap_or_else(|e| panic!("{path}: {e:?}"));
    let file = dir.join(path);
    std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
    std::fs::write(&file, &rendered.body).expect("write");
    String::from_utf8_lossy(&rendered.body).into_owned()
}

fn decode_errors(input: &Path) -> String {
    let out = ffmpeg(&[
        "-v",
        "warning",
        "-i",
        input.to_str().expect("utf-8 path"),
        "-map",
        "0",
        "-f",
        "null",
        "-",
    ]);
    let mut errors = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        errors.push_str(&format!("\nexit: {}", out.status));
    }
    errors
}

fn count_video_frames(input: &Path) -> u32 {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
        .args(["-show_entries", "stream=nb_read_frames", "-of", "csv=p=0"])
        .arg(input)
        .output()
        .expect("install ffmpeg: apt-get install ffmpeg");
    // One line per program and per stream; all name the same video stream.
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn ffmpeg_decodes_every_packaged_format() {
    let dir = scratch_dir();
    let flv = dir.join("source.flv");
    make_flv(&flv, FPS, SECONDS);
    let tags = flv_tags(&std::fs::read(&flv).expect("flv"));

    let start = UNIX_EPOCH + Duration::from_secs(1_900_000_000);
    let clock = ManualClock::new(start);
    let store = Store::with_clock(StoreConfig::default(), Arc::new(clock.clone()));
    let name = StreamName {
        channel: "e2e".into(),
        rendition: "main".into(),
    };
    let info = PublisherInfo {
        remote: SocketAddr::from(([127, 0, 0, 1], 1935)),
        protocol: "rtmp",
    };
    let mut sink = store.publish(&name, info).expect("publish");
    let mut rate = 48_000;
    let mut video_frames = 0;
    for tag in tags {
        match tag {
            Tag::AvcConfig(c) => sink.params(TrackParams::Video(video_params(&c))),
            Tag::AacConfig(c) => {
                let p = audio_params(&c);
                rate = p.sample_rate;
                sink.params(TrackParams::Audio(p));
            }
            Tag::Video {
                ms,
                cts_ms,
                key,
                data,
            } => {
                clock.set(start + Duration::from_millis(ms as u64));
                video_frames += 1;
                let s = Sample {
                    dts: ms * 90,
                    cts: (cts_ms * 90) as i32,
                    duration: 0,
                    keyframe: key,
                    data,
                };
                sink.sample(TrackKind::Video, s).expect("video sample");
            }
            Tag::Audio { ms, data } => {
                clock.set(start + Duration::from_millis(ms as u64));
                let s = Sample {
                    dts: ms * i64::from(rate) / 1000,
                    cts: 0,
                    duration: 1024,
                    keyframe: true,
                    data,
                };
                sink.sample(TrackKind::Audio, s).expect("audio sample");
            }
        }
    }
    assert_eq!(video_frames, SECONDS * FPS);
    drop(sink);
    let now = clock.now() + Duration::from_secs(31); // ended: ENDLIST and a static MPD

    let out_dir = dir.join("live/e2e");
    mirror(&store, now, &out_dir, "master.m3u8");
    mirror(&store, now, &out_dir, "master-ts.m3u8");
    let mpd = mirror(&store, now, &out_dir, "manifest.mpd");
    let mut files = BTreeSet::new();
    for playlist in ["main/video.m3u8", "main/audio.m3u8", "main/ts.m3u8"] {
        let text = mirror(&store, now, &out_dir, playlist);
        assert!(text.ends_with("#EXT-X-ENDLIST\n"));
        for line in text.lines() {
            let uri = line
                .strip_prefix("#EXT-X-MAP:URI=\"")
                .map(|u| u.trim_end_matches('"'));
            if let Some(uri) = uri.or((!line.starts_with('#')).then_some(line)) {
                files.insert(format!("main/{uri}"));
            }
        }
    }
    assert!(mpd.contains("type=\"static\""));
    // FLV's millisecond timestamps jitter around the AAC frame clock; the
    // audio timeline must still tile (only the first entry carries a t).
    let audio_set = &mpd[mpd.find("contentType=\"audio\"").expect("audio set")..];
    assert_eq!(audio_set.matches("<S t=").count(), 1, "{mpd}");
    let video_set = &mpd[..mpd.find("contentType=\"audio\"").expect("audio set")];
    assert_eq!(video_set.matches("<S t=").count(), 1, "{mpd}");
    for file in &files {
        mirror(&store, now, &out_dir, file);
    }

    for entry in [
        "master.m3u8",
        "master-ts.m3u8",
        "main/ts.m3u8",
        "manifest.mpd",
    ] {
        let errors = decode_errors(&out_dir.join(entry));
        assert!(errors.is_empty(), "{entry}: {errors}");
    }
    assert_eq!(
        count_video_frames(&out_dir.join("main/video.m3u8")),
        SECONDS * FPS
    );
    assert_eq!(
        count_video_frames(&out_dir.join("main/ts.m3u8")),
        SECONDS * FPS
    );
    if std::env::var_os("STRATA_E2E_KEEP").is_some() {
        eprintln!("kept packaged output in {}", out_dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
