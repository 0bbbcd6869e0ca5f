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

/// Asserts that `needles` appear in `text` in this order.
fn assert_in_order(text: &str, needles: &[&str]) {
    let mut at = 0;
    for needle in needles {
        let found = text[at..]
            .find(needle)
            .unwrap_or_else(|| panic!("{needle} after {at} in\n{text}"));
        at += found + needle.len();
    }
}

mod lifecycle;
mod low_latency;
mod output;
mod redundant;
mod timing;
