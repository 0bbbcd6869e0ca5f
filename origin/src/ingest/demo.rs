//! The built-in `demo` channel of `strata up`: a bundled 8 s H.264/AAC clip
//! published in a loop, in real time, as if an encoder were live.
//!
//! Timestamps run on across loops, so players see one continuous stream. The
//! clip (`origin/assets/demo.flv`, made with Debian's ffmpeg: testsrc2
//! 640x360 25 fps, x264 Main, GOP 50, 48 kHz AAC-LC) lasts 200 frames = 4
//! GOPs = 375 AAC frames exactly, so every loop starts on an IDR and neither
//! track drifts against the other.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use tracing::{info, warn};

use super::{IngestMetrics, MediaSink, PublishTarget, PublisherInfo, SinkError, StreamName};
use crate::media::flv;
use crate::media::{MediaError, MediaEvent, Sample, TrackKind, TrackParams, VIDEO_TIMESCALE};

/// The channel the demo publishes into (rendition `main`).
pub const DEMO_CHANNEL: &str = "demo";
const PROTOCOL: &str = "demo";
const BUNDLED: &[u8] = include_bytes!("../../assets/demo.flv");
/// Wait before publishing again after a refusal or a kick.
const RETRY: Duration = Duration::from_secs(5);

/// One loop's worth of samples, timestamps starting at 0.
#[derive(Clone, Debug)]
pub struct DemoClip {
    params: Vec<TrackParams>,
    /// In presentation order of decode times across both tracks.
    samples: Vec<(TrackKind, Sample)>,
    /// Length of one loop in 90 kHz ticks.
    video_period: i64,
    /// Length of one loop in audio ticks (0 without audio).
    audio_period: i64,
    audio_rate: u32,
}

impl DemoClip {
    /// The clip bundled in the binary.
    pub fn bundled() -> Result<Self, MediaError> {
        Self::from_flv(Bytes::from_static(BUNDLED))
    }

    /// Builds a loopable clip from an FLV file whose video starts on an IDR.
    pub fn from_flv(data: Bytes) -> Result<Self, MediaError> {
        let mut params = Vec::new();
        let mut video = Vec::new();
        let mut audio = Vec::new();
        for e in flv::file_events(data)? {
            match e {
                MediaEvent::Params(p) => {
                    params.retain(|q: &TrackParams| q.kind() != p.kind());
                    params.push(p);
                }
                MediaEvent::Sample(TrackKind::Video, s) => video.push(s),
                MediaEvent::Sample(TrackKind::Audio, s) => audio.push(s),
            }
        }
        let malformed = |why: &str| MediaError::Malformed {
            what: "demo clip",
            why: why.into(),
        };
        if video.len() < 2 || !video[0].keyframe {
            return Err(malformed("needs video starting with an IDR"));
        }
        let v0 = video[0].dts;
        let step = video[1].dts - v0;
        let video_period = video[video.len() - 1].dts - v0 + step;
        for i in 0..video.len() {
            let next = video.get(i + 1).map_or(video_period, |n| n.dts - v0);
            video[i].dts -= v0;
            video[i].duration = u32::try_from(next - video[i].dts).unwrap_or(0);
        }
        let audio_rate = params
            .iter()
            .find_map(|p| match p {
                TrackParams::Audio(a) => Some(a.sample_rate),
                TrackParams::Video(_) => None,
            })
            .unwrap_or(0);
        let audio_period = video_period * i64::from(audio_rate) / i64::from(VIDEO_TIMESCALE);
        let a0 = audio.first().map_or(0, |s| s.dts);
        // Frames past the video's end (encoder tail) would overlap the next loop.
        audio.retain_mut(|s| {
            s.dts -= a0;
            s.dts < audio_period
        });
        let seconds = |kind: TrackKind, s: &Sample| -> i128 {
            let scale = match kind {
                TrackKind::Video => VIDEO_TIMESCALE,
                TrackKind::Audio => audio_rate.max(1),
            };
            i128::from(s.dts) * 1_000_000_000 / i128::from(scale)
        };
        let mut samples: Vec<(TrackKind, Sample)> = video
            .into_iter()
            .map(|s| (TrackKind::Video, s))
            .chain(audio.into_iter().map(|s| (TrackKind::Audio, s)))
            .collect();
        samples.sort_by_key(|(k, s)| seconds(*k, s));
        Ok(Self {
            params,
            samples,
            video_period,
            audio_period,
            audio_rate,
        })
    }

    /// Length of one loop.
    pub fn duration(&self) -> Duration {
        Duration::from_nanos(
            (self.video_period as u64).saturating_mul(1_000_000_000) / u64::from(VIDEO_TIMESCALE),
        )
    }

    pub fn params(&self) -> &[TrackParams] {
        &self.params
    }

    /// Sample `i` of loop `n`, retimed, and when (after the start) it is due.
    fn at(&self, n: i64, i: usize) -> (TrackKind, Sample, Duration) {
        let (kind, mut s) = self.samples[i].clone();
        let (period, scale) = match kind {
            TrackKind::Video => (self.video_period, VIDEO_TIMESCALE),
            TrackKind::Audio => (self.audio_period, self.audio_rate.max(1)),
        };
        s.dts += n * period;
        let due = u64::try_from(i128::from(s.dts) * 1_000_000_000 / i128::from(scale)).unwrap_or(0);
        (kind, s, Duration::from_nanos(due))
    }
}

/// Publishes the bundled clip into channel `demo` until `shutdown`.
pub async fn run(
    target: Arc<dyn PublishTarget>,
    metrics: IngestMetrics,
    shutdown: impl Future<Output = ()>,
) -> Result<(), MediaError> {
    run_clip(DemoClip::bundled()?, target, metrics, shutdown).await;
    Ok(())
}

/// Publishes `clip` in a loop into channel `demo`, paced by tokio's clock,
/// until `shutdown`. Refusals and kicks are retried after a few seconds;
/// the timeline keeps running meanwhile and resumes at a loop start.
pub async fn run_clip(
    clip: DemoClip,
    target: Arc<dyn PublishTarget>,
    metrics: IngestMetrics,
    shutdown: impl Future<Output = ()>,
) {
    let name = StreamName {
        channel: DEMO_CHANNEL.to_owned(),
        rendition: super::DEFAULT_RENDITION.to_owned(),
    };
    let start = Instant::now();
    let period = clip.duration().max(Duration::from_millis(1));
    tokio::pin!(shutdown);
    loop {
        // Resume at the next loop boundary: it starts with an IDR.
        let elapsed = start.elapsed();
        let mut n = (elapsed.as_nanos().div_ceil(period.as_nanos())) as i64;
        if elapsed.is_zero() {
            n = 0;
        }
        let info = PublisherInfo {
            remote: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            protocol: PROTOCOL,
        };
        let why = match target.publish(&name, info) {
            Ok(sink) => {
                info!(stream = %name, loop_seconds = period.as_secs_f64(), "demo publish started");
                metrics.connected(PROTOCOL);
                let why = tokio::select! {
                    () = &mut shutdown => None,
                    why = play(&clip, sink, start, &mut n, &metrics) => Some(why),
                };
                metrics.disconnected(PROTOCOL);
                match why {
                    None => return,
                    Some(why) => why,
                }
            }
            Err(e) => {
                metrics.refused(PROTOCOL, e.reason());
                e.to_string()
            }
        };
        warn!(stream = %name, reason = %why, retry_in = ?RETRY, "demo publish stopped");
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(RETRY) => {}
        }
    }
}

/// Feeds loops `n..` until the sink closes or is kicked; returns why it stopped.
async fn play(
    clip: &DemoClip,
    mut sink: Box<dyn MediaSink>,
    start: Instant,
    n: &mut i64,
    metrics: &IngestMetrics,
) -> String {
    for p in &clip.params {
        sink.params(p.clone());
    }
    // `None` once the sender is gone: nobody can kick any more.
    let mut kicked = Some(sink.kicked());
    loop {
        for i in 0..clip.samples.len() {
            let (kind, sample, due) = clip.at(*n, i);
            loop {
                let kick = async {
                    match kicked.as_mut() {
                        Some(rx) => rx.wait_for(|&k| k).await.is_ok(),
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    () = tokio::time::sleep_until(start + due) => break,
                    is_kicked = kick => {
                        if is_kicked {
                            return "kicked".into();
                        }
                        kicked = None;
                    }
                }
            }
            metrics.frame(PROTOCOL, kind);
            match sink.sample(kind, sample) {
                Ok(()) => {}
                Err(SinkError::NoParams(_)) => metrics.dropped(PROTOCOL, "no_params"),
                Err(e @ SinkError::Closed) => return e.to_string(),
            }
        }
        *n += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_clip_loops_cleanly() {
        let clip = DemoClip::bundled().expect("valid clip");
        assert_eq!(clip.duration(), Duration::from_secs(8));
        assert_eq!(clip.audio_period, 8 * 48_000);
        assert_eq!(clip.audio_period % 1024, 0, "whole AAC frames per loop");
        let audio = clip
            .samples
            .iter()
            .filter(|(k, _)| *k == TrackKind::Audio)
            .count();
        assert_eq!(audio, 375);
        assert_eq!(clip.params.len(), 2);
        let (kind, first, due) = clip.at(1, 0);
        assert_eq!(
            (kind, first.keyframe, first.dts),
            (TrackKind::Video, true, 720_000)
        );
        assert_eq!(due, Duration::from_secs(8));
    }
}
