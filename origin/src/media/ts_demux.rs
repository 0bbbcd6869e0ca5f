//! MPEG-TS (ISO/IEC 13818-1) → parameters and samples, for SRT ingest.
//!
//! Handles what live encoders send: one program, H.264 (stream type 0x1b)
//! and AAC in ADTS (0x0f). Sections must fit one packet (they do for a PAT
//! and a two-stream PMT). Lost sync is regained by scanning for two sync
//! bytes 188 apart; a continuity gap drops the PES it falls in.
//!
//! A PES that declares no length (video may) ends only at the next PES start
//! on its PID, so an open PES is bounded here: past [`MAX_PES_BYTES`], or
//! open longer than [`MAX_PES_AGE`] of wall time (a publisher trickling one
//! packet of it now and then), it is dropped and counted.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::flv::{AudioClock, VideoClock};
use super::{aac, h264, AudioParams, MediaError, MediaEvent, Sample, TrackKind, TrackParams};
use super::{VideoParams, VIDEO_TIMESCALE};

const PACKET: usize = 188;
const SYNC: u8 = 0x47;
const PAT_PID: u16 = 0;
/// 33-bit PTS/DTS (ISO/IEC 13818-1 §2.4.3.7).
const PTS_MODULO: i64 = 1 << 33;
/// Largest PES kept: a 4K H.264 keyframe at 50 Mbit/s is about 2 MB.
pub const MAX_PES_BYTES: usize = 8 << 20;
/// Longest a PES may stay open; live encoders finish one per frame.
pub const MAX_PES_AGE: Duration = Duration::from_secs(5);

/// Counters for what the demuxer had to skip.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TsStats {
    /// Times sync was lost and regained.
    pub resyncs: u64,
    /// Continuity counter gaps (lost packets).
    pub discontinuities: u64,
    /// Access units or frames dropped: corrupt, untimed, before parameters,
    /// or over [`MAX_PES_BYTES`] / [`MAX_PES_AGE`].
    pub dropped_frames: u64,
    /// Of those, PES dropped for their size or age.
    pub oversized_pes: u64,
    /// Samples re-timed because their timestamps went backwards (late).
    pub late_frames: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EsKind {
    H264,
    Aac,
}

#[derive(Debug)]
struct Pes {
    data: Vec<u8>,
    /// PES_packet_length + 6, when the header gave one (0 = unbounded video).
    expected: Option<usize>,
    corrupt: bool,
    /// Wall time of its first packet.
    opened: Instant,
}

#[derive(Debug)]
struct Elementary {
    kind: EsKind,
    pes: Option<Pes>,
}

/// Extends 33-bit timestamps to i64 across wraps (every ~26.5 hours).
#[derive(Debug, Default)]
struct PtsUnwrap {
    last: Option<i64>,
}

impl PtsUnwrap {
    fn unwrap(&mut self, ts: u64) -> i64 {
        let ts = ts as i64 & (PTS_MODULO - 1);
        let v = match self.last {
            None => ts,
            Some(last) => {
                let mut delta = (ts - last).rem_euclid(PTS_MODULO);
                if delta >= PTS_MODULO / 2 {
                    delta -= PTS_MODULO;
                }
                last + delta
            }
        };
        self.last = Some(v);
        v
    }
}

#[derive(Debug, Default)]
struct VideoTrack {
    sps: Option<Bytes>,
    pps: Option<Bytes>,
    params: Option<VideoParams>,
    unwrap: PtsUnwrap,
    clock: VideoClock,
}

#[derive(Debug, Default)]
struct AudioTrack {
    params: Option<AudioParams>,
    unwrap: PtsUnwrap,
    clock: AudioClock,
}

/// A push-style MPEG-TS demuxer: feed it bytes in any chunking.
#[derive(Debug)]
pub struct TsDemuxer {
    /// Arrival time of the bytes being demuxed.
    now: Instant,
    pending: Vec<u8>,
    pmt_pid: Option<u16>,
    streams: HashMap<u16, Elementary>,
    continuity: HashMap<u16, u8>,
    video: VideoTrack,
    audio: AudioTrack,
    stats: TsStats,
}

fn stream_type_name(t: u8) -> Option<&'static str> {
    Some(match t {
        0x01 => "MPEG-1 video",
        0x02 => "MPEG-2 video",
        0x03 => "MPEG-1 audio (MP2/MP3)",
        0x04 => "MPEG-2 audio (MP2/MP3)",
        0x10 => "MPEG-4 part 2 video",
        0x11 => "AAC in LATM",
        0x24 => "HEVC",
        0x81 => "AC-3",
        0x87 => "E-AC-3",
        _ => return None,
    })
}

impl Default for TsDemuxer {
    fn default() -> Self {
        Self {
            now: Instant::now(),
            pending: Vec::new(),
            pmt_pid: None,
            streams: HashMap::new(),
            continuity: HashMap::new(),
            video: VideoTrack::default(),
            audio: AudioTrack::default(),
            stats: TsStats::default(),
        }
    }
}

impl TsDemuxer {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn stats(&self) -> TsStats {
        TsStats {
            late_frames: self.video.clock.retimed() + self.audio.clock.retimed(),
            ..self.stats
        }
    }

    /// Feeds bytes; returns what completed. Fails only on unsupported codecs.
    pub fn push(&mut self, data: &[u8]) -> Result<Vec<MediaEvent>, MediaError> {
        self.push_at(data, Instant::now())
    }

    /// [`push`](Self::push) with bytes that arrived at `now`.
    pub fn push_at(&mut self, data: &[u8], now: Instant) -> Result<Vec<MediaEvent>, MediaError> {
        self.now = now;
        self.pending.extend_from_slice(data);
        let mut events = Vec::new();
        let mut pos = 0;
        let mut result = Ok(());
        while self.pending.len() - pos >= PACKET {
            if self.pending[pos] != SYNC {
                match self.find_sync(pos) {
                    Some(p) => pos = p,
                    None => {
                        // Keep a tail that may hold the start of the next packet.
                        pos = self.pending.len() - (PACKET - 1).min(self.pending.len() - pos);
                        break;
                    }
                }
                self.stats.resyncs += 1;
                continue;
            }
            let mut packet = [0u8; PACKET];
            packet.copy_from_slice(&self.pending[pos..pos + PACKET]);
            pos += PACKET;
            if let Err(e) = self.packet(&packet, &mut events) {
                result = Err(e);
                break;
            }
        }
        self.pending.drain(..pos);
        result.map(|()| events)
    }

    /// Completes the PES packets still open (end of stream).
    pub fn flush(&mut self) -> Vec<MediaEvent> {
        let mut events = Vec::new();
        let pids: Vec<u16> = self.streams.keys().copied().collect();
        for pid in pids {
            self.finish_pes(pid, &mut events);
        }
        events
    }

    /// Next offset after `from` where a sync byte is followed by another one
    /// a packet later (or by the end of what we have).
    fn find_sync(&self, from: usize) -> Option<usize> {
        let buf = &self.pending;
        (from + 1..buf.len())
            .find(|&i| buf[i] == SYNC && buf.get(i + PACKET).is_none_or(|&b| b == SYNC))
    }

    fn packet(&mut self, p: &[u8; PACKET], events: &mut Vec<MediaEvent>) -> Result<(), MediaError> {
        if p[1] & 0x80 != 0 {
            // transport_error_indicator: the network already told us it is broken.
            return Ok(());
        }
        let pusi = p[1] & 0x40 != 0;
        let pid = u16::from(p[1] & 0x1f) << 8 | u16::from(p[2]);
        let afc = (p[3] >> 4) & 3;
        let cc = p[3] & 0x0f;
        let mut start = 4;
        if afc & 2 != 0 {
            let af_len = usize::from(p[4]);
            if af_len > 0 && p[5] & 0x80 != 0 {
                // discontinuity_indicator: the counter may restart.
                self.continuity.remove(&pid);
            }
            start = 5 + af_len;
        }
        if afc & 1 == 0 || start >= PACKET {
            return Ok(());
        }
        let payload = &p[start..];
        if let Some(last) = self.continuity.insert(pid, cc) {
            if cc == last {
                return Ok(()); // duplicate packet (§2.4.3.3)
            }
            if cc != (last + 1) & 0x0f {
                self.stats.discontinuities += 1;
                if let Some(pes) = self.streams.get_mut(&pid).and_then(|s| s.pes.as_mut()) {
                    pes.corrupt = true;
                }
            }
        }
        if pid == PAT_PID {
            if pusi {
                self.pat(payload);
            }
            return Ok(());
        }
        if Some(pid) == self.pmt_pid {
            return if pusi { self.pmt(payload) } else { Ok(()) };
        }
        if !self.streams.contains_key(&pid) {
            return Ok(());
        }
        if pusi {
            self.finish_pes(pid, events);
            let expected = payload
                .get(4..6)
                .map(|l| usize::from(u16::from_be_bytes([l[0], l[1]])))
                .filter(|&l| l > 0)
                .map(|l| l + 6);
            if let Some(s) = self.streams.get_mut(&pid) {
                s.pes = Some(Pes {
                    data: payload.to_vec(),
                    expected,
                    corrupt: false,
                    opened: self.now,
                });
            }
        } else if let Some(pes) = self.streams.get_mut(&pid).and_then(|s| s.pes.as_mut()) {
            let too_big = pes.data.len() + payload.len() > MAX_PES_BYTES;
            let too_old = self.now.saturating_duration_since(pes.opened) > MAX_PES_AGE;
            if too_big || too_old {
                // Dropped now; what follows up to the next PES start is ignored.
                if let Some(s) = self.streams.get_mut(&pid) {
                    s.pes = None;
                }
                self.stats.dropped_frames += 1;
                self.stats.oversized_pes += 1;
                return Ok(());
            }
            pes.data.extend_from_slice(payload);
        }
        let complete = self
            .streams
            .get(&pid)
            .and_then(|s| s.pes.as_ref())
            .is_some_and(|pes| pes.expected.is_some_and(|e| pes.data.len() >= e));
        if complete {
            self.finish_pes(pid, events);
        }
        Ok(())
    }

    /// The section a PSI payload starts, after its pointer_field.
    fn section(payload: &[u8]) -> Option<&[u8]> {
        let pointer = usize::from(*payload.first()?);
        let s = payload.get(1 + pointer..)?;
        let len = usize::from(u16::from_be_bytes([*s.get(1)?, *s.get(2)?]) & 0x0fff);
        // Without the CRC_32 (not checked: TS over SRT is already checksummed).
        s.get(..(3 + len).checked_sub(4)?)
    }

    /// program_association_section (§2.4.4.3): take the first program.
    fn pat(&mut self, payload: &[u8]) {
        let Some(s) = Self::section(payload) else {
            return;
        };
        if s.first() != Some(&0x00) {
            return;
        }
        for entry in s.get(8..).unwrap_or_default().chunks_exact(4) {
            let program = u16::from_be_bytes([entry[0], entry[1]]);
            if program != 0 {
                self.pmt_pid = Some(u16::from(entry[2] & 0x1f) << 8 | u16::from(entry[3]));
                return;
            }
        }
    }

    /// TS_program_map_section (§2.4.4.8).
    fn pmt(&mut self, payload: &[u8]) -> Result<(), MediaError> {
        let Some(s) = Self::section(payload) else {
            return Ok(());
        };
        if s.first() != Some(&0x02) || s.len() < 12 {
            return Ok(());
        }
        let program_info = usize::from(u16::from_be_bytes([s[10], s[11]]) & 0x0fff);
        let mut i = 12 + program_info;
        while i + 5 <= s.len() {
            let stream_type = s[i];
            let pid = u16::from(s[i + 1] & 0x1f) << 8 | u16::from(s[i + 2]);
            let es_info = usize::from(u16::from_be_bytes([s[i + 3], s[i + 4]]) & 0x0fff);
            i += 5 + es_info;
            let kind = match stream_type {
                0x1b => EsKind::H264,
                0x0f => EsKind::Aac,
                t => match stream_type_name(t) {
                    Some(name) => {
                        return Err(MediaError::UnsupportedCodec(format!(
                            "MPEG-TS stream type {t:#04x} ({name}) on PID {pid}"
                        )))
                    }
                    None => continue, // data, subtitles, SCTE-35: not ours
                },
            };
            if self.streams.get(&pid).map(|s| s.kind) != Some(kind) {
                self.streams.insert(pid, Elementary { kind, pes: None });
            }
        }
        Ok(())
    }

    fn finish_pes(&mut self, pid: u16, events: &mut Vec<MediaEvent>) {
        let Some(stream) = self.streams.get_mut(&pid) else {
            return;
        };
        let kind = stream.kind;
        let Some(pes) = stream.pes.take() else {
            return;
        };
        if pes.corrupt {
            self.stats.dropped_frames += 1;
            return;
        }
        let Some((pts, dts, data)) = parse_pes(&pes.data) else {
            self.stats.dropped_frames += 1;
            return;
        };
        match kind {
            EsKind::H264 => self.video_au(pts, dts, data, events),
            EsKind::Aac => self.audio_frames(pts, data, events),
        }
    }

    fn video_au(&mut self, pts: u64, dts: Option<u64>, data: &[u8], events: &mut Vec<MediaEvent>) {
        let nals = h264::annexb_nals(data);
        let mut picture = Vec::with_capacity(nals.len());
        let v = &mut self.video;
        let mut changed = false;
        for nal in nals {
            match h264::nal_unit_type(nal) {
                Some(h264::nal_type::SPS) => {
                    changed |= v.sps.as_deref() != Some(nal);
                    v.sps = Some(Bytes::copy_from_slice(nal));
                }
                Some(h264::nal_type::PPS) => {
                    changed |= v.pps.as_deref() != Some(nal);
                    v.pps = Some(Bytes::copy_from_slice(nal));
                }
                // Access unit delimiters and filler data carry nothing for MP4.
                Some(h264::nal_type::AUD | 12) => {}
                _ => picture.push(nal),
            }
        }
        if changed {
            if let (Some(sps), Some(pps)) = (&v.sps, &v.pps) {
                if let Ok(params) = h264::video_params(vec![sps.clone()], vec![pps.clone()]) {
                    if v.params.as_ref() != Some(&params) {
                        v.params = Some(params.clone());
                        events.push(MediaEvent::Params(TrackParams::Video(params)));
                    }
                }
            }
        }
        if picture.is_empty() {
            return;
        }
        if v.params.is_none() {
            self.stats.dropped_frames += 1;
            return;
        }
        let dts_raw = dts.unwrap_or(pts);
        let dts = v.unwrap.unwrap(dts_raw);
        let mut cts = (pts as i64 - dts_raw as i64).rem_euclid(PTS_MODULO);
        if cts >= PTS_MODULO / 2 {
            cts -= PTS_MODULO;
        }
        let dts = v.clock.next(dts);
        events.push(MediaEvent::Sample(
            TrackKind::Video,
            Sample {
                dts,
                cts: cts.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32,
                duration: 0,
                keyframe: h264::contains_idr(picture.iter().copied()),
                data: h264::avcc_from_nals(picture),
            },
        ));
    }

    fn audio_frames(&mut self, pts: u64, data: &[u8], events: &mut Vec<MediaEvent>) {
        let a = &mut self.audio;
        let pts = a.unwrap.unwrap(pts);
        let mut pos = 0;
        let mut index = 0i64;
        while pos < data.len() {
            let header = match aac::parse_adts(&data[pos..]) {
                Ok(h) if h.raw_blocks == 1 && pos + h.frame_length <= data.len() => h,
                _ => {
                    // Unusable from here on: no frame boundary to trust.
                    self.stats.dropped_frames += 1;
                    return;
                }
            };
            let frame = &data[pos + header.header_length..pos + header.frame_length];
            pos += header.frame_length;
            let params = AudioParams {
                codec: format!("mp4a.40.{}", header.object_type),
                sample_rate: header.sample_rate,
                channels: aac::AudioSpecificConfig {
                    object_type: header.object_type,
                    sample_rate: header.sample_rate,
                    channel_config: header.channel_config,
                }
                .channels(),
                asc: header.asc(),
            };
            if a.params.as_ref() != Some(&params) {
                a.params = Some(params.clone());
                events.push(MediaEvent::Params(TrackParams::Audio(params)));
            }
            let rate = i64::from(header.sample_rate);
            let target = (pts * rate + i64::from(VIDEO_TIMESCALE) / 2)
                .div_euclid(i64::from(VIDEO_TIMESCALE))
                + index * i64::from(aac::SAMPLES_PER_FRAME);
            index += 1;
            events.push(MediaEvent::Sample(
                TrackKind::Audio,
                Sample {
                    dts: a.clock.next(target),
                    cts: 0,
                    duration: aac::SAMPLES_PER_FRAME,
                    keyframe: true,
                    data: Bytes::copy_from_slice(frame),
                },
            ));
        }
    }
}

/// PES header (§2.4.3.6) → (PTS, DTS, payload); `None` when malformed or untimed.
fn parse_pes(p: &[u8]) -> Option<(u64, Option<u64>, &[u8])> {
    if p.get(..3)? != [0, 0, 1] {
        return None;
    }
    let flags = *p.get(7)? >> 6;
    let header_len = usize::from(*p.get(8)?);
    let payload = p.get(9 + header_len..)?;
    let end = match usize::from(u16::from_be_bytes([p[4], p[5]])) {
        0 => payload.len(),
        n => (n + 6).checked_sub(9 + header_len)?.min(payload.len()),
    };
    let ts = |b: &[u8]| -> u64 {
        (u64::from(b[0] >> 1) & 7) << 30
            | u64::from(b[1]) << 22
            | u64::from(b[2] >> 1) << 15
            | u64::from(b[3]) << 7
            | u64::from(b[4] >> 1)
    };
    let pts = match flags {
        2 | 3 => ts(p.get(9..14)?),
        _ => return None,
    };
    let dts = if flags == 3 {
        Some(ts(p.get(14..19)?))
    } else {
        None
    };
    Some((pts, dts, &payload[..end]))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIP: &[u8] = include_bytes!("../../tests/fixtures/h264_aac_1s.ts");
    const HEVC: &[u8] = include_bytes!("../../tests/fixtures/hevc.ts");

    fn demux_all(chunks: impl Iterator<Item = Vec<u8>>) -> (Vec<MediaEvent>, TsStats) {
        let mut d = TsDemuxer::new();
        let mut events = Vec::new();
        for c in chunks {
            events.extend(d.push(&c).expect("supported codecs"));
        }
        events.extend(d.flush());
        (events, d.stats())
    }

    fn samples(events: &[MediaEvent], kind: TrackKind) -> Vec<&Sample> {
        events
            .iter()
            .filter_map(|e| match e {
                MediaEvent::Sample(k, s) if *k == kind => Some(s),
                _ => None,
            })
            .collect()
    }

    /// One TS packet on `pid` carrying `payload` padded with 0xff.
    fn ts_packet(pid: u16, pusi: bool, cc: u8, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![
            SYNC,
            (pid >> 8) as u8 | if pusi { 0x40 } else { 0 },
            pid as u8,
            0x10 | (cc & 0x0f),
        ];
        p.extend_from_slice(payload);
        p.resize(PACKET, 0xff);
        p
    }

    /// A demuxer that has seen the clip's PAT and PMT, and its video PID.
    fn demuxer_with_program() -> (TsDemuxer, u16) {
        let mut d = TsDemuxer::new();
        for packet in CLIP.chunks(PACKET) {
            d.push(packet).expect("supported");
            if let Some((&pid, _)) = d.streams.iter().find(|(_, s)| s.kind == EsKind::H264) {
                return (d, pid);
            }
        }
        panic!("the clip has no H.264 stream")
    }

    /// A video PES start with PES_packet_length 0 (unbounded).
    const UNBOUNDED_PES: [u8; 14] = [0, 0, 1, 0xe0, 0, 0, 0x80, 0x80, 5, 0x21, 0, 1, 0, 1];

    #[test]
    fn an_unbounded_pes_is_bounded_by_bytes() {
        let (mut d, pid) = demuxer_with_program();
        let t0 = Instant::now();
        let mut cc = 0u8;
        let mut next_cc = || {
            cc = cc.wrapping_add(1);
            cc
        };
        d.push_at(&ts_packet(pid, true, next_cc(), &UNBOUNDED_PES), t0)
            .expect("ok");
        for _ in 0..MAX_PES_BYTES / 184 + 10 {
            d.push_at(&ts_packet(pid, false, next_cc(), &[]), t0)
                .expect("ok");
            let held = d.streams[&pid].pes.as_ref().map_or(0, |p| p.data.len());
            assert!(held <= MAX_PES_BYTES, "{held} bytes held");
        }
        assert_eq!(d.stats().oversized_pes, 1);
        assert!(d.streams[&pid].pes.is_none(), "the rest of it is ignored");
        // The next PES starts afresh.
        d.push_at(&ts_packet(pid, true, next_cc(), &UNBOUNDED_PES), t0)
            .expect("ok");
        assert_eq!(
            d.streams[&pid].pes.as_ref().map(|p| p.data.len()),
            Some(184)
        );
    }

    #[test]
    fn an_unbounded_pes_is_bounded_by_wall_time() {
        let (mut d, pid) = demuxer_with_program();
        let t0 = Instant::now();
        d.push_at(&ts_packet(pid, true, 1, &UNBOUNDED_PES), t0)
            .expect("ok");
        d.push_at(&ts_packet(pid, false, 2, &[]), t0 + Duration::from_secs(1))
            .expect("ok");
        assert_eq!(
            d.streams[&pid].pes.as_ref().map(|p| p.data.len()),
            Some(368)
        );
        // One packet of it every few seconds: dropped once it is too old.
        d.push_at(
            &ts_packet(pid, false, 3, &[]),
            t0 + MAX_PES_AGE + Duration::from_secs(1),
        )
        .expect("ok");
        assert!(d.streams[&pid].pes.is_none());
        assert_eq!(d.stats().oversized_pes, 1);
    }

    #[test]
    fn demuxes_ffmpeg_h264_aac() {
        let (events, stats) = demux_all(CLIP.chunks(1316).map(<[u8]>::to_vec));
        assert_eq!(stats, TsStats::default());
        let MediaEvent::Params(TrackParams::Video(v)) = &events[0] else {
            panic!("video params first: {:?}", events[0])
        };
        assert_eq!(
            (v.codec.as_str(), v.width, v.height),
            ("avc1.64000b", 160, 120)
        );
        let audio_params = events.iter().find_map(|e| match e {
            MediaEvent::Params(TrackParams::Audio(a)) => Some(a),
            _ => None,
        });
        let a = audio_params.expect("audio params");
        assert_eq!(
            (a.codec.as_str(), a.sample_rate, a.channels),
            ("mp4a.40.2", 48000, 2)
        );
        let video = samples(&events, TrackKind::Video);
        assert_eq!(video.len(), 25);
        assert!(video[0].keyframe && video.iter().filter(|s| s.keyframe).count() == 1);
        let mut pts: Vec<i64> = video.iter().map(|s| s.pts()).collect();
        pts.sort_unstable();
        assert!(pts.windows(2).all(|w| w[1] - w[0] == 3600));
        // In-band SPS/PPS/AUD are lifted out of the samples.
        for s in &video {
            let nals = h264::avcc_nals(&s.data, 4).expect("AVCC");
            assert!(nals
                .iter()
                .all(|n| !matches!(h264::nal_unit_type(n), Some(7..=9))));
        }
        let audio = samples(&events, TrackKind::Audio);
        assert!(audio.len() >= 47, "{} AAC frames", audio.len());
        assert!(audio.windows(2).all(|w| w[1].dts - w[0].dts == 1024));
    }

    #[test]
    fn byte_at_a_time_gives_the_same_result() {
        let (whole, _) = demux_all(std::iter::once(CLIP.to_vec()));
        let (bytes, _) = demux_all(CLIP.iter().map(|&b| vec![b]));
        assert_eq!(whole, bytes);
    }

    #[test]
    fn resyncs_after_garbage_and_survives_loss() {
        let mut input = b"garbage before the stream \x47\x47".to_vec();
        input.extend_from_slice(&CLIP[..PACKET * 40]);
        input.extend_from_slice(&[0x47, 1, 2, 3, 0x47]);
        // Lose a packet in the middle.
        input.extend_from_slice(&CLIP[PACKET * 41..]);
        let (events, stats) = demux_all(std::iter::once(input));
        assert!(stats.resyncs >= 2, "{stats:?}");
        assert!(
            stats.discontinuities >= 1 || stats.dropped_frames >= 1,
            "{stats:?}"
        );
        assert!(samples(&events, TrackKind::Video).len() >= 20);
    }

    #[test]
    fn refuses_hevc() {
        let mut d = TsDemuxer::new();
        assert!(matches!(d.push(HEVC), Err(MediaError::UnsupportedCodec(m)) if m.contains("HEVC")));
    }

    #[test]
    fn truncated_and_corrupt_input_never_panics() {
        for n in (0..CLIP.len()).step_by(997) {
            let _ = demux_all(std::iter::once(CLIP[..n].to_vec()));
        }
        let mut x = 0x9e37_79b9u32;
        for round in 0..20 {
            let mut buf = CLIP.to_vec();
            for b in buf.iter_mut() {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                if x.is_multiple_of(50 + round * 50) {
                    *b = (x >> 8) as u8;
                }
            }
            let mut d = TsDemuxer::new();
            let _ = d.push(&buf);
            let _ = d.flush();
        }
        assert!(parse_pes(&[0, 0, 1, 0xe0, 0, 3, 0x80, 0x80, 5, 0x21]).is_none());
    }

    #[test]
    fn pts_unwraps_across_33_bits() {
        let mut u = PtsUnwrap::default();
        assert_eq!(u.unwrap((1 << 33) - 3600), (1 << 33) - 3600);
        assert_eq!(u.unwrap(0), 1 << 33);
        assert_eq!(u.unwrap(3600), (1 << 33) + 3600);
    }
}
