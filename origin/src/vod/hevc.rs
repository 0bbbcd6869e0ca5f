//! HEVC (`hvc1`/`hev1`) sample entries: decoder parameters from the
//! `hvcC` box (HEVCDecoderConfigurationRecord, ISO/IEC 14496-15 §8.3.3) and
//! the RFC 6381 codec string (ISO/IEC 14496-15 Annex E.3). Pure.
//!
//! The record travels in [`VideoParams::avc_config`] (the CMAF writer
//! writes it back as `hvcC` under the same sample entry type, told apart by
//! the codec string); the picture size comes from the VisualSampleEntry,
//! which every writer fills, rather than from the SPS.

use bytes::Bytes;

use super::mp4::Mp4Error;
use crate::media::VideoParams;

/// Bytes of the record before its NAL unit arrays.
const HEADER_LEN: usize = 23;

/// `hvc1.1.6.L93.B0` and the like, from `entry` (`hvc1` or `hev1`) and the
/// record: profile space and profile, compatibility flags (bit-reversed,
/// hex), tier and level, then the constraint bytes without trailing zeros.
pub fn codec_string(entry: &str, hvcc: &[u8]) -> Result<String, String> {
    if hvcc.len() < HEADER_LEN {
        return Err(format!(
            "hvcC of {} bytes, shorter than its {HEADER_LEN}-byte header",
            hvcc.len()
        ));
    }
    if hvcc[0] != 1 {
        return Err(format!("hvcC configurationVersion {}", hvcc[0]));
    }
    let space = ["", "A", "B", "C"][usize::from(hvcc[1] >> 6)];
    let tier = if hvcc[1] & 0x20 != 0 { 'H' } else { 'L' };
    let profile = hvcc[1] & 0x1f;
    let compatibility = u32::from_be_bytes([hvcc[2], hvcc[3], hvcc[4], hvcc[5]]).reverse_bits();
    let constraints = &hvcc[6..12];
    let level = hvcc[12];
    let mut out = format!("{entry}.{space}{profile}.{compatibility:X}.{tier}{level}");
    let kept = constraints
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |last| last + 1);
    for b in &constraints[..kept] {
        out.push_str(&format!(".{b:X}"));
    }
    Ok(out)
}

/// Decoder parameters and NAL length size of an `hvc1`/`hev1` sample
/// entry: `fields` is the VisualSampleEntry's body, `hvcc` its `hvcC` body.
pub fn video_params(
    entry: &str,
    fields: &[u8],
    hvcc: &[u8],
    track_id: u32,
) -> Result<(VideoParams, u8), Mp4Error> {
    let corrupt = |why: String| Mp4Error::Corrupt(format!("track {track_id}: {why}"));
    let codec = codec_string(entry, hvcc).map_err(corrupt)?;
    let size = fields
        .get(24..28)
        .ok_or_else(|| corrupt(format!("truncated {entry}")))?;
    let width = u16::from_be_bytes([size[0], size[1]]);
    let height = u16::from_be_bytes([size[2], size[3]]);
    if width == 0 || height == 0 {
        return Err(corrupt(format!("{entry} of {width}x{height} pixels")));
    }
    let nal_length_size = (hvcc[21] & 0x03) + 1;
    if nal_length_size == 3 {
        return Err(corrupt(
            "hvcC lengthSizeMinusOne 2 (3-byte NAL lengths)".into(),
        ));
    }
    Ok((
        VideoParams {
            codec,
            width,
            height,
            avc_config: Bytes::copy_from_slice(hvcc),
            sps: Vec::new(),
            pps: Vec::new(),
        },
        nal_length_size,
    ))
}

/// The NAL units of an `hvcC` record's arrays (ISO/IEC 14496-15
/// §8.3.3.1), in order; a truncated tail is left out.
pub fn hvcc_nals(hvcc: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let Some(&arrays) = hvcc.get(HEADER_LEN - 1) else {
        return out;
    };
    let mut at = HEADER_LEN;
    for _ in 0..arrays {
        let Some(header) = hvcc.get(at..at + 3) else {
            break;
        };
        let count = u16::from_be_bytes([header[1], header[2]]);
        at += 3;
        for _ in 0..count {
            let Some(len) = hvcc.get(at..at + 2) else {
                return out;
            };
            let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
            let Some(nal) = hvcc.get(at + 2..at + 2 + len) else {
                return out;
            };
            at += 2 + len;
            if !nal.is_empty() {
                out.push(nal);
            }
        }
    }
    out
}

/// `params` with the `hvcC`'s parameter sets as MPEG-TS wants them before
/// a keyframe: VPS and SPS in `sps`, PPS in `pps` (others left out).
pub fn with_parameter_sets(params: &VideoParams) -> VideoParams {
    let mut out = params.clone();
    for nal in hvcc_nals(&params.avc_config) {
        match (nal[0] >> 1) & 0x3f {
            32 | 33 => out.sps.push(Bytes::copy_from_slice(nal)),
            34 => out.pps.push(Bytes::copy_from_slice(nal)),
            _ => {}
        }
    }
    // VPS before SPS (ITU-T H.265 §7.4.2.4.4), whatever the array order.
    out.sps.sort_by_key(|n| (n[0] >> 1) & 0x3f);
    out
}

/// Whether `params` are HEVC's (see the module docs).
pub fn is_hevc(params: &VideoParams) -> bool {
    params.codec.starts_with("hvc1") || params.codec.starts_with("hev1")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The header of an x265 Main profile, level 3.1 record.
    fn main_profile_record() -> Vec<u8> {
        let mut r = vec![
            0x01, // configurationVersion
            0x01, // space 0, tier Main, profile 1 (Main)
            0x60, 0x00, 0x00, 0x00, // compatibility: profiles 1 and 2
            0x90, 0x00, 0x00, 0x00, 0x00, 0x00, // progressive, frame-only
            93,   // level 3.1
            0xf0, 0x00, 0xfc, 0xfd, 0xf8, 0xf8, 0x00, 0x00, 0x0f, // lengthSizeMinusOne 3
            0x00, // numOfArrays
        ];
        r.truncate(HEADER_LEN);
        r
    }

    #[test]
    fn codec_strings_follow_annex_e() {
        let r = main_profile_record();
        assert_eq!(codec_string("hvc1", &r).expect("codec"), "hvc1.1.6.L93.90");
        let mut main10 = r.clone();
        main10[1] = 0x22; // High tier, profile 2
        main10[2..6].copy_from_slice(&[0x20, 0, 0, 0]);
        main10[12] = 120;
        assert_eq!(
            codec_string("hev1", &main10).expect("codec"),
            "hev1.2.4.H120.90"
        );
        let mut none = r;
        none[6] = 0;
        assert_eq!(codec_string("hvc1", &none).expect("codec"), "hvc1.1.6.L93");
    }

    #[test]
    fn short_or_unknown_records_are_refused() {
        assert!(codec_string("hvc1", &[1, 2, 3]).is_err());
        let mut r = main_profile_record();
        r[0] = 2;
        assert!(codec_string("hvc1", &r).is_err());
        let mut fields = vec![0u8; 78];
        fields[24..28].copy_from_slice(&[0x02, 0x80, 0x01, 0x68]);
        let (params, nal) =
            video_params("hvc1", &fields, &main_profile_record(), 1).expect("params");
        assert_eq!((params.width, params.height, nal), (640, 360, 4));
        assert!(is_hevc(&params));
        let e = video_params("hvc1", &[0u8; 78], &main_profile_record(), 1).expect_err("0x0");
        assert!(matches!(e, Mp4Error::Corrupt(_)), "{e}");
    }
}
