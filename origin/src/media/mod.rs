//! Bytes ↔ samples. Everything under `media/` is pure: no I/O, no clocks.
//!
//! Ingest turns FLV tags (RTMP) and PES packets (SRT/MPEG-TS) into the neutral
//! form defined here — parameters per track plus timed [`Sample`]s — and the
//! packagers turn windows of samples back into CMAF, MPEG-TS and manifests.

pub mod aac;
pub mod cenc;
pub mod flv;
pub mod fmp4;
pub mod h264;
pub mod mpegts;
pub mod ts_demux;

use bytes::Bytes;

/// Video timestamps are kept in the MPEG 90 kHz clock, whatever the ingest used.
pub const VIDEO_TIMESCALE: u32 = 90_000;

/// Which elementary stream a sample belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TrackKind {
    Video,
    Audio,
}

/// H.264 decoder parameters, as found in the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VideoParams {
    /// RFC 6381 codec string, e.g. `avc1.64001f`, built from the real SPS.
    pub codec: String,
    pub width: u16,
    pub height: u16,
    /// AVCDecoderConfigurationRecord (ISO/IEC 14496-15 §5.3.3), the body of `avcC`.
    pub avc_config: Bytes,
    /// Sequence and picture parameter sets, without start codes or length prefixes.
    pub sps: Vec<Bytes>,
    pub pps: Vec<Bytes>,
}

/// AAC decoder parameters, as found in the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AudioParams {
    /// RFC 6381 codec string, e.g. `mp4a.40.2`, from the AudioSpecificConfig.
    pub codec: String,
    pub sample_rate: u32,
    pub channels: u8,
    /// AudioSpecificConfig (ISO/IEC 14496-3 §1.6.2.1).
    pub asc: Bytes,
}

/// Decoder parameters of one track.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TrackParams {
    Video(VideoParams),
    Audio(AudioParams),
}

impl TrackParams {
    pub fn kind(&self) -> TrackKind {
        match self {
            TrackParams::Video(_) => TrackKind::Video,
            TrackParams::Audio(_) => TrackKind::Audio,
        }
    }

    /// Ticks per second of this track's [`Sample`] timestamps: 90 kHz for
    /// video, the sampling rate for audio (so one AAC frame is 1024 ticks).
    pub fn timescale(&self) -> u32 {
        match self {
            TrackParams::Video(_) => VIDEO_TIMESCALE,
            TrackParams::Audio(a) => a.sample_rate,
        }
    }

    pub fn codec(&self) -> &str {
        match self {
            TrackParams::Video(v) => &v.codec,
            TrackParams::Audio(a) => &a.codec,
        }
    }
}

/// One access unit with its timing, in the track's timescale.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    /// Decode time. Monotonic within a track for the store's purposes.
    pub dts: i64,
    /// Composition offset: `pts - dts`.
    pub cts: i32,
    /// Ticks until the next sample; 0 when not yet known.
    pub duration: u32,
    /// A sync sample (IDR for H.264; every AAC frame).
    pub keyframe: bool,
    /// Video: NAL units each prefixed by a 4-byte big-endian length (AVCC).
    /// Audio: one raw AAC frame, no ADTS header.
    pub data: Bytes,
}

impl Sample {
    pub fn pts(&self) -> i64 {
        self.dts + i64::from(self.cts)
    }
}

/// What a demuxer made of some input, in stream order.
#[derive(Clone, Debug, PartialEq)]
pub enum MediaEvent {
    /// New or changed decoder parameters for a track.
    Params(TrackParams),
    Sample(TrackKind, Sample),
}

/// Why bytes could not be turned into samples or parameters.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MediaError {
    #[error("truncated {0}")]
    Truncated(&'static str),
    #[error("malformed {what}: {why}")]
    Malformed { what: &'static str, why: String },
    #[error("unsupported codec: {0}")]
    UnsupportedCodec(String),
}
