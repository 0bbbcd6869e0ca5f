//! CMAF (fragmented MP4) writer: one track per init segment, one `moof`+`mdat`
//! per media segment. Box layouts follow ISO/IEC 14496-12 (ISOBMFF), sample
//! entries ISO/IEC 14496-15 (`avc1`/`avcC`) and 14496-14 (`mp4a`/`esds`).
//!
//! Every box has its own `write_<box>` function that appends to a buffer; the
//! size of each box is patched in after its body is written.

use bytes::{BufMut, Bytes, BytesMut};

use super::{AudioParams, Sample, TrackParams, VideoParams};

/// `sample_flags` (ISO/IEC 14496-12 §8.8.3.1): sample_depends_on = 2 (an I picture).
const SYNC_SAMPLE_FLAGS: u32 = 0x0200_0000;
/// sample_depends_on = 1 and sample_is_non_sync_sample = 1.
const NON_SYNC_SAMPLE_FLAGS: u32 = 0x0101_0000;
/// Unity transformation matrix (§8.2.2.3), 16.16 and 2.30 fixed point.
const UNITY_MATRIX: [u32; 9] = [0x0001_0000, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000];

/// The CMAF header for one track: `ftyp` + `moov` (with `mvex`, no samples).
pub fn init_segment(track_id: u32, params: &TrackParams) -> Bytes {
    let mut buf = BytesMut::with_capacity(1024);
    write_ftyp(&mut buf);
    write_moov(&mut buf, track_id, params);
    buf.freeze()
}

/// One CMAF fragment: `styp` + `moof` + `mdat` for `samples` of one track.
///
/// `base_decode_time` is the decode time of the first sample in the track's
/// timescale (`tfdt`). A sample with `duration == 0` gets the gap to the next
/// sample's decode time, or the previous sample's duration when it is last.
pub fn media_segment(
    sequence_number: u32,
    track_id: u32,
    base_decode_time: u64,
    samples: &[Sample],
) -> Bytes {
    let payload: usize = samples.iter().map(|s| s.data.len()).sum();
    let mut buf = BytesMut::with_capacity(128 + samples.len() * 16 + payload);
    write_styp(&mut buf);
    let moof_start = buf.len();
    let data_offset_at = write_moof(
        &mut buf,
        sequence_number,
        track_id,
        base_decode_time,
        samples,
    );
    // trun data_offset is relative to the first byte of moof (default-base-is-moof)
    // and points past the 8-byte mdat header.
    let data_offset = (buf.len() - moof_start + 8) as u32;
    buf[data_offset_at..data_offset_at + 4].copy_from_slice(&data_offset.to_be_bytes());
    write_mdat(&mut buf, samples);
    buf.freeze()
}

/// Durations as written in `trun`: explicit, else derived from neighbours.
pub fn sample_durations(samples: &[Sample]) -> Vec<u32> {
    let mut out = Vec::with_capacity(samples.len());
    for (i, s) in samples.iter().enumerate() {
        let d = if s.duration > 0 {
            s.duration
        } else if let Some(next) = samples.get(i + 1) {
            u32::try_from(next.dts - s.dts).unwrap_or(0)
        } else {
            out.last().copied().unwrap_or(0)
        };
        out.push(d);
    }
    out
}

pub(crate) fn begin_box(buf: &mut BytesMut, fourcc: &[u8; 4]) -> usize {
    let start = buf.len();
    buf.put_u32(0);
    buf.put_slice(fourcc);
    start
}

pub(crate) fn begin_full_box(
    buf: &mut BytesMut,
    fourcc: &[u8; 4],
    version: u8,
    flags: u32,
) -> usize {
    let start = begin_box(buf, fourcc);
    buf.put_u32((u32::from(version) << 24) | (flags & 0x00ff_ffff));
    start
}

pub(crate) fn end_box(buf: &mut BytesMut, start: usize) {
    let size = (buf.len() - start) as u32;
    buf[start..start + 4].copy_from_slice(&size.to_be_bytes());
}

/// §4.3: CMAF brands (ISO/IEC 23000-19 §7.2) for a track file header.
pub fn write_ftyp(buf: &mut BytesMut) {
    let start = begin_box(buf, b"ftyp");
    buf.put_slice(b"iso6");
    buf.put_u32(0);
    for brand in [b"iso6", b"cmfc", b"mp41", b"dash"] {
        buf.put_slice(brand);
    }
    end_box(buf, start);
}

/// §8.16.2: segment type, `msdh` (media segment) plus the CMAF segment brand.
pub fn write_styp(buf: &mut BytesMut) {
    let start = begin_box(buf, b"styp");
    buf.put_slice(b"msdh");
    buf.put_u32(0);
    for brand in [b"msdh", b"cmfs"] {
        buf.put_slice(brand);
    }
    end_box(buf, start);
}

pub fn write_moov(buf: &mut BytesMut, track_id: u32, params: &TrackParams) {
    let start = begin_box(buf, b"moov");
    write_mvhd(buf, track_id + 1);
    write_trak(buf, track_id, params);
    write_mvex(buf, track_id);
    end_box(buf, start);
}

/// §8.2.2, version 0; duration 0 because the movie is fragmented.
pub fn write_mvhd(buf: &mut BytesMut, next_track_id: u32) {
    let start = begin_full_box(buf, b"mvhd", 0, 0);
    buf.put_u32(0); // creation_time
    buf.put_u32(0); // modification_time
    buf.put_u32(1000); // timescale
    buf.put_u32(0); // duration
    buf.put_u32(0x0001_0000); // rate 1.0
    buf.put_u16(0x0100); // volume 1.0
    buf.put_u16(0);
    buf.put_u64(0);
    for m in UNITY_MATRIX {
        buf.put_u32(m);
    }
    for _ in 0..6 {
        buf.put_u32(0); // pre_defined
    }
    buf.put_u32(next_track_id);
    end_box(buf, start);
}

pub fn write_trak(buf: &mut BytesMut, track_id: u32, params: &TrackParams) {
    let start = begin_box(buf, b"trak");
    write_tkhd(buf, track_id, params);
    write_mdia(buf, params);
    end_box(buf, start);
}

/// §8.3.2, flags track_enabled | track_in_movie.
pub fn write_tkhd(buf: &mut BytesMut, track_id: u32, params: &TrackParams) {
    let start = begin_full_box(buf, b"tkhd", 0, 0x3);
    buf.put_u32(0); // creation_time
    buf.put_u32(0); // modification_time
    buf.put_u32(track_id);
    buf.put_u32(0); // reserved
    buf.put_u32(0); // duration
    buf.put_u64(0); // reserved
    buf.put_u16(0); // layer
    buf.put_u16(0); // alternate_group
    let (volume, width, height) = match params {
        TrackParams::Video(v) => (0, v.width, v.height),
        TrackParams::Audio(_) => (0x0100, 0, 0),
    };
    buf.put_u16(volume);
    buf.put_u16(0); // reserved
    for m in UNITY_MATRIX {
        buf.put_u32(m);
    }
    buf.put_u32(u32::from(width) << 16);
    buf.put_u32(u32::from(height) << 16);
    end_box(buf, start);
}

pub fn write_mdia(buf: &mut BytesMut, params: &TrackParams) {
    let start = begin_box(buf, b"mdia");
    write_mdhd(buf, params.timescale());
    write_hdlr(buf, params);
    write_minf(buf, params);
    end_box(buf, start);
}

/// §8.4.2, language `und` (ISO 639-2/T packed as three 5-bit letters).
pub fn write_mdhd(buf: &mut BytesMut, timescale: u32) {
    let start = begin_full_box(buf, b"mdhd", 0, 0);
    buf.put_u32(0);
    buf.put_u32(0);
    buf.put_u32(timescale);
    buf.put_u32(0); // duration
    let lang = b"und"
        .iter()
        .fold(0u16, |acc, c| (acc << 5) | u16::from(c - 0x60));
    buf.put_u16(lang);
    buf.put_u16(0);
    end_box(buf, start);
}

/// §8.4.3.
pub fn write_hdlr(buf: &mut BytesMut, params: &TrackParams) {
    let start = begin_full_box(buf, b"hdlr", 0, 0);
    buf.put_u32(0); // pre_defined
    let (handler, name): (&[u8; 4], &[u8]) = match params {
        TrackParams::Video(_) => (b"vide", b"Strata video\0"),
        TrackParams::Audio(_) => (b"soun", b"Strata audio\0"),
    };
    buf.put_slice(handler);
    buf.put_bytes(0, 12); // reserved
    buf.put_slice(name);
    end_box(buf, start);
}

pub fn write_minf(buf: &mut BytesMut, params: &TrackParams) {
    let start = begin_box(buf, b"minf");
    match params {
        TrackParams::Video(_) => write_vmhd(buf),
        TrackParams::Audio(_) => write_smhd(buf),
    }
    write_dinf(buf);
    write_stbl(buf, params);
    end_box(buf, start);
}

/// §12.1.2; flags must be 1.
pub fn write_vmhd(buf: &mut BytesMut) {
    let start = begin_full_box(buf, b"vmhd", 0, 1);
    buf.put_u16(0); // graphicsmode
    buf.put_bytes(0, 6); // opcolor
    end_box(buf, start);
}

/// §12.2.2.
pub fn write_smhd(buf: &mut BytesMut) {
    let start = begin_full_box(buf, b"smhd", 0, 0);
    buf.put_u16(0); // balance
    buf.put_u16(0);
    end_box(buf, start);
}

/// §8.7.1/§8.7.2: one self-contained `url ` entry (flags 1: media in this file).
pub fn write_dinf(buf: &mut BytesMut) {
    let start = begin_box(buf, b"dinf");
    let dref = begin_full_box(buf, b"dref", 0, 0);
    buf.put_u32(1);
    let url = begin_full_box(buf, b"url ", 0, 1);
    end_box(buf, url);
    end_box(buf, dref);
    end_box(buf, start);
}

/// §8.5: a sample table with only the description; samples live in fragments.
pub fn write_stbl(buf: &mut BytesMut, params: &TrackParams) {
    let start = begin_box(buf, b"stbl");
    write_stsd(buf, params);
    for fourcc in [b"stts", b"stsc", b"stco"] {
        let b = begin_full_box(buf, fourcc, 0, 0);
        buf.put_u32(0); // entry_count
        end_box(buf, b);
    }
    let stsz = begin_full_box(buf, b"stsz", 0, 0);
    buf.put_u32(0); // sample_size
    buf.put_u32(0); // sample_count
    end_box(buf, stsz);
    end_box(buf, start);
}

pub fn write_stsd(buf: &mut BytesMut, params: &TrackParams) {
    let start = begin_full_box(buf, b"stsd", 0, 0);
    buf.put_u32(1);
    match params {
        TrackParams::Video(v) => write_avc1(buf, v),
        TrackParams::Audio(a) => write_mp4a(buf, a),
    }
    end_box(buf, start);
}

/// VisualSampleEntry (§12.1.3) + `avcC` (ISO/IEC 14496-15 §5.4.2.1); for
/// HEVC parameters (a VOD title's: codec `hvc1.…`/`hev1.…`, `avc_config`
/// holding the `hvcC` record) `hvc1`/`hev1` + `hvcC` (§8.4.1).
pub fn write_avc1(buf: &mut BytesMut, v: &VideoParams) {
    let (entry, config): (&[u8; 4], &[u8; 4]) = if v.codec.starts_with("hvc1") {
        (b"hvc1", b"hvcC")
    } else if v.codec.starts_with("hev1") {
        (b"hev1", b"hvcC")
    } else {
        (b"avc1", b"avcC")
    };
    let start = begin_box(buf, entry);
    buf.put_bytes(0, 6); // reserved
    buf.put_u16(1); // data_reference_index
    buf.put_u16(0); // pre_defined
    buf.put_u16(0); // reserved
    buf.put_bytes(0, 12); // pre_defined
    buf.put_u16(v.width);
    buf.put_u16(v.height);
    buf.put_u32(0x0048_0000); // 72 dpi
    buf.put_u32(0x0048_0000);
    buf.put_u32(0); // reserved
    buf.put_u16(1); // frame_count
    buf.put_bytes(0, 32); // compressorname
    buf.put_u16(0x0018); // depth
    buf.put_i16(-1); // pre_defined
    let avcc = begin_box(buf, config);
    buf.put_slice(&v.avc_config);
    end_box(buf, avcc);
    end_box(buf, start);
}

/// AudioSampleEntry (§12.2.3) + `esds` (ISO/IEC 14496-14 §5.6).
pub fn write_mp4a(buf: &mut BytesMut, a: &AudioParams) {
    let start = begin_box(buf, b"mp4a");
    buf.put_bytes(0, 6);
    buf.put_u16(1); // data_reference_index
    buf.put_u64(0); // reserved
    buf.put_u16(u16::from(a.channels));
    buf.put_u16(16); // samplesize
    buf.put_u16(0); // pre_defined
    buf.put_u16(0); // reserved
                    // 16.16 fixed point; rates above 65535 Hz do not fit and are carried by the ASC.
    buf.put_u32(if a.sample_rate <= 0xffff {
        a.sample_rate << 16
    } else {
        0
    });
    write_esds(buf, a);
    end_box(buf, start);
}

/// ES_Descriptor (ISO/IEC 14496-1 §7.2.6.5) with DecoderConfigDescriptor
/// (objectTypeIndication 0x40, Audio ISO/IEC 14496-3) and the ASC.
pub fn write_esds(buf: &mut BytesMut, a: &AudioParams) {
    let start = begin_full_box(buf, b"esds", 0, 0);
    let mut dsi = BytesMut::new();
    put_descriptor(&mut dsi, 0x05, &a.asc);
    let mut dcd = BytesMut::new();
    dcd.put_u8(0x40); // objectTypeIndication: MPEG-4 Audio
    dcd.put_u8((0x05 << 2) | 1); // streamType AudioStream, upStream 0, reserved 1
    dcd.put_slice(&[0, 0, 0]); // bufferSizeDB
    dcd.put_u32(0); // maxBitrate
    dcd.put_u32(0); // avgBitrate
    dcd.put_slice(&dsi);
    let mut es = BytesMut::new();
    es.put_u16(0); // ES_ID
    es.put_u8(0); // no dependsOn, URL, OCR
    put_descriptor(&mut es, 0x04, &dcd);
    put_descriptor(&mut es, 0x06, &[0x02]); // SLConfigDescriptor predefined = MP4
    put_descriptor(buf, 0x03, &es);
    end_box(buf, start);
}

/// Descriptor header with the expandable size encoding (ISO/IEC 14496-1 §8.3.3).
fn put_descriptor(buf: &mut BytesMut, tag: u8, body: &[u8]) {
    buf.put_u8(tag);
    let len = body.len() as u32;
    let mut groups = Vec::with_capacity(4);
    let mut rest = len;
    loop {
        groups.push((rest & 0x7f) as u8);
        rest >>= 7;
        if rest == 0 {
            break;
        }
    }
    for (i, g) in groups.iter().rev().enumerate() {
        let more = if i + 1 < groups.len() { 0x80 } else { 0 };
        buf.put_u8(g | more);
    }
    buf.put_slice(body);
}

/// §8.8.1/§8.8.3: one `trex` with neutral defaults; every trun spells its samples out.
pub fn write_mvex(buf: &mut BytesMut, track_id: u32) {
    let start = begin_box(buf, b"mvex");
    let trex = begin_full_box(buf, b"trex", 0, 0);
    buf.put_u32(track_id);
    buf.put_u32(1); // default_sample_description_index
    buf.put_u32(0); // default_sample_duration
    buf.put_u32(0); // default_sample_size
    buf.put_u32(0); // default_sample_flags
    end_box(buf, trex);
    end_box(buf, start);
}

/// Writes `moof`; returns where trun's data_offset must be patched.
pub fn write_moof(
    buf: &mut BytesMut,
    sequence_number: u32,
    track_id: u32,
    base_decode_time: u64,
    samples: &[Sample],
) -> usize {
    let start = begin_box(buf, b"moof");
    write_mfhd(buf, sequence_number);
    let traf = begin_box(buf, b"traf");
    write_tfhd(buf, track_id);
    write_tfdt(buf, base_decode_time);
    let offset_at = write_trun(buf, samples);
    end_box(buf, traf);
    end_box(buf, start);
    offset_at
}

/// §8.8.5.
pub fn write_mfhd(buf: &mut BytesMut, sequence_number: u32) {
    let start = begin_full_box(buf, b"mfhd", 0, 0);
    buf.put_u32(sequence_number);
    end_box(buf, start);
}

/// §8.8.7, flags default-base-is-moof (0x020000) as CMAF requires.
pub fn write_tfhd(buf: &mut BytesMut, track_id: u32) {
    let start = begin_full_box(buf, b"tfhd", 0, 0x02_0000);
    buf.put_u32(track_id);
    end_box(buf, start);
}

/// §8.8.12, version 1 (64-bit baseMediaDecodeTime).
pub fn write_tfdt(buf: &mut BytesMut, base_decode_time: u64) {
    let start = begin_full_box(buf, b"tfdt", 1, 0);
    buf.put_u64(base_decode_time);
    end_box(buf, start);
}

/// §8.8.8, version 1 (signed composition offsets) with data-offset,
/// duration, size, flags and composition offset per sample. Returns the
/// position of data_offset, patched by the caller once moof's size is known.
pub fn write_trun(buf: &mut BytesMut, samples: &[Sample]) -> usize {
    const FLAGS: u32 = 0x000001 | 0x000100 | 0x000200 | 0x000400 | 0x000800;
    let start = begin_full_box(buf, b"trun", 1, FLAGS);
    buf.put_u32(samples.len() as u32);
    let offset_at = buf.len();
    buf.put_i32(0);
    for (s, d) in samples.iter().zip(sample_durations(samples)) {
        buf.put_u32(d);
        buf.put_u32(s.data.len() as u32);
        buf.put_u32(if s.keyframe {
            SYNC_SAMPLE_FLAGS
        } else {
            NON_SYNC_SAMPLE_FLAGS
        });
        buf.put_i32(s.cts);
    }
    end_box(buf, start);
    offset_at
}

/// §8.1.1.
pub fn write_mdat(buf: &mut BytesMut, samples: &[Sample]) {
    let start = begin_box(buf, b"mdat");
    for s in samples {
        buf.put_slice(&s.data);
    }
    end_box(buf, start);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A parsed box: type, body (after the header) and children when it is a container.
    #[derive(Debug)]
    struct Mp4Box<'a> {
        kind: [u8; 4],
        body: &'a [u8],
        children: Vec<Mp4Box<'a>>,
    }

    impl Mp4Box<'_> {
        fn child(&self, path: &str) -> &Mp4Box<'_> {
            let mut cur = self;
            for part in path.split('/') {
                cur = cur
                    .children
                    .iter()
                    .find(|b| b.kind == part.as_bytes())
                    .unwrap_or_else(|| panic!("no {part} in {}", name(&cur.kind)));
            }
            cur
        }
        fn names(&self) -> Vec<String> {
            self.children.iter().map(|b| name(&b.kind)).collect()
        }
    }

    fn name(k: &[u8; 4]) -> String {
        String::from_utf8_lossy(k).into_owned()
    }

    fn be32(b: &[u8]) -> u32 {
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    /// Parses a run of boxes; sizes must tile the input exactly.
    fn parse(mut data: &[u8]) -> Vec<Mp4Box<'_>> {
        let mut out = Vec::new();
        while !data.is_empty() {
            assert!(data.len() >= 8, "truncated box header");
            let size = be32(data) as usize;
            assert!(size >= 8 && size <= data.len(), "bad box size {size}");
            let kind = [data[4], data[5], data[6], data[7]];
            let body = &data[8..size];
            let children = match &kind {
                b"moov" | b"trak" | b"mdia" | b"minf" | b"dinf" | b"stbl" | b"mvex" | b"moof"
                | b"traf" => parse(body),
                b"stsd" | b"dref" => parse(&body[8..]),
                b"avc1" => parse(&body[78..]),
                b"mp4a" => parse(&body[28..]),
                _ => Vec::new(),
            };
            out.push(Mp4Box {
                kind,
                body,
                children,
            });
            data = &data[size..];
        }
        out
    }

    fn video_params() -> TrackParams {
        TrackParams::Video(VideoParams {
            codec: "avc1.64001f".into(),
            width: 1280,
            height: 720,
            avc_config: Bytes::from_static(&[
                1, 0x64, 0, 0x1f, 0xff, 0xe1, 0, 1, 0x67, 1, 0, 1, 0x68,
            ]),
            sps: vec![Bytes::from_static(&[0x67])],
            pps: vec![Bytes::from_static(&[0x68])],
        })
    }

    fn audio_params() -> TrackParams {
        TrackParams::Audio(AudioParams {
            codec: "mp4a.40.2".into(),
            sample_rate: 48_000,
            channels: 2,
            asc: Bytes::from_static(&[0x11, 0x90]),
        })
    }

    #[test]
    fn video_init_has_cmaf_box_tree() {
        let init = init_segment(1, &video_params());
        let top = parse(&init);
        assert_eq!(
            top.iter().map(|b| name(&b.kind)).collect::<Vec<_>>(),
            ["ftyp", "moov"]
        );
        assert_eq!(&top[0].body[..4], b"iso6");
        assert!(top[0].body[8..].chunks(4).any(|b| b == b"cmfc"));
        let moov = &top[1];
        assert_eq!(moov.names(), ["mvhd", "trak", "mvex"]);
        // mvhd v0: timescale at 12, next_track_ID last.
        let mvhd = moov.child("mvhd");
        assert_eq!(mvhd.body.len(), 100);
        assert_eq!(be32(&mvhd.body[96..]), 2);
        let tkhd = moov.child("trak/tkhd");
        assert_eq!(tkhd.body.len(), 84);
        assert_eq!(be32(&tkhd.body[12..]), 1, "track_ID");
        assert_eq!(be32(&tkhd.body[76..]), 1280 << 16);
        assert_eq!(be32(&tkhd.body[80..]), 720 << 16);
        assert_eq!(moov.child("trak").names(), ["tkhd", "mdia"]);
        assert_eq!(moov.child("trak/mdia").names(), ["mdhd", "hdlr", "minf"]);
        assert_eq!(be32(&moov.child("trak/mdia/mdhd").body[12..]), 90_000);
        assert_eq!(&moov.child("trak/mdia/hdlr").body[8..12], b"vide");
        assert_eq!(
            moov.child("trak/mdia/minf").names(),
            ["vmhd", "dinf", "stbl"]
        );
        assert_eq!(moov.child("trak/mdia/minf/dinf/dref").names(), ["url "]);
        let stbl = moov.child("trak/mdia/minf/stbl");
        assert_eq!(stbl.names(), ["stsd", "stts", "stsc", "stco", "stsz"]);
        let avc1 = stbl.child("stsd/avc1");
        assert_eq!(u16::from_be_bytes([avc1.body[24], avc1.body[25]]), 1280);
        assert_eq!(u16::from_be_bytes([avc1.body[26], avc1.body[27]]), 720);
        assert_eq!(avc1.names(), ["avcC"]);
        assert_eq!(avc1.child("avcC").body[1], 0x64, "profile from the record");
        let trex = moov.child("mvex/trex");
        assert_eq!(be32(&trex.body[4..]), 1);
        assert_eq!(be32(&trex.body[8..]), 1);
    }

    #[test]
    fn audio_init_carries_asc_in_esds() {
        let init = init_segment(2, &audio_params());
        let top = parse(&init);
        let minf = top[1].child("trak/mdia/minf");
        assert_eq!(minf.names(), ["smhd", "dinf", "stbl"]);
        assert_eq!(&top[1].child("trak/mdia/hdlr").body[8..12], b"soun");
        assert_eq!(be32(&top[1].child("trak/mdia/mdhd").body[12..]), 48_000);
        let mp4a = minf.child("stbl/stsd/mp4a");
        assert_eq!(
            u16::from_be_bytes([mp4a.body[16], mp4a.body[17]]),
            2,
            "channels"
        );
        assert_eq!(be32(&mp4a.body[24..]), 48_000 << 16);
        let esds = mp4a.child("esds").body;
        assert_eq!(esds[4], 0x03, "ES_Descriptor");
        // ES_Descriptor > DecoderConfigDescriptor > DecoderSpecificInfo = ASC
        let dsi = esds.windows(4).position(|w| w == [0x05, 2, 0x11, 0x90]);
        assert!(dsi.is_some(), "ASC inside DecoderSpecificInfo: {esds:02x?}");
        let dcd = esds.iter().position(|b| *b == 0x04).expect("dcd");
        assert_eq!(esds[dcd + 2], 0x40);
        assert_eq!(esds[dcd + 3], 0x15);
    }

    #[test]
    fn media_segment_trun_describes_mdat() {
        let samples = vec![
            Sample {
                dts: 1000,
                cts: 3000,
                duration: 3000,
                keyframe: true,
                data: Bytes::from_static(&[0, 0, 0, 2, 0x65, 0x88]),
            },
            Sample {
                dts: 4000,
                cts: -1500,
                duration: 0,
                keyframe: false,
                data: Bytes::from_static(&[0, 0, 0, 1, 0x41]),
            },
            Sample {
                dts: 7600,
                cts: 0,
                duration: 0,
                keyframe: false,
                data: Bytes::from_static(&[0, 0, 0, 1, 0x01]),
            },
        ];
        let seg = media_segment(7, 1, 1000, &samples);
        let top = parse(&seg);
        assert_eq!(
            top.iter().map(|b| name(&b.kind)).collect::<Vec<_>>(),
            ["styp", "moof", "mdat"]
        );
        let moof = &top[1];
        assert_eq!(moof.names(), ["mfhd", "traf"]);
        assert_eq!(be32(&moof.child("mfhd").body[4..]), 7);
        assert_eq!(moof.child("traf").names(), ["tfhd", "tfdt", "trun"]);
        let tfhd = moof.child("traf/tfhd").body;
        assert_eq!(be32(tfhd) & 0xff_ffff, 0x02_0000);
        let tfdt = moof.child("traf/tfdt").body;
        assert_eq!(tfdt[0], 1);
        assert_eq!(u64::from_be_bytes(tfdt[4..12].try_into().expect("8")), 1000);
        let trun = moof.child("traf/trun").body;
        assert_eq!(trun[0], 1, "version 1: signed composition offsets");
        assert_eq!(be32(trun) & 0xff_ffff, 0xf01);
        assert_eq!(be32(&trun[4..]), 3);
        let data_offset = be32(&trun[8..]) as usize;
        let moof_start = top[0].body.len() + 8;
        let mdat_payload = moof_start + data_offset;
        assert_eq!(&seg[mdat_payload - 4..mdat_payload], b"mdat");
        assert_eq!(&seg[mdat_payload..mdat_payload + 6], &samples[0].data[..]);
        let entry = |i: usize| &trun[12 + i * 16..12 + (i + 1) * 16];
        assert_eq!(be32(entry(0)), 3000);
        assert_eq!(be32(&entry(0)[4..]), 6);
        assert_eq!(be32(&entry(0)[8..]), SYNC_SAMPLE_FLAGS);
        assert_eq!(be32(&entry(0)[12..]) as i32, 3000);
        assert_eq!(be32(entry(1)), 3600, "from next dts");
        assert_eq!(be32(&entry(1)[8..]), NON_SYNC_SAMPLE_FLAGS);
        assert_eq!(be32(&entry(1)[12..]) as i32, -1500);
        assert_eq!(be32(entry(2)), 3600, "last repeats previous");
        assert_eq!(top[2].body.len(), 6 + 5 + 5);
    }

    #[test]
    fn long_descriptor_lengths_use_continuation_bytes() {
        let mut buf = BytesMut::new();
        put_descriptor(&mut buf, 0x05, &[0u8; 200]);
        assert_eq!(&buf[..3], &[0x05, 0x81, 0x48]);
        assert_eq!(buf.len(), 203);
    }
}
