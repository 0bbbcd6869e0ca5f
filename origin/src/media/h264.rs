//! H.264 bitstream facts that ingest needs: SPS fields (ITU-T H.264 §7.3.2.1),
//! the AVCDecoderConfigurationRecord (ISO/IEC 14496-15 §5.3.3), and the two
//! NAL framings (Annex B start codes, AVCC length prefixes).

use bytes::{BufMut, Bytes, BytesMut};

use super::{MediaError, VideoParams};

/// NAL unit types (ITU-T H.264 Table 7-1) that ingest cares about.
pub mod nal_type {
    pub const SLICE: u8 = 1;
    pub const IDR: u8 = 5;
    pub const SEI: u8 = 6;
    pub const SPS: u8 = 7;
    pub const PPS: u8 = 8;
    pub const AUD: u8 = 9;
}

/// `nal_unit_type` of a NAL unit (first byte, low five bits).
pub fn nal_unit_type(nal: &[u8]) -> Option<u8> {
    nal.first().map(|b| b & 0x1f)
}

/// What the SPS says about the picture and the profile.
#[derive(Clone, Debug, PartialEq)]
pub struct SpsInfo {
    pub profile_idc: u8,
    /// The byte of `constraint_set0..5_flag`s plus reserved bits, as coded.
    pub constraint_flags: u8,
    pub level_idc: u8,
    pub chroma_format_idc: u32,
    pub bit_depth_luma: u32,
    pub bit_depth_chroma: u32,
    /// Displayed size, after the SPS frame cropping.
    pub width: u32,
    pub height: u32,
    /// Frames per second from VUI timing (`time_scale / (2 * num_units_in_tick)`).
    pub fps: Option<f64>,
}

impl SpsInfo {
    /// RFC 6381 §3.3 `avc1.PPCCLL`, hex of profile, constraint byte and level.
    pub fn codec_string(&self) -> String {
        format!(
            "avc1.{:02x}{:02x}{:02x}",
            self.profile_idc, self.constraint_flags, self.level_idc
        )
    }
}

/// Profiles whose SPS carries chroma format and bit depth (H.264 §7.3.2.1.1).
fn has_chroma_info(profile_idc: u8) -> bool {
    matches!(
        profile_idc,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    )
}

/// Removes emulation prevention bytes (H.264 §7.4.1: `00 00 03` → `00 00`).
pub fn rbsp_from_nal(nal: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nal.len());
    let mut zeros = 0;
    for &b in nal {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

/// MSB-first bit reader over an RBSP with exp-Golomb codes (H.264 §9.1).
struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> BitReader<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    fn bit(&mut self) -> Result<u32, MediaError> {
        let byte = self
            .data
            .get(self.pos / 8)
            .ok_or(MediaError::Truncated("SPS"))?;
        let bit = (byte >> (7 - (self.pos % 8))) & 1;
        self.pos += 1;
        Ok(u32::from(bit))
    }

    fn bits(&mut self, n: u32) -> Result<u32, MediaError> {
        let mut v = 0;
        for _ in 0..n {
            v = (v << 1) | self.bit()?;
        }
        Ok(v)
    }

    fn flag(&mut self) -> Result<bool, MediaError> {
        Ok(self.bit()? == 1)
    }

    fn ue(&mut self) -> Result<u32, MediaError> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return Err(MediaError::Malformed {
                    what: "SPS",
                    why: "exp-Golomb code longer than 32 bits".into(),
                });
            }
        }
        let rest = self.bits(zeros)?;
        Ok(((1u64 << zeros) - 1 + u64::from(rest)) as u32)
    }

    fn se(&mut self) -> Result<i32, MediaError> {
        let k = i64::from(self.ue()?);
        let v = if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) };
        Ok(v as i32)
    }
}

fn malformed(why: impl Into<String>) -> MediaError {
    MediaError::Malformed {
        what: "SPS",
        why: why.into(),
    }
}

/// Skips a `scaling_list()` (H.264 §7.3.2.1.1.1).
fn skip_scaling_list(r: &mut BitReader<'_>, size: usize) -> Result<(), MediaError> {
    let mut last = 8i32;
    let mut next = 8i32;
    for _ in 0..size {
        if next != 0 {
            let delta = r.se()?;
            // H.264 §7.4.2.1.1.1: delta_scale is -128..=127.
            if !(-128..=127).contains(&delta) {
                return Err(malformed(format!("delta_scale {delta}")));
            }
            next = (last + delta + 256).rem_euclid(256);
        }
        if next != 0 {
            last = next;
        }
    }
    Ok(())
}

/// Parses a sequence parameter set NAL unit (header byte included).
pub fn parse_sps(nal: &[u8]) -> Result<SpsInfo, MediaError> {
    if nal.len() < 4 {
        return Err(MediaError::Truncated("SPS"));
    }
    if nal_unit_type(nal) != Some(nal_type::SPS) {
        return Err(malformed("not an SPS NAL unit"));
    }
    let rbsp = rbsp_from_nal(&nal[1..]);
    let mut r = BitReader::new(&rbsp);
    let profile_idc = r.bits(8)? as u8;
    let constraint_flags = r.bits(8)? as u8;
    let level_idc = r.bits(8)? as u8;
    let sps_id = r.ue()?;
    if sps_id > 31 {
        return Err(malformed(format!("seq_parameter_set_id {sps_id} > 31")));
    }
    let (mut chroma_format_idc, mut separate_colour_plane) = (1, false);
    let (mut bit_depth_luma, mut bit_depth_chroma) = (8, 8);
    if has_chroma_info(profile_idc) {
        chroma_format_idc = r.ue()?;
        if chroma_format_idc > 3 {
            return Err(malformed(format!("chroma_format_idc {chroma_format_idc}")));
        }
        if chroma_format_idc == 3 {
            separate_colour_plane = r.flag()?;
        }
        let (luma, chroma) = (r.ue()?, r.ue()?);
        // H.264 §7.4.2.1.1: bit_depth_*_minus8 is 0..=6.
        if luma > 6 || chroma > 6 {
            return Err(malformed(format!(
                "bit_depth_luma_minus8 {luma}, bit_depth_chroma_minus8 {chroma}"
            )));
        }
        bit_depth_luma = luma + 8;
        bit_depth_chroma = chroma + 8;
        let _qpprime_y_zero_transform_bypass = r.flag()?;
        if r.flag()? {
            let lists = if chroma_format_idc == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.flag()? {
                    skip_scaling_list(&mut r, if i < 6 { 16 } else { 64 })?;
                }
            }
        }
    }
    let _log2_max_frame_num = r.ue()?;
    match r.ue()? {
        0 => {
            let _log2_max_poc_lsb = r.ue()?;
        }
        1 => {
            let _delta_pic_order_always_zero = r.flag()?;
            let _offset_for_non_ref_pic = r.se()?;
            let _offset_for_top_to_bottom_field = r.se()?;
            let cycle = r.ue()?;
            if cycle > 255 {
                return Err(malformed("num_ref_frames_in_pic_order_cnt_cycle > 255"));
            }
            for _ in 0..cycle {
                r.se()?;
            }
        }
        2 => {}
        other => return Err(malformed(format!("pic_order_cnt_type {other}"))),
    }
    let _max_num_ref_frames = r.ue()?;
    let _gaps_in_frame_num_allowed = r.flag()?;
    let width_mbs = u64::from(r.ue()?) + 1;
    let height_map_units = u64::from(r.ue()?) + 1;
    let frame_mbs_only = r.flag()?;
    if !frame_mbs_only {
        let _mb_adaptive_frame_field = r.flag()?;
    }
    let _direct_8x8_inference = r.flag()?;
    let (mut crop_l, mut crop_r, mut crop_t, mut crop_b) = (0u64, 0u64, 0u64, 0u64);
    if r.flag()? {
        crop_l = r.ue()?.into();
        crop_r = r.ue()?.into();
        crop_t = r.ue()?.into();
        crop_b = r.ue()?.into();
    }
    let fps = if r.flag()? {
        parse_vui_fps(&mut r)?
    } else {
        None
    };

    // H.264 §7.4.2.1.1, Table 6-1: crop units depend on chroma subsampling.
    let chroma_array_type = if separate_colour_plane {
        0
    } else {
        chroma_format_idc
    };
    let field_factor = if frame_mbs_only { 1 } else { 2 };
    let (crop_unit_x, crop_unit_y) = match chroma_array_type {
        0 => (1, field_factor),
        1 => (2, 2 * field_factor),
        2 => (2, field_factor),
        _ => (1, field_factor),
    };
    let full_w = width_mbs * 16;
    let full_h = height_map_units * 16 * field_factor;
    let crop_w = crop_unit_x * (crop_l + crop_r);
    let crop_h = crop_unit_y * (crop_t + crop_b);
    if crop_w >= full_w || crop_h >= full_h || full_w > 65535 || full_h > 65535 {
        return Err(malformed(format!(
            "picture {full_w}x{full_h} with cropping {crop_w}x{crop_h}"
        )));
    }
    Ok(SpsInfo {
        profile_idc,
        constraint_flags,
        level_idc,
        chroma_format_idc,
        bit_depth_luma,
        bit_depth_chroma,
        width: (full_w - crop_w) as u32,
        height: (full_h - crop_h) as u32,
        fps,
    })
}

/// Reads the VUI (H.264 Annex E.1.1) up to its timing info.
fn parse_vui_fps(r: &mut BitReader<'_>) -> Result<Option<f64>, MediaError> {
    if r.flag()? {
        // aspect_ratio_idc 255 is Extended_SAR: explicit width and height follow.
        if r.bits(8)? == 255 {
            r.bits(16)?;
            r.bits(16)?;
        }
    }
    if r.flag()? {
        let _overscan_appropriate = r.flag()?;
    }
    if r.flag()? {
        let _video_format = r.bits(3)?;
        let _full_range = r.flag()?;
        if r.flag()? {
            r.bits(24)?;
        }
    }
    if r.flag()? {
        r.ue()?;
        r.ue()?;
    }
    if !r.flag()? {
        return Ok(None);
    }
    let num_units_in_tick = r.bits(32)?;
    let time_scale = r.bits(32)?;
    if num_units_in_tick == 0 || time_scale == 0 {
        return Ok(None);
    }
    Ok(Some(
        f64::from(time_scale) / (2.0 * f64::from(num_units_in_tick)),
    ))
}

/// The fields of an AVCDecoderConfigurationRecord that ingest uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AvcConfig {
    pub profile_idc: u8,
    pub constraint_flags: u8,
    pub level_idc: u8,
    /// Bytes in each NAL length prefix of the samples (1, 2 or 4).
    pub nal_length_size: u8,
    pub sps: Vec<Bytes>,
    pub pps: Vec<Bytes>,
}

/// Parses an AVCDecoderConfigurationRecord (ISO/IEC 14496-15 §5.3.3.1).
pub fn parse_avc_config(record: &Bytes) -> Result<AvcConfig, MediaError> {
    const WHAT: &str = "AVCDecoderConfigurationRecord";
    let d = record.as_ref();
    if d.len() < 7 {
        return Err(MediaError::Truncated(WHAT));
    }
    if d[0] != 1 {
        return Err(MediaError::Malformed {
            what: WHAT,
            why: format!("configurationVersion {}", d[0]),
        });
    }
    let nal_length_size = (d[4] & 0x03) + 1;
    if nal_length_size == 3 {
        return Err(MediaError::Malformed {
            what: WHAT,
            why: "lengthSizeMinusOne 2 is reserved".into(),
        });
    }
    let mut pos = 6;
    let sps = read_parameter_sets(record, usize::from(d[5] & 0x1f), &mut pos)?;
    let num_pps = usize::from(*d.get(pos).ok_or(MediaError::Truncated(WHAT))?);
    pos += 1;
    let pps = read_parameter_sets(record, num_pps, &mut pos)?;
    if sps.is_empty() || pps.is_empty() {
        return Err(MediaError::Malformed {
            what: WHAT,
            why: "no SPS or no PPS".into(),
        });
    }
    Ok(AvcConfig {
        profile_idc: d[1],
        constraint_flags: d[2],
        level_idc: d[3],
        nal_length_size,
        sps,
        pps,
    })
}

fn read_parameter_sets(
    record: &Bytes,
    count: usize,
    pos: &mut usize,
) -> Result<Vec<Bytes>, MediaError> {
    const WHAT: &str = "AVCDecoderConfigurationRecord";
    let mut sets = Vec::with_capacity(count);
    for _ in 0..count {
        let len_bytes = record
            .get(*pos..*pos + 2)
            .ok_or(MediaError::Truncated(WHAT))?;
        let len = usize::from(u16::from_be_bytes([len_bytes[0], len_bytes[1]]));
        *pos += 2;
        if len == 0 || record.len() < *pos + len {
            return Err(MediaError::Truncated(WHAT));
        }
        sets.push(record.slice(*pos..*pos + len));
        *pos += len;
    }
    Ok(sets)
}

/// Builds an AVCDecoderConfigurationRecord with 4-byte NAL lengths from
/// parameter sets (the first SPS gives profile and level).
pub fn build_avc_config(sps: &[Bytes], pps: &[Bytes]) -> Result<Bytes, MediaError> {
    let first = sps.first().ok_or(MediaError::Truncated("SPS list"))?;
    let info = parse_sps(first)?;
    if sps.len() > 31 || pps.len() > 255 {
        return Err(malformed("too many parameter sets"));
    }
    let mut out = BytesMut::new();
    out.put_u8(1);
    out.put_u8(info.profile_idc);
    out.put_u8(info.constraint_flags);
    out.put_u8(info.level_idc);
    out.put_u8(0xfc | 3);
    out.put_u8(0xe0 | sps.len() as u8);
    for s in sps {
        out.put_u16(u16::try_from(s.len()).map_err(|_| malformed("SPS over 64 KiB"))?);
        out.put_slice(s);
    }
    out.put_u8(pps.len() as u8);
    for p in pps {
        out.put_u16(u16::try_from(p.len()).map_err(|_| malformed("PPS over 64 KiB"))?);
        out.put_slice(p);
    }
    // ISO/IEC 14496-15 §5.3.3.1.2: these profiles carry chroma and bit depth.
    if matches!(info.profile_idc, 100 | 110 | 122 | 144) {
        out.put_u8(0xfc | info.chroma_format_idc as u8);
        out.put_u8(0xf8 | (info.bit_depth_luma.saturating_sub(8) as u8 & 7));
        out.put_u8(0xf8 | (info.bit_depth_chroma.saturating_sub(8) as u8 & 7));
        out.put_u8(0);
    }
    Ok(out.freeze())
}

/// [`VideoParams`] from parameter sets; the record is rebuilt with 4-byte lengths.
pub fn video_params(sps: Vec<Bytes>, pps: Vec<Bytes>) -> Result<VideoParams, MediaError> {
    let first = sps.first().ok_or(MediaError::Truncated("SPS list"))?;
    let info = parse_sps(first)?;
    let avc_config = build_avc_config(&sps, &pps)?;
    Ok(VideoParams {
        codec: info.codec_string(),
        width: info.width as u16,
        height: info.height as u16,
        avc_config,
        sps,
        pps,
    })
}

/// Splits Annex B bytes (start-code delimited, H.264 §B.1) into NAL units.
/// Trailing zero bytes before a start code are not part of the NAL.
pub fn annexb_nals(data: &[u8]) -> Vec<&[u8]> {
    let mut nals = Vec::new();
    let mut start: Option<usize> = None;
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            if let Some(s) = start {
                push_trimmed(&mut nals, &data[s..i]);
            }
            i += 3;
            start = Some(i);
        } else {
            i += 1;
        }
    }
    if let Some(s) = start {
        push_trimmed(&mut nals, &data[s..]);
    }
    nals
}

fn push_trimmed<'a>(nals: &mut Vec<&'a [u8]>, nal: &'a [u8]) {
    let end = nal.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
    if end > 0 {
        nals.push(&nal[..end]);
    }
}

/// Length-prefixes NAL units with 4-byte big-endian sizes (AVCC framing).
pub fn avcc_from_nals<'a>(nals: impl IntoIterator<Item = &'a [u8]>) -> Bytes {
    let mut out = BytesMut::new();
    for nal in nals {
        out.put_u32(nal.len() as u32);
        out.put_slice(nal);
    }
    out.freeze()
}

/// Annex B → AVCC with 4-byte lengths.
pub fn annexb_to_avcc(data: &[u8]) -> Bytes {
    avcc_from_nals(annexb_nals(data))
}

/// Splits length-prefixed NAL units (`length_size` of 1, 2 or 4 bytes).
pub fn avcc_nals(data: &[u8], length_size: u8) -> Result<Vec<&[u8]>, MediaError> {
    let n = usize::from(length_size);
    if !matches!(n, 1 | 2 | 4) {
        return Err(MediaError::Malformed {
            what: "AVCC sample",
            why: format!("NAL length size {n}"),
        });
    }
    let mut nals = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let len_bytes = data
            .get(pos..pos + n)
            .ok_or(MediaError::Truncated("AVCC NAL length"))?;
        let len = len_bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        pos += n;
        let nal = data
            .get(pos..pos + len)
            .ok_or(MediaError::Truncated("AVCC NAL unit"))?;
        if !nal.is_empty() {
            nals.push(nal);
        }
        pos += len;
    }
    Ok(nals)
}

/// AVCC (4-byte lengths) → Annex B with 4-byte start codes.
pub fn avcc_to_annexb(data: &[u8]) -> Result<Bytes, MediaError> {
    let mut out = BytesMut::with_capacity(data.len());
    for nal in avcc_nals(data, 4)? {
        out.put_slice(&[0, 0, 0, 1]);
        out.put_slice(nal);
    }
    Ok(out.freeze())
}

/// Whether any NAL unit is an IDR slice.
pub fn contains_idr<'a>(nals: impl IntoIterator<Item = &'a [u8]>) -> bool {
    nals.into_iter()
        .any(|n| nal_unit_type(n) == Some(nal_type::IDR))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    // x264, Main profile level 3.0, 640x360 (cropped from 640x368), 25 fps VUI.
    pub(crate) const SPS_MAIN_360P: &[u8] = &[
        0x67, 0x4d, 0x40, 0x1e, 0xec, 0xa0, 0x50, 0x17, 0xfc, 0xb8, 0x08, 0x80, 0x00, 0x00, 0x03,
        0x00, 0x80, 0x00, 0x00, 0x19, 0x07, 0x8b, 0x16, 0xcb,
    ];
    pub(crate) const PPS: &[u8] = &[0x68, 0xef, 0xbc, 0x80];
    // x264, High profile level 3.1, 1280x720, 30 fps VUI.
    const SPS_HIGH_720P: &[u8] = &[
        0x67, 0x64, 0x00, 0x1f, 0xac, 0xd9, 0x40, 0x50, 0x05, 0xbb, 0x01, 0x10, 0x00, 0x00, 0x03,
        0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x83, 0x19, 0x60,
    ];

    #[test]
    fn parses_high_profile_sps() {
        let info = parse_sps(SPS_HIGH_720P).expect("valid SPS");
        assert_eq!(info.codec_string(), "avc1.64001f");
        assert_eq!((info.width, info.height), (1280, 720));
        assert_eq!(info.fps, Some(30.0));
        assert_eq!(info.chroma_format_idc, 1);
        let record = build_avc_config(
            &[Bytes::from_static(SPS_HIGH_720P)],
            &[Bytes::from_static(PPS)],
        )
        .expect("builds");
        // High profile records end with chroma format and bit depths.
        assert_eq!(&record[record.len() - 4..], &[0xfd, 0xf8, 0xf8, 0]);
    }

    #[test]
    fn parses_main_profile_sps_with_cropping_and_timing() {
        let info = parse_sps(SPS_MAIN_360P).expect("valid SPS");
        assert_eq!(info.codec_string(), "avc1.4d401e");
        assert_eq!((info.width, info.height), (640, 360));
        assert_eq!(info.fps, Some(25.0));
    }

    #[test]
    fn avc_config_round_trips() {
        let sps = vec![Bytes::from_static(SPS_MAIN_360P)];
        let pps = vec![Bytes::from_static(PPS)];
        let record = build_avc_config(&sps, &pps).expect("builds");
        let parsed = parse_avc_config(&record).expect("parses");
        assert_eq!(parsed.nal_length_size, 4);
        assert_eq!(parsed.sps, sps);
        assert_eq!(parsed.pps, pps);
        assert_eq!(parsed.profile_idc, 0x4d);
        let params = video_params(sps, pps).expect("params");
        assert_eq!(params.codec, "avc1.4d401e");
        assert_eq!(params.avc_config, record);
    }

    #[test]
    fn truncated_and_corrupt_input_never_panics() {
        for n in 0..SPS_MAIN_360P.len() {
            let _ = parse_sps(&SPS_MAIN_360P[..n]);
        }
        let record = build_avc_config(
            &[Bytes::from_static(SPS_MAIN_360P)],
            &[Bytes::from_static(PPS)],
        )
        .expect("builds");
        for n in 0..record.len() {
            assert!(parse_avc_config(&record.slice(..n)).is_err());
        }
        let mut x = 0x1234_5678u32;
        for _ in 0..2000 {
            let mut buf = SPS_MAIN_360P.to_vec();
            for b in buf.iter_mut().skip(1) {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                if x.is_multiple_of(5) {
                    *b = x as u8;
                }
            }
            let _ = parse_sps(&buf);
            let _ = avcc_nals(&buf, 4);
            let _ = annexb_nals(&buf);
        }
        assert!(parse_sps(&[0x67, 0x64, 0, 0x1f, 0, 0, 0, 0, 0, 0]).is_err());
        // High profile, sps_id 0, chroma 1, then a 63-bit exp-Golomb bit depth.
        let bits = format!("1010{}1{}", "0".repeat(31), "1".repeat(31));
        let mut sps = vec![0x67, 0x64, 0, 0x1f];
        for chunk in bits.as_bytes().chunks(8) {
            let byte = chunk.iter().fold(0u8, |acc, &b| acc << 1 | (b - b'0'));
            sps.push(byte << (8 - chunk.len()));
        }
        sps.extend_from_slice(&[0xff; 8]);
        assert!(parse_sps(&sps).is_err());
        // Random tails behind real headers reach the deep branches.
        for i in 0..20_000u32 {
            let mut buf = vec![0x67, [0x64, 0x4d, 0x42, 0xf4][i as usize % 4], 0, 0x1f];
            for _ in 0..(x % 40) {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                buf.push(x as u8);
            }
            let _ = parse_sps(&buf);
            buf[0] = 1;
            let _ = parse_avc_config(&Bytes::from(buf));
        }
    }

    #[test]
    fn annexb_and_avcc_convert_both_ways() {
        let annexb = [
            0, 0, 0, 1, 0x09, 0xf0, 0, 0, 1, 0x65, 0x88, 0x84, 0, 0, 0, 0, 1, 0x41, 0x9a, 0,
        ];
        let nals = annexb_nals(&annexb);
        assert_eq!(
            nals,
            vec![&[0x09, 0xf0][..], &[0x65, 0x88, 0x84], &[0x41, 0x9a]]
        );
        assert!(contains_idr(nals.iter().copied()));
        let avcc = annexb_to_avcc(&annexb);
        assert_eq!(&avcc[..6], &[0, 0, 0, 2, 0x09, 0xf0]);
        let back = avcc_to_annexb(&avcc).expect("valid AVCC");
        assert_eq!(annexb_nals(&back), nals);
        assert!(avcc_nals(&avcc[..avcc.len() - 1], 4).is_err());
        assert!(!contains_idr(
            avcc_nals(&avcc, 4).expect("valid")[2..].iter().copied()
        ));
    }
}
