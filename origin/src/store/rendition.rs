//! One rendition's timeline: samples in, segments out.
//!
//! Input timestamps are the publisher's; the window keeps an output timeline
//! that never goes backwards for the life of the channel. Each publisher
//! session is rebased to continue where the previous one ended (one offset
//! for both tracks, so A/V sync survives), and a jump inside a session
//! rebases the jumping track and starts a new discontinuity.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::watch;

use super::{epoch, StoreConfig};
use crate::ingest::{PublisherInfo, SinkError};
use crate::media::mpegts::Continuity;
use crate::media::{Sample, TrackKind, TrackParams, VIDEO_TIMESCALE};
use crate::package::{Init, Part, Segment, TrackSegment};

/// A publisher holding a rendition.
pub(super) struct Publisher {
    pub id: u64,
    pub info: PublisherInfo,
    pub since: SystemTime,
    pub kick: watch::Sender<bool>,
}

/// Channel-wide state that renditions share: the DASH Period counter.
pub(super) struct Timeline {
    /// Current DASH Period; a rendition's discontinuity opens the next one
    /// unless another rendition already did (ladders reconnect together).
    pub period: u64,
    /// Per Period: wall clock and output time (90 kHz) of its first segment.
    pub period_starts: std::collections::BTreeMap<u64, (SystemTime, i64)>,
    /// Input → output offset (90 kHz) of the latest publisher session. A
    /// rendition starting a session reuses it when its timestamps fit, so
    /// renditions from one encoder (an ABR ladder) share one timeline and
    /// their segments align.
    pub shared_offset: Option<i64>,
    /// Furthest output time (90 kHz) any rendition reached.
    pub output_edge: i64,
    /// Wall clock of output time 0 ([`epoch`]), shared by the renditions.
    pub epoch: Option<SystemTime>,
    /// The earliest epoch any sample implied before the first segment: a
    /// sample never arrives before it was made, so the earliest estimate
    /// is the best one, and an encoder or relay that bursts its buffer at
    /// start (ffmpeg probing a live input, a GOP cache replayed) shows it
    /// within its first segment ([`super::Store`] moves the epoch to it).
    pub earliest: Option<SystemTime>,
    /// Set at the first segment, or on adopting an epoch a redundant peer
    /// published under: the epoch no longer moves but for drift.
    pub frozen: bool,
    /// A playlist or MPD was rendered under the epoch: from then on its
    /// numbers and dates are out, and a redundant peer's never replace it.
    pub published: bool,
    /// The epoch is a redundant peer's published one and this rendition has
    /// not cut a segment yet: the first segment takes it whatever its
    /// samples' arrival, which a joining publisher's start-up burst (a
    /// relay's probe, a GOP cache) can make seconds late; drift is judged
    /// from the next segment on, on samples that come as they are made.
    pub from_peer: bool,
    /// Bumped on every change that playlists show.
    pub version: u64,
    pub updated: SystemTime,
    /// Tells waiting readers (long polls, blocking reloads) the new version.
    pub updates: watch::Sender<u64>,
    pub metrics: super::Metrics,
}

impl Timeline {
    pub fn new(now: SystemTime, metrics: super::Metrics) -> Self {
        Timeline {
            metrics,
            period: 0,
            period_starts: std::collections::BTreeMap::new(),
            shared_offset: None,
            output_edge: 0,
            epoch: None,
            earliest: None,
            frozen: false,
            published: false,
            from_peer: false,
            version: 0,
            updated: now,
            updates: watch::channel(0).0,
        }
    }

    /// Record a change visible in playlists, made at `at`.
    pub fn bump(&mut self, at: SystemTime) {
        self.version += 1;
        self.updated = at;
        self.updates.send_replace(self.version);
    }

    /// Move the channel's epoch to `e` before anything was published,
    /// Period starts with it (the renditions move themselves:
    /// [`Rendition::adopt_epoch`]).
    pub fn move_epoch(&mut self, e: SystemTime) {
        if let Some(old) = self.epoch.replace(e) {
            for (start, _) in self.period_starts.values_mut() {
                *start = epoch::moved(*start, old, e);
            }
        }
    }

    /// Note the epoch a sample at output time `at` arriving at `arrival`
    /// implies, until the epoch is frozen.
    pub fn observe(&mut self, arrival: SystemTime, at: i64) {
        if self.frozen {
            return;
        }
        let implied = epoch::derive(arrival, at);
        if self.earliest.is_none_or(|e| implied < e) {
            self.earliest = Some(implied);
        }
    }

    /// The channel's epoch for a sample at output time `at` arriving at
    /// `arrival`: the current one unless the two drifted apart, else a new
    /// one derived from this sample ([`epoch`]).
    pub fn epoch_for(&mut self, arrival: SystemTime, at: i64) -> SystemTime {
        match self.epoch {
            Some(e) if !epoch::drifted(arrival, epoch::wall_at(e, at)) => e,
            _ => *self.epoch.insert(epoch::derive(arrival, at)),
        }
    }
}

#[derive(Default)]
struct Track {
    init: Option<Arc<Init>>,
    next_init_id: u64,
    /// The open segment, output timeline.
    pending: Vec<Sample>,
    /// output = input + offset.
    offset: i64,
    last_input_dts: Option<i64>,
    /// Output time at which the next sample is expected.
    end: i64,
    last_duration: u32,
    /// Rebase the next sample to `end` (after a timescale change).
    continue_at_end: bool,
    /// LL-HLS: how many of `pending` are in parts already.
    parted: usize,
    /// Index of the open segment's next part.
    next_part: u32,
    /// Parts of the open segment and of the last [`PART_SEGMENTS`] segments.
    pub parts: VecDeque<Arc<Part>>,
}

/// Segments whose parts are kept after they are cut: playlists list parts
/// only within three target durations of their end (RFC 8216bis §4.4.4.9).
const PART_SEGMENTS: u64 = 4;

/// Video parts in a channel with audio end this much before the part target,
/// so that the audio parts cut at the same instants (whole AAC frames,
/// 21 ms at 48 kHz, 23 ms at 44.1 kHz) stay within it too.
const AUDIO_FRAME_MARGIN: f64 = 0.025;

impl Track {
    fn timescale(&self) -> Option<u32> {
        self.init.as_ref().map(|i| i.params.timescale())
    }
}

pub(super) struct Rendition {
    pub publisher: Option<Publisher>,
    pub gone_since: Option<SystemTime>,
    video: Track,
    audio: Track,
    pub segments: VecDeque<Arc<Segment>>,
    first_sequence: u64,
    pub next_sequence: u64,
    pub discontinuity_sequence: u64,
    pending_discontinuity: bool,
    /// Offset (90 kHz) applied to this publisher session; set by its first sample.
    session_offset: Option<i64>,
    period: u64,
    /// Wall clock of output time 0 for program-date-time ([`epoch`]).
    epoch: Option<SystemTime>,
    /// Whether the numbers (segments, init headers) follow the epoch yet:
    /// they do from the rendition's first sample on.
    numbered: bool,
    /// Output time (90 kHz) of the first sample, which the numbers count
    /// from, and the header number the epoch gave: what re-numbering under
    /// a redundant peer's epoch starts from ([`Rendition::adopt_epoch`]).
    numbered_from: Option<(i64, u64)>,
    /// The earliest epoch estimate ([`epoch::estimate`]) of the open
    /// segment's samples: where its start would have arrived had every
    /// sample come on time. A late burst (a relay's probe, a GOP cache)
    /// makes some samples late, never all, so drift is judged on it.
    open_estimate: Option<SystemTime>,
    pub max_segment: f64,
    /// MPEG-TS continuity counters where the next segment starts.
    ts_continuity: Continuity,
    pub late_frames: u64,
    pub dropped_frames: u64,
    pub discontinuities: u64,
    /// LL-HLS part target, seconds; `None`: no parts.
    pub part_target: Option<f64>,
    /// LL-HLS `PART-HOLD-BACK`, seconds (`store.part_hold_back`).
    pub part_hold_back: Option<f64>,
}

/// Largest input timestamp magnitude taken: about 99 years at 90 kHz.
const MAX_INPUT_TIMESTAMP: u64 = 1 << 48;

/// Rescale `ts` from one timescale to another, rounding down.
pub(crate) fn rescale(ts: i64, from: u32, to: u32) -> i64 {
    if from == to {
        return ts;
    }
    (i128::from(ts) * i128::from(to)).div_euclid(i128::from(from.max(1))) as i64
}

impl Rendition {
    pub fn new(first_sequence: u64, period: u64) -> Self {
        Rendition {
            publisher: None,
            gone_since: None,
            video: Track {
                next_init_id: first_sequence,
                ..Track::default()
            },
            audio: Track {
                next_init_id: first_sequence,
                ..Track::default()
            },
            segments: VecDeque::new(),
            first_sequence,
            next_sequence: first_sequence,
            discontinuity_sequence: 0,
            pending_discontinuity: false,
            session_offset: None,
            period,
            epoch: None,
            numbered: false,
            numbered_from: None,
            open_estimate: None,
            max_segment: 0.0,
            ts_continuity: Continuity::default(),
            late_frames: 0,
            dropped_frames: 0,
            discontinuities: 0,
            part_target: None,
            part_hold_back: None,
        }
    }

    /// This track's parts (LL-HLS), oldest first.
    pub fn parts(&self, kind: TrackKind) -> &VecDeque<Arc<Part>> {
        &self.track(kind).parts
    }

    /// The open segment's number and whether it follows a discontinuity.
    pub fn open_segment(&self) -> (u64, bool) {
        (self.next_sequence, self.pending_discontinuity)
    }

    fn track(&self, kind: TrackKind) -> &Track {
        match kind {
            TrackKind::Video => &self.video,
            TrackKind::Audio => &self.audio,
        }
    }

    fn track_mut(&mut self, kind: TrackKind) -> &mut Track {
        match kind {
            TrackKind::Video => &mut self.video,
            TrackKind::Audio => &mut self.audio,
        }
    }

    pub fn params(&self, kind: TrackKind) -> Option<&TrackParams> {
        self.track(kind).init.as_ref().map(|i| &i.params)
    }

    /// The current header or one still used by a segment in the window.
    pub fn init(&self, kind: TrackKind, id: u64) -> Option<Arc<Init>> {
        let current = self.track(kind).init.iter();
        let windowed = self
            .segments
            .iter()
            .filter_map(move |s| s.track(kind).map(|t| &t.init));
        current.chain(windowed).find(|i| i.id == id).cloned()
    }

    pub fn segment(&self, sequence: u64) -> Option<Arc<Segment>> {
        let first = self.segments.front()?.sequence;
        let index = usize::try_from(sequence.checked_sub(first)?).ok()?;
        self.segments.get(index).cloned()
    }

    /// Output end of the content so far, 90 kHz.
    fn end_90k(&self) -> i64 {
        [&self.video, &self.audio]
            .iter()
            .filter_map(|t| Some(rescale(t.end, t.timescale()?, VIDEO_TIMESCALE)))
            .max()
            .unwrap_or(0)
    }

    /// A new publisher takes the rendition: flush the old session and make
    /// the next segment a discontinuity when there was content before.
    pub fn start_session(
        &mut self,
        publisher: Publisher,
        now: SystemTime,
        cfg: &StoreConfig,
        tl: &mut Timeline,
    ) {
        if let Some(old) = self.publisher.take() {
            // Ignored error: the old publisher's ingest may be gone already.
            let _ = old.kick.send(true);
        }
        self.cut(None, now, cfg, tl);
        if self.next_sequence != self.first_sequence {
            self.mark_discontinuity(tl);
        }
        self.session_offset = None;
        self.video.last_input_dts = None;
        self.audio.last_input_dts = None;
        self.publisher = Some(publisher);
        self.gone_since = None;
    }

    /// The publisher `id` went away (dropped its sink or was kicked).
    pub fn end_session(
        &mut self,
        id: u64,
        now: SystemTime,
        cfg: &StoreConfig,
        tl: &mut Timeline,
    ) -> bool {
        if self.publisher.as_ref().map(|p| p.id) != Some(id) {
            return false;
        }
        self.cut(None, now, cfg, tl);
        self.publisher = None;
        self.gone_since = Some(now);
        tl.bump(now);
        true
    }

    fn mark_discontinuity(&mut self, tl: &Timeline) {
        if !self.pending_discontinuity {
            self.pending_discontinuity = true;
            self.discontinuities += 1;
            tl.metrics.discontinuities.inc();
        }
    }

    pub fn set_params(
        &mut self,
        params: TrackParams,
        now: SystemTime,
        cfg: &StoreConfig,
        tl: &mut Timeline,
    ) {
        let kind = params.kind();
        let old_timescale = match &self.track(kind).init {
            Some(init) if init.params == params => return,
            Some(init) => Some(init.params.timescale()),
            None => None,
        };
        if let Some(old) = old_timescale {
            // Samples already taken were coded with the old parameters.
            self.cut(None, now, cfg, tl);
            self.mark_discontinuity(tl);
            let new = params.timescale();
            let next_sequence = self.next_sequence;
            let track = self.track_mut(kind);
            if old != new {
                track.end = rescale(track.end, old, new);
                track.last_input_dts = None;
                track.continue_at_end = true;
            }
            track.next_init_id = track.next_init_id.max(next_sequence);
        }
        let track = self.track_mut(kind);
        let id = track.next_init_id;
        track.next_init_id += 1;
        track.init = Some(Arc::new(Init::new(id, params)));
    }

    pub fn push(
        &mut self,
        kind: TrackKind,
        sample: Sample,
        now: SystemTime,
        cfg: &StoreConfig,
        tl: &mut Timeline,
    ) -> Result<(), SinkError> {
        let timescale = self
            .track(kind)
            .timescale()
            .ok_or(SinkError::NoParams(kind))?;
        let second = i64::from(timescale);
        if sample.dts.unsigned_abs() > MAX_INPUT_TIMESTAMP {
            // No ingest produces these (RTMP is 32-bit ms, MPEG-TS 33-bit
            // 90 kHz); refusing them keeps all timeline arithmetic in range.
            self.dropped_frames += 1;
            tl.metrics.dropped_frames.inc();
            return Ok(());
        }
        if let Some(last) = self.track(kind).last_input_dts {
            let delta = sample.dts - last;
            let max_gap = (cfg.target_duration.as_secs_f64() * 5.0).max(10.0) * second as f64;
            if delta <= 0 && -delta < second {
                // Late or duplicate: behind what was already taken.
                self.late_frames += 1;
                tl.metrics.late_frames.inc();
                return Ok(());
            }
            if delta <= 0 || delta as f64 > max_gap {
                // The publisher's clock jumped: rebase both tracks, as for a
                // new session, to continue where the content ended.
                self.cut(None, now, cfg, tl);
                self.mark_discontinuity(tl);
                self.session_offset = None;
                self.video.last_input_dts = None;
                self.audio.last_input_dts = None;
            }
        }
        let session_start = self.track(kind).last_input_dts.is_none();
        if session_start {
            if self.session_offset.is_none() {
                let offset =
                    self.session_offset_for(rescale(sample.dts, timescale, VIDEO_TIMESCALE), tl);
                self.session_offset = Some(offset);
            }
            let offset = rescale(self.session_offset.unwrap_or(0), VIDEO_TIMESCALE, timescale);
            let track = self.track_mut(kind);
            track.offset = if std::mem::take(&mut track.continue_at_end) {
                track.end - sample.dts
            } else {
                offset
            };
        }
        let track = self.track_mut(kind);
        let mut dts = sample.dts + track.offset;
        if kind == TrackKind::Audio && !session_start {
            // AAC frames are a fixed number of samples; container timestamps
            // (FLV's milliseconds) jitter around that clock. Snap to it while
            // within half a frame, so audio segments tile without overlaps.
            let frame = i64::from(if sample.duration > 0 {
                sample.duration
            } else {
                track.last_duration.max(1024)
            });
            if (dts - track.end).abs() <= frame / 2 {
                dts = track.end;
            }
        }
        if session_start && dts < track.end {
            // Overlaps what the previous session already delivered.
            self.late_frames += 1;
            tl.metrics.late_frames.inc();
            return Ok(());
        }
        track.last_input_dts = Some(sample.dts);
        if kind == TrackKind::Video && track.pending.is_empty() && !sample.keyframe {
            // A segment must start with an IDR.
            self.dropped_frames += 1;
            tl.metrics.dropped_frames.inc();
            return Ok(());
        }

        let target = cfg.target_duration.as_secs_f64();
        let pending_span = |t: &Track| {
            t.pending
                .first()
                .map_or(0.0, |f| (dts - f.dts) as f64 / second as f64)
        };
        let span = pending_span(self.track(kind));
        let boundary = rescale(dts, timescale, VIDEO_TIMESCALE);
        let audio_only = self.video.init.is_none();
        let cut = match kind {
            TrackKind::Video => (sample.keyframe && span >= target) || span >= target * 5.0,
            TrackKind::Audio => (audio_only && span >= target) || span >= target * 5.0,
        };
        if cut {
            self.cut(Some(boundary), now, cfg, tl);
        } else if let Some(part_target) = self.part_target {
            // Parts end before the sample that would take them past the
            // target: a part may not be longer (RFC 8216bis §4.4.4.9). The
            // track segments are cut by (video, or audio when alone) drives
            // the parts of both.
            let track = self.track(kind);
            let drives = kind == TrackKind::Video || audio_only;
            if let Some(first) = track.pending.get(track.parted).filter(|_| drives) {
                let next = i64::from(if sample.duration > 0 {
                    sample.duration
                } else {
                    track.last_duration
                });
                let margin = if kind == TrackKind::Video && self.audio.init.is_some() {
                    AUDIO_FRAME_MARGIN
                } else {
                    0.0
                };
                let would_be = (dts + next - first.dts) as f64 / second as f64;
                if would_be > part_target - margin {
                    self.cut_parts(Some(boundary));
                    tl.bump(now);
                }
            }
        }

        let track = self.track_mut(kind);
        if let Some(prev) = track.pending.last_mut() {
            if let Ok(d) = u32::try_from(dts - prev.dts) {
                prev.duration = d;
                track.last_duration = d;
            }
        }
        let duration = if sample.duration > 0 {
            sample.duration
        } else {
            track.last_duration
        };
        track.end = dts + i64::from(duration);
        tl.output_edge = tl
            .output_edge
            .max(rescale(track.end, timescale, VIDEO_TIMESCALE));
        track.pending.push(Sample { dts, ..sample });
        let estimate = epoch::estimate(now, rescale(dts, timescale, VIDEO_TIMESCALE));
        if self.open_estimate.is_none_or(|e| estimate < e) {
            self.open_estimate = Some(estimate);
        }
        if !tl.frozen {
            tl.observe(now, rescale(dts, timescale, VIDEO_TIMESCALE));
        }
        // Numbers count from where the first segment starts: its first
        // video keyframe (audio that came before it joins that segment),
        // else the first sample of an audio-only rendition. A publisher
        // that joins mid-GOP (a restarted origin's encoder output) thus
        // names the segment as the origin that saw the start.
        if !self.numbered && (kind == TrackKind::Video || self.video.init.is_none()) {
            self.number_from_epoch(rescale(dts, timescale, VIDEO_TIMESCALE), now, cfg, tl);
        }
        Ok(())
    }

    /// At the rendition's first sample (output time `at`, 90 kHz): take the
    /// channel's epoch and number segments and init headers from it, so two
    /// origins fed the same stream name them alike ([`epoch`]).
    fn number_from_epoch(
        &mut self,
        at: i64,
        now: SystemTime,
        cfg: &StoreConfig,
        tl: &mut Timeline,
    ) {
        self.numbered = true;
        if !self.segments.is_empty() || self.next_sequence != self.first_sequence {
            return;
        }
        let e = tl.epoch_for(now, at);
        self.epoch = Some(e);
        let first = epoch::first_sequence(e, at, cfg.target_duration);
        self.first_sequence = first;
        self.next_sequence = first;
        // Headers are numbered from the epoch alone, so a late joiner names
        // them as the origin that saw the start did.
        let header = epoch::first_sequence(e, 0, cfg.target_duration);
        self.numbered_from = Some((at, header));
        for track in [&mut self.video, &mut self.audio] {
            // Nothing has named a header before the first segment.
            track.init = track
                .init
                .take()
                .map(|init| Arc::new(Init::new(header, init.params.clone())));
            track.next_init_id = header + u64::from(track.init.is_some());
        }
    }

    /// The epoch the rendition's numbers follow.
    pub fn epoch(&self) -> Option<SystemTime> {
        self.epoch
    }

    /// Whether the rendition has cut a segment.
    pub fn cut_any(&self) -> bool {
        !self.segments.is_empty() || self.next_sequence != self.first_sequence
    }

    /// Re-number the rendition under `e`, a redundant peer's epoch the
    /// channel adopts before showing anything ([`epoch`]): segment, header
    /// and part numbers move by the whole seconds between the two epochs,
    /// wall-clock values by the difference; cut segments and parts are
    /// rebuilt under the new numbers (nothing of them was served).
    pub fn adopt_epoch(&mut self, e: SystemTime, cfg: &StoreConfig) {
        let (Some(old), Some((at, old_header))) = (self.epoch, self.numbered_from) else {
            // No sample yet: its first one takes the channel's epoch.
            return;
        };
        if old == e {
            return;
        }
        let header = epoch::first_sequence(e, 0, cfg.target_duration);
        let number = |n: u64| (n + header).saturating_sub(old_header);
        let moved = |t: SystemTime| epoch::moved(t, old, e);
        let init = |i: &Arc<Init>| Arc::new(Init::new(number(i.id), i.params.clone()));
        self.epoch = Some(e);
        self.numbered_from = Some((at, header));
        self.first_sequence = number(self.first_sequence);
        self.next_sequence = number(self.next_sequence);
        self.segments = self
            .segments
            .iter()
            .map(|s| Arc::new(s.renumbered(number(s.sequence), moved, init)))
            .collect();
        for track in [&mut self.video, &mut self.audio] {
            track.init = track.init.as_ref().map(init);
            track.next_init_id = number(track.next_init_id);
            track.parts = track
                .parts
                .iter()
                .map(|p| Arc::new(p.renumbered(number(p.sequence), init(&p.track.init))))
                .collect();
        }
    }

    /// The offset for a session whose first sample is at `first` (input,
    /// 90 kHz): the channel's shared one when it lands near the channel's
    /// edge without going back on this rendition, else one that continues
    /// from the edge. The channel's very first session keeps the
    /// publisher's timestamps as they are (offset 0): a redundant origin
    /// that joins the same encoder later then lands on the same media times
    /// ([`epoch`]).
    fn session_offset_for(&self, first: i64, tl: &mut Timeline) -> i64 {
        const SLACK: i64 = 5 * VIDEO_TIMESCALE as i64;
        let own_end = self.end_90k();
        if tl.shared_offset.is_none() && own_end == 0 && tl.output_edge == 0 && first >= 0 {
            tl.shared_offset = Some(0);
            return 0;
        }
        let fits = |offset: &i64| {
            let at = first + offset;
            at >= own_end && (tl.output_edge - SLACK..=tl.output_edge + SLACK).contains(&at)
        };
        let offset = tl
            .shared_offset
            .filter(fits)
            .unwrap_or_else(|| own_end.max(tl.output_edge) - first);
        tl.shared_offset = Some(offset);
        offset
    }

    /// Close the open segment at `boundary` (90 kHz, exclusive), or with
    /// everything pending when `None`.
    pub fn cut(
        &mut self,
        boundary: Option<i64>,
        now: SystemTime,
        cfg: &StoreConfig,
        tl: &mut Timeline,
    ) {
        if self.part_target.is_some() {
            // The segment's last parts: what it holds past the parts so far.
            self.cut_parts(boundary);
        }
        let mut video = take_track(&mut self.video, boundary);
        let mut audio = take_track(&mut self.audio, boundary);
        let keep_from = self.next_sequence.saturating_sub(PART_SEGMENTS - 1);
        for track in [&mut self.video, &mut self.audio] {
            track.next_part = 0;
            while track.parts.front().is_some_and(|p| p.sequence < keep_from) {
                track.parts.pop_front();
            }
        }
        if video.is_none() && audio.is_none() {
            return;
        }
        let start_90k = video
            .as_ref()
            .or(audio.as_ref())
            .map(|(t, s)| rescale(*s, t.init.params.timescale(), VIDEO_TIMESCALE))
            .unwrap_or(0);
        let duration = video.as_ref().or(audio.as_ref()).map_or(0.0, |(t, _)| {
            t.duration as f64 / f64::from(t.init.params.timescale())
        });

        // Program-date-time is the epoch plus media time, so it agrees with
        // EXTINF and with a redundant origin; a new epoch only when arrival
        // and media drifted apart (a publisher's absence, a fast encoder).
        let arrived = self
            .open_estimate
            .take()
            .map_or(now, |e| epoch::wall_at(e, start_90k));
        let discontinuity = std::mem::take(&mut self.pending_discontinuity);
        let e = match self.epoch {
            Some(e) if tl.from_peer && !self.cut_any() => e,
            Some(e) if !epoch::drifted(arrived, epoch::wall_at(e, start_90k)) => e,
            Some(_) if !tl.published && !discontinuity => {
                // Nothing shown yet and the same session (a start-up burst
                // longer than a segment; a publisher's return is a
                // discontinuity, dated anew from there on): move what was
                // cut to the new epoch rather than date this segment back
                // past the last one; the store moves the channel's other
                // renditions after this sample.
                let e = epoch::derive(arrived, start_90k);
                tl.move_epoch(e);
                self.adopt_epoch(e, cfg);
                // This segment's tracks follow the re-numbered headers.
                for (taken, track) in [(&mut video, &self.video), (&mut audio, &self.audio)] {
                    if let (Some((t, _)), Some(init)) = (taken.as_mut(), &track.init) {
                        *t = t.under(init.clone());
                    }
                }
                e
            }
            _ => tl.epoch_for(arrived, start_90k),
        };
        self.epoch = Some(e);
        let pdt = epoch::wall_at(e, start_90k);

        if discontinuity {
            if self.period == tl.period {
                tl.period += 1;
            }
            self.period = tl.period;
        }
        // Every rendition in a Period maps output time to presentation time
        // the same way, so the Period's Representations stay aligned.
        // The first Period starts at output time 0 under the epoch, so an
        // origin joining late writes the same Period as one that saw the
        // start; later ones open at their first segment.
        let (period_start, period_media) =
            *tl.period_starts
                .entry(self.period)
                .or_insert(if self.period == 0 {
                    (epoch::wall_at(e, 0), 0)
                } else {
                    (pdt, start_90k)
                });
        let finish = |taken: Option<(TrackSegment, i64)>| {
            taken.map(|(mut seg, _)| {
                let pto = rescale(period_media, VIDEO_TIMESCALE, seg.init.params.timescale());
                seg.period_offset = u64::try_from(pto).unwrap_or(0);
                seg
            })
        };
        let video = finish(video);
        let audio = finish(audio);

        tl.metrics.segments.inc();
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        self.max_segment = self.max_segment.max(duration);
        let parts_of = |t: &Track| -> Vec<Arc<Part>> {
            t.parts
                .iter()
                .filter(|p| p.sequence == sequence)
                .cloned()
                .collect()
        };
        let (video_parts, audio_parts) = (parts_of(&self.video), parts_of(&self.audio));
        let mut segment = Segment::new(
            sequence,
            discontinuity,
            self.period,
            period_start,
            pdt,
            duration,
            video,
            audio,
        )
        .with_parts(video_parts, audio_parts);
        self.ts_continuity = segment.chain_ts_continuity(self.ts_continuity);
        self.segments.push_back(Arc::new(segment));
        self.trim(cfg.dvr_window.as_secs_f64());
        tl.frozen = true;
        tl.bump(now);
    }

    /// Keep at most `depth` seconds of segments (RFC 8216bis §6.2.2: a
    /// removed discontinuity bumps the discontinuity sequence).
    fn trim(&mut self, depth: f64) {
        let mut total: f64 = self.segments.iter().map(|s| s.duration).sum();
        while let Some(front) = self.segments.front() {
            if self.segments.len() <= 1 || total - front.duration < depth {
                break;
            }
            total -= front.duration;
            if front.discontinuity {
                self.discontinuity_sequence += 1;
            }
            self.segments.pop_front();
        }
    }
}

impl Rendition {
    /// Close a part of the open segment on each track: its pending samples
    /// not yet in a part, up to `boundary` (90 kHz, exclusive; `None`: all).
    fn cut_parts(&mut self, boundary: Option<i64>) {
        let sequence = self.next_sequence;
        for kind in [TrackKind::Video, TrackKind::Audio] {
            let track = self.track_mut(kind);
            let Some(init) = track.init.clone() else {
                continue;
            };
            let split = split_at(track, boundary);
            if split <= track.parted {
                continue;
            }
            let mut samples = track.pending[track.parted..split].to_vec();
            let next_dts = next_dts(track, split, boundary);
            close_last_sample(&mut samples, next_dts, track.last_duration, kind);
            let duration: u64 = samples.iter().map(|s| u64::from(s.duration)).sum();
            let part = Part::new(
                sequence,
                track.next_part,
                kind,
                TrackSegment {
                    init,
                    base_decode_time: u64::try_from(samples[0].dts).unwrap_or(0),
                    duration,
                    period_offset: 0,
                    bytes: samples.iter().map(|s| s.data.len()).sum(),
                    samples,
                },
            );
            track.next_part += 1;
            track.parted = split;
            track.parts.push_back(Arc::new(part));
        }
    }
}

/// Where `boundary` (90 kHz, exclusive) splits a track's pending samples.
fn split_at(track: &Track, boundary: Option<i64>) -> usize {
    let timescale = track.timescale().unwrap_or(VIDEO_TIMESCALE);
    match boundary {
        Some(b) => track
            .pending
            .iter()
            .position(|s| rescale(s.dts, timescale, VIDEO_TIMESCALE) >= b)
            .unwrap_or(track.pending.len()),
        None => track.pending.len(),
    }
}

/// Decode time of what follows a split of the pending samples at `split`:
/// the next sample's, else (video) the boundary, which the cutting sample
/// starts at.
fn next_dts(track: &Track, split: usize, boundary: Option<i64>) -> Option<i64> {
    let init = track.init.as_ref()?;
    track.pending.get(split).map(|s| s.dts).or_else(|| {
        boundary
            .filter(|_| init.params.kind() == TrackKind::Video)
            .map(|b| rescale(b, VIDEO_TIMESCALE, init.params.timescale()))
    })
}

/// Give the last of `samples` its duration: up to the next sample's decode
/// time when known, else its own, the track's last or a typical one.
fn close_last_sample(samples: &mut [Sample], next_dts: Option<i64>, last: u32, kind: TrackKind) {
    let typical = match kind {
        TrackKind::Video => 3600,
        TrackKind::Audio => 1024,
    };
    if let Some(s) = samples.last_mut() {
        s.duration = next_dts
            .and_then(|n| u32::try_from(n - s.dts).ok())
            .filter(|d| *d > 0)
            .unwrap_or(if s.duration > 0 {
                s.duration
            } else if last > 0 {
                last
            } else {
                typical
            });
    }
}

/// Take a track's pending samples before `boundary` as a segment part;
/// returns it with its first decode time.
fn take_track(track: &mut Track, boundary: Option<i64>) -> Option<(TrackSegment, i64)> {
    let init = track.init.clone()?;
    let split = split_at(track, boundary);
    if split == 0 {
        return None;
    }
    let next_dts = next_dts(track, split, boundary);
    let rest = track.pending.split_off(split);
    let mut samples = std::mem::replace(&mut track.pending, rest);
    track.parted = track.parted.saturating_sub(split);
    close_last_sample(
        &mut samples,
        next_dts,
        track.last_duration,
        init.params.kind(),
    );
    let first = samples[0].dts;
    let duration: u64 = samples.iter().map(|s| u64::from(s.duration)).sum();
    let bytes = samples.iter().map(|s| s.data.len()).sum();
    if let Some(last) = samples.last() {
        track.end = track.end.max(last.dts + i64::from(last.duration));
    }
    Some((
        TrackSegment {
            init,
            base_decode_time: u64::try_from(first).unwrap_or(0),
            duration,
            period_offset: 0,
            samples,
            bytes,
        },
        first,
    ))
}
