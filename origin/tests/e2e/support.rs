//! A collecting `PublishTarget` and an ffmpeg launcher.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use strata_origin::ingest::{
    MediaSink, PublishRefused, PublishTarget, PublisherInfo, SinkError, StreamName,
};
use strata_origin::media::{Sample, TrackKind, TrackParams};
use tokio::process::{Child, Command};
use tokio::sync::watch;

/// Everything one publish delivered.
#[derive(Debug, Default, Clone)]
pub struct Recorded {
    pub name: Option<StreamName>,
    pub protocol: &'static str,
    pub params: Vec<TrackParams>,
    pub samples: Vec<(TrackKind, Sample)>,
    pub closed: bool,
}

impl Recorded {
    pub fn samples(&self, kind: TrackKind) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, s)| s)
            .collect()
    }

    pub fn video(&self) -> Option<&strata_origin::media::VideoParams> {
        self.params.iter().find_map(|p| match p {
            TrackParams::Video(v) => Some(v),
            TrackParams::Audio(_) => None,
        })
    }

    pub fn audio(&self) -> Option<&strata_origin::media::AudioParams> {
        self.params.iter().find_map(|p| match p {
            TrackParams::Audio(a) => Some(a),
            TrackParams::Video(_) => None,
        })
    }
}

/// Records every publish; `version` ticks on each change so tests can wait
/// on the event itself.
#[derive(Clone)]
pub struct Collector {
    // Test double: locked only briefly from sync sink callbacks, never across `.await`.
    pub publishes: Arc<Mutex<Vec<Recorded>>>,
    version: Arc<watch::Sender<u64>>,
    pub kick: Arc<watch::Sender<bool>>,
}

impl Collector {
    pub fn new() -> Self {
        Self {
            publishes: Arc::default(),
            version: Arc::new(watch::channel(0).0),
            kick: Arc::new(watch::channel(false).0),
        }
    }

    pub fn snapshot(&self) -> Vec<Recorded> {
        self.publishes.lock().expect("not poisoned").clone()
    }

    /// Waits until `cond` holds over the publishes, or panics after `limit`.
    pub async fn wait_for(&self, limit: Duration, what: &str, cond: impl Fn(&[Recorded]) -> bool) {
        let mut rx = self.version.subscribe();
        let waited = tokio::time::timeout(limit, async {
            loop {
                if cond(&self.snapshot()) {
                    return;
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        assert!(
            waited.is_ok(),
            "timed out waiting for {what}; got {:#?}",
            self.snapshot()
                .iter()
                .map(|r| (r.name.clone(), r.params.len(), r.samples.len(), r.closed))
                .collect::<Vec<_>>()
        );
    }
}

impl PublishTarget for Collector {
    fn publish(
        &self,
        name: &StreamName,
        info: PublisherInfo,
    ) -> Result<Box<dyn MediaSink>, PublishRefused> {
        let mut all = self.publishes.lock().expect("not poisoned");
        all.push(Recorded {
            name: Some(name.clone()),
            protocol: info.protocol,
            ..Recorded::default()
        });
        let index = all.len() - 1;
        drop(all);
        self.version.send_modify(|v| *v += 1);
        Ok(Box::new(CollectingSink {
            collector: self.clone(),
            index,
        }))
    }
}

struct CollectingSink {
    collector: Collector,
    index: usize,
}

impl CollectingSink {
    fn update(&self, f: impl FnOnce(&mut Recorded)) {
        f(&mut self.collector.publishes.lock().expect("not poisoned")[self.index]);
        self.collector.version.send_modify(|v| *v += 1);
    }
}

impl MediaSink for CollectingSink {
    fn params(&mut self, params: TrackParams) {
        self.update(|r| r.params.push(params));
    }

    fn sample(&mut self, kind: TrackKind, sample: Sample) -> Result<(), SinkError> {
        self.update(|r| r.samples.push((kind, sample)));
        Ok(())
    }

    fn kicked(&self) -> watch::Receiver<bool> {
        self.collector.kick.subscribe()
    }
}

impl Drop for CollectingSink {
    fn drop(&mut self) {
        self.update(|r| r.closed = true);
    }
}

pub const FFMPEG: &str = "/usr/bin/ffmpeg";

/// `ffmpeg -re` publishing `seconds` of lavfi testsrc (libx264) + sine (AAC)
/// to `url` in `format` (`flv` or `mpegts`).
pub fn ffmpeg_publish(url: &str, format: &str, seconds: u32) -> Child {
    ffmpeg_publish_with(url, format, seconds, &["-c:v", "libx264", "-c:a", "aac"])
}

/// Like [`ffmpeg_publish`] with other encoders, e.g. `["-c:a", "libmp3lame"]`.
pub fn ffmpeg_publish_with(url: &str, format: &str, seconds: u32, codecs: &[&str]) -> Child {
    assert!(
        std::path::Path::new(FFMPEG).exists(),
        "install ffmpeg: apt-get install ffmpeg"
    );
    Command::new(FFMPEG)
        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc=size=320x240:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"])
        .args(["-t", &seconds.to_string()])
        .args(["-profile:v", "main", "-level:v", "3.0"])
        .args(["-preset", "veryfast", "-g", "25", "-pix_fmt", "yuv420p"])
        .args(["-b:a", "64k", "-ac", "1"])
        .args(codecs)
        .args(["-f", format, url])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("install ffmpeg: apt-get install ffmpeg")
}

/// Waits for ffmpeg to exit; returns whether it succeeded and its stderr.
pub async fn ffmpeg_exit(child: Child, limit: Duration) -> (bool, String) {
    let out = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .expect("ffmpeg did not exit in time")
        .expect("ffmpeg ran");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Logs to the test's output and to [`logged_lines`]; srt-protocol's and
/// srt-tokio's warnings are on, as they are in the binary.
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "strata_origin=info,srt_protocol=warn,srt_tokio=warn".into()),
        )
        .with_ansi(false)
        .with_writer(CapturedLog)
        .try_init();
}

/// Every log line written since the first [`init_logs`], from every test in
/// this binary (tests filter by what they look for).
pub fn logged_lines() -> Vec<String> {
    let log = LOG.lock().expect("not poisoned");
    String::from_utf8_lossy(&log)
        .lines()
        .map(str::to_owned)
        .collect()
}

// Test double: appended to under a brief lock by whichever thread logs.
static LOG: Mutex<Vec<u8>> = Mutex::new(Vec::new());

#[derive(Clone, Copy)]
struct CapturedLog;

impl std::io::Write for CapturedLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOG.lock().expect("not poisoned").extend_from_slice(buf);
        // Like the test writer: shown for failing tests only.
        print!("{}", String::from_utf8_lossy(buf));
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for CapturedLog {
    type Writer = CapturedLog;

    fn make_writer(&'a self) -> Self::Writer {
        *self
    }
}

/// Checks what an ffmpeg publish of [`ffmpeg_publish`] must have delivered.
/// `lossy`: SRT drops packets that arrive later than its latency, which a
/// loaded 2-core host can provoke even on loopback; allow a few frames.
/// (Callers must set `linger` on ffmpeg's SRT URL: libsrt's live-mode default
/// of 0 discards the encoder's final burst at close.)
pub fn assert_ffmpeg_stream(r: &Recorded, seconds: u32, lossy: bool) {
    let v = r.video().expect("video params");
    assert_eq!(v.codec, "avc1.4d401e");
    assert_eq!((v.width, v.height), (320, 240));
    let a = r.audio().expect("audio params");
    assert_eq!(a.codec, "mp4a.40.2");
    assert_eq!((a.sample_rate, a.channels), (44100, 1));

    let video = r.samples(TrackKind::Video);
    let frames = seconds as usize * 25;
    let min_frames = if lossy { frames - 5 } else { frames - 2 };
    assert!(
        video.len() >= min_frames && video.len() <= frames,
        "{} video frames for {seconds} s at 25 fps: dts {:?}",
        video.len(),
        video.iter().map(|s| s.dts).collect::<Vec<_>>()
    );
    assert!(video[0].keyframe, "starts with an IDR");
    let keyframes = video.iter().filter(|s| s.keyframe).count();
    let gops = frames.div_ceil(25);
    assert!(keyframes <= gops && keyframes + usize::from(lossy) >= gops);
    assert!(video.windows(2).all(|w| w[1].dts > w[0].dts));
    // 25 fps in 90 kHz ticks; B-frames show as composition offsets.
    let mut pts: Vec<i64> = video.iter().map(|s| s.pts()).collect();
    pts.sort_unstable();
    assert!(
        pts.windows(2)
            .all(|w| w[1] - w[0] == 3600 || lossy && (w[1] - w[0]) % 3600 == 0),
        "25 fps PTS: {:?}",
        video.iter().map(|s| (s.dts, s.cts)).collect::<Vec<_>>()
    );
    assert!(
        video.iter().any(|s| s.cts > 0),
        "x264 veryfast uses B-frames"
    );
    for s in &video {
        let mut rest = &s.data[..];
        while !rest.is_empty() {
            let len = u32::from_be_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
            assert!(len > 0 && len + 4 <= rest.len(), "AVCC framing");
            rest = &rest[4 + len..];
        }
    }

    let audio = r.samples(TrackKind::Audio);
    let expected = (seconds * 44100 / 1024) as usize;
    let min_audio = if lossy { expected - 5 } else { expected };
    assert!(
        audio.len() >= min_audio && audio.len() <= expected + 3,
        "{} audio frames",
        audio.len()
    );
    assert!(audio
        .windows(2)
        .all(|w| w[1].dts - w[0].dts == 1024 || lossy && w[1].dts - w[0].dts > 1024));
    // Audio and video share one timeline (within 200 ms at the start).
    let a0 = audio[0].dts as f64 / 44100.0;
    let v0 = video[0].dts as f64 / 90000.0;
    assert!(
        (a0 - v0).abs() < 0.2,
        "audio starts at {a0} s, video at {v0} s"
    );
}

/// Debian's ffmpeg, run to completion; fails with an install hint when missing.
pub fn ffmpeg(args: &[&str]) -> std::process::Output {
    std::process::Command::new("ffmpeg")
        .arg("-hide_banner")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("install ffmpeg: apt-get install ffmpeg ({e})"))
}

/// A test clip as FLV at `path`: 320x240 H.264 (GOP 50) and 48 kHz AAC, the
/// way an RTMP publisher sends it.
pub fn make_flv(path: &std::path::Path, fps: u32, seconds: u32) {
    let out = ffmpeg(&[
        "-v",
        "error",
        "-f",
        "lavfi",
        "-i",
        &format!("testsrc=size=320x240:rate={fps}"),
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        "-g",
        "50",
        "-c:a",
        "aac",
        "-t",
        &seconds.to_string(),
        "-f",
        "flv",
        "-y",
        path.to_str().expect("utf-8 path"),
    ]);
    assert!(
        out.status.success(),
        "ffmpeg: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
