//! Subsample encryption of HEVC samples (ISO/IEC 23001-7 §9.5, §10.2 and
//! §10.4): each NAL unit's length field and 2-byte header stay clear,
//! non-VCL NAL units stay wholly clear, and a VCL NAL unit's slice segment
//! header (H.265 §7.3.6.1, up to its `byte_alignment()`) stays clear too,
//! so that a decoder can parse it without the key. The protected part is
//! the slice data: all of it for `cbcs` (whose pattern leaves the trailing
//! partial block clear), whole 16-byte blocks for `cenc` (the rest leads
//! in clear). Pure.
//!
//! Finding where a slice header ends needs the SPS and PPS it refers to;
//! they come from the title's `hvcC`. A slice header this parser cannot
//! follow (an unknown parameter set, SCC or multilayer extensions, a
//! malformed header) leaves that NAL unit wholly clear: readable by every
//! decoder, never a wrong layout.

use crate::media::cenc::Scheme;

/// The parameter sets of a title's `hvcC`, as far as slice headers need them.
#[derive(Clone, Debug, Default)]
pub struct HevcParameterSets {
    sps: Vec<Sps>,
    pps: Vec<Pps>,
}

#[derive(Clone, Debug)]
struct Sps {
    id: u32,
    chroma_array_type: u32,
    separate_colour_plane: bool,
    pic_size_in_ctbs: u64,
    log2_max_poc_lsb: u32,
    sample_adaptive_offset: bool,
    /// Per short-term RPS of the SPS: (NumDeltaPocs, pictures used by the current one).
    short_term_rps: Vec<(u32, u32)>,
    long_term_ref_pics_present: bool,
    /// `used_by_curr_pic_lt_sps_flag` of each long-term candidate.
    long_term_used: Vec<bool>,
    temporal_mvp: bool,
}

#[derive(Clone, Debug)]
struct Pps {
    id: u32,
    sps_id: u32,
    dependent_slice_segments: bool,
    output_flag_present: bool,
    num_extra_slice_header_bits: u32,
    cabac_init_present: bool,
    num_ref_idx_l0_default: u32,
    num_ref_idx_l1_default: u32,
    slice_chroma_qp_offsets_present: bool,
    weighted_pred: bool,
    weighted_bipred: bool,
    tiles_or_wpp: bool,
    loop_filter_across_slices: bool,
    deblocking_override_enabled: bool,
    deblocking_disabled: bool,
    lists_modification_present: bool,
    slice_header_extension_present: bool,
    chroma_qp_offset_list: bool,
}

/// Bits of an escaped NAL unit payload, emulation prevention bytes
/// (`00 00 03`) skipped as they are met; `None` past the end.
struct Bits<'a> {
    data: &'a [u8],
    /// Index in `data` of the byte being read.
    pos: usize,
    /// Bits of it already read (0..8).
    bit: u8,
    zeros: u8,
}

impl<'a> Bits<'a> {
    fn new(data: &'a [u8]) -> Self {
        Bits {
            data,
            pos: 0,
            bit: 0,
            zeros: 0,
        }
    }

    fn bit(&mut self) -> Option<u32> {
        if self.bit == 0 && self.zeros >= 2 && self.data.get(self.pos) == Some(&3) {
            self.pos += 1;
            self.zeros = 0;
        }
        let byte = *self.data.get(self.pos)?;
        let v = (byte >> (7 - self.bit)) & 1;
        self.bit += 1;
        if self.bit == 8 {
            self.bit = 0;
            self.pos += 1;
            self.zeros = if byte == 0 { self.zeros + 1 } else { 0 };
        }
        Some(u32::from(v))
    }

    fn u(&mut self, n: u32) -> Option<u32> {
        let mut v = 0u32;
        for _ in 0..n {
            v = (v << 1) | self.bit()?;
        }
        Some(v)
    }

    fn flag(&mut self) -> Option<bool> {
        Some(self.bit()? == 1)
    }

    fn skip(&mut self, n: u32) -> Option<()> {
        for _ in 0..n {
            self.bit()?;
        }
        Some(())
    }

    /// Exp-Golomb `ue(v)`, at most 32 bits of value.
    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        let rest = self.u(zeros)?;
        Some(((1u64 << zeros) - 1 + u64::from(rest)).min(u64::from(u32::MAX)) as u32)
    }

    fn se(&mut self) -> Option<()> {
        self.ue().map(|_| ())
    }

    /// `ue(v)` no larger than `max`.
    fn ue_max(&mut self, max: u32) -> Option<u32> {
        self.ue().filter(|v| *v <= max)
    }
}

/// Ceil(Log2(n)), 0 for n <= 1.
fn ceil_log2(n: u64) -> u32 {
    if n <= 1 {
        0
    } else {
        64 - (n - 1).leading_zeros()
    }
}

/// profile_tier_level(1, max_sub_layers_minus1) (H.265 §7.3.3).
fn skip_profile_tier_level(b: &mut Bits, max_sub_layers_minus1: u32) -> Option<()> {
    b.skip(96)?;
    let mut present = Vec::new();
    for _ in 0..max_sub_layers_minus1 {
        present.push((b.flag()?, b.flag()?));
    }
    if max_sub_layers_minus1 > 0 {
        b.skip(2 * (8 - max_sub_layers_minus1))?;
    }
    for (profile, level) in present {
        if profile {
            b.skip(88)?;
        }
        if level {
            b.skip(8)?;
        }
    }
    Some(())
}

/// scaling_list_data() (§7.3.4).
fn skip_scaling_list_data(b: &mut Bits) -> Option<()> {
    for size_id in 0..4u32 {
        let step = if size_id == 3 { 3 } else { 1 };
        for _ in (0..6).step_by(step) {
            if !b.flag()? {
                b.ue()?;
            } else {
                let coefs = 64.min(1 << (4 + (size_id << 1)));
                if size_id > 1 {
                    b.se()?;
                }
                for _ in 0..coefs {
                    b.se()?;
                }
            }
        }
    }
    Some(())
}

/// st_ref_pic_set(idx) (§7.3.7): (NumDeltaPocs, pictures used by the
/// current picture). `sets` are the SPS's sets before it (all of them
/// for a slice header's own set, `in_slice`).
fn short_term_rps(
    b: &mut Bits,
    idx: usize,
    sets: &[(u32, u32)],
    in_slice: bool,
) -> Option<(u32, u32)> {
    let inter = idx != 0 && b.flag()?;
    if inter {
        let delta_idx = if in_slice {
            b.ue_max(64)? as usize + 1
        } else {
            1
        };
        b.flag()?; // delta_rps_sign
        b.ue()?; // abs_delta_rps_minus1
        let reference = sets.get(idx.checked_sub(delta_idx)?)?;
        let (mut count, mut used) = (0, 0);
        for _ in 0..=reference.0 {
            let used_by_curr = b.flag()?;
            let use_delta = used_by_curr || b.flag()?;
            if use_delta {
                count += 1;
            }
            if used_by_curr {
                used += 1;
            }
        }
        Some((count, used))
    } else {
        let negative = b.ue_max(16)?;
        let positive = b.ue_max(16)?;
        let mut used = 0;
        for _ in 0..negative + positive {
            b.ue()?;
            if b.flag()? {
                used += 1;
            }
        }
        Some((negative + positive, used))
    }
}

/// The escaped payload (after the 2-byte header) of an SPS → [`Sps`].
fn parse_sps(payload: &[u8]) -> Option<Sps> {
    let mut b = Bits::new(payload);
    b.skip(4)?; // sps_video_parameter_set_id
    let max_sub_layers_minus1 = b.u(3)?;
    b.skip(1)?;
    skip_profile_tier_level(&mut b, max_sub_layers_minus1)?;
    let id = b.ue_max(15)?;
    let chroma_format_idc = b.ue_max(3)?;
    let separate_colour_plane = chroma_format_idc == 3 && b.flag()?;
    let width = b.ue()?;
    let height = b.ue()?;
    if b.flag()? {
        for _ in 0..4 {
            b.ue()?;
        }
    }
    b.ue()?; // bit_depth_luma_minus8
    b.ue()?; // bit_depth_chroma_minus8
    let log2_max_poc_lsb = b.ue_max(12)? + 4;
    let ordering_info_all = b.flag()?;
    let first = if ordering_info_all {
        0
    } else {
        max_sub_layers_minus1
    };
    for _ in first..=max_sub_layers_minus1 {
        b.ue()?;
        b.ue()?;
        b.ue()?;
    }
    let log2_min_cb = b.ue_max(3)? + 3;
    let log2_ctb = log2_min_cb + b.ue_max(3)?;
    b.ue()?; // log2_min_luma_transform_block_size_minus2
    b.ue()?; // log2_diff_max_min_luma_transform_block_size
    b.ue()?; // max_transform_hierarchy_depth_inter
    b.ue()?; // max_transform_hierarchy_depth_intra
    if b.flag()? && b.flag()? {
        skip_scaling_list_data(&mut b)?;
    }
    b.flag()?; // amp_enabled_flag
    let sample_adaptive_offset = b.flag()?;
    if b.flag()? {
        // pcm: bit depths (4 + 4), sizes, loop filter flag
        b.skip(8)?;
        b.ue()?;
        b.ue()?;
        b.skip(1)?;
    }
    let num_short_term = b.ue_max(64)? as usize;
    let mut short_term_rps_sets = Vec::with_capacity(num_short_term);
    for i in 0..num_short_term {
        let set = short_term_rps(&mut b, i, &short_term_rps_sets, false)?;
        short_term_rps_sets.push(set);
    }
    let long_term_ref_pics_present = b.flag()?;
    let mut long_term_used = Vec::new();
    if long_term_ref_pics_present {
        let n = b.ue_max(32)?;
        for _ in 0..n {
            b.skip(log2_max_poc_lsb)?;
            long_term_used.push(b.flag()?);
        }
    }
    let temporal_mvp = b.flag()?;
    let ctb = 1u64 << log2_ctb;
    let pic_size_in_ctbs = u64::from(width).div_ceil(ctb) * u64::from(height).div_ceil(ctb);
    Some(Sps {
        id,
        chroma_array_type: if separate_colour_plane {
            0
        } else {
            chroma_format_idc
        },
        separate_colour_plane,
        pic_size_in_ctbs,
        log2_max_poc_lsb,
        sample_adaptive_offset,
        short_term_rps: short_term_rps_sets,
        long_term_ref_pics_present,
        long_term_used,
        temporal_mvp,
    })
}

/// The escaped payload of a PPS → [`Pps`]; `None` for what slice headers
/// of this parser cannot follow (multilayer, 3D and SCC extensions).
fn parse_pps(payload: &[u8]) -> Option<Pps> {
    let mut b = Bits::new(payload);
    let id = b.ue_max(63)?;
    let sps_id = b.ue_max(15)?;
    let dependent_slice_segments = b.flag()?;
    let output_flag_present = b.flag()?;
    let num_extra_slice_header_bits = b.u(3)?;
    b.flag()?; // sign_data_hiding_enabled_flag
    let cabac_init_present = b.flag()?;
    let num_ref_idx_l0_default = b.ue_max(14)? + 1;
    let num_ref_idx_l1_default = b.ue_max(14)? + 1;
    b.se()?; // init_qp_minus26
    b.flag()?; // constrained_intra_pred_flag
    let transform_skip = b.flag()?;
    if b.flag()? {
        b.ue()?; // diff_cu_qp_delta_depth
    }
    b.se()?;
    b.se()?;
    let slice_chroma_qp_offsets_present = b.flag()?;
    let weighted_pred = b.flag()?;
    let weighted_bipred = b.flag()?;
    b.flag()?; // transquant_bypass_enabled_flag
    let tiles = b.flag()?;
    let wpp = b.flag()?;
    if tiles {
        let columns = b.ue_max(64)?;
        let rows = b.ue_max(64)?;
        if !b.flag()? {
            for _ in 0..columns + rows {
                b.ue()?;
            }
        }
        b.flag()?; // loop_filter_across_tiles_enabled_flag
    }
    let loop_filter_across_slices = b.flag()?;
    let (mut deblocking_override_enabled, mut deblocking_disabled) = (false, false);
    if b.flag()? {
        deblocking_override_enabled = b.flag()?;
        deblocking_disabled = b.flag()?;
        if !deblocking_disabled {
            b.se()?;
            b.se()?;
        }
    }
    if b.flag()? {
        skip_scaling_list_data(&mut b)?;
    }
    let lists_modification_present = b.flag()?;
    b.ue()?; // log2_parallel_merge_level_minus2
    let slice_header_extension_present = b.flag()?;
    let mut chroma_qp_offset_list = false;
    if b.flag()? {
        let range = b.flag()?;
        let multilayer = b.flag()?;
        let three_d = b.flag()?;
        let scc = b.flag()?;
        b.u(4)?;
        if multilayer || three_d || scc {
            return None;
        }
        if range {
            if transform_skip {
                b.ue()?;
            }
            b.flag()?; // cross_component_prediction_enabled_flag
            chroma_qp_offset_list = b.flag()?;
        }
    }
    Some(Pps {
        id,
        sps_id,
        dependent_slice_segments,
        output_flag_present,
        num_extra_slice_header_bits,
        cabac_init_present,
        num_ref_idx_l0_default,
        num_ref_idx_l1_default,
        slice_chroma_qp_offsets_present,
        weighted_pred,
        weighted_bipred,
        tiles_or_wpp: tiles || wpp,
        loop_filter_across_slices,
        deblocking_override_enabled,
        deblocking_disabled,
        lists_modification_present,
        slice_header_extension_present,
        chroma_qp_offset_list,
    })
}

impl HevcParameterSets {
    /// The SPS and PPS NAL units of an `hvcC` record's arrays (ISO/IEC
    /// 14496-15 §8.3.3.1); the ones that do not parse are left out.
    pub fn from_hvcc(hvcc: &[u8]) -> HevcParameterSets {
        let mut sets = HevcParameterSets::default();
        for nal in super::hevc::hvcc_nals(hvcc) {
            sets.add(nal);
        }
        sets
    }

    /// Takes an SPS or PPS NAL unit (with its header); others are ignored.
    pub fn add(&mut self, nal: &[u8]) {
        let Some(payload) = nal.get(2..) else {
            return;
        };
        match (nal[0] >> 1) & 0x3f {
            33 => {
                if let Some(sps) = parse_sps(payload) {
                    self.sps.retain(|s| s.id != sps.id);
                    self.sps.push(sps);
                }
            }
            34 => {
                if let Some(pps) = parse_pps(payload) {
                    self.pps.retain(|p| p.id != pps.id);
                    self.pps.push(pps);
                }
            }
            _ => {}
        }
    }

    /// Bytes of a VCL NAL unit's (`nal` with its 2-byte header) slice
    /// segment header after the NAL header, in the escaped bytes; `None`
    /// when it cannot be followed.
    pub fn slice_header_len(&self, nal: &[u8]) -> Option<usize> {
        let nal_type = u32::from((nal.first()? >> 1) & 0x3f);
        let mut b = Bits::new(nal.get(2..)?);
        let first_in_pic = b.flag()?;
        if (16..=23).contains(&nal_type) {
            b.flag()?; // no_output_of_prior_pics_flag
        }
        let pps_id = b.ue_max(63)?;
        let pps = self.pps.iter().find(|p| p.id == pps_id)?;
        let sps = self.sps.iter().find(|s| s.id == pps.sps_id)?;
        let mut dependent = false;
        if !first_in_pic {
            if pps.dependent_slice_segments {
                dependent = b.flag()?;
            }
            b.skip(ceil_log2(sps.pic_size_in_ctbs))?;
        }
        if !dependent {
            b.skip(pps.num_extra_slice_header_bits)?;
            let slice_type = b.ue_max(2)?;
            if pps.output_flag_present {
                b.flag()?;
            }
            if sps.separate_colour_plane {
                b.skip(2)?;
            }
            let mut temporal_mvp = false;
            let mut pic_total_curr = 0u32;
            if nal_type != 19 && nal_type != 20 {
                b.skip(sps.log2_max_poc_lsb)?;
                let sets = &sps.short_term_rps;
                let (_, used) = if !b.flag()? {
                    short_term_rps(&mut b, sets.len(), sets, true)?
                } else {
                    let idx = b.u(ceil_log2(sets.len() as u64))? as usize;
                    *sets.get(idx)?
                };
                pic_total_curr += used;
                if sps.long_term_ref_pics_present {
                    let from_sps = if sps.long_term_used.is_empty() {
                        0
                    } else {
                        b.ue_max(sps.long_term_used.len() as u32)?
                    };
                    let own = b.ue_max(32)?;
                    for i in 0..from_sps + own {
                        let used = if i < from_sps {
                            let bits = ceil_log2(sps.long_term_used.len() as u64);
                            *sps.long_term_used.get(b.u(bits)? as usize)?
                        } else {
                            b.skip(sps.log2_max_poc_lsb)?;
                            b.flag()?
                        };
                        if used {
                            pic_total_curr += 1;
                        }
                        if b.flag()? {
                            b.ue()?; // delta_poc_msb_cycle_lt
                        }
                    }
                }
                if sps.temporal_mvp {
                    temporal_mvp = b.flag()?;
                }
            }
            let (mut sao_luma, mut sao_chroma) = (false, false);
            if sps.sample_adaptive_offset {
                sao_luma = b.flag()?;
                if sps.chroma_array_type != 0 {
                    sao_chroma = b.flag()?;
                }
            }
            let (p_slice, b_slice) = (slice_type == 1, slice_type == 0);
            if p_slice || b_slice {
                let (mut l0, mut l1) = (pps.num_ref_idx_l0_default, pps.num_ref_idx_l1_default);
                if b.flag()? {
                    l0 = b.ue_max(14)? + 1;
                    if b_slice {
                        l1 = b.ue_max(14)? + 1;
                    }
                }
                if !b_slice {
                    l1 = 0;
                }
                if pps.lists_modification_present && pic_total_curr > 1 {
                    let bits = ceil_log2(u64::from(pic_total_curr));
                    if b.flag()? {
                        b.skip(bits * l0)?;
                    }
                    if b_slice && b.flag()? {
                        b.skip(bits * l1)?;
                    }
                }
                if b_slice {
                    b.flag()?; // mvd_l1_zero_flag
                }
                if pps.cabac_init_present {
                    b.flag()?;
                }
                if temporal_mvp {
                    let from_l0 = if b_slice { b.flag()? } else { true };
                    if (from_l0 && l0 > 1) || (!from_l0 && l1 > 1) {
                        b.ue()?; // collocated_ref_idx
                    }
                }
                if (pps.weighted_pred && p_slice) || (pps.weighted_bipred && b_slice) {
                    skip_pred_weight_table(&mut b, sps.chroma_array_type != 0, l0, l1)?;
                }
                b.ue()?; // five_minus_max_num_merge_cand
            }
            b.se()?; // slice_qp_delta
            if pps.slice_chroma_qp_offsets_present {
                b.se()?;
                b.se()?;
            }
            if pps.chroma_qp_offset_list {
                b.flag()?;
            }
            let mut deblocking_override = false;
            if pps.deblocking_override_enabled {
                deblocking_override = b.flag()?;
            }
            let mut deblocking_disabled = pps.deblocking_disabled;
            if deblocking_override {
                deblocking_disabled = b.flag()?;
                if !deblocking_disabled {
                    b.se()?;
                    b.se()?;
                }
            }
            if pps.loop_filter_across_slices && (sao_luma || sao_chroma || !deblocking_disabled) {
                b.flag()?;
            }
        }
        if pps.tiles_or_wpp {
            let offsets = b.ue_max(1 << 16)?;
            if offsets > 0 {
                let bits = b.ue_max(31)? + 1;
                for _ in 0..offsets {
                    b.skip(bits)?;
                }
            }
        }
        if pps.slice_header_extension_present {
            let len = b.ue_max(256)?;
            b.skip(8 * len)?;
        }
        // byte_alignment(): a one, then zeros up to the byte boundary.
        if !b.flag()? {
            return None;
        }
        while b.bit != 0 {
            if b.flag()? {
                return None;
            }
        }
        Some(b.pos)
    }

    /// `(clear, protected)` byte counts of a sample with 4-byte NAL lengths
    /// (see the module docs); a sample that does not parse is all clear.
    pub fn subsamples(&self, sample: &[u8], scheme: Scheme) -> Vec<(u16, u32)> {
        let mut out = Vec::new();
        let mut clear = 0usize;
        let mut at = 0usize;
        let push = |out: &mut Vec<(u16, u32)>, clear: &mut usize, protected: usize| {
            while *clear > usize::from(u16::MAX) {
                out.push((u16::MAX, 0));
                *clear -= usize::from(u16::MAX);
            }
            out.push((*clear as u16, protected as u32));
            *clear = 0;
        };
        while at + 4 <= sample.len() {
            let len =
                u32::from_be_bytes([sample[at], sample[at + 1], sample[at + 2], sample[at + 3]])
                    as usize;
            if len < 2 || at + 4 + len > sample.len() {
                break;
            }
            let nal = &sample[at + 4..at + 4 + len];
            let vcl = (nal[0] >> 1) & 0x3f < 32;
            let header = if vcl {
                self.slice_header_len(nal)
            } else {
                None
            };
            let protected = match header {
                Some(header) if 2 + header < len => {
                    let data = len - 2 - header;
                    match scheme {
                        Scheme::Cenc => data / 16 * 16,
                        Scheme::Cbcs => data,
                    }
                }
                _ => 0,
            };
            clear += 4 + len - protected;
            if protected > 0 {
                push(&mut out, &mut clear, protected);
            }
            at += 4 + len;
        }
        clear += sample.len() - at;
        if clear > 0 {
            push(&mut out, &mut clear, 0);
        }
        out
    }
}

/// pred_weight_table() (§7.3.6.3) of a single-layer picture.
fn skip_pred_weight_table(b: &mut Bits, chroma: bool, l0: u32, l1: u32) -> Option<()> {
    b.ue()?; // luma_log2_weight_denom
    if chroma {
        b.se()?;
    }
    for count in [l0, l1] {
        if count == 0 {
            continue;
        }
        let mut luma = Vec::with_capacity(count as usize);
        for _ in 0..count {
            luma.push(b.flag()?);
        }
        let mut chroma_flags = vec![false; count as usize];
        if chroma {
            for f in chroma_flags.iter_mut() {
                *f = b.flag()?;
            }
        }
        for (l, c) in luma.into_iter().zip(chroma_flags) {
            if l {
                b.se()?;
                b.se()?;
            }
            if c {
                for _ in 0..4 {
                    b.se()?;
                }
            }
        }
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_skip_emulation_prevention_bytes() {
        let data = [0x00, 0x00, 0x03, 0x01, 0x80];
        let mut b = Bits::new(&data);
        assert_eq!(b.u(16), Some(0));
        assert_eq!(b.u(8), Some(1), "the 03 after two zeros is not data");
        assert_eq!(b.pos, 4);
        assert_eq!(b.flag(), Some(true));
        let mut g = Bits::new(&[0b0010_1000]);
        assert_eq!(g.ue(), Some(4));
        assert_eq!(ceil_log2(1), 0);
        assert_eq!(ceil_log2(2), 1);
        assert_eq!(ceil_log2(5), 3);
        assert_eq!(ceil_log2(8), 3);
    }

    /// x265 with B-pyramids, weighted prediction in P and B slices, two
    /// slices per picture and wavefronts (entry points): every slice
    /// header ends where ffmpeg's own parser (`trace_headers`) says.
    #[test]
    fn slice_header_ends_agree_with_ffmpeg() {
        let dir = std::env::temp_dir().join(format!("strata-hevc-cenc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("t.hevc");
        let made = std::process::Command::new("ffmpeg")
            .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y"])
            .args(["-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25", "-t", "2"])
            .args(["-c:v", "libx265", "-preset", "ultrafast", "-x265-params"])
            .arg("log-level=error:keyint=25:bframes=3:b-pyramid=1:weightp=1:weightb=1:slices=2:wpp=1")
            .args(["-f", "hevc"])
            .arg(&file)
            .output()
            .expect("ffmpeg (with libx265) — run scripts/install-test-deps.sh");
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
        let traced = std::process::Command::new("ffmpeg")
            .args(["-hide_banner", "-nostdin", "-loglevel", "debug", "-i"])
            .arg(&file)
            .args(["-c", "copy", "-bsf:v", "trace_headers", "-f", "null", "-"])
            .output()
            .expect("ffmpeg");
        let stream = std::fs::read(&file).expect("read");
        let _ = std::fs::remove_dir_all(&dir);
        // ffmpeg: the bit position of each slice header's last alignment
        // bit, counted from the NAL unit header, in unescaped bits.
        let log = String::from_utf8_lossy(&traced.stderr);
        let mut expected = Vec::new();
        let mut last_alignment = None;
        for line in log.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if let Some(i) = fields
                .iter()
                .position(|f| f.starts_with("alignment_bit_equal_to"))
            {
                last_alignment = fields[i - 1].parse::<usize>().ok();
            } else if let Some(bit) = last_alignment.take() {
                expected.push((bit + 1) / 8 - 2);
            }
        }
        // Annex B → NAL units.
        let mut starts = Vec::new();
        let mut i = 0;
        while i + 3 <= stream.len() {
            if stream[i..i + 3] == [0, 0, 1] {
                starts.push(i + 3);
                i += 3;
            } else {
                i += 1;
            }
        }
        let mut sets = HevcParameterSets::default();
        let mut found = Vec::new();
        for (k, &start) in starts.iter().enumerate() {
            let mut end = starts.get(k + 1).map_or(stream.len(), |next| next - 3);
            while end > start && stream[end - 1] == 0 {
                end -= 1;
            }
            let nal = &stream[start..end];
            match (nal[0] >> 1) & 0x3f {
                33 | 34 => sets.add(nal),
                t if t < 32 => found.push(sets.slice_header_len(nal).expect("a slice header")),
                _ => {}
            }
        }
        assert!(
            found.len() >= 100,
            "2 s of two-slice pictures: {}",
            found.len()
        );
        assert_eq!(found, expected, "slice header lengths, ours then ffmpeg's");
    }

    #[test]
    fn unparseable_samples_stay_clear_and_layouts_cover_the_sample() {
        let sets = HevcParameterSets::from_hvcc(&[1; 10]);
        // A VCL NAL unit (type 1) whose PPS is unknown: wholly clear.
        let mut sample = vec![0, 0, 0, 40, 0x02, 0x01];
        sample.extend([0xaa; 38]);
        sample.extend([0, 0, 0, 3, 0x40, 0x01, 0x0c]); // a VPS
        assert_eq!(sets.subsamples(&sample, Scheme::Cbcs), vec![(51, 0)]);
        assert_eq!(
            sets.subsamples(&[0xff; 9], Scheme::Cenc),
            vec![(9, 0)],
            "a length past the end"
        );
    }
}
