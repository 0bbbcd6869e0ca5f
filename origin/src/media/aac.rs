//! AAC configuration: the AudioSpecificConfig (ISO/IEC 14496-3 §1.6.2.1) that
//! FLV and MP4 carry, and the ADTS header (§1.A.2.2) that MPEG-TS carries.

use bytes::Bytes;

use super::{AudioParams, MediaError};

/// Samples per AAC frame at the core sampling rate (AAC-LC, HE-AAC core).
pub const SAMPLES_PER_FRAME: u32 = 1024;

/// ISO/IEC 14496-3 Table 1.18, `samplingFrequencyIndex` 0..=12.
const SAMPLE_RATES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];

/// Sampling rate of a `samplingFrequencyIndex`, when it names one.
pub fn sample_rate_from_index(index: u8) -> Option<u32> {
    SAMPLE_RATES.get(usize::from(index)).copied()
}

/// `samplingFrequencyIndex` of a rate, when the table has it.
pub fn index_from_sample_rate(rate: u32) -> Option<u8> {
    SAMPLE_RATES
        .iter()
        .position(|&r| r == rate)
        .map(|i| i as u8)
}

/// Output channels of a `channelConfiguration` (ISO/IEC 23001-8 ChannelConfiguration).
fn channels_from_config(config: u8) -> u8 {
    match config {
        7 => 8,
        11 => 7,
        12 | 14 => 8,
        13 => 24,
        n => n,
    }
}

/// What an AudioSpecificConfig says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AudioSpecificConfig {
    /// Audio Object Type: 2 = AAC-LC, 5 = SBR (HE-AAC), 29 = PS (HE-AACv2).
    pub object_type: u8,
    /// Core sampling rate; sample timestamps count at this rate.
    pub sample_rate: u32,
    /// `channelConfiguration`; 0 means "defined in a program config element".
    pub channel_config: u8,
}

impl AudioSpecificConfig {
    /// RFC 6381 §3.3 `mp4a.40.N` with the (explicitly signalled) object type.
    pub fn codec_string(&self) -> String {
        format!("mp4a.40.{}", self.object_type)
    }

    pub fn channels(&self) -> u8 {
        channels_from_config(self.channel_config)
    }
}

struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Bits<'_> {
    fn read(&mut self, n: usize) -> Result<u32, MediaError> {
        let mut v = 0u32;
        for _ in 0..n {
            let byte = self
                .data
                .get(self.pos / 8)
                .ok_or(MediaError::Truncated("AudioSpecificConfig"))?;
            v = (v << 1) | u32::from((byte >> (7 - self.pos % 8)) & 1);
            self.pos += 1;
        }
        Ok(v)
    }

    fn object_type(&mut self) -> Result<u8, MediaError> {
        let t = self.read(5)?;
        Ok(if t == 31 { 32 + self.read(6)? } else { t } as u8)
    }

    fn sample_rate(&mut self) -> Result<u32, MediaError> {
        let index = self.read(4)?;
        if index == 15 {
            return self.read(24);
        }
        sample_rate_from_index(index as u8).ok_or_else(|| MediaError::Malformed {
            what: "AudioSpecificConfig",
            why: format!("reserved samplingFrequencyIndex {index}"),
        })
    }
}

/// Parses an AudioSpecificConfig, following explicit SBR/PS signalling
/// (ISO/IEC 14496-3 §1.6.2.1: AOT 5 or 29 is followed by the extension rate
/// and the core object type).
pub fn parse_asc(data: &[u8]) -> Result<AudioSpecificConfig, MediaError> {
    let mut r = Bits { data, pos: 0 };
    let object_type = r.object_type()?;
    let sample_rate = r.sample_rate()?;
    let channel_config = r.read(4)? as u8;
    if object_type == 5 || object_type == 29 {
        let _extension_rate = r.sample_rate()?;
        let _core_object_type = r.object_type()?;
    }
    if object_type == 0 || sample_rate == 0 {
        return Err(MediaError::Malformed {
            what: "AudioSpecificConfig",
            why: format!("object type {object_type}, sampling rate {sample_rate}"),
        });
    }
    Ok(AudioSpecificConfig {
        object_type,
        sample_rate,
        channel_config,
    })
}

/// Builds a two-byte (or five with an explicit rate) AudioSpecificConfig.
pub fn build_asc(object_type: u8, sample_rate: u32, channel_config: u8) -> Bytes {
    let mut bits: u64 = 0;
    let mut n = 0u32;
    let mut put = |v: u64, width: u32| {
        bits = (bits << width) | (v & ((1 << width) - 1));
        n += width;
        n
    };
    if object_type >= 32 {
        put(31, 5);
        put(u64::from(object_type - 32), 6);
    } else {
        put(u64::from(object_type), 5);
    }
    if let Some(i) = index_from_sample_rate(sample_rate) {
        put(u64::from(i), 4);
    } else {
        put(15, 4);
        put(u64::from(sample_rate), 24);
    }
    put(u64::from(channel_config), 4);
    // GASpecificConfig: frameLengthFlag, dependsOnCoreCoder, extensionFlag all 0.
    let used = put(0, 3);
    let total = put(0, (8 - used % 8) % 8);
    let len = (total / 8) as usize;
    Bytes::copy_from_slice(&bits.to_be_bytes()[8 - len..])
}

/// [`AudioParams`] from an AudioSpecificConfig as found in the stream.
pub fn audio_params(asc: Bytes) -> Result<AudioParams, MediaError> {
    let c = parse_asc(&asc)?;
    Ok(AudioParams {
        codec: c.codec_string(),
        sample_rate: c.sample_rate,
        channels: c.channels(),
        asc,
    })
}

/// An ADTS frame header (ISO/IEC 14496-3 §1.A.2.2.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdtsHeader {
    pub object_type: u8,
    pub sample_rate_index: u8,
    pub sample_rate: u32,
    pub channel_config: u8,
    /// Header plus payload, in bytes.
    pub frame_length: usize,
    /// 7, or 9 with a CRC.
    pub header_length: usize,
    /// `number_of_raw_data_blocks_in_frame + 1`.
    pub raw_blocks: u8,
}

impl AdtsHeader {
    /// The AudioSpecificConfig equivalent of this header.
    pub fn asc(&self) -> Bytes {
        build_asc(self.object_type, self.sample_rate, self.channel_config)
    }
}

/// Parses the ADTS header at the start of `data`.
pub fn parse_adts(data: &[u8]) -> Result<AdtsHeader, MediaError> {
    let h = data.get(..7).ok_or(MediaError::Truncated("ADTS header"))?;
    if h[0] != 0xff || h[1] & 0xf6 != 0xf0 {
        return Err(MediaError::Malformed {
            what: "ADTS header",
            why: "no syncword".into(),
        });
    }
    let protection_absent = h[1] & 1 == 1;
    let object_type = (h[2] >> 6) + 1;
    let sample_rate_index = (h[2] >> 2) & 0x0f;
    let sample_rate =
        sample_rate_from_index(sample_rate_index).ok_or_else(|| MediaError::Malformed {
            what: "ADTS header",
            why: format!("samplingFrequencyIndex {sample_rate_index}"),
        })?;
    let channel_config = ((h[2] & 1) << 2) | (h[3] >> 6);
    let frame_length =
        (usize::from(h[3] & 3) << 11) | (usize::from(h[4]) << 3) | usize::from(h[5] >> 5);
    let header_length = if protection_absent { 7 } else { 9 };
    if frame_length <= header_length {
        return Err(MediaError::Malformed {
            what: "ADTS header",
            why: format!("frame length {frame_length}"),
        });
    }
    Ok(AdtsHeader {
        object_type,
        sample_rate_index,
        sample_rate,
        channel_config,
        frame_length,
        header_length,
        raw_blocks: (h[6] & 3) + 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_builds_lc_stereo_48k() {
        let asc = build_asc(2, 48000, 2);
        assert_eq!(&asc[..], &[0x11, 0x90]);
        let p = audio_params(asc).expect("valid");
        assert_eq!(p.codec, "mp4a.40.2");
        assert_eq!((p.sample_rate, p.channels), (48000, 2));
    }

    #[test]
    fn explicit_rate_and_escaped_object_type() {
        let _ = build_asc(31, 48000, 2);
        let asc = build_asc(42, 50000, 1);
        let c = parse_asc(&asc).expect("valid");
        assert_eq!(
            (c.object_type, c.sample_rate, c.channel_config),
            (42, 50000, 1)
        );
    }

    #[test]
    fn he_aac_explicit_signalling_keeps_core_rate() {
        // AOT 5, 24 kHz core, stereo, extension 48 kHz, core AOT 2.
        let c = parse_asc(&[0x2b, 0x11, 0x88, 0x00]).expect("valid");
        assert_eq!(c.codec_string(), "mp4a.40.5");
        assert_eq!(c.sample_rate, 24000);
        assert_eq!(c.channels(), 2);
    }

    #[test]
    fn adts_header() {
        // ffmpeg: AAC-LC 48 kHz stereo, 371-byte frame, no CRC.
        let h = [0xff, 0xf1, 0x4c, 0x80, 0x2e, 0x7f, 0xfc];
        let a = parse_adts(&h).expect("valid");
        assert_eq!(
            (a.object_type, a.sample_rate, a.channel_config),
            (2, 48000, 2)
        );
        assert_eq!((a.frame_length, a.header_length, a.raw_blocks), (371, 7, 1));
        assert_eq!(&a.asc()[..], &[0x11, 0x90]);
    }

    #[test]
    fn truncated_and_corrupt_input_never_panics() {
        for n in 0..7 {
            assert!(parse_adts(&[0xff, 0xf1, 0x4c, 0x80, 0x2e, 0x7f, 0xfc][..n]).is_err());
        }
        assert!(parse_asc(&[]).is_err());
        assert!(parse_asc(&[0x11]).is_err());
        assert!(parse_asc(&[0xf8]).is_err());
        for a in 0..=255u8 {
            for b in [0u8, 0x80, 0xff] {
                let _ = parse_asc(&[a, b]);
                let _ = parse_asc(&[a, b, a, b, a]);
                let _ = parse_adts(&[0xff, a, b, a, b, a, b]);
            }
        }
    }
}
