//! Window → playlists, MPDs and segments, just in time. No I/O, no clocks:
//! the store hands a snapshot of a channel's window and the time to render at.
//!
//! # URL names under `/live/{channel}/`
//!
//! Only `master.m3u8` and `manifest.mpd` are a public contract; the rest is
//! named here and reached through those two.
//!
//! | path | what |
//! | --- | --- |
//! | `master.m3u8` | HLS multivariant playlist, CMAF (fMP4) renditions |
//! | `manifest.mpd` | DASH MPD, live profile, SegmentTemplate `$Number$` + SegmentTimeline |
//! | `master-ts.m3u8` | HLS multivariant playlist, MPEG-TS renditions (legacy players) |
//! | `{rendition}/video.m3u8`, `{rendition}/audio.m3u8` | fMP4 media playlists |
//! | `{rendition}/video/init-{n}.mp4`, `{rendition}/audio/init-{n}.mp4` | CMAF headers; `n` changes whenever decoder parameters change, so caches never mix them |
//! | `{rendition}/video/{seq}.m4s`, `{rendition}/audio/{seq}.m4s` | CMAF fragments |
//! | `{rendition}/ts.m3u8`, `{rendition}/{seq}.ts` | MPEG-TS media playlist and segments, audio and video muxed |
//! | `{rendition}/video/{seq}.{part}.m4s`, `{rendition}/audio/{seq}.{part}.m4s` | LL-HLS parts of segment `seq` (`store.part_target` set), from 0 |
//! | `{rendition}/video/{seq}-ll.m4s`, `{rendition}/audio/{seq}-ll.m4s` | LL-DASH: segment `seq` as chunked CMAF (its parts as chunks), streamed while it is cut |
//!
//! `{seq}` is the media sequence number, never reused for a channel name: a
//! rendition's first number is the Unix time (seconds) at which it was
//! created, and a channel averages well under one segment per second, so
//! immutable URLs (and `init-{n}`, drawn from the same numbers) stay unique
//! even when a removed channel is published again under the same name.
//! Numbers stay below 2^32 until 2106, as DASH `startNumber` requires.
//!
//! # A channel's first playlist: published once it can honour its delay
//!
//! Every live output tells players how far behind the live edge to play:
//! the MPD's `suggestedPresentationDelay` is three target durations
//! ([`presentation_delay`]), and HLS players hold back three target durations
//! on their own (RFC 8216bis §6.3.3; hls.js `liveSyncDurationCount`, Shaka,
//! AVPlayer). A channel's outputs are therefore published only once some
//! rendition holds that much media ([`presentable`]); until then the HTTP
//! layer holds playlist and MPD requests (bounded) rather than answer.
//!
//! Why hold rather than publish early: an MPD listing one 2 s segment
//! promises `availabilityStartTime` two seconds ago and a 6 s delay that no
//! media can honour. dash.js (default settings) caps its delay to the media
//! that exists, starts ~2 s behind live, and then waits on every segment as it
//! is cut ("Buffer is empty! Stalling!" each segment, sometimes for good);
//! hls.js and Shaka start at the first segment with too little buffer in the
//! same way. Lowering the delay the MPD promises would keep players at the
//! edge for the life of the channel, and shifting `availabilityStartTime`
//! would misstate when segments exist. Holding the first playlist for a few
//! seconds costs a viewer who joins in the channel's first seconds only that
//! wait, and every player starts where it would an hour later.

pub mod dash;
pub mod hls;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::media::mpegts::Continuity;
use crate::media::{Sample, TrackKind, TrackParams};

/// Track IDs inside CMAF headers and fragments: one track per file.
pub const VIDEO_TRACK_ID: u32 = 1;
pub const AUDIO_TRACK_ID: u32 = 2;

/// Cache policy for objects that never change once they exist.
pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// A response body with the headers that go with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    pub body: Bytes,
    pub content_type: &'static str,
    pub cache_control: String,
    /// Strong validator (quoted), a hash of the body.
    pub etag: Option<String>,
}

impl Rendered {
    pub(crate) fn new(body: Bytes, content_type: &'static str, cache_control: String) -> Self {
        let etag = Some(strong_etag(&body));
        Rendered {
            body,
            content_type,
            cache_control,
            etag,
        }
    }
}

/// Why a path under `/live/{channel}/` has no response.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum RenderError {
    /// Not there (yet, or any more): a 404 that caches may keep for `cache_control`.
    #[error("not found")]
    NotFound { cache_control: String },
    /// No such channel, live or recently ended.
    #[error("no such channel")]
    ChannelNotFound,
}

impl RenderError {
    /// A segment or playlist that may appear within a second.
    pub fn not_yet() -> Self {
        RenderError::NotFound {
            cache_control: "public, max-age=1".into(),
        }
    }

    /// A path that names nothing and never will.
    pub fn no_such_object() -> Self {
        RenderError::NotFound {
            cache_control: "public, max-age=60".into(),
        }
    }
}

/// `"<first 128 bits of SHA-256, hex>"`.
pub fn strong_etag(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    format!("\"{}\"", hex::encode(&digest[..16]))
}

/// What a path under `/live/{channel}/` names. Parsed once; the packagers
/// never see raw paths.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Object {
    Master,
    MasterTs,
    Manifest,
    MediaPlaylist {
        rendition: String,
        kind: TrackKind,
    },
    TsPlaylist {
        rendition: String,
    },
    Init {
        rendition: String,
        kind: TrackKind,
        id: u64,
    },
    Fragment {
        rendition: String,
        kind: TrackKind,
        sequence: u64,
    },
    TsSegment {
        rendition: String,
        sequence: u64,
    },
    /// LL-DASH: segment `sequence` as chunked CMAF (its parts as
    /// `moof`+`mdat` chunks), streamed while it is cut.
    ChunkedFragment {
        rendition: String,
        kind: TrackKind,
        sequence: u64,
    },
    /// An LL-HLS part (EXT-X-PART) of segment `sequence`.
    Part {
        rendition: String,
        kind: TrackKind,
        sequence: u64,
        index: u32,
    },
}

impl Object {
    /// A playlist or MPD: what names segments and dates them (held while
    /// a channel starts; freezes its epoch once rendered).
    pub fn lists_segments(&self) -> bool {
        matches!(
            self,
            Object::Master
                | Object::MasterTs
                | Object::Manifest
                | Object::MediaPlaylist { .. }
                | Object::TsPlaylist { .. }
        )
    }

    /// `None` for a path that can never name anything.
    pub fn parse(path: &str) -> Option<Object> {
        let parts: Vec<&str> = path.split('/').collect();
        let kind_of = |s: &str| match s {
            "video" => Some(TrackKind::Video),
            "audio" => Some(TrackKind::Audio),
            _ => None,
        };
        match parts.as_slice() {
            ["master.m3u8"] => Some(Object::Master),
            ["master-ts.m3u8"] => Some(Object::MasterTs),
            ["manifest.mpd"] => Some(Object::Manifest),
            [r, file] if valid_name(r) => {
                let rendition = (*r).to_owned();
                if *file == "ts.m3u8" {
                    return Some(Object::TsPlaylist { rendition });
                }
                if let Some(kind) = file.strip_suffix(".m3u8").and_then(kind_of) {
                    return Some(Object::MediaPlaylist { rendition, kind });
                }
                let sequence = parse_number(file.strip_suffix(".ts")?)?;
                Some(Object::TsSegment {
                    rendition,
                    sequence,
                })
            }
            [r, k, file] if valid_name(r) => {
                let rendition = (*r).to_owned();
                let kind = kind_of(k)?;
                if let Some(id) = file
                    .strip_prefix("init-")
                    .and_then(|f| f.strip_suffix(".mp4"))
                {
                    let id = parse_number(id)?;
                    return Some(Object::Init {
                        rendition,
                        kind,
                        id,
                    });
                }
                let name = file.strip_suffix(".m4s")?;
                if let Some(sequence) = name.strip_suffix("-ll") {
                    return Some(Object::ChunkedFragment {
                        rendition,
                        kind,
                        sequence: parse_number(sequence)?,
                    });
                }
                if let Some((sequence, index)) = name.split_once('.') {
                    return Some(Object::Part {
                        rendition,
                        kind,
                        sequence: parse_number(sequence)?,
                        index: u32::try_from(parse_number(index)?).ok()?,
                    });
                }
                let sequence = parse_number(name)?;
                Some(Object::Fragment {
                    rendition,
                    kind,
                    sequence,
                })
            }
            _ => None,
        }
    }
}

/// Canonical decimal only, so one object has one URL (and one cache entry).
fn parse_number(s: &str) -> Option<u64> {
    if s.is_empty() || (s.len() > 1 && s.starts_with('0')) || !s.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    s.parse().ok()
}

/// Channel and rendition names: path-safe, and never one of our file names.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A CMAF header, named by `id` in URLs.
#[derive(Debug)]
pub struct Init {
    pub id: u64,
    pub params: TrackParams,
    built: OnceLock<Rendered>,
}

impl Init {
    pub fn new(id: u64, params: TrackParams) -> Self {
        Init {
            id,
            params,
            built: OnceLock::new(),
        }
    }

    pub fn render(&self) -> Rendered {
        self.built
            .get_or_init(|| {
                let (track_id, content_type) = track_file(self.params.kind());
                let body = crate::media::fmp4::init_segment(track_id, &self.params);
                Rendered::new(body, content_type, IMMUTABLE.into())
            })
            .clone()
    }
}

fn track_file(kind: TrackKind) -> (u32, &'static str) {
    match kind {
        TrackKind::Video => (VIDEO_TRACK_ID, "video/mp4"),
        TrackKind::Audio => (AUDIO_TRACK_ID, "audio/mp4"),
    }
}

/// One track's part of a segment, in the output timeline.
#[derive(Debug)]
pub struct TrackSegment {
    pub init: Arc<Init>,
    /// `tfdt`: decode time of the first sample, track timescale.
    pub base_decode_time: u64,
    /// Sum of sample durations, track timescale.
    pub duration: u64,
    /// DASH `presentationTimeOffset` of this segment's Period, track timescale.
    pub period_offset: u64,
    pub samples: Vec<Sample>,
    pub bytes: usize,
}

impl TrackSegment {
    /// The same samples under another header (a re-numbered one).
    pub fn under(&self, init: Arc<Init>) -> TrackSegment {
        TrackSegment {
            init,
            base_decode_time: self.base_decode_time,
            duration: self.duration,
            period_offset: self.period_offset,
            samples: self.samples.clone(),
            bytes: self.bytes,
        }
    }

    pub fn timescale(&self) -> u32 {
        self.init.params.timescale()
    }

    pub fn seconds(&self) -> f64 {
        self.duration as f64 / f64::from(self.timescale())
    }
}

/// A cut of a rendition: video and audio covering the same stretch of time.
#[derive(Debug)]
pub struct Segment {
    pub sequence: u64,
    /// First segment after a publisher change, timestamp jump or new
    /// decoder parameters (HLS EXT-X-DISCONTINUITY, DASH new Period).
    pub discontinuity: bool,
    /// DASH Period this segment belongs to.
    pub period: u64,
    /// Wall-clock time of the Period's start.
    pub period_start: SystemTime,
    /// Wall-clock time of the first sample (EXT-X-PROGRAM-DATE-TIME).
    pub program_date_time: SystemTime,
    /// Duration in seconds (video's when there is video).
    pub duration: f64,
    pub video: Option<TrackSegment>,
    pub audio: Option<TrackSegment>,
    /// MPEG-TS continuity counters at this segment's start, carried on from
    /// the previous segment.
    pub ts_continuity: Continuity,
    /// LL channels: the parts each track was cut into while the segment was
    /// open; its chunked CMAF fragment (LL-DASH, [`Segment::chunked`]) is
    /// those parts' chunks one after the other, the same bytes an
    /// in-progress request was streamed.
    video_parts: Vec<Arc<Part>>,
    audio_parts: Vec<Arc<Part>>,
    built_video: OnceLock<Rendered>,
    built_audio: OnceLock<Rendered>,
    built_chunked_video: OnceLock<Rendered>,
    built_chunked_audio: OnceLock<Rendered>,
    built_ts: OnceLock<Rendered>,
}

impl Segment {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        sequence: u64,
        discontinuity: bool,
        period: u64,
        period_start: SystemTime,
        program_date_time: SystemTime,
        duration: f64,
        video: Option<TrackSegment>,
        audio: Option<TrackSegment>,
    ) -> Self {
        Segment {
            sequence,
            discontinuity,
            period,
            period_start,
            program_date_time,
            duration,
            video,
            audio,
            ts_continuity: Continuity::default(),
            video_parts: Vec::new(),
            audio_parts: Vec::new(),
            built_video: OnceLock::new(),
            built_audio: OnceLock::new(),
            built_chunked_video: OnceLock::new(),
            built_chunked_audio: OnceLock::new(),
            built_ts: OnceLock::new(),
        }
    }

    pub fn track(&self, kind: TrackKind) -> Option<&TrackSegment> {
        match kind {
            TrackKind::Video => self.video.as_ref(),
            TrackKind::Audio => self.audio.as_ref(),
        }
    }

    /// This segment under other numbers and dates (a redundant origin
    /// adopting its peer's epoch before showing anything): `sequence`,
    /// wall clock moved by `moved`, headers replaced by `header`; its parts
    /// follow. Nothing of the old one's built bytes is kept.
    pub fn renumbered(
        &self,
        sequence: u64,
        moved: impl Fn(SystemTime) -> SystemTime,
        header: impl Fn(&Arc<Init>) -> Arc<Init>,
    ) -> Segment {
        let track = |t: &Option<TrackSegment>| t.as_ref().map(|t| t.under(header(&t.init)));
        let parts = |parts: &[Arc<Part>]| -> Vec<Arc<Part>> {
            parts
                .iter()
                .map(|p| Arc::new(p.renumbered(sequence, header(&p.track.init))))
                .collect()
        };
        let mut segment = Segment::new(
            sequence,
            self.discontinuity,
            self.period,
            moved(self.period_start),
            moved(self.program_date_time),
            self.duration,
            track(&self.video),
            track(&self.audio),
        )
        .with_parts(parts(&self.video_parts), parts(&self.audio_parts));
        segment.ts_continuity = self.ts_continuity;
        segment
    }

    /// The parts (LL) this segment's tracks were cut into, in order, for
    /// [`Segment::chunked`].
    pub fn with_parts(mut self, video: Vec<Arc<Part>>, audio: Vec<Arc<Part>>) -> Self {
        self.video_parts = video;
        self.audio_parts = audio;
        self
    }

    /// This segment's parts of `kind` (LL channels), oldest first.
    pub fn parts(&self, kind: TrackKind) -> &[Arc<Part>] {
        match kind {
            TrackKind::Video => &self.video_parts,
            TrackKind::Audio => &self.audio_parts,
        }
    }

    /// Media bytes of both tracks.
    pub fn bytes(&self) -> usize {
        self.video.as_ref().map_or(0, |t| t.bytes) + self.audio.as_ref().map_or(0, |t| t.bytes)
    }

    /// Sets where this segment's MPEG-TS continuity counters start; returns
    /// where the next segment's start.
    pub fn chain_ts_continuity(&mut self, start: Continuity) -> Continuity {
        self.ts_continuity = start;
        let video = self.video.as_ref().and_then(|t| match &t.init.params {
            TrackParams::Video(p) => Some((p, t.samples.as_slice())),
            TrackParams::Audio(_) => None,
        });
        let audio = self.audio.as_ref().and_then(|t| match &t.init.params {
            TrackParams::Audio(p) => Some((p, t.samples.as_slice())),
            TrackParams::Video(_) => None,
        });
        crate::media::mpegts::continuity_after(video, audio, start)
    }

    /// The CMAF fragment of one track, built once.
    pub fn fragment(&self, kind: TrackKind) -> Option<Rendered> {
        let track = self.track(kind)?;
        let cell = match kind {
            TrackKind::Video => &self.built_video,
            TrackKind::Audio => &self.built_audio,
        };
        Some(
            cell.get_or_init(|| {
                let (track_id, content_type) = track_file(kind);
                let body = crate::media::fmp4::media_segment(
                    self.sequence as u32,
                    track_id,
                    track.base_decode_time,
                    &track.samples,
                );
                Rendered::new(body, content_type, IMMUTABLE.into())
            })
            .clone(),
        )
    }

    /// LL-DASH: one track as chunked CMAF, its parts one after the other
    /// ([`chunked_fragment`]), built once; the plain fragment when the
    /// segment was not cut into parts.
    pub fn chunked(&self, kind: TrackKind) -> Option<Rendered> {
        let parts = self.parts(kind);
        if parts.is_empty() {
            return self.fragment(kind);
        }
        let cell = match kind {
            TrackKind::Video => &self.built_chunked_video,
            TrackKind::Audio => &self.built_chunked_audio,
        };
        let (_, content_type) = track_file(kind);
        Some(
            cell.get_or_init(|| {
                Rendered::new(chunked_fragment(parts), content_type, IMMUTABLE.into())
            })
            .clone(),
        )
    }

    /// The MPEG-TS segment, audio and video muxed, built once.
    pub fn transport_stream(&self) -> Rendered {
        self.built_ts
            .get_or_init(|| {
                let video = self.video.as_ref().and_then(|t| match &t.init.params {
                    TrackParams::Video(p) => Some((p, t.samples.as_slice())),
                    TrackParams::Audio(_) => None,
                });
                let audio = self.audio.as_ref().and_then(|t| match &t.init.params {
                    TrackParams::Audio(p) => Some((p, t.samples.as_slice())),
                    TrackParams::Video(_) => None,
                });
                let (body, _) =
                    crate::media::mpegts::segment_continuing(video, audio, self.ts_continuity);
                Rendered::new(body, "video/mp2t", IMMUTABLE.into())
            })
            .clone()
    }
}

/// An LL-HLS partial segment (RFC 8216bis §4.4.4.9): one track's samples
/// over at most a part target, as CMAF `moof`+`mdat`. A segment's parts
/// together hold exactly the segment's samples.
#[derive(Debug)]
pub struct Part {
    /// Media sequence number of the parent segment.
    pub sequence: u64,
    /// Position in the parent segment, from 0.
    pub index: u32,
    pub kind: TrackKind,
    /// Starts with a sync sample (EXT-X-PART `INDEPENDENT=YES`).
    pub independent: bool,
    pub track: TrackSegment,
    built: OnceLock<Rendered>,
}

impl Part {
    pub fn new(sequence: u64, index: u32, kind: TrackKind, track: TrackSegment) -> Self {
        Part {
            sequence,
            index,
            kind,
            independent: track.samples.first().is_some_and(|s| s.keyframe),
            track,
            built: OnceLock::new(),
        }
    }

    /// The same part under another segment number and header.
    pub fn renumbered(&self, sequence: u64, init: Arc<Init>) -> Part {
        Part::new(sequence, self.index, self.kind, self.track.under(init))
    }

    /// Seconds of media (EXT-X-PART `DURATION`).
    pub fn seconds(&self) -> f64 {
        self.track.seconds()
    }

    /// The part as a chunk of its segment's fragment: with its `styp` when
    /// it opens the fragment, else its `moof`+`mdat` alone.
    pub fn chunk(&self, first: bool) -> Bytes {
        chunk_of(self.render().body, first)
    }

    /// Its path under `/live/{channel}/` ([`Object::Part`]).
    pub fn path(&self, rendition: &str) -> String {
        part_path(rendition, self.kind, self.sequence, self.index)
    }

    /// The part's bytes, built once.
    pub fn render(&self) -> Rendered {
        self.built
            .get_or_init(|| {
                let (track_id, content_type) = track_file(self.kind);
                let body = crate::media::fmp4::media_segment(
                    part_fragment_number(self.sequence, self.index),
                    track_id,
                    self.track.base_decode_time,
                    &self.track.samples,
                );
                Rendered::new(body, content_type, IMMUTABLE.into())
            })
            .clone()
    }
}

/// `{rendition}/{video|audio}/{sequence}.{index}.m4s`: an LL-HLS part's
/// path under `/live/{channel}/`.
pub fn part_path(rendition: &str, kind: TrackKind, sequence: u64, index: u32) -> String {
    let dir = match kind {
        TrackKind::Video => "video",
        TrackKind::Audio => "audio",
    };
    format!("{rendition}/{dir}/{sequence}.{index}.m4s")
}

/// A part's bytes (`styp`+`moof`+`mdat`, clear or protected) as a chunk of
/// its segment's fragment: whole when it opens the fragment, else without
/// its `styp`.
pub fn chunk_of(part: Bytes, first: bool) -> Bytes {
    if first {
        return part;
    }
    // The part's bytes open with the styp box; its size is its first word.
    let styp = part
        .get(..4)
        .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize);
    part.slice(styp.min(part.len())..)
}

/// The parts a chunked fragment ([`chunked_fragment`]) was made of, each
/// whole again (`styp`+`moof`+`mdat`), in order; `None` when `fragment` is
/// not `styp` followed by `moof`+`mdat` pairs.
pub fn fragment_parts(fragment: &Bytes) -> Option<Vec<Bytes>> {
    let mut boxes = Vec::new();
    let mut at = 0;
    while at < fragment.len() {
        let head = fragment.get(at..at + 8)?;
        let size = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        if size < 8 || at + size > fragment.len() {
            return None;
        }
        boxes.push((
            &head[4..8] == b"styp",
            &head[4..8] == b"moof",
            at..at + size,
        ));
        at += size;
    }
    let (&(true, _, ref styp), chunks) = boxes.split_first()? else {
        return None;
    };
    if chunks.is_empty() || chunks.len() % 2 != 0 {
        return None;
    }
    let mut parts = Vec::with_capacity(chunks.len() / 2);
    for pair in chunks.chunks(2) {
        let (moof, mdat) = (&pair[0], &pair[1]);
        if !moof.1 || &fragment[mdat.2.start + 4..mdat.2.start + 8] != b"mdat" {
            return None;
        }
        let mut part = bytes::BytesMut::with_capacity(styp.len() + mdat.2.end - moof.2.start);
        part.extend_from_slice(&fragment[styp.clone()]);
        part.extend_from_slice(&fragment[moof.2.start..mdat.2.end]);
        parts.push(part.freeze());
    }
    Some(parts)
}

/// Fragment numbers (`mfhd`) a segment's parts may use: more than a
/// segment can have (five target durations over the least part target).
const PART_NUMBERS: u64 = 1 << 10;

/// The `mfhd` sequence number of a part: ISO/IEC 14496-12 §8.8.5 numbers
/// the fragments of a track in increasing order, so the chunks of one
/// LL-DASH segment (its parts, [`chunked_fragment`]) count up, and on into
/// the next segment's. Modulo 2^32, which a block of [`PART_NUMBERS`] never
/// straddles.
pub fn part_fragment_number(sequence: u64, index: u32) -> u32 {
    let index = u64::from(index).min(PART_NUMBERS - 1);
    sequence.wrapping_mul(PART_NUMBERS).wrapping_add(index) as u32
}

/// A CMAF fragment made of chunks (ISO/IEC 23000-19 §7.3.2.3: one `styp`,
/// then a `moof`+`mdat` per chunk): the first part whole (its `styp`
/// included), then each later part without its `styp`. A request for a
/// segment still being cut is streamed exactly these bytes, chunk by chunk.
pub fn chunked_fragment(parts: &[Arc<Part>]) -> Bytes {
    let mut body = bytes::BytesMut::new();
    for (i, part) in parts.iter().enumerate() {
        body.extend_from_slice(&part.chunk(i == 0));
    }
    body.freeze()
}

/// Measured figures of a rendition over its window, for manifests and the
/// channel API.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Measured {
    /// Bits per second over the whole window.
    pub average_bitrate: u64,
    /// Highest bits per second of any one segment.
    pub peak_bitrate: u64,
    pub frame_rate: f64,
    /// Mean seconds between keyframes.
    pub keyframe_interval: f64,
}

/// Measure one track kind (or both when `kind` is `None`) over `segments`.
pub fn measure<'a>(
    segments: impl Iterator<Item = &'a Arc<Segment>>,
    kind: Option<TrackKind>,
) -> Measured {
    let (mut bytes, mut secs, mut peak) = (0usize, 0f64, 0u64);
    let (mut frames, mut keyframes, mut video_secs) = (0usize, 0usize, 0f64);
    // Keyframe spacing from keyframe decode times: dividing the window's
    // length by its keyframe count would count a session's short last
    // segment (cut when the publisher left) as a whole GOP.
    let (mut gap_sum, mut gaps, mut last_key) = (0f64, 0usize, None::<f64>);
    for s in segments {
        if s.discontinuity {
            last_key = None;
        }
        if let Some(v) = &s.video {
            let timescale = f64::from(v.timescale());
            let mut at = v.base_decode_time;
            for x in &v.samples {
                if x.keyframe {
                    let t = at as f64 / timescale;
                    if let Some(prev) = last_key.filter(|p| t > *p) {
                        gap_sum += t - prev;
                        gaps += 1;
                    }
                    last_key = Some(t);
                }
                at += u64::from(x.duration);
            }
        }
        let b = match kind {
            Some(k) => s.track(k).map_or(0, |t| t.bytes),
            None => s.bytes(),
        };
        let d = s.duration.max(0.001);
        bytes += b;
        secs += d;
        peak = peak.max((b as f64 * 8.0 / d) as u64);
        if let Some(v) = &s.video {
            frames += v.samples.len();
            keyframes += v.samples.iter().filter(|x| x.keyframe).count();
            video_secs += v.seconds();
        }
    }
    Measured {
        average_bitrate: if secs > 0.0 {
            (bytes as f64 * 8.0 / secs) as u64
        } else {
            0
        },
        peak_bitrate: peak,
        frame_rate: if video_secs > 0.0 {
            frames as f64 / video_secs
        } else {
            0.0
        },
        keyframe_interval: if gaps > 0 {
            gap_sum / gaps as f64
        } else if keyframes > 0 {
            video_secs / keyframes as f64
        } else {
            0.0
        },
    }
}

/// Target durations a player stays behind the live edge: what the MPD
/// suggests (`suggestedPresentationDelay`) and HLS players do by default.
pub const PRESENTATION_DELAY_TARGETS: u32 = 3;

/// The delay players are told to keep for a channel whose longest rendition
/// target duration is `target` seconds.
pub fn presentation_delay(target: u64) -> Duration {
    Duration::from_secs(target.max(1) * u64::from(PRESENTATION_DELAY_TARGETS))
}

/// Whether a channel's playlists and MPD can be published: it has ended, or
/// some rendition holds media for the whole presentation delay (or for the
/// whole DVR window, when that is shorter). `renditions` gives each
/// rendition's seconds of media and target duration.
pub fn presentable(
    ended: bool,
    renditions: impl IntoIterator<Item = (f64, u64)>,
    dvr_window: Duration,
) -> bool {
    ended
        || renditions.into_iter().any(|(media, target)| {
            let need = presentation_delay(target).min(dvr_window).as_secs_f64();
            media > 0.0 && media + MEDIA_SLACK >= need
        })
}

/// Segment durations come from sample timestamps: three 2 s GOPs may add up
/// to a few milliseconds under 6 s.
const MEDIA_SLACK: f64 = 0.05;

/// What the packagers read of one rendition.
#[derive(Clone, Debug)]
pub struct RenditionWindow {
    pub name: String,
    pub video: Option<TrackParams>,
    pub audio: Option<TrackParams>,
    pub segments: Vec<Arc<Segment>>,
    /// EXT-X-DISCONTINUITY-SEQUENCE: discontinuities that left the window.
    pub discontinuity_sequence: u64,
    /// EXT-X-TARGETDURATION, whole seconds.
    pub target_duration: u64,
    /// LL-HLS state; `None` when low latency is off for the channel.
    pub low_latency: Option<LowLatency>,
}

/// What LL-HLS playlists read of one rendition.
#[derive(Clone, Debug)]
pub struct LowLatency {
    /// EXT-X-PART-INF `PART-TARGET`, seconds.
    pub part_target: f64,
    /// `PART-HOLD-BACK`, seconds (`store.part_hold_back`): where players aim.
    pub part_hold_back: f64,
    /// Parts of the last few segments and of the open one, oldest first.
    pub video: Vec<Arc<Part>>,
    pub audio: Vec<Arc<Part>>,
    /// Media sequence number of the segment being cut (the open one).
    pub open_sequence: u64,
    /// The open segment follows a discontinuity.
    pub open_discontinuity: bool,
}

impl LowLatency {
    pub fn parts(&self, kind: TrackKind) -> &[Arc<Part>] {
        match kind {
            TrackKind::Video => &self.video,
            TrackKind::Audio => &self.audio,
        }
    }

    /// The next part a client can be told to preload: `(sequence, index)`.
    pub fn next_part(&self, kind: TrackKind) -> (u64, u32) {
        match self.parts(kind).last() {
            Some(p) if p.sequence == self.open_sequence => (p.sequence, p.index + 1),
            _ => (self.open_sequence, 0),
        }
    }
}

/// What the packagers read of one channel.
#[derive(Clone, Debug)]
pub struct ChannelWindow {
    pub renditions: Vec<RenditionWindow>,
    /// Ended: no publisher came back within the reconnect timeout.
    pub ended: bool,
    /// DASH availabilityStartTime: wall clock of the first segment.
    pub availability_start: SystemTime,
    /// Wall clock of the last change (DASH publishTime).
    pub updated: SystemTime,
    /// DVR depth (DASH timeShiftBufferDepth).
    pub time_shift_buffer: Duration,
    /// Configured segment target duration.
    pub target_duration: Duration,
    /// DASH UTCTiming http-iso value.
    pub utc_timing_url: String,
}

impl ChannelWindow {
    /// DASH `suggestedPresentationDelay`: [`presentation_delay`] of the
    /// longest target duration (the configured one before any segment).
    pub fn presentation_delay(&self) -> Duration {
        let target = self
            .renditions
            .iter()
            .map(|r| r.target_duration)
            .max()
            .unwrap_or(0)
            .max(self.target_duration.as_secs_f64().round() as u64);
        presentation_delay(target)
    }

    /// The rendition whose audio serves every variant: `main` when it has
    /// audio, else the first rendition (by name) that does.
    pub fn audio_source(&self) -> Option<&RenditionWindow> {
        let with_audio = |r: &&RenditionWindow| {
            r.audio.is_some() && r.segments.iter().any(|s| s.audio.is_some())
        };
        self.renditions
            .iter()
            .filter(with_audio)
            .find(|r| r.name == "main")
            .or_else(|| self.renditions.iter().find(with_audio))
    }

    /// `Cache-Control` for playlists and MPDs: half a target duration while
    /// live, longer once ended.
    pub fn playlist_cache_control(&self) -> String {
        if self.ended {
            "public, max-age=60".into()
        } else {
            let half = (self.target_duration.as_secs_f64() / 2.0).floor() as u64;
            format!("public, max-age={}", half.max(1))
        }
    }
}

/// `2026-11-25T09:30:00.000Z` (RFC 3339 / ISO 8601, UTC, milliseconds).
pub fn format_datetime(t: SystemTime) -> String {
    let c = Civil::utc(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        c.year,
        c.month,
        c.day,
        c.hour,
        c.minute,
        c.second,
        c.micros / 1000
    )
}

/// A UTC calendar date and time of day, for RFC 3339 stamps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Civil {
    pub year: i64,
    pub month: i64,
    pub day: i64,
    pub hour: u64,
    pub minute: u64,
    pub second: u64,
    pub micros: u32,
}

impl Civil {
    pub fn utc(t: SystemTime) -> Civil {
        let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = since.as_secs();
        let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
        // Civil from days (Howard Hinnant's algorithm), proleptic Gregorian.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        Civil {
            year: yoe + era * 400 + i64::from(month <= 2),
            month,
            day,
            hour: rem / 3600,
            minute: rem / 60 % 60,
            second: rem % 60,
            micros: since.subsec_micros(),
        }
    }
}

/// xs:duration in seconds, e.g. `PT2.000S`.
pub fn format_duration(d: f64) -> String {
    format!("PT{:.3}S", d.max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_documented_name() {
        let r = || "main".to_owned();
        assert_eq!(Object::parse("master.m3u8"), Some(Object::Master));
        assert_eq!(Object::parse("master-ts.m3u8"), Some(Object::MasterTs));
        assert_eq!(Object::parse("manifest.mpd"), Some(Object::Manifest));
        assert_eq!(
            Object::parse("main/video.m3u8"),
            Some(Object::MediaPlaylist {
                rendition: r(),
                kind: TrackKind::Video
            })
        );
        assert_eq!(
            Object::parse("main/ts.m3u8"),
            Some(Object::TsPlaylist { rendition: r() })
        );
        assert_eq!(
            Object::parse("main/audio/init-17.mp4"),
            Some(Object::Init {
                rendition: r(),
                kind: TrackKind::Audio,
                id: 17
            })
        );
        assert_eq!(
            Object::parse("main/video/42.m4s"),
            Some(Object::Fragment {
                rendition: r(),
                kind: TrackKind::Video,
                sequence: 42
            })
        );
        assert_eq!(
            Object::parse("main/audio/42.3.m4s"),
            Some(Object::Part {
                rendition: r(),
                kind: TrackKind::Audio,
                sequence: 42,
                index: 3
            })
        );
        assert_eq!(
            Object::parse("main/42.ts"),
            Some(Object::TsSegment {
                rendition: r(),
                sequence: 42
            })
        );
        for bad in [
            "",
            "main/042.ts",
            "main/video/+4.m4s",
            "../main/1.ts",
            "main/subs.m3u8",
            "main/video/init.mp4",
            "main/video/4.01.m4s",
            "main/video/4.1.2.m4s",
            "main/video/4.99999999999.m4s",
            "a/b/c/d",
        ] {
            assert_eq!(Object::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn formats_dates_and_durations() {
        let t = UNIX_EPOCH + Duration::from_millis(1_764_063_000_123);
        assert_eq!(format_datetime(t), "2025-11-25T09:30:00.123Z");
        assert_eq!(format_datetime(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(format_datetime(leap), "2000-02-29T00:00:00.000Z");
        assert_eq!(format_duration(2.0), "PT2.000S");
    }

    #[test]
    fn presentable_once_a_rendition_covers_the_delay() {
        let dvr = Duration::from_secs(60);
        assert_eq!(presentation_delay(2), Duration::from_secs(6));
        assert!(!presentable(false, [], dvr));
        assert!(!presentable(false, [(4.0, 2), (0.0, 2)], dvr));
        assert!(presentable(false, [(4.0, 2), (5.99, 2)], dvr));
        // Longer segments: a longer delay to honour.
        assert!(!presentable(false, [(8.0, 4)], dvr));
        // A DVR window shorter than the delay: the whole window will do.
        assert!(presentable(false, [(4.0, 2)], Duration::from_secs(4)));
        // An ended channel publishes whatever it has.
        assert!(presentable(true, [(2.0, 2)], dvr));
    }

    #[test]
    fn etag_is_quoted_and_stable() {
        let a = strong_etag(b"abc");
        assert_eq!(a, strong_etag(b"abc"));
        assert_ne!(a, strong_etag(b"abd"));
        assert!(a.starts_with('"') && a.ends_with('"') && a.len() == 34);
    }
}
