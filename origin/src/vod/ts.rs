//! MPEG-TS output for legacy HLS players, through the live muxer
//! ([`crate::media::mpegts`]): `master-ts.m3u8` lists one variant per video
//! rendition, `t{id}/ts.m3u8`, whose segments `t{id}/{n}.ts` are that
//! rendition's planned segment `n` with the title's default audio muxed in
//! (the audio samples whose decode time falls in the segment's span).
//! Audio-only titles list each audio rendition alone. HEVC goes as stream
//! type 0x24, in Annex B with its VPS, SPS and PPS (from `hvcC`) before
//! each keyframe and an HEVC access unit delimiter. Subtitles stay
//! WebVTT renditions of the same group as in `master.m3u8`.
//!
//! Timestamps: MPEG-TS has no edit list and no negative composition
//! offset, so video decode times move back by the track's edit-list shift
//! (the fMP4 output moves composition times instead), and every timestamp
//! of the segment starts [`TS_TIME_OFFSET`] in, as ffmpeg's muxer does, so
//! none goes below zero.

use std::fmt::Write;

use bytes::Bytes;

use super::plan::{self, PlannedSegment};
use super::presentation::{Presentation, Rendition};
use super::VodError;
use crate::media::{mpegts, Sample, TrackKind, TrackParams, VIDEO_TIMESCALE};
use crate::package::Rendered;

/// 1.4 s at 90 kHz: where a title's time 0 lies in its MPEG-TS timestamps.
pub const TS_TIME_OFFSET: i64 = 126_000;

const MEDIA_CACHE_CONTROL: &str = "public, max-age=86400";

/// The renditions that are TS variants: video, else audio (audio-only titles).
fn variants(p: &Presentation) -> Vec<&Rendition> {
    let videos: Vec<&Rendition> = p.of_kind(TrackKind::Video).collect();
    if videos.is_empty() {
        p.of_kind(TrackKind::Audio).collect()
    } else {
        videos
    }
}

/// The audio muxed into a video variant: the default audio rendition.
fn muxed_audio(p: &Presentation) -> Option<&Rendition> {
    let mut audio = p.of_kind(TrackKind::Audio);
    p.of_kind(TrackKind::Audio)
        .find(|r| r.default)
        .or_else(|| audio.next())
}

/// A TS variant by ID, or not found.
pub fn variant(p: &Presentation, track: u32) -> Result<&Rendition, VodError> {
    variants(p)
        .into_iter()
        .find(|r| r.id == track)
        .ok_or(VodError::NotFound)
}

/// `master-ts.m3u8`: every video rendition (H.264 as stream type 0x1b,
/// HEVC as 0x24 with VPS/SPS/PPS before each keyframe).
pub fn master(p: &Presentation) -> Result<String, VodError> {
    let variants = variants(p);
    if variants.is_empty() {
        return Err(VodError::NotFound);
    }
    let mut out = String::from("#EXTM3U\n#EXT-X-VERSION:4\n#EXT-X-INDEPENDENT-SEGMENTS\n");
    for s in &p.subtitles {
        let _ = writeln!(
            out,
            "#EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID=\"subs\",NAME=\"{}\",LANGUAGE=\"{}\",DEFAULT={},AUTOSELECT=YES,URI=\"s{}.m3u8\"",
            s.name,
            s.language,
            if s.default { "YES" } else { "NO" },
            s.id
        );
    }
    let audio = muxed_audio(p).filter(|a| variants.iter().all(|v| v.id != a.id));
    for r in variants {
        let (peak, average) = (r.plan().peak_bitrate(), r.plan().average_bitrate());
        let (audio_peak, audio_avg) = audio.map_or((0, 0), |a| {
            (a.plan().peak_bitrate(), a.plan().average_bitrate())
        });
        let codecs: Vec<&str> = std::iter::once(r.track().params.codec())
            .chain(audio.map(|a| a.track().params.codec()))
            .collect();
        // About 5 % of MPEG-TS is packet and PES overhead.
        let _ = write!(
            out,
            "#EXT-X-STREAM-INF:BANDWIDTH={},AVERAGE-BANDWIDTH={},CODECS=\"{}\"",
            ((peak + audio_peak) * 21 / 20).max(1),
            ((average + audio_avg) * 21 / 20).max(1),
            codecs.join(",")
        );
        if let TrackParams::Video(v) = &r.track().params {
            let _ = write!(out, ",RESOLUTION={}x{}", v.width, v.height);
        }
        if !p.subtitles.is_empty() {
            out.push_str(",SUBTITLES=\"subs\"");
        }
        let _ = writeln!(out, "\nt{}/ts.m3u8", r.id);
    }
    Ok(out)
}

/// `t{id}/ts.m3u8`: the rendition's segments as `{n}.ts`.
pub fn playlist(r: &Rendition) -> String {
    let p = r.plan();
    let longest = p.segments.iter().map(|s| p.seconds(s)).fold(0.0, f64::max);
    let mut out = String::from("#EXTM3U\n#EXT-X-VERSION:3\n");
    let _ = writeln!(
        out,
        "#EXT-X-TARGETDURATION:{}",
        longest.round().max(1.0) as u64
    );
    out.push_str(
        "#EXT-X-MEDIA-SEQUENCE:1\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-INDEPENDENT-SEGMENTS\n",
    );
    for (n, s) in p.segments.iter().enumerate() {
        let _ = writeln!(out, "#EXTINF:{:.3},\n{}.ts", p.seconds(s), n + 1);
    }
    out.push_str("#EXT-X-ENDLIST\n");
    out
}

/// The samples of `audio` (within its plan, so within a clip) whose decode
/// times at 90 kHz lie in `[from, to)` (`to` `None`: to the end).
fn audio_span(audio: &Rendition, from: u64, to: Option<u64>) -> Option<PlannedSegment> {
    let t = audio.track();
    let plan = audio.plan();
    let (lo, hi) = (plan.segments.first()?, plan.segments.last()?);
    let first = t.samples.partition_point(|s| {
        plan::rescale(s.dts as i64, t.timescale, VIDEO_TIMESCALE) < from as i64
    });
    let end = match to {
        Some(to) => t.samples.partition_point(|s| {
            plan::rescale(s.dts as i64, t.timescale, VIDEO_TIMESCALE) < to as i64
        }),
        None => hi.end,
    };
    let (first, end) = (first.max(lo.first), end.min(hi.end));
    if first >= end {
        return None;
    }
    let out = plan::out_timescale(t);
    let start = plan::rescale(t.dts_at(first) as i64, t.timescale, out) as u64;
    Some(PlannedSegment {
        first,
        end,
        start,
        duration: (plan::rescale(t.dts_at(end) as i64, t.timescale, out) as u64)
            .saturating_sub(start),
        bytes: t.samples[first..end]
            .iter()
            .map(|s| u64::from(s.size))
            .sum(),
    })
}

/// `t{id}/{n}.ts`. `read` gives the bytes of a planned segment's samples.
pub fn segment(
    p: &Presentation,
    track: u32,
    number: u32,
    read: impl Fn(&Rendition, &PlannedSegment) -> Result<Vec<Bytes>, VodError>,
) -> Result<Rendered, VodError> {
    let r = variant(p, track)?;
    let plan = r.plan();
    let index = (number as usize).checked_sub(1).ok_or(VodError::NotFound)?;
    let seg = plan.segments.get(index).ok_or(VodError::NotFound)?;
    let samples = |r: &Rendition, seg: &PlannedSegment| -> Result<Vec<Sample>, VodError> {
        Ok(plan::segment_samples(r.track(), seg, read(r, seg)?)?)
    };
    let shifted = |r: &Rendition, mut samples: Vec<Sample>| {
        let t = r.track();
        let out = plan::out_timescale(t);
        let offset = plan::rescale(TS_TIME_OFFSET, VIDEO_TIMESCALE, out);
        let shift = if t.kind() == TrackKind::Video {
            plan::rescale(t.presentation_shift, t.timescale, out)
        } else {
            0
        };
        for s in &mut samples {
            s.dts = s.dts - shift + offset;
            s.cts = s.cts.saturating_add(i32::try_from(shift).unwrap_or(0));
        }
        samples
    };
    let body = match &r.track().params {
        TrackParams::Video(v) => {
            let hevc;
            let v = if super::hevc::is_hevc(v) {
                hevc = super::hevc::with_parameter_sets(v);
                &hevc
            } else {
                v
            };
            let video = shifted(r, samples(r, seg)?);
            let audio = match muxed_audio(p) {
                Some(a) => {
                    let to = plan.segments.get(index + 1).map(|next| {
                        plan::rescale(next.start as i64, plan.out_timescale, VIDEO_TIMESCALE) as u64
                    });
                    let from =
                        plan::rescale(seg.start as i64, plan.out_timescale, VIDEO_TIMESCALE) as u64;
                    // The first segment takes any audio before the video.
                    let from = if index == 0 { 0 } else { from };
                    match audio_span(a, from, to) {
                        Some(span) => Some((a, shifted(a, samples(a, &span)?))),
                        None => None,
                    }
                }
                None => None,
            };
            let audio = audio.and_then(|(a, s)| match &a.track().params {
                TrackParams::Audio(params) => Some((params, s)),
                TrackParams::Video(_) => None,
            });
            mpegts::segment(
                Some((v, &video)),
                audio.as_ref().map(|(params, s)| (*params, s.as_slice())),
            )
        }
        TrackParams::Audio(a) => {
            let audio = shifted(r, samples(r, seg)?);
            mpegts::segment(None, Some((a, &audio)))
        }
    };
    Ok(Rendered::new(
        body,
        "video/mp2t",
        MEDIA_CACHE_CONTROL.into(),
    ))
}
