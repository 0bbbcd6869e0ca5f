//! MPEG-TS muxer (ISO/IEC 13818-1) for legacy HLS segments (RFC 8216bis §3.2).
//!
//! One segment is self-contained: it opens with PAT and PMT, then carries
//! H.264 in Annex B form (access unit delimiter first, SPS/PPS in front of
//! every IDR) and AAC in ADTS frames, each access unit in its own PES packet,
//! interleaved by decode time. Timestamps are 90 kHz; audio is rescaled.

use bytes::{BufMut, Bytes, BytesMut};

use super::{AudioParams, Sample, VideoParams, VIDEO_TIMESCALE};

pub const PACKET_SIZE: usize = 188;
pub const PMT_PID: u16 = 0x1000;
pub const VIDEO_PID: u16 = 0x100;
pub const AUDIO_PID: u16 = 0x101;
/// ISO/IEC 13818-1 Table 2-34 stream_type values.
pub const STREAM_TYPE_H264: u8 = 0x1b;
pub const STREAM_TYPE_HEVC: u8 = 0x24;
pub const STREAM_TYPE_AAC_ADTS: u8 = 0x0f;

const PTS_MASK: u64 = (1 << 33) - 1;

/// Mux one HLS TS segment from a window of video and/or audio samples,
/// continuity counters starting at 0.
pub fn segment(
    video: Option<(&VideoParams, &[Sample])>,
    audio: Option<(&AudioParams, &[Sample])>,
) -> Bytes {
    segment_continuing(video, audio, Continuity::default()).0
}

/// Mux one segment whose continuity counters carry on from `start` (the
/// previous segment's end), so players reading segments back to back see
/// no continuity errors (§2.4.3.3). Returns the counters after it.
pub fn segment_continuing(
    video: Option<(&VideoParams, &[Sample])>,
    audio: Option<(&AudioParams, &[Sample])>,
    start: Continuity,
) -> (Bytes, Continuity) {
    let payload: usize = video.map_or(0, |(_, s)| s.iter().map(|x| x.data.len()).sum())
        + audio.map_or(0, |(_, s)| s.iter().map(|x| x.data.len()).sum());
    let mut out = BytesMut::with_capacity(PACKET_SIZE * (8 + payload * 11 / 10 / 184));
    let mut cc = start;
    let pcr_pid = if video.is_some() {
        VIDEO_PID
    } else {
        AUDIO_PID
    };
    write_packets(&mut out, 0, &write_pat(), None, false, &mut cc.pat);
    let streams: Vec<(u8, u16)> = video
        .map(|(params, _)| {
            let stream_type = if is_hevc(params) {
                STREAM_TYPE_HEVC
            } else {
                STREAM_TYPE_H264
            };
            (stream_type, VIDEO_PID)
        })
        .into_iter()
        .chain(audio.map(|_| (STREAM_TYPE_AAC_ADTS, AUDIO_PID)))
        .collect();
    write_packets(
        &mut out,
        PMT_PID,
        &write_pmt(pcr_pid, &streams),
        None,
        false,
        &mut cc.pmt,
    );
    mux_order(video, audio, |unit| match unit {
        Unit::Video(params, s, pcr) => {
            let pes = write_pes(0xe0, s.pts(), Some(s.dts), &annex_b_access_unit(params, s));
            write_packets(&mut out, VIDEO_PID, &pes, pcr, s.keyframe, &mut cc.video);
        }
        Unit::Audio(params, s, pts, pcr) => {
            let pes = write_pes(0xc0, pts, None, &adts_frame(params, &s.data));
            write_packets(&mut out, AUDIO_PID, &pes, pcr, true, &mut cc.audio);
        }
    });
    (out.freeze(), cc)
}

/// The counters [`segment_continuing`] would end with, computed from sample
/// sizes alone (no bytes built), so a store can chain segments cheaply.
pub fn continuity_after(
    video: Option<(&VideoParams, &[Sample])>,
    audio: Option<(&AudioParams, &[Sample])>,
    start: Continuity,
) -> Continuity {
    let mut cc = start;
    cc.pat = (cc.pat + 1) & 0xf;
    cc.pmt = (cc.pmt + 1) & 0xf;
    let bump = |c: &mut u8, n: usize| *c = ((usize::from(*c) + n) & 0xf) as u8;
    mux_order(video, audio, |unit| match unit {
        Unit::Video(params, s, pcr) => {
            let header = if s.pts() != s.dts { 19 } else { 14 };
            let len = header + annex_b_len(params, s);
            bump(&mut cc.video, packet_count(len, pcr.is_some(), s.keyframe));
        }
        Unit::Audio(_, s, _, pcr) => {
            bump(
                &mut cc.audio,
                packet_count(14 + 7 + s.data.len(), pcr.is_some(), true),
            );
        }
    });
    cc
}

/// Packets [`write_packets`] uses for `len` payload bytes.
fn packet_count(len: usize, pcr: bool, random_access: bool) -> usize {
    let first_af = match (pcr, random_access) {
        (true, _) => 8,
        (false, true) => 2,
        (false, false) => 0,
    };
    let room = 184 - first_af;
    1 + len.saturating_sub(room).div_ceil(184)
}

/// One access unit in multiplex order, with the PCR it carries, if any.
enum Unit<'a> {
    Video(&'a VideoParams, &'a Sample, Option<i64>),
    /// Audio with its PTS rescaled to 90 kHz.
    Audio(&'a AudioParams, &'a Sample, i64, Option<i64>),
}

/// Walk video and audio interleaved by decode time (90 kHz).
fn mux_order<'a>(
    video: Option<(&'a VideoParams, &'a [Sample])>,
    audio: Option<(&'a AudioParams, &'a [Sample])>,
    mut each: impl FnMut(Unit<'a>),
) {
    let pcr_on_video = video.is_some();
    let videos = video.map_or(&[][..], |(_, s)| s);
    let audios = audio.map_or(&[][..], |(_, s)| s);
    let audio_rate = audio.map_or(VIDEO_TIMESCALE, |(a, _)| a.sample_rate.max(1));
    let (mut vi, mut ai) = (0, 0);
    loop {
        let v_dts = videos.get(vi).map(|s| s.dts);
        let a_dts = audios.get(ai).map(|s| rescale(s.dts, audio_rate));
        match (video, audio, v_dts, a_dts) {
            (Some((params, _)), _, Some(v), a) if a.is_none_or(|a| v <= a) => {
                let s = &videos[vi];
                vi += 1;
                each(Unit::Video(params, s, Some(s.dts)));
            }
            (_, Some((params, _)), _, Some(_)) => {
                let s = &audios[ai];
                ai += 1;
                let pts = rescale(s.pts(), audio_rate);
                each(Unit::Audio(params, s, pts, (!pcr_on_video).then_some(pts)));
            }
            _ => break,
        }
    }
}

/// 4-bit continuity_counter per PID (§2.4.3.3), as they stand after a segment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Continuity {
    pub pat: u8,
    pub pmt: u8,
    pub video: u8,
    pub audio: u8,
}

fn rescale(ts: i64, from: u32) -> i64 {
    (i128::from(ts) * i128::from(VIDEO_TIMESCALE)).div_euclid(i128::from(from)) as i64
}

/// MPEG-2 CRC-32 (polynomial 0x04C11DB7, no reflection), as PSI sections use.
pub fn crc32_mpeg2(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= u32::from(b) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04c1_1db7
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// Program association section (§2.4.4.3) with one program → PMT_PID,
/// preceded by its pointer_field.
pub fn write_pat() -> Bytes {
    let mut body = BytesMut::new();
    body.put_u16(1); // transport_stream_id
    body.put_u8(0xc1); // version 0, current_next 1
    body.put_u8(0); // section_number
    body.put_u8(0); // last_section_number
    body.put_u16(1); // program_number
    body.put_u16(0xe000 | PMT_PID);
    psi_section(0x00, &body)
}

/// TS program map section (§2.4.4.8) for program 1.
pub fn write_pmt(pcr_pid: u16, streams: &[(u8, u16)]) -> Bytes {
    let mut body = BytesMut::new();
    body.put_u16(1); // program_number
    body.put_u8(0xc1);
    body.put_u8(0);
    body.put_u8(0);
    body.put_u16(0xe000 | pcr_pid);
    body.put_u16(0xf000); // program_info_length 0
    for &(stream_type, pid) in streams {
        body.put_u8(stream_type);
        body.put_u16(0xe000 | pid);
        body.put_u16(0xf000); // ES_info_length 0
    }
    psi_section(0x02, &body)
}

fn psi_section(table_id: u8, body: &[u8]) -> Bytes {
    let mut s = BytesMut::new();
    s.put_u8(0); // pointer_field
    s.put_u8(table_id);
    // section_syntax_indicator 1, '0', reserved '11', length includes CRC.
    s.put_u16(0xb000 | (body.len() as u16 + 4));
    s.put_slice(body);
    let crc = crc32_mpeg2(&s[1..]);
    s.put_u32(crc);
    s.freeze()
}

/// PES packet (§2.4.3.6) with PTS, and DTS when it differs from PTS.
pub fn write_pes(stream_id: u8, pts: i64, dts: Option<i64>, payload: &[u8]) -> Bytes {
    let dts = dts.filter(|d| *d != pts);
    let header_len: usize = if dts.is_some() { 10 } else { 5 };
    let mut b = BytesMut::with_capacity(9 + header_len + payload.len());
    b.put_slice(&[0, 0, 1, stream_id]);
    let len = 3 + header_len + payload.len();
    // Video may exceed 16 bits: 0 means unbounded (§2.4.3.7).
    b.put_u16(if len > 0xffff || stream_id & 0xf0 == 0xe0 {
        0
    } else {
        len as u16
    });
    b.put_u8(0x80); // '10', no scrambling, no priority/alignment/copyright
    b.put_u8(if dts.is_some() { 0xc0 } else { 0x80 });
    b.put_u8(header_len as u8);
    match dts {
        Some(d) => {
            put_timestamp(&mut b, 0b0011, pts);
            put_timestamp(&mut b, 0b0001, d);
        }
        None => put_timestamp(&mut b, 0b0010, pts),
    }
    b.put_slice(payload);
    b.freeze()
}

/// 33-bit timestamp in the 5-byte marker-bit layout of §2.4.3.7.
fn put_timestamp(b: &mut BytesMut, prefix: u8, ts: i64) {
    let ts = (ts as u64) & PTS_MASK;
    b.put_u8((prefix << 4) | (((ts >> 30) as u8 & 0x7) << 1) | 1);
    b.put_u16((((ts >> 15) & 0x7fff) as u16) << 1 | 1);
    b.put_u16(((ts & 0x7fff) as u16) << 1 | 1);
}

/// Split a PES or PSI payload into 188-byte packets. The first carries
/// payload_unit_start, the random access flag and PCR when given; the last
/// is padded with adaptation-field stuffing.
fn write_packets(
    out: &mut BytesMut,
    pid: u16,
    payload: &[u8],
    pcr: Option<i64>,
    random_access: bool,
    cc: &mut u8,
) {
    let mut rest = payload;
    let mut first = true;
    while first || !rest.is_empty() {
        let mut af = Vec::new();
        if first && (pcr.is_some() || random_access) {
            let mut flags = 0u8;
            if random_access {
                flags |= 0x40;
            }
            if pcr.is_some() {
                flags |= 0x10;
            }
            af.push(flags);
            if let Some(pcr) = pcr {
                let base = (pcr as u64) & PTS_MASK;
                // 33-bit base, 6 reserved bits, 9-bit extension (0).
                let v = (base << 15) | (0x3f << 9);
                af.extend_from_slice(&v.to_be_bytes()[2..]);
            }
        }
        let header_room = if af.is_empty() { 0 } else { 1 + af.len() };
        let room = 184 - header_room;
        let take = room.min(rest.len());
        let stuffing = room - take;
        if stuffing > 0 {
            if af.is_empty() {
                // An adaptation field of `stuffing` bytes including its length byte.
                if stuffing > 1 {
                    af.push(0);
                    af.resize(stuffing - 1, 0xff);
                }
            } else {
                af.resize(af.len() + stuffing, 0xff);
            }
        }
        let has_af = !af.is_empty() || stuffing > 0;
        out.put_u8(0x47);
        out.put_u16((if first { 0x4000 } else { 0 }) | (pid & 0x1fff));
        out.put_u8(if has_af { 0x30 } else { 0x10 } | (*cc & 0x0f));
        *cc = (*cc + 1) & 0x0f;
        if has_af {
            out.put_u8(af.len() as u8);
            out.put_slice(&af);
        }
        out.put_slice(&rest[..take]);
        rest = &rest[take..];
        first = false;
    }
}

/// Whether `params` are HEVC's (a VOD title's: codec `hvc1.…`/`hev1.…`,
/// VPS and SPS in `sps`, PPS in `pps`).
fn is_hevc(params: &VideoParams) -> bool {
    params.codec.starts_with("hvc1") || params.codec.starts_with("hev1")
}

/// The codec's access unit delimiter, and NAL-unit tests for a parameter
/// set that starts a keyframe's (SPS for AVC, VPS or SPS for HEVC) and for
/// a delimiter.
struct NalKinds {
    aud: &'static [u8],
    sequence_set: fn(u8) -> bool,
    delimiter: fn(u8) -> bool,
}

fn nal_kinds(params: &VideoParams) -> NalKinds {
    if is_hevc(params) {
        // ITU-T H.265 §7.3.2.5: AUD (type 35), pic_type 2 (any), stop bit.
        NalKinds {
            aud: &[0x46, 0x01, 0x50],
            sequence_set: |b| matches!((b >> 1) & 0x3f, 32 | 33),
            delimiter: |b| (b >> 1) & 0x3f == 35,
        }
    } else {
        NalKinds {
            aud: &[0x09, 0xf0], // AUD, primary_pic_type 7 (any)
            sequence_set: |b| b & 0x1f == 7,
            delimiter: |b| b & 0x1f == 9,
        }
    }
}

/// AVCC sample → Annex B access unit (ISO/IEC 14496-10 §B.1, ITU-T H.265
/// §B.2): AUD, then the parameter sets before a keyframe unless the sample
/// carries them, then the NALs.
pub fn annex_b_access_unit(params: &VideoParams, sample: &Sample) -> Bytes {
    const START: [u8; 4] = [0, 0, 0, 1];
    let kinds = nal_kinds(params);
    let mut out = BytesMut::with_capacity(sample.data.len() + 64);
    out.put_slice(&START);
    out.put_slice(kinds.aud);
    let nals = avcc_nals(&sample.data);
    let has_sps = nals
        .iter()
        .any(|n| n.first().is_some_and(|b| (kinds.sequence_set)(*b)));
    if sample.keyframe && !has_sps {
        for ps in params.sps.iter().chain(&params.pps) {
            out.put_slice(&START);
            out.put_slice(ps);
        }
    }
    for nal in nals {
        if nal.first().is_some_and(|b| (kinds.delimiter)(*b)) {
            continue;
        }
        out.put_slice(&START);
        out.put_slice(nal);
    }
    out.freeze()
}

/// Length of [`annex_b_access_unit`]'s output, without building it.
fn annex_b_len(params: &VideoParams, sample: &Sample) -> usize {
    let kinds = nal_kinds(params);
    let nals = avcc_nals(&sample.data);
    let has_sps = nals
        .iter()
        .any(|n| n.first().is_some_and(|b| (kinds.sequence_set)(*b)));
    let mut len = 4 + kinds.aud.len();
    if sample.keyframe && !has_sps {
        len += params
            .sps
            .iter()
            .chain(&params.pps)
            .map(|p| 4 + p.len())
            .sum::<usize>();
    }
    len + nals
        .iter()
        .filter(|n| !n.first().is_some_and(|b| (kinds.delimiter)(*b)))
        .map(|n| 4 + n.len())
        .sum::<usize>()
}

/// NAL units of a 4-byte-length-prefixed sample; a truncated tail is dropped.
fn avcc_nals(mut data: &[u8]) -> Vec<&[u8]> {
    let mut nals = Vec::new();
    while data.len() >= 4 {
        let len = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
        if len > data.len() - 4 {
            break;
        }
        nals.push(&data[4..4 + len]);
        data = &data[4 + len..];
    }
    nals
}

/// Raw AAC frame → ADTS frame (ISO/IEC 14496-3 §1.A.2), fields from the ASC.
pub fn adts_frame(params: &AudioParams, frame: &[u8]) -> Bytes {
    let (object_type, freq_index, channels) = adts_fields(params);
    let len = frame.len() + 7;
    let mut b = BytesMut::with_capacity(len);
    b.put_u8(0xff);
    b.put_u8(0xf1); // MPEG-4, layer 0, protection_absent
    b.put_u8(((object_type - 1) << 6) | (freq_index << 2) | ((channels >> 2) & 1));
    b.put_u8(((channels & 3) << 6) | ((len >> 11) as u8 & 0x3));
    b.put_u8((len >> 3) as u8);
    b.put_u8((((len & 7) as u8) << 5) | 0x1f); // buffer fullness 0x7ff (VBR)
    b.put_u8(0xfc);
    b.put_slice(frame);
    b.freeze()
}

/// (audio object type 1..=4, sampling_frequency_index, channel_configuration).
/// ADTS can only signal the first four object types: HE-AAC is sent as LC,
/// which decoders extend with implicit SBR signalling.
fn adts_fields(params: &AudioParams) -> (u8, u8, u8) {
    const RATES: [u32; 13] = [
        96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
    ];
    let rate_index = RATES
        .iter()
        .position(|r| *r == params.sample_rate)
        .unwrap_or(3) as u8;
    match params.asc.get(..2) {
        Some(&[a, b]) => {
            let aot = a >> 3;
            let freq = ((a & 0x7) << 1) | (b >> 7);
            let ch = (b >> 3) & 0xf;
            let aot = if (1..=4).contains(&aot) { aot } else { 2 };
            let freq = if freq < 13 { freq } else { rate_index };
            (aot, freq, ch)
        }
        _ => (2, rate_index, params.channels & 0x7),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vparams() -> VideoParams {
        VideoParams {
            codec: "avc1.42c01e".into(),
            width: 320,
            height: 240,
            avc_config: Bytes::new(),
            sps: vec![Bytes::from_static(&[0x67, 0x42, 0xc0, 0x1e])],
            pps: vec![Bytes::from_static(&[0x68, 0xce, 0x3c, 0x80])],
        }
    }

    fn aparams() -> AudioParams {
        AudioParams {
            codec: "mp4a.40.2".into(),
            sample_rate: 48_000,
            channels: 2,
            asc: Bytes::from_static(&[0x11, 0x90]),
        }
    }

    fn video_samples() -> Vec<Sample> {
        (0..5)
            .map(|i| Sample {
                dts: 90_000 + i * 3600,
                cts: 3600,
                duration: 3600,
                keyframe: i == 0,
                data: if i == 0 {
                    let mut d = vec![0, 0, 1, 0x04];
                    d.push(0x65);
                    d.extend_from_slice(&[0xab; 0x103]);
                    Bytes::from(d)
                } else {
                    Bytes::from_static(&[0, 0, 0, 2, 0x41, 0x9a])
                },
            })
            .collect()
    }

    fn audio_samples() -> Vec<Sample> {
        (0..8)
            .map(|i| Sample {
                dts: 48_000 + i * 1024,
                cts: 0,
                duration: 1024,
                keyframe: true,
                data: Bytes::from(vec![0x21; 300]),
            })
            .collect()
    }

    fn packets(ts: &[u8]) -> Vec<&[u8]> {
        assert_eq!(ts.len() % PACKET_SIZE, 0);
        ts.chunks(PACKET_SIZE).collect()
    }

    fn pid(p: &[u8]) -> u16 {
        u16::from_be_bytes([p[1], p[2]]) & 0x1fff
    }

    fn payload(p: &[u8]) -> &[u8] {
        if p[3] & 0x20 != 0 {
            &p[5 + p[4] as usize..]
        } else {
            &p[4..]
        }
    }

    /// Reassembled PES packets of one PID.
    fn pes_of(ts: &[u8], want: u16) -> Vec<Vec<u8>> {
        let mut out: Vec<Vec<u8>> = Vec::new();
        for p in packets(ts).into_iter().filter(|p| pid(p) == want) {
            if p[1] & 0x40 != 0 {
                out.push(Vec::new());
            }
            out.last_mut()
                .expect("starts with PUSI")
                .extend_from_slice(payload(p));
        }
        out
    }

    fn read_ts(b: &[u8]) -> u64 {
        (u64::from(b[0] >> 1) & 7) << 30
            | u64::from(u16::from_be_bytes([b[1], b[2]]) >> 1) << 15
            | u64::from(u16::from_be_bytes([b[3], b[4]]) >> 1)
    }

    #[test]
    fn packets_are_aligned_and_counters_continuous() {
        let v = video_samples();
        let a = audio_samples();
        let ts = segment(Some((&vparams(), &v)), Some((&aparams(), &a)));
        let mut last_cc = std::collections::HashMap::new();
        for p in packets(&ts) {
            assert_eq!(p[0], 0x47);
            let cc = p[3] & 0x0f;
            if let Some(prev) = last_cc.insert(pid(p), cc) {
                assert_eq!(cc, (prev + 1) & 0xf, "pid {:#x}", pid(p));
            }
        }
        assert_eq!(pid(packets(&ts)[0]), 0);
        assert_eq!(pid(packets(&ts)[1]), PMT_PID);
    }

    #[test]
    fn psi_tables_carry_valid_crc_and_stream_types() {
        let v = video_samples();
        let a = audio_samples();
        let ts = segment(Some((&vparams(), &v)), Some((&aparams(), &a)));
        let pat = payload(packets(&ts)[0]);
        let len = (usize::from(u16::from_be_bytes([pat[2], pat[3]])) & 0xfff) + 3;
        assert_eq!(
            crc32_mpeg2(&pat[1..1 + len]),
            0,
            "CRC over section incl. CRC is 0"
        );
        let pmt = payload(packets(&ts)[1]);
        let len = (usize::from(u16::from_be_bytes([pmt[2], pmt[3]])) & 0xfff) + 3;
        let section = &pmt[1..1 + len];
        assert_eq!(crc32_mpeg2(section), 0);
        assert_eq!(section[0], 0x02);
        assert_eq!(
            u16::from_be_bytes([section[8], section[9]]) & 0x1fff,
            VIDEO_PID,
            "PCR PID"
        );
        assert_eq!(section[12], STREAM_TYPE_H264);
        assert_eq!(section[17], STREAM_TYPE_AAC_ADTS);
    }

    #[test]
    fn video_pes_has_pts_dts_pcr_and_parameter_sets_before_idr() {
        let v = video_samples();
        let ts = segment(Some((&vparams(), &v)), None);
        let first_video = packets(&ts)
            .into_iter()
            .find(|p| pid(p) == VIDEO_PID)
            .expect("video");
        assert_eq!(first_video[3] & 0x30, 0x30, "adaptation field");
        assert_eq!(first_video[5] & 0x50, 0x50, "random access + PCR");
        let pcr = u64::from_be_bytes([
            0,
            0,
            first_video[6],
            first_video[7],
            first_video[8],
            first_video[9],
            first_video[10],
            first_video[11],
        ]) >> 15;
        assert_eq!(pcr, 90_000);
        let pes = pes_of(&ts, VIDEO_PID);
        assert_eq!(pes.len(), 5);
        let p = &pes[0];
        assert_eq!(&p[..4], &[0, 0, 1, 0xe0]);
        assert_eq!(p[7] & 0xc0, 0xc0);
        assert_eq!(p[9] >> 4, 0b0011);
        assert_eq!(read_ts(&p[9..]), 93_600, "PTS = DTS + cts");
        assert_eq!(p[14] >> 4, 0b0001);
        assert_eq!(read_ts(&p[14..]), 90_000);
        let es = &p[19..];
        let expect_head = [
            0, 0, 0, 1, 0x09, 0xf0, 0, 0, 0, 1, 0x67, 0x42, 0xc0, 0x1e, 0, 0, 0, 1, 0x68,
        ];
        assert_eq!(&es[..expect_head.len()], &expect_head);
        assert_eq!(es.len(), 6 + 8 + 8 + 4 + 0x104);
        // Non-IDR: AUD then slice, no parameter sets.
        assert_eq!(
            &pes[1][19..],
            &[0, 0, 0, 1, 0x09, 0xf0, 0, 0, 0, 1, 0x41, 0x9a]
        );
    }

    #[test]
    fn audio_is_adts_with_rescaled_pts() {
        let a = audio_samples();
        let ts = segment(None, Some((&aparams(), &a)));
        let pes = pes_of(&ts, AUDIO_PID);
        assert_eq!(pes.len(), 8);
        let p = &pes[1];
        assert_eq!(p[3], 0xc0);
        assert_eq!(usize::from(u16::from_be_bytes([p[4], p[5]])), p.len() - 6);
        assert_eq!(read_ts(&p[9..]), (48_000 + 1024) * 90_000 / 48_000);
        let adts = &p[14..];
        assert_eq!(&adts[..2], &[0xff, 0xf1]);
        assert_eq!(adts[2] >> 6, 1, "LC profile");
        assert_eq!((adts[2] >> 2) & 0xf, 3, "48 kHz index");
        let ch = ((adts[2] & 1) << 2) | (adts[3] >> 6);
        assert_eq!(ch, 2);
        let len = (usize::from(adts[3] & 3) << 11)
            | (usize::from(adts[4]) << 3)
            | usize::from(adts[5] >> 5);
        assert_eq!(len, 307);
        assert_eq!(adts.len(), 307);
    }

    #[test]
    fn counters_carry_across_segments() {
        let v = video_samples();
        let a = audio_samples();
        let start = Continuity {
            pat: 15,
            pmt: 3,
            video: 9,
            audio: 14,
        };
        let (ts, end) = segment_continuing(Some((&vparams(), &v)), Some((&aparams(), &a)), start);
        assert_eq!(
            continuity_after(Some((&vparams(), &v)), Some((&aparams(), &a)), start),
            end
        );
        assert_eq!(end.pat, 0);
        let mut last = std::collections::HashMap::new();
        for p in packets(&ts) {
            last.insert(pid(p), p[3] & 0xf);
        }
        assert_eq!(
            packets(&ts)[0][3] & 0xf,
            15,
            "starts where the last segment ended"
        );
        assert_eq!((last[&VIDEO_PID] + 1) & 0xf, end.video);
        assert_eq!((last[&AUDIO_PID] + 1) & 0xf, end.audio);
        // Sizes around packet boundaries.
        for size in [150usize, 160, 162, 170, 176, 177, 178, 184, 355, 356, 540] {
            let s = Sample {
                dts: 0,
                cts: 0,
                duration: 1024,
                keyframe: true,
                data: Bytes::from(vec![1; size]),
            };
            let audio = [s];
            let (_, real) = segment_continuing(None, Some((&aparams(), &audio)), start);
            assert_eq!(
                continuity_after(None, Some((&aparams(), &audio)), start),
                real,
                "{size}"
            );
        }
    }

    #[test]
    fn timestamps_wrap_at_33_bits() {
        let pes = write_pes(0xc0, (1 << 33) + 5, None, &[]);
        assert_eq!(read_ts(&pes[9..]), 5);
        let pes = write_pes(0xc0, 0x1_2345_6789, None, &[]);
        assert_eq!(read_ts(&pes[9..]), 0x1_2345_6789);
        assert_eq!(pes[9] & 1, 1, "marker bits");
    }

    #[test]
    fn interleaves_by_decode_time() {
        let v = video_samples();
        let a = audio_samples();
        let ts = segment(Some((&vparams(), &v)), Some((&aparams(), &a)));
        let mut order = Vec::new();
        for p in packets(&ts) {
            if p[1] & 0x40 != 0 && (pid(p) == VIDEO_PID || pid(p) == AUDIO_PID) {
                let pl = payload(p);
                let at = if pl[7] & 0x40 != 0 { 14 } else { 9 };
                order.push(read_ts(&pl[at..]));
            }
        }
        assert_eq!(order.len(), 13);
        assert!(order.windows(2).all(|w| w[0] <= w[1]), "{order:?}");
    }
}
