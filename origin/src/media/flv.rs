//! FLV (Adobe Flash Video File Format Specification v10.1, Annex E) tag bodies
//! → parameters and samples, plus a reader for whole FLV files.
//!
//! RTMP carries the same tag bodies as FLV files, so [`FlvDemuxer`] serves both
//! the RTMP ingest and the bundled demo clip.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::{aac, h264, MediaError, MediaEvent, Sample, TrackKind, TrackParams, VIDEO_TIMESCALE};

/// FLV `CodecID` 7 (AVC) and `SoundFormat` 10 (AAC); everything else is refused.
const CODEC_AVC: u8 = 7;
const SOUND_AAC: u8 = 10;

/// Extends 32-bit millisecond timestamps (RTMP wraps after ~49 days) to i64.
#[derive(Debug, Default)]
struct MsUnwrap {
    last: Option<u32>,
    epoch: i64,
}

impl MsUnwrap {
    fn unwrap(&mut self, ms: u32) -> i64 {
        if let Some(last) = self.last {
            let delta = ms.wrapping_sub(last) as i32;
            // A jump of more than half the range backwards is a wrap forward.
            if delta > 0 && ms < last {
                self.epoch += 1 << 32;
            } else if delta < 0 && ms > last {
                self.epoch -= 1 << 32;
            }
        }
        self.last = Some(ms);
        self.epoch + i64::from(ms)
    }
}

/// Counts AAC frames at 1024 ticks each, resynchronising to the publisher's
/// clock when the two disagree by more than one frame, and never going back.
#[derive(Debug, Default)]
pub struct AudioClock {
    last: Option<i64>,
    /// Added to the publisher's clock after it jumped backwards.
    offset: i64,
    retimed: u64,
}

impl AudioClock {
    /// Decode time of the next frame whose publisher timestamp is `target`
    /// (already in sample-rate ticks).
    pub fn next(&mut self, target: i64) -> i64 {
        let frame = i64::from(aac::SAMPLES_PER_FRAME);
        let target = target + self.offset;
        let dts = match self.last {
            None => target,
            Some(last) => {
                let counted = last + frame;
                if (counted - target).abs() <= frame {
                    counted
                } else if target > last {
                    target
                } else {
                    self.offset += counted - target;
                    self.retimed += 1;
                    counted
                }
            }
        };
        self.last = Some(dts);
        dts
    }

    /// Frames whose publisher timestamp went backwards and were re-timed.
    pub fn retimed(&self) -> u64 {
        self.retimed
    }
}

/// Keeps video decode times strictly increasing when a publisher's clock jumps back.
#[derive(Debug, Default)]
pub struct VideoClock {
    last: Option<i64>,
    last_step: i64,
    offset: i64,
    retimed: u64,
}

impl VideoClock {
    pub fn next(&mut self, target: i64) -> i64 {
        let mut dts = target + self.offset;
        if let Some(last) = self.last {
            if dts <= last {
                let step = if self.last_step > 0 {
                    self.last_step
                } else {
                    1
                };
                self.offset += last + step - dts;
                self.retimed += 1;
                dts = last + step;
            } else {
                self.last_step = dts - last;
            }
        }
        self.last = Some(dts);
        dts
    }

    /// Frames whose publisher timestamp went backwards and were re-timed.
    pub fn retimed(&self) -> u64 {
        self.retimed
    }
}

/// Turns the video and audio tag bodies of one publisher into events.
#[derive(Debug, Default)]
pub struct FlvDemuxer {
    video_ms: MsUnwrap,
    audio_ms: MsUnwrap,
    video_clock: VideoClock,
    audio_clock: AudioClock,
    /// From the AVC sequence header; `None` until one arrived.
    nal_length_size: Option<u8>,
    audio_rate: Option<u32>,
}

fn truncated(what: &'static str) -> MediaError {
    MediaError::Truncated(what)
}

impl FlvDemuxer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Samples re-timed because the publisher's clock went backwards (late).
    pub fn late_frames(&self) -> u64 {
        self.video_clock.retimed() + self.audio_clock.retimed()
    }

    /// A VIDEODATA body (FLV spec E.4.3.1) at `timestamp_ms`.
    pub fn video(
        &mut self,
        timestamp_ms: u32,
        body: &Bytes,
    ) -> Result<Vec<MediaEvent>, MediaError> {
        let first = *body.first().ok_or(truncated("FLV video tag"))?;
        if first & 0x80 != 0 {
            // Enhanced RTMP (IsExHeader): HEVC, AV1, VP9 by FourCC.
            let fourcc = body
                .get(1..5)
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            return Err(MediaError::UnsupportedCodec(format!(
                "enhanced RTMP video {fourcc}"
            )));
        }
        let frame_type = first >> 4;
        let codec_id = first & 0x0f;
        if codec_id != CODEC_AVC {
            let name = match codec_id {
                2 => "Sorenson H.263",
                3 => "Screen video",
                4 | 5 => "On2 VP6",
                6 => "Screen video v2",
                12 => "HEVC (non-standard FLV id 12)",
                _ => "unknown",
            };
            return Err(MediaError::UnsupportedCodec(format!(
                "FLV video codec id {codec_id} ({name})"
            )));
        }
        if frame_type == 5 {
            // Video info/command frame: no picture.
            return Ok(Vec::new());
        }
        let header = body.get(..5).ok_or(truncated("AVCVIDEOPACKET header"))?;
        let packet_type = header[1];
        let cts_ms = i32::from_be_bytes([header[2], header[3], header[4], 0]) >> 8;
        let payload = body.slice(5..);
        match packet_type {
            0 => {
                let config = h264::parse_avc_config(&payload)?;
                self.nal_length_size = Some(config.nal_length_size);
                let params = h264::video_params(config.sps, config.pps)?;
                Ok(vec![MediaEvent::Params(TrackParams::Video(params))])
            }
            1 => {
                let length_size = self.nal_length_size.ok_or(MediaError::Malformed {
                    what: "FLV video tag",
                    why: "NAL units before the AVC sequence header".into(),
                })?;
                let nals = h264::avcc_nals(&payload, length_size)?;
                if nals.is_empty() {
                    return Ok(Vec::new());
                }
                let keyframe = h264::contains_idr(nals.iter().copied());
                let data = if length_size == 4 {
                    payload
                } else {
                    h264::avcc_from_nals(nals)
                };
                let ms = self.video_ms.unwrap(timestamp_ms);
                let dts = self
                    .video_clock
                    .next(ms * i64::from(VIDEO_TIMESCALE / 1000));
                Ok(vec![MediaEvent::Sample(
                    TrackKind::Video,
                    Sample {
                        dts,
                        cts: cts_ms.saturating_mul((VIDEO_TIMESCALE / 1000) as i32),
                        duration: 0,
                        keyframe,
                        data,
                    },
                )])
            }
            // 2 = end of sequence.
            _ => Ok(Vec::new()),
        }
    }

    /// An AUDIODATA body (FLV spec E.4.2.1) at `timestamp_ms`.
    pub fn audio(
        &mut self,
        timestamp_ms: u32,
        body: &Bytes,
    ) -> Result<Vec<MediaEvent>, MediaError> {
        let first = *body.first().ok_or(truncated("FLV audio tag"))?;
        let format = first >> 4;
        if format != SOUND_AAC {
            let name = match format {
                0 | 3 => "PCM",
                1 => "ADPCM",
                2 | 14 => "MP3",
                4..=6 => "Nellymoser",
                7 | 8 => "G.711",
                9 => "enhanced RTMP audio",
                11 => "Speex",
                _ => "unknown",
            };
            return Err(MediaError::UnsupportedCodec(format!(
                "FLV sound format {format} ({name})"
            )));
        }
        let packet_type = *body.get(1).ok_or(truncated("AACAUDIODATA header"))?;
        let payload = body.slice(2..);
        match packet_type {
            0 => {
                let params = aac::audio_params(payload)?;
                self.audio_rate = Some(params.sample_rate);
                Ok(vec![MediaEvent::Params(TrackParams::Audio(params))])
            }
            1 => {
                let rate = self.audio_rate.ok_or(MediaError::Malformed {
                    what: "FLV audio tag",
                    why: "AAC frame before the AAC sequence header".into(),
                })?;
                if payload.is_empty() {
                    return Ok(Vec::new());
                }
                let ms = self.audio_ms.unwrap(timestamp_ms);
                // Round to the nearest tick: ms * rate / 1000.
                let target = (ms * i64::from(rate) + 500).div_euclid(1000);
                let dts = self.audio_clock.next(target);
                Ok(vec![MediaEvent::Sample(
                    TrackKind::Audio,
                    Sample {
                        dts,
                        cts: 0,
                        duration: aac::SAMPLES_PER_FRAME,
                        keyframe: true,
                        data: payload,
                    },
                )])
            }
            other => Err(MediaError::Malformed {
                what: "AACAUDIODATA",
                why: format!("AACPacketType {other}"),
            }),
        }
    }
}

/// A value of `onMetaData` that ingest may log or show.
#[derive(Clone, Debug, PartialEq)]
pub enum MetaValue {
    Number(f64),
    Bool(bool),
    Text(String),
}

/// Parses a SCRIPTDATA body (FLV spec E.4.4): `onMetaData` (or RTMP's
/// `@setDataFrame`, `onMetaData`) followed by an object or ECMA array.
/// Best effort: nested values are skipped, `None` when it is another call.
pub fn parse_script_data(body: &[u8]) -> Result<Option<BTreeMap<String, MetaValue>>, MediaError> {
    let mut cursor = std::io::Cursor::new(body);
    let values = rml_amf0::deserialize(&mut cursor).map_err(|e| MediaError::Malformed {
        what: "AMF0 script data",
        why: e.to_string(),
    })?;
    let mut values = values
        .into_iter()
        .skip_while(|v| matches!(v, rml_amf0::Amf0Value::Utf8String(s) if s == "@setDataFrame"));
    match values.next() {
        Some(rml_amf0::Amf0Value::Utf8String(name)) if name == "onMetaData" => {}
        _ => return Ok(None),
    }
    let mut out = BTreeMap::new();
    if let Some(rml_amf0::Amf0Value::Object(props)) = values.next() {
        for (k, v) in props {
            let v = match v {
                rml_amf0::Amf0Value::Number(n) => MetaValue::Number(n),
                rml_amf0::Amf0Value::Boolean(b) => MetaValue::Bool(b),
                rml_amf0::Amf0Value::Utf8String(s) => MetaValue::Text(s),
                _ => continue,
            };
            out.insert(k, v);
        }
    }
    Ok(Some(out))
}

/// FLV tag types (FLV spec E.4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TagKind {
    Audio,
    Video,
    Script,
}

/// One tag of an FLV file.
#[derive(Clone, Debug, PartialEq)]
pub struct FlvTag {
    pub kind: TagKind,
    /// Milliseconds, with the extended upper byte applied.
    pub timestamp_ms: u32,
    pub body: Bytes,
}

/// Iterates the tags of an in-memory FLV file (FLV spec E.2, E.3).
#[derive(Debug)]
pub struct FlvReader {
    data: Bytes,
    pos: usize,
    failed: bool,
}

impl FlvReader {
    /// Checks the file header; tags are read by iterating.
    pub fn new(data: Bytes) -> Result<Self, MediaError> {
        let header = data.get(..9).ok_or(truncated("FLV header"))?;
        if &header[..3] != b"FLV" {
            return Err(MediaError::Malformed {
                what: "FLV header",
                why: "no FLV signature".into(),
            });
        }
        let offset = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) as usize;
        if offset < 9 || offset > data.len() {
            return Err(MediaError::Malformed {
                what: "FLV header",
                why: format!("DataOffset {offset}"),
            });
        }
        // Skip PreviousTagSize0 as well.
        Ok(Self {
            data,
            pos: offset + 4,
            failed: false,
        })
    }

    fn read_tag(&mut self) -> Result<Option<FlvTag>, MediaError> {
        loop {
            if self.pos >= self.data.len() {
                return Ok(None);
            }
            let h = self
                .data
                .get(self.pos..self.pos + 11)
                .ok_or(truncated("FLV tag header"))?;
            if h[0] & 0x20 != 0 {
                return Err(MediaError::UnsupportedCodec("encrypted FLV tag".into()));
            }
            let size = usize::from(h[1]) << 16 | usize::from(h[2]) << 8 | usize::from(h[3]);
            let timestamp_ms = u32::from_be_bytes([h[7], h[4], h[5], h[6]]);
            let kind = h[0] & 0x1f;
            let start = self.pos + 11;
            let body = self
                .data
                .get(start..start + size)
                .ok_or(truncated("FLV tag body"))?;
            let body = self.data.slice_ref(body);
            self.pos = start + size + 4;
            let kind = match kind {
                8 => TagKind::Audio,
                9 => TagKind::Video,
                18 => TagKind::Script,
                _ => continue,
            };
            return Ok(Some(FlvTag {
                kind,
                timestamp_ms,
                body,
            }));
        }
    }
}

impl Iterator for FlvReader {
    type Item = Result<FlvTag, MediaError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let r = self.read_tag().transpose();
        if matches!(r, Some(Err(_))) {
            self.failed = true;
        }
        r
    }
}

/// Every parameter set and sample of a whole FLV file, in file order: what
/// an RTMP publisher of that file would hand the store.
pub fn file_events(data: Bytes) -> Result<Vec<MediaEvent>, MediaError> {
    let mut demux = FlvDemuxer::new();
    let mut events = Vec::new();
    for tag in FlvReader::new(data)? {
        let tag = tag?;
        events.extend(match tag.kind {
            TagKind::Video => demux.video(tag.timestamp_ms, &tag.body)?,
            TagKind::Audio => demux.audio(tag.timestamp_ms, &tag.body)?,
            TagKind::Script => continue,
        });
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::h264::tests::{PPS, SPS_MAIN_360P};

    fn avc_sequence_header() -> Bytes {
        let record = h264::build_avc_config(
            &[Bytes::from_static(SPS_MAIN_360P)],
            &[Bytes::from_static(PPS)],
        )
        .expect("builds");
        let mut body = vec![0x17, 0, 0, 0, 0];
        body.extend_from_slice(&record);
        body.into()
    }

    #[test]
    fn avc_sequence_header_then_nalus() {
        let mut d = FlvDemuxer::new();
        let ev = d.video(0, &avc_sequence_header()).expect("valid");
        match &ev[..] {
            [MediaEvent::Params(TrackParams::Video(v))] => {
                assert_eq!(v.codec, "avc1.4d401e");
                assert_eq!((v.width, v.height), (640, 360));
            }
            other => panic!("unexpected {other:?}"),
        }
        // Keyframe, composition time 80 ms, one IDR NAL.
        let body = Bytes::from_static(&[0x17, 1, 0, 0, 80, 0, 0, 0, 2, 0x65, 0x88]);
        let ev = d.video(1000, &body).expect("valid");
        let MediaEvent::Sample(TrackKind::Video, s) = &ev[0] else {
            panic!("not a sample: {ev:?}")
        };
        assert_eq!((s.dts, s.cts, s.keyframe), (90_000, 7_200, true));
        // Negative composition time is sign-extended.
        let body = Bytes::from_static(&[0x27, 1, 0xff, 0xff, 0xd8, 0, 0, 0, 2, 0x41, 0x9a]);
        let ev = d.video(1040, &body).expect("valid");
        let MediaEvent::Sample(_, s) = &ev[0] else {
            panic!()
        };
        assert_eq!((s.cts, s.keyframe), (-3_600, false));
    }

    #[test]
    fn short_nal_lengths_become_four_bytes() {
        let mut record = h264::build_avc_config(
            &[Bytes::from_static(SPS_MAIN_360P)],
            &[Bytes::from_static(PPS)],
        )
        .expect("builds")
        .to_vec();
        record[4] = 0xfc | 1; // lengthSizeMinusOne = 1
        let mut header = vec![0x17, 0, 0, 0, 0];
        header.extend_from_slice(&record);
        let mut d = FlvDemuxer::new();
        d.video(0, &header.into()).expect("valid");
        let body = Bytes::from_static(&[0x17, 1, 0, 0, 0, 0, 2, 0x65, 0x88, 0, 1, 0x06]);
        let ev = d.video(0, &body).expect("valid");
        let MediaEvent::Sample(_, s) = &ev[0] else {
            panic!()
        };
        assert_eq!(&s.data[..], &[0, 0, 0, 2, 0x65, 0x88, 0, 0, 0, 1, 0x06]);
    }

    #[test]
    fn refuses_other_codecs() {
        let mut d = FlvDemuxer::new();
        for body in [
            &[0x12u8, 0][..],
            &[0x1c, 0, 0, 0, 0],
            &[0x90, b'h', b'v', b'c', b'1'],
        ] {
            assert!(matches!(
                d.video(0, &Bytes::copy_from_slice(body)),
                Err(MediaError::UnsupportedCodec(_))
            ));
        }
        assert!(matches!(
            d.audio(0, &Bytes::from_static(&[0x2f, 0])),
            Err(MediaError::UnsupportedCodec(_))
        ));
    }

    #[test]
    fn audio_timestamps_count_frames_without_drift() {
        let mut d = FlvDemuxer::new();
        d.audio(0, &Bytes::from_static(&[0xaf, 0, 0x11, 0x90]))
            .expect("valid");
        let mut dts = Vec::new();
        for i in 0..1000u32 {
            // FLV truncates 21.333 ms frame times to whole milliseconds.
            let ms = i * 1024 * 1000 / 48000;
            let ev = d
                .audio(ms, &Bytes::from_static(&[0xaf, 1, 0x21, 0x00]))
                .expect("valid");
            let MediaEvent::Sample(TrackKind::Audio, s) = &ev[0] else {
                panic!()
            };
            dts.push(s.dts);
        }
        assert!(dts.windows(2).all(|w| w[1] - w[0] == 1024));
        // A 500 ms gap resynchronises instead of being counted away.
        let ev = d
            .audio(
                1000 * 1024 * 1000 / 48000 + 500,
                &Bytes::from_static(&[0xaf, 1, 1]),
            )
            .expect("valid");
        let MediaEvent::Sample(_, s) = &ev[0] else {
            panic!()
        };
        assert!(s.dts > dts[999] + 20 * 1024);
    }

    #[test]
    fn clocks_stay_monotonic_when_publisher_clock_goes_back() {
        let mut v = VideoClock::default();
        let seq: Vec<i64> = [0, 3600, 7200, 0, 3600]
            .iter()
            .map(|&t| v.next(t))
            .collect();
        assert_eq!(seq, vec![0, 3600, 7200, 10800, 14400]);
        let mut a = AudioClock::default();
        let seq: Vec<i64> = [0, 1024, 2048, 0, 1024]
            .iter()
            .map(|&t| a.next(t))
            .collect();
        assert_eq!(seq, vec![0, 1024, 2048, 3072, 4096]);
        assert_eq!((v.retimed(), a.retimed()), (1, 1));
        let mut u = MsUnwrap::default();
        assert_eq!(u.unwrap(u32::MAX - 10), i64::from(u32::MAX - 10));
        assert_eq!(u.unwrap(5), (1i64 << 32) + 5);
    }

    #[test]
    fn truncated_and_corrupt_tags_never_panic() {
        let header = avc_sequence_header();
        for n in 0..header.len() {
            let mut d = FlvDemuxer::new();
            let _ = d.video(0, &header.slice(..n));
            let _ = d.audio(
                0,
                &Bytes::from_static(&[0xaf, 0, 0x11, 0x90]).slice(..n.min(4)),
            );
        }
        let mut d = FlvDemuxer::new();
        d.video(0, &header).expect("valid");
        for body in [&[0x17u8, 1, 0, 0][..], &[0x17, 1, 0, 0, 0, 0, 0, 9, 0x65]] {
            assert!(d.video(0, &Bytes::copy_from_slice(body)).is_err());
        }
        assert!(d.audio(0, &Bytes::from_static(&[0xaf, 1, 0])).is_err());
        let mut x = 0x2545_f491u32;
        for i in 0..20_000u32 {
            let mut body = match i % 4 {
                0 => vec![0x17, 0, 0, 0, 0, 1],
                1 => vec![0x17, 1, 0xff, 0xff, 0xff],
                2 => vec![0xaf, 0],
                _ => vec![0xaf, 1],
            };
            for _ in 0..(x % 48) {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                body.push(x as u8);
            }
            let body = Bytes::from(body);
            let _ = d.video(x, &body);
            let _ = d.audio(x, &body);
            let _ = parse_script_data(&body[1..]);
            if let Ok(r) = FlvReader::new(body) {
                let _ = r.count();
            }
        }
        assert!(!matches!(parse_script_data(&[2, 0, 10, b'o']), Ok(Some(_))));
    }

    #[test]
    fn reads_the_bundled_clip() {
        let data = Bytes::from_static(include_bytes!("../../assets/demo.flv"));
        let mut d = FlvDemuxer::new();
        let (mut video, mut audio, mut meta) = (0, 0, None);
        for tag in FlvReader::new(data.clone()).expect("header") {
            let tag = tag.expect("tag");
            let events = match tag.kind {
                TagKind::Video => d.video(tag.timestamp_ms, &tag.body),
                TagKind::Audio => d.audio(tag.timestamp_ms, &tag.body),
                TagKind::Script => {
                    meta = parse_script_data(&tag.body).expect("AMF0");
                    continue;
                }
            }
            .expect("valid media");
            for e in events {
                match e {
                    MediaEvent::Sample(TrackKind::Video, _) => video += 1,
                    MediaEvent::Sample(TrackKind::Audio, _) => audio += 1,
                    MediaEvent::Params(_) => {}
                }
            }
        }
        assert_eq!(video, 200);
        assert!(audio >= 375);
        let meta = meta.expect("onMetaData");
        assert_eq!(meta.get("width"), Some(&MetaValue::Number(640.0)));
        for n in [0, 5, 9, 20, 100, data.len() - 3] {
            if let Ok(r) = FlvReader::new(data.slice(..n)) {
                let _ = r.count();
            }
        }
    }

    #[test]
    fn file_events_refuses_a_file_that_is_not_flv_or_is_cut_short() {
        assert!(file_events(Bytes::from_static(b"FLV")).is_err());
        assert!(file_events(Bytes::from_static(b"not an flv file at all")).is_err());
    }
}
