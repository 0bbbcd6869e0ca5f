//! A title's segments, worked out once from its index: where each track is
//! cut (at keyframes near the target duration, every track at the same
//! instants) and the output timing, in the timescales the CMAF writer uses
//! (90 kHz video, the sampling rate for audio). Pure.

use std::time::Duration;

use bytes::Bytes;

use super::mp4::{Mp4Error, Mp4Index, TrackIndex};
use crate::media::{h264, Sample, TrackKind};

/// One segment of one track.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlannedSegment {
    /// Samples `first..end` of the track.
    pub first: usize,
    pub end: usize,
    /// `tfdt`, output timescale.
    pub start: u64,
    /// Output timescale.
    pub duration: u64,
    /// Media bytes.
    pub bytes: u64,
}

/// One track's segments.
#[derive(Clone, Debug)]
pub struct TrackPlan {
    pub track_id: u32,
    pub out_timescale: u32,
    pub segments: Vec<PlannedSegment>,
}

impl TrackPlan {
    pub fn seconds(&self, s: &PlannedSegment) -> f64 {
        s.duration as f64 / f64::from(self.out_timescale)
    }

    /// Highest bits per second of any one segment.
    pub fn peak_bitrate(&self) -> u64 {
        self.segments
            .iter()
            .map(|s| (s.bytes as f64 * 8.0 / self.seconds(s).max(0.001)) as u64)
            .max()
            .unwrap_or(0)
    }

    pub fn average_bitrate(&self) -> u64 {
        let bytes: u64 = self.segments.iter().map(|s| s.bytes).sum();
        let seconds: f64 = self.segments.iter().map(|s| self.seconds(s)).sum();
        (bytes as f64 * 8.0 / seconds.max(0.001)) as u64
    }

    pub fn total_seconds(&self) -> f64 {
        self.segments.iter().map(|s| self.seconds(s)).sum()
    }
}

/// `t` ticks of `from` in `to`, rounded down (towards minus infinity),
/// saturating at the ends of `i64` (only a lying sample table gets there).
pub fn rescale(t: i64, from: u32, to: u32) -> i64 {
    let scaled = (i128::from(t) * i128::from(to)).div_euclid(i128::from(from.max(1)));
    scaled.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

/// Cuts every track of `index`. The reference track (the first video track,
/// else the first audio track) is cut at the first keyframe at or after
/// `target` since its previous cut; the other tracks at their first sample
/// (first keyframe, for video) at or after each of those instants.
pub fn plan(index: &Mp4Index, target: Duration) -> Vec<TrackPlan> {
    let Some(reference) = index.tracks.first() else {
        return Vec::new();
    };
    let ts = u128::from(reference.timescale);
    let target_ticks = (target.as_nanos() * ts / 1_000_000_000) as u64;
    let mut cuts = vec![0u64];
    let mut last = reference.samples.first().map_or(0, |s| s.dts);
    for s in reference.samples.iter().skip(1) {
        let keyframe = s.sync || reference.kind() == TrackKind::Audio;
        if keyframe && s.dts >= last + target_ticks {
            cuts.push(s.dts);
            last = s.dts;
        }
    }
    index
        .tracks
        .iter()
        .map(|t| plan_track(t, &cuts, reference.timescale))
        .collect()
}

fn plan_track(track: &TrackIndex, cuts: &[u64], cut_timescale: u32) -> TrackPlan {
    let video = track.kind() == TrackKind::Video;
    let mut starts: Vec<usize> = vec![0];
    for &cut in &cuts[1..] {
        // The first sample whose decode time reaches the cut, compared exactly
        // across timescales.
        let at = |s: &super::mp4::SampleEntry| {
            u128::from(s.dts) * u128::from(cut_timescale)
                >= u128::from(cut) * u128::from(track.timescale)
        };
        let mut i = track.samples.partition_point(|s| !at(s));
        if video {
            while i < track.samples.len() && !track.samples[i].sync {
                i += 1;
            }
        }
        if i < track.samples.len() && i > *starts.last().expect("not empty") {
            starts.push(i);
        }
    }
    segments_from(track, &starts, track.samples.len())
}

/// The track's segments starting at samples `starts`, the last one ending
/// before sample `end`.
fn segments_from(track: &TrackIndex, starts: &[usize], end: usize) -> TrackPlan {
    let out_timescale = out_timescale(track);
    let out = |t: u64| rescale(t as i64, track.timescale, out_timescale) as u64;
    let last = end;
    let segments = starts
        .iter()
        .enumerate()
        .map(|(k, &first)| {
            let end = starts.get(k + 1).copied().unwrap_or(last);
            let start = out(track.dts_at(first));
            PlannedSegment {
                first,
                end,
                start,
                duration: out(track.dts_at(end)).saturating_sub(start),
                bytes: track.samples[first..end]
                    .iter()
                    .map(|s| u64::from(s.size))
                    .sum(),
            }
        })
        .collect();
    TrackPlan {
        track_id: track.track_id,
        out_timescale,
        segments,
    }
}

/// Decode time of sample `i` in milliseconds.
pub fn sample_ms(track: &TrackIndex, i: usize) -> u64 {
    (u128::from(track.dts_at(i)) * 1000 / u128::from(track.timescale.max(1))) as u64
}

/// The samples `first..end` of a clip of `[from, to)` ms, cut on keyframes
/// (every audio sample is one): from the last keyframe at or before `from`
/// to the first keyframe at or after `to` (the end of the track without
/// `to`). `None` when nothing of the track is in the clip.
pub fn clip_range(track: &TrackIndex, from: u64, to: Option<u64>) -> Option<(usize, usize)> {
    let n = track.samples.len();
    if n == 0 || sample_ms(track, n) <= from {
        return None;
    }
    let ms = |dts: u64| (u128::from(dts) * 1000 / u128::from(track.timescale.max(1))) as u64;
    let upto = track.samples.partition_point(|s| ms(s.dts) <= from);
    let first = (0..upto)
        .rev()
        .find(|&i| track.samples[i].sync)
        .unwrap_or(0);
    let end = match to {
        None => n,
        Some(to) => (first + 1..n)
            .find(|&i| track.samples[i].sync && sample_ms(track, i) >= to)
            .unwrap_or(n),
    };
    (first < end && sample_ms(track, first) < to.unwrap_or(u64::MAX)).then_some((first, end))
}

/// One track's segments over samples `first..end` (a clip), cut at the first
/// keyframe at or after `target` since the previous cut.
pub fn plan_range(track: &TrackIndex, target: Duration, first: usize, end: usize) -> TrackPlan {
    let target_ticks = (target.as_nanos() * u128::from(track.timescale) / 1_000_000_000) as u64;
    let mut starts = vec![first];
    let mut last = track.dts_at(first);
    for i in first + 1..end {
        let s = &track.samples[i];
        if s.sync && s.dts >= last + target_ticks {
            starts.push(i);
            last = s.dts;
        }
    }
    segments_from(track, &starts, end)
}

/// What the CMAF header of this track declares: [`crate::media::TrackParams::timescale`].
pub fn out_timescale(track: &TrackIndex) -> u32 {
    track.params.timescale()
}

/// The samples of one segment, from the bytes read at each sample's offset
/// (`data[i]` for sample `first + i`), timed in the output timescale.
pub fn segment_samples(
    track: &TrackIndex,
    segment: &PlannedSegment,
    data: Vec<Bytes>,
) -> Result<Vec<Sample>, Mp4Error> {
    let to = out_timescale(track);
    let from = track.timescale;
    let mut out = Vec::with_capacity(data.len());
    for (i, bytes) in (segment.first..segment.end).zip(data) {
        let entry = &track.samples[i];
        let dts = rescale(entry.dts as i64, from, to);
        let next = rescale(track.dts_at(i + 1) as i64, from, to);
        let pts = rescale(
            (entry.dts as i64)
                .saturating_add(i64::from(entry.cts))
                .saturating_sub(track.presentation_shift),
            from,
            to,
        );
        let data = if track.kind() == TrackKind::Video && track.nal_length_size != 4 {
            // The CMAF header always declares 4-byte NAL lengths.
            let nals = h264::avcc_nals(&bytes, track.nal_length_size).map_err(|e| {
                Mp4Error::Corrupt(format!("track {} sample {}: {e}", track.track_id, i + 1))
            })?;
            h264::avcc_from_nals(nals)
        } else {
            bytes
        };
        out.push(Sample {
            dts,
            cts: i32::try_from(pts.saturating_sub(dts)).map_err(|_| {
                Mp4Error::Corrupt(format!(
                    "track {} sample {}: composition offset out of range",
                    track.track_id,
                    i + 1
                ))
            })?,
            duration: u32::try_from(next.saturating_sub(dts)).unwrap_or(0),
            keyframe: entry.sync,
            data,
        });
    }
    Ok(out)
}

/// The sample indexes of a track's sync samples, in order.
pub fn keyframes(track: &TrackIndex) -> Vec<usize> {
    track
        .samples
        .iter()
        .enumerate()
        .filter(|(_, s)| s.sync)
        .map(|(i, _)| i)
        .collect()
}

/// Media-timescale ticks from keyframe `k` (from 0) to the next keyframe,
/// or to the end of the track for the last one.
/// `keyframes` is [`keyframes`] of the track.
pub fn keyframe_ticks(track: &TrackIndex, keyframes: &[usize], k: usize) -> u64 {
    let Some(&i) = keyframes.get(k) else {
        return 0;
    };
    let next = keyframes.get(k + 1).copied().unwrap_or(track.samples.len());
    track.dts_at(next).saturating_sub(track.dts_at(i))
}

/// Keyframe `k` (from 0) as a one-sample segment lasting until the next
/// keyframe: an I-frame playlist's segment.
pub fn keyframe_segment(track: &TrackIndex, k: usize) -> Option<PlannedSegment> {
    let keyframes = keyframes(track);
    let i = *keyframes.get(k)?;
    let to = out_timescale(track);
    let out = |t: u64| rescale(t as i64, track.timescale, to) as u64;
    let start = out(track.dts_at(i));
    Some(PlannedSegment {
        first: i,
        end: i + 1,
        start,
        duration: out(track.dts_at(i) + keyframe_ticks(track, &keyframes, k)).saturating_sub(start),
        bytes: u64::from(track.samples[i].size),
    })
}
