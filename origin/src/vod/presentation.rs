//! What one master playlist and one MPD present: the renditions (each a
//! track of some indexed MP4) and the subtitle side files, with the IDs the
//! URLs use. A plain MP4 presents its own tracks under their `tkhd` IDs; a
//! set ([`super::set`]) presents its entries numbered from 1 in the order
//! video, audio.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::library::Title;
use super::mp4::TrackIndex;
use super::plan::{self, TrackPlan};
use super::subtitles::SubtitleFormat;
use super::Clip;
use crate::media::TrackKind;

/// One audio or video rendition.
#[derive(Debug)]
pub struct Rendition {
    /// `t{id}.m3u8`, `t{id}/…`, `i{id}.m3u8`.
    pub id: u32,
    pub title: Arc<Title>,
    /// Position of the track in `title.index.tracks` (and `title.plans`).
    pub pos: usize,
    pub language: String,
    pub name: String,
    /// The audio rendition players start with.
    pub default: bool,
    /// A clip's segments, in place of the title's.
    pub clipped: Option<TrackPlan>,
}

impl Rendition {
    pub fn track(&self) -> &TrackIndex {
        &self.title.index.tracks[self.pos]
    }

    pub fn plan(&self) -> &TrackPlan {
        self.clipped.as_ref().unwrap_or(&self.title.plans[self.pos])
    }

    pub fn kind(&self) -> TrackKind {
        self.track().kind()
    }
}

/// One subtitle side file: `s{id}.m3u8`, `s{id}/{n}.vtt`, `s{id}.vtt`.
#[derive(Debug)]
pub struct SubtitleRendition {
    pub id: u32,
    /// Canonical, inside the library root; or, `remote`, the object's
    /// path under its store's prefix (as a title's).
    pub path: PathBuf,
    pub remote: bool,
    pub format: SubtitleFormat,
    pub language: String,
    pub name: String,
    pub default: bool,
}

#[derive(Debug)]
pub struct Presentation {
    pub renditions: Vec<Rendition>,
    pub subtitles: Vec<SubtitleRendition>,
    /// `vod.segment_duration`, seconds.
    pub target_duration: f64,
    /// Where a clip starts on the media timeline (ms); 0 without a clip.
    pub clip_start_ms: Option<u64>,
}

impl Presentation {
    /// A plain MP4: every track with media, under its `tkhd` ID; the first
    /// audio track is the default.
    pub fn single(title: Arc<Title>) -> Presentation {
        let mut renditions = Vec::new();
        let mut audio_seen = false;
        for (pos, (t, p)) in title.index.tracks.iter().zip(&title.plans).enumerate() {
            if p.segments.is_empty() {
                continue;
            }
            let default = t.kind() == TrackKind::Audio && !audio_seen;
            audio_seen |= t.kind() == TrackKind::Audio;
            renditions.push(Rendition {
                id: t.track_id,
                pos,
                language: t.language.clone(),
                name: format!("{}-{}", t.language, t.track_id),
                default,
                title: title.clone(),
                clipped: None,
            });
        }
        Presentation {
            target_duration: title.target_duration,
            renditions,
            subtitles: Vec::new(),
            clip_start_ms: None,
        }
    }

    /// Narrows every rendition to a clip: the reference rendition (first
    /// video, else first) is cut at its keyframe at or before `clip.from`
    /// and its keyframe at or after `clip.to`; every rendition then at its
    /// own keyframes (every audio sample is one) around those instants.
    /// `None` when the clip starts past the end.
    pub fn clip(&mut self, clip: Clip, target: Duration) -> Option<()> {
        let reference = self
            .of_kind(TrackKind::Video)
            .next()
            .or(self.renditions.first())?;
        let t = reference.track();
        let (first, end) = plan::clip_range(t, clip.from, clip.to)?;
        let from = plan::sample_ms(t, first);
        let to = (end < t.samples.len()).then(|| plan::sample_ms(t, end));
        for r in &mut self.renditions {
            let t = r.track();
            let (first, end) = plan::clip_range(t, from, to)?;
            r.clipped = Some(plan::plan_range(t, target, first, end));
        }
        self.clip_start_ms = Some(from);
        Some(())
    }

    pub fn rendition(&self, id: u32) -> Option<&Rendition> {
        self.renditions.iter().find(|r| r.id == id)
    }

    pub fn subtitle(&self, id: u32) -> Option<&SubtitleRendition> {
        self.subtitles.iter().find(|s| s.id == id)
    }

    pub fn of_kind(&self, kind: TrackKind) -> impl Iterator<Item = &Rendition> {
        self.renditions.iter().filter(move |r| r.kind() == kind)
    }

    /// Seconds: the longest rendition.
    pub fn duration(&self) -> f64 {
        self.renditions
            .iter()
            .map(|r| r.plan().total_seconds())
            .fold(0.0, f64::max)
    }

    /// Where the presentation ends on the media timeline (ms).
    pub fn end_ms(&self) -> u64 {
        self.renditions
            .iter()
            .filter_map(|r| {
                let p = r.plan();
                let last = p.segments.last()?;
                Some((last.start + last.duration) * 1000 / u64::from(p.out_timescale.max(1)))
            })
            .max()
            .unwrap_or(0)
    }

    /// Where subtitle segments start, in ms: at the segments of the first
    /// video rendition (else the first rendition), so a subtitle segment
    /// lines up with the media a player fetches with it.
    pub fn subtitle_cuts(&self) -> Vec<u64> {
        let reference = self
            .of_kind(TrackKind::Video)
            .next()
            .or(self.renditions.first());
        let Some(r) = reference else {
            return vec![0];
        };
        let plan = r.plan();
        let mut cuts: Vec<u64> = plan
            .segments
            .iter()
            .map(|s| s.start * 1000 / u64::from(plan.out_timescale.max(1)))
            .collect();
        if let Some(first) = cuts.first_mut() {
            *first = self.clip_start_ms.unwrap_or(0);
        }
        cuts.dedup();
        if cuts.is_empty() {
            cuts.push(0);
        }
        cuts
    }
}
