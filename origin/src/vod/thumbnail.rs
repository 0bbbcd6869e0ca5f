//! `thumb/{ms}.jpg`: the frame a player shows at `{ms}` as a JPEG. The
//! samples from the keyframe at or before that frame up to the frame itself
//! (decode order) are read — nothing else of the title — wrapped as one
//! CMAF fragment and piped into ffmpeg, which decodes them and encodes the
//! one frame. Runs are bounded in number (`max_concurrent`) and time
//! (`timeout`); the JPEGs are kept in a bounded in-memory cache.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

use super::plan::{self, PlannedSegment};
use super::presentation::{Presentation, Rendition};
use super::{VodError, VodObject, VodRequest};
use crate::media::{TrackKind, TrackParams};

/// Largest JPEG accepted from ffmpeg.
const MAX_JPEG_BYTES: u64 = 16 << 20;
/// The track ID inside the fragment piped to ffmpeg.
const TRACK_ID: u32 = 1;

/// `[vod.thumbnails]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThumbnailConfig {
    /// The ffmpeg binary (a name on `PATH` or a path).
    #[serde(default = "default_ffmpeg")]
    pub ffmpeg: PathBuf,
    /// ffmpeg runs at once; more requests wait (up to `timeout`), then get a 503.
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent: usize,
    /// One ffmpeg run (and the wait for its turn) gives up after this long.
    #[serde(with = "humantime_serde", default = "default_timeout")]
    pub timeout: Duration,
    /// Bytes of JPEGs kept in memory (least recently used go first).
    #[serde(default = "default_cache_bytes")]
    pub cache_bytes: u64,
    /// Widest `?width=` served.
    #[serde(default = "default_max_width")]
    pub max_width: u32,
}

fn default_ffmpeg() -> PathBuf {
    "ffmpeg".into()
}

fn default_max_concurrent() -> usize {
    2
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_cache_bytes() -> u64 {
    32 << 20
}

fn default_max_width() -> u32 {
    1920
}

impl Default for ThumbnailConfig {
    fn default() -> Self {
        ThumbnailConfig {
            ffmpeg: default_ffmpeg(),
            max_concurrent: default_max_concurrent(),
            timeout: default_timeout(),
            cache_bytes: default_cache_bytes(),
            max_width: default_max_width(),
        }
    }
}

impl ThumbnailConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.max_concurrent == 0 || self.timeout.is_zero() {
            return Err(
                "vod.thumbnails.max_concurrent, vod.thumbnails.timeout: must be above zero".into(),
            );
        }
        if !(16..=7680).contains(&self.max_width) {
            return Err("vod.thumbnails.max_width: between 16 and 7680".into());
        }
        Ok(())
    }
}

/// Why no thumbnail was made (the title's own faults are [`VodError`]s).
#[derive(Debug, thiserror::Error)]
pub enum ThumbnailError {
    #[error("thumbnail: {0} decoders busy; try again")]
    Busy(usize),
    #[error("thumbnail: ffmpeg took longer than {0:?}")]
    Timeout(Duration),
    #[error("thumbnail: cannot run {0} (vod.thumbnails.ffmpeg): {1}")]
    NoDecoder(String, String),
    #[error("thumbnail: ffmpeg failed: {0}")]
    Decoder(String),
    #[error("thumbnail: width must be between 16 and {0} pixels")]
    Width(u32),
}

impl ThumbnailError {
    pub fn status(&self) -> u16 {
        match self {
            ThumbnailError::Busy(_) | ThumbnailError::NoDecoder(..) => 503,
            ThumbnailError::Timeout(_) => 504,
            ThumbnailError::Decoder(_) => 500,
            ThumbnailError::Width(_) => 400,
        }
    }

    pub fn reason(&self) -> &'static str {
        match self {
            ThumbnailError::Busy(_) => "thumbnail_busy",
            ThumbnailError::Timeout(_) => "thumbnail_timeout",
            ThumbnailError::NoDecoder(..) => "thumbnail_no_decoder",
            ThumbnailError::Decoder(_) => "thumbnail_failed",
            ThumbnailError::Width(_) => "bad_path",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `cached`, `made`, `busy`, `timeout`, `failed`
    pub outcome: &'static str,
}

/// `strata_origin_vod_thumbnails_total{outcome}`.
#[derive(Clone, Default)]
pub struct ThumbnailMetrics {
    pub outcomes: Family<OutcomeLabels, Counter>,
}

impl ThumbnailMetrics {
    pub fn register(&self, vod: &mut Registry) {
        vod.register(
            "thumbnails",
            "Thumbnail requests by outcome (cached, made by ffmpeg, busy, timeout, failed)",
            self.outcomes.clone(),
        );
    }

    fn count(&self, outcome: &'static str) {
        self.outcomes
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }
}

/// `{ms}.jpg` → ms: digits, no sign, no leading zero (but `0`).
pub fn parse_ms(name: &str) -> Result<u64, VodError> {
    let digits = name.strip_suffix(".jpg").ok_or(VodError::NotFound)?;
    if digits.is_empty()
        || (digits.len() > 1 && digits.starts_with('0'))
        || digits.len() > 12
        || !digits.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(VodError::BadPath(
            "thumbnail time: milliseconds, digits without a leading zero",
        ));
    }
    digits
        .parse()
        .map_err(|_| VodError::BadPath("thumbnail time out of range"))
}

/// A thumbnail request takes `?width=` from the query; other objects
/// ignore the query.
pub fn with_query(mut request: VodRequest, query: Option<&str>) -> Result<VodRequest, VodError> {
    if let VodObject::Thumbnail { width, .. } = &mut request.object {
        for (key, value) in query
            .unwrap_or("")
            .split('&')
            .filter_map(|kv| kv.split_once('='))
        {
            if key == "width" {
                if value.is_empty()
                    || value.len() > 5
                    || value.starts_with('0')
                    || !value.bytes().all(|b| b.is_ascii_digit())
                {
                    return Err(VodError::BadPath("thumbnail width: a number of pixels"));
                }
                *width = value.parse().ok();
            }
        }
    }
    Ok(request)
}

/// The decoder's permits and the JPEG cache.
pub struct Thumbnails {
    config: ThumbnailConfig,
    permits: Arc<Semaphore>,
    // Held for a lookup or an insert only, never across the ffmpeg run.
    cache: Mutex<JpegCache>,
    metrics: ThumbnailMetrics,
}

#[derive(Default)]
struct JpegCache {
    entries: HashMap<String, (Bytes, u64)>,
    bytes: u64,
    clock: u64,
}

/// The frame asked for: which samples to decode and which output frame it is.
struct Frame {
    /// Decode order: the keyframe..=the frame.
    first: usize,
    last: usize,
    /// Frames of `first..=last` presented before it.
    rank: usize,
}

impl Thumbnails {
    pub fn new(config: ThumbnailConfig, metrics: ThumbnailMetrics) -> Thumbnails {
        Thumbnails {
            permits: Arc::new(Semaphore::new(config.max_concurrent.max(1))),
            config,
            cache: Mutex::new(JpegCache::default()),
            metrics,
        }
    }

    /// The JPEG of the frame presented at `ms` (from the start of the
    /// presentation, or of the clip), `width` wide (the video's own width
    /// without it). `read` reads a range of a rendition's samples.
    pub fn render(
        &self,
        p: &Presentation,
        ms: u64,
        width: Option<u32>,
        read: impl Fn(&Rendition, &PlannedSegment) -> Result<Vec<Bytes>, VodError>,
    ) -> Result<Bytes, VodError> {
        if let Some(w) = width {
            if !(16..=self.config.max_width).contains(&w) {
                return Err(ThumbnailError::Width(self.config.max_width).into());
            }
        }
        let r = pick_rendition(p, width).ok_or(VodError::NotFound)?;
        let t = r.track();
        let at_ms = p.clip_start_ms.unwrap_or(0).saturating_add(ms);
        if at_ms >= p.end_ms() {
            return Err(VodError::NotFound);
        }
        let frame = find_frame(t, at_ms).ok_or(VodError::NotFound)?;
        let key = format!(
            "{}|{}|{:?}|{:?}|{}|{}|{:?}",
            r.title.path.display(),
            r.title.file_len,
            r.title.modified,
            r.title.remote.as_ref().and_then(|o| o.etag.clone()),
            t.track_id,
            frame.last,
            width
        );
        if let Some(jpeg) = self.cached(&key) {
            self.metrics.count("cached");
            return Ok(jpeg);
        }
        let to = plan::out_timescale(t);
        let out = |ticks: u64| plan::rescale(ticks as i64, t.timescale, to) as u64;
        let start = out(t.dts_at(frame.first));
        let segment = PlannedSegment {
            first: frame.first,
            end: frame.last + 1,
            start,
            duration: out(t.dts_at(frame.last + 1)).saturating_sub(start),
            bytes: t.samples[frame.first..=frame.last]
                .iter()
                .map(|s| u64::from(s.size))
                .sum(),
        };
        let data = read(r, &segment)?;
        let samples = plan::segment_samples(t, &segment, data)?;
        let mut input = crate::media::fmp4::init_segment(TRACK_ID, &t.params).to_vec();
        input.extend_from_slice(&crate::media::fmp4::media_segment(
            1,
            TRACK_ID,
            segment.start,
            &samples,
        ));
        let jpeg = match self.run_ffmpeg(input, frame.rank, width) {
            Ok(jpeg) => jpeg,
            Err(e) => {
                self.metrics.count(match e {
                    ThumbnailError::Busy(_) => "busy",
                    ThumbnailError::Timeout(_) => "timeout",
                    _ => "failed",
                });
                return Err(e.into());
            }
        };
        self.metrics.count("made");
        self.remember(key, jpeg.clone());
        Ok(jpeg)
    }

    fn cached(&self, key: &str) -> Option<Bytes> {
        let mut cache = self.cache.lock().expect("not poisoned");
        cache.clock += 1;
        let now = cache.clock;
        let entry = cache.entries.get_mut(key)?;
        entry.1 = now;
        Some(entry.0.clone())
    }

    fn remember(&self, key: String, jpeg: Bytes) {
        let mut cache = self.cache.lock().expect("not poisoned");
        if jpeg.len() as u64 > self.config.cache_bytes {
            return;
        }
        cache.clock += 1;
        let now = cache.clock;
        cache.bytes += jpeg.len() as u64;
        if let Some(old) = cache.entries.insert(key, (jpeg, now)) {
            cache.bytes -= old.0.len() as u64;
        }
        while cache.bytes > self.config.cache_bytes {
            let Some(oldest) = cache
                .entries
                .iter()
                .min_by_key(|(_, e)| e.1)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(gone) = cache.entries.remove(&oldest) {
                cache.bytes -= gone.0.len() as u64;
            }
        }
    }

    /// Pipes `input` (a CMAF header and fragment) through ffmpeg and keeps
    /// output frame `rank` as a JPEG. Waits from this (blocking) thread.
    fn run_ffmpeg(
        &self,
        input: Vec<u8>,
        rank: usize,
        width: Option<u32>,
    ) -> Result<Bytes, ThumbnailError> {
        let timeout = self.config.timeout;
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|_| ThumbnailError::Decoder("no tokio runtime to run ffmpeg on".into()))?;
        let (ffmpeg, permits) = (self.config.ffmpeg.clone(), self.permits.clone());
        let max_concurrent = self.config.max_concurrent;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let task = handle.spawn(async move {
            let deadline = tokio::time::Instant::now() + timeout;
            let result = match tokio::time::timeout_at(deadline, permits.acquire_owned()).await {
                Ok(Ok(_permit)) => {
                    tokio::time::timeout_at(deadline, ffmpeg_jpeg(&ffmpeg, input, rank, width))
                        .await
                        .unwrap_or(Err(ThumbnailError::Timeout(timeout)))
                }
                _ => Err(ThumbnailError::Busy(max_concurrent)),
            };
            let _ = tx.send(result);
        });
        match rx.recv_timeout(timeout + Duration::from_secs(1)) {
            Ok(result) => result,
            Err(_) => {
                task.abort();
                Err(ThumbnailError::Timeout(timeout))
            }
        }
    }
}

/// The video rendition to decode: the narrowest at least `width` wide,
/// else the widest (the first without `width`: the title's own order).
fn pick_rendition(p: &Presentation, width: Option<u32>) -> Option<&Rendition> {
    let video_width = |r: &Rendition| match &r.track().params {
        TrackParams::Video(v) => u32::from(v.width),
        TrackParams::Audio(_) => 0,
    };
    let mut videos: Vec<&Rendition> = p.of_kind(TrackKind::Video).collect();
    let Some(want) = width else {
        return videos.into_iter().max_by_key(|r| video_width(r));
    };
    videos.sort_by_key(|r| video_width(r));
    videos
        .iter()
        .find(|r| video_width(r) >= want)
        .or(videos.last())
        .copied()
}

/// The frame presented at `ms` (the last one starting at or before it; the
/// first frame for a time before it) and the samples needed to decode it.
fn find_frame(t: &super::mp4::TrackIndex, ms: u64) -> Option<Frame> {
    let n = t.samples.len();
    if n == 0 {
        return None;
    }
    let pts = |i: usize| {
        let s = &t.samples[i];
        (s.dts as i64)
            .saturating_add(i64::from(s.cts))
            .saturating_sub(t.presentation_shift)
    };
    let target = i64::try_from(u128::from(ms) * u128::from(t.timescale) / 1000).ok()?;
    // The last keyframe decoded at or before the target time.
    let keyframes = plan::keyframes(t);
    let kf_pos = keyframes
        .partition_point(|&k| pts(k) <= target)
        .saturating_sub(1);
    let first = *keyframes.get(kf_pos)?;
    let gop_end = keyframes.get(kf_pos + 1).copied().unwrap_or(n);
    let last = (first..gop_end)
        .filter(|&i| pts(i) <= target)
        .max_by_key(|&i| pts(i))
        .unwrap_or(first);
    let rank = (first..=last).filter(|&i| pts(i) < pts(last)).count();
    Some(Frame { first, last, rank })
}

/// `ffmpeg -i pipe:0 … pipe:1`: output frame `rank` of `input`, as a JPEG.
async fn ffmpeg_jpeg(
    ffmpeg: &std::path::Path,
    input: Vec<u8>,
    rank: usize,
    width: Option<u32>,
) -> Result<Bytes, ThumbnailError> {
    let mut filter = format!("select=eq(n\\,{rank})");
    if let Some(w) = width {
        filter.push_str(&format!(",scale={w}:-2"));
    }
    filter.push_str(",format=yuvj420p");
    let mut child = tokio::process::Command::new(ffmpeg)
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-f",
            "mp4",
            "-i",
            "pipe:0",
        ])
        .args(["-vf", &filter, "-frames:v", "1", "-fps_mode", "passthrough"])
        .args(["-c:v", "mjpeg", "-q:v", "3", "-f", "image2pipe", "pipe:1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| ThumbnailError::NoDecoder(ffmpeg.display().to_string(), e.to_string()))?;
    let mut stdin = child.stdin.take().expect("piped");
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let feed = async move {
        // ffmpeg may stop reading once it has its frame: a broken pipe is fine.
        let _ = stdin.write_all(&input).await;
        drop(stdin);
    };
    let mut jpeg = Vec::new();
    let mut errors = Vec::new();
    let mut limited_out = (&mut stdout).take(MAX_JPEG_BYTES + 1);
    let mut limited_err = (&mut stderr).take(64 << 10);
    let read_out = limited_out.read_to_end(&mut jpeg);
    let read_err = limited_err.read_to_end(&mut errors);
    let ((), out, _) = tokio::join!(feed, read_out, read_err);
    out.map_err(|e| ThumbnailError::Decoder(format!("reading its output: {e}")))?;
    let status = child
        .wait()
        .await
        .map_err(|e| ThumbnailError::Decoder(e.to_string()))?;
    let why = String::from_utf8_lossy(&errors);
    if !status.success() || jpeg.is_empty() || jpeg.len() as u64 > MAX_JPEG_BYTES {
        return Err(ThumbnailError::Decoder(format!(
            "{status}, {} bytes out: {}",
            jpeg.len(),
            why.lines().last().unwrap_or("")
        )));
    }
    Ok(jpeg.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ffmpeg's fixture, a library over it, and the JPEG of `path`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_frame_is_decoded_from_its_group_of_pictures() {
        let dir = std::env::temp_dir().join(format!("strata-thumb-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let out = tokio::process::Command::new("ffmpeg")
            .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y"])
            .args([
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=320x240:rate=25",
                "-t",
                "6",
            ])
            .args([
                "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-g", "50",
            ])
            .arg(dir.join("t.mp4"))
            .output()
            .await
            .expect("ffmpeg — run scripts/install-test-deps.sh");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let library = Arc::new(
            super::super::Library::new(
                super::super::VodConfig {
                    root: Some(dir.clone()),
                    segment_duration: Duration::from_secs(4),
                    index_cache_entries: 4,
                    index_cache_bytes: 1 << 24,
                    max_moov_bytes: 1 << 20,
                    remote: Vec::new(),
                    encryption: Default::default(),
                    thumbnails: ThumbnailConfig::default(),
                },
                super::super::http::VodMetrics::default(),
            )
            .expect("library"),
        );
        for (path, query, width) in [
            ("t.mp4/thumb/3100.jpg", None, 320),
            ("t.mp4/thumb/0.jpg", Some("width=160"), 160),
        ] {
            let request = with_query(path.parse().expect("path"), query).expect("query");
            let lib = library.clone();
            let jpeg = tokio::task::spawn_blocking(move || lib.render(&request))
                .await
                .expect("task")
                .unwrap_or_else(|e| panic!("{path}: {e}"));
            assert!(jpeg.body.starts_with(&[0xff, 0xd8]), "{path}: not a JPEG");
            assert_eq!(jpeg_width(&jpeg.body), Some(width), "{path}");
        }
        let past: VodRequest = "t.mp4/thumb/6000.jpg".parse().expect("path");
        let lib = library.clone();
        let refused = tokio::task::spawn_blocking(move || lib.render(&past))
            .await
            .expect("task");
        assert!(matches!(refused, Err(VodError::NotFound)));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The width in a JPEG's SOF0/SOF2 segment.
    fn jpeg_width(jpeg: &[u8]) -> Option<u32> {
        let mut at = 2;
        while at + 9 < jpeg.len() {
            let marker = jpeg[at + 1];
            let len = usize::from(u16::from_be_bytes([jpeg[at + 2], jpeg[at + 3]]));
            if marker == 0xc0 || marker == 0xc2 {
                return Some(u32::from(u16::from_be_bytes([jpeg[at + 7], jpeg[at + 8]])));
            }
            at += 2 + len;
        }
        None
    }

    #[test]
    fn times_and_widths_parse() {
        assert_eq!(parse_ms("0.jpg").ok(), Some(0));
        assert_eq!(parse_ms("12500.jpg").ok(), Some(12500));
        for bad in ["01.jpg", "-1.jpg", "1e3.jpg", ".jpg", "9999999999999.jpg"] {
            assert!(matches!(parse_ms(bad), Err(VodError::BadPath(_))), "{bad}");
        }
        assert!(matches!(parse_ms("12.png"), Err(VodError::NotFound)));
        let request: VodRequest = "a.mp4/thumb/1000.jpg".parse().expect("parses");
        let sized = with_query(request.clone(), Some("width=320&x=1")).expect("width");
        assert_eq!(
            sized.object,
            VodObject::Thumbnail {
                ms: 1000,
                width: Some(320)
            }
        );
        for bad in ["width=", "width=0", "width=abc", "width=999999"] {
            assert!(with_query(request.clone(), Some(bad)).is_err(), "{bad}");
        }
    }
}
