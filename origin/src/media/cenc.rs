//! Common Encryption (ISO/IEC 23001-7) for CMAF: the protection boxes
//! (`sinf`/`frma`/`schm`/`schi`/`tenc`, `pssh`, `senc`, `saiz`, `saio`),
//! sample encryption for the `cenc` (AES-CTR) and `cbcs` (AES-CBC, pattern)
//! schemes, and the rewrite of our own clear init segments and fragments
//! into protected ones. Pure functions: no I/O.
//!
//! Rules applied (ISO/IEC 23001-7 §9, §10):
//! - video (AVC, 4-byte NAL lengths) uses subsample encryption: each NAL
//!   unit's length field and header byte stay clear, non-VCL NAL units stay
//!   wholly clear; `cenc` protects a multiple of 16 bytes per subsample, the
//!   rest leads in clear; `cbcs` encrypts 1 block in 10 (pattern 1:9) from
//!   the constant IV at the start of every subsample;
//! - audio uses full-sample encryption (`cbcs`: every whole block, pattern
//!   0:0 in `tenc`; the trailing partial block stays clear).
//!
//! Key rotation (§6, §8.1; the DASH-IF IOP's in-band key rotation):
//! `tenc` keeps one default KID, and each fragment encrypted with another
//! key says so itself: a `seig` sample group (`sgpd` + `sbgp` in `traf`)
//! maps all its samples to the key's KID (and cbcs constant IV), and the
//! key's `pssh` boxes ride in `moof`, so EME raises `encrypted` for a new
//! key without a manifest change. Readers that ignore sample groups
//! (ffmpeg) keep decrypting with the default key only.

use super::fmp4::{begin_box, begin_full_box, end_box};
use aes::cipher::{BlockEncrypt, KeyInit, KeyIvInit, StreamCipher};
use aes::Aes128;
use bytes::{BufMut, Bytes, BytesMut};

use super::TrackKind;

/// ISO/IEC 23001-7 protection scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// AES-CTR, per-sample 8-byte IVs.
    Cenc,
    /// AES-CBC with a 1:9 pattern for video, constant IV.
    Cbcs,
}

impl Scheme {
    pub fn fourcc(self) -> &'static [u8; 4] {
        match self {
            Scheme::Cenc => b"cenc",
            Scheme::Cbcs => b"cbcs",
        }
    }
}

/// A DRM system's `pssh` (§8.1): system ID, key IDs, system-specific data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pssh {
    pub system_id: [u8; 16],
    pub kids: Vec<[u8; 16]>,
    pub data: Vec<u8>,
}

/// W3C "Common PSSH box format" system ID (EME `cenc` init data), what
/// ClearKey in browsers reads.
pub const COMMON_SYSTEM_ID: [u8; 16] = [
    0x10, 0x77, 0xef, 0xec, 0xc0, 0xb2, 0x4d, 0x02, 0xac, 0xe3, 0x3c, 0x1e, 0x52, 0xe2, 0xfb, 0x4b,
];
/// Widevine system ID `edef8ba9-79d6-4ace-a3c8-27dcd51d21ed`.
pub const WIDEVINE_SYSTEM_ID: [u8; 16] = [
    0xed, 0xef, 0x8b, 0xa9, 0x79, 0xd6, 0x4a, 0xce, 0xa3, 0xc8, 0x27, 0xdc, 0xd5, 0x1d, 0x21, 0xed,
];

/// PlayReady system ID `9a04f079-9840-4286-ab92-e65be0885f95`.
pub const PLAYREADY_SYSTEM_ID: [u8; 16] = [
    0x9a, 0x04, 0xf0, 0x79, 0x98, 0x40, 0x42, 0x86, 0xab, 0x92, 0xe6, 0x5b, 0xe0, 0x88, 0x5f, 0x95,
];

/// How one track is protected.
#[derive(Clone, Debug)]
pub struct TrackProtection {
    pub scheme: Scheme,
    pub kind: TrackKind,
    pub kid: [u8; 16],
    pub key: [u8; 16],
    /// `cbcs` constant IV (in `tenc`); unused by `cenc`.
    pub constant_iv: [u8; 16],
    /// `pssh` boxes for the init segment, or for a fragment's `moof` when
    /// `in_band` is set.
    pub pssh: Vec<Pssh>,
    /// Keys rotate: a fragment names its key in a `seig` sample group and
    /// carries `pssh` in `moof`, whatever the init segment's default KID.
    pub in_band: bool,
}

impl TrackProtection {
    /// `(crypt, skip)` blocks: 1:9 for cbcs video, 0:0 (no pattern) otherwise.
    pub fn pattern(&self) -> (u8, u8) {
        match (self.scheme, self.kind) {
            (Scheme::Cbcs, TrackKind::Video) => (1, 9),
            _ => (0, 0),
        }
    }

    fn per_sample_iv_size(&self) -> u8 {
        match self.scheme {
            Scheme::Cenc => 8,
            Scheme::Cbcs => 0,
        }
    }
}

/// A fragment or init segment that is not one of ours.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("cannot protect: {0}")]
pub struct CencError(pub &'static str);

/// One sample's auxiliary information (`senc` entry).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SampleAuxInfo {
    pub iv: Vec<u8>,
    /// `(clear, protected)` byte counts; empty for full-sample encryption.
    pub subsamples: Vec<(u16, u32)>,
}

impl SampleAuxInfo {
    fn size(&self) -> u8 {
        let subs = if self.subsamples.is_empty() {
            0
        } else {
            2 + 6 * self.subsamples.len()
        };
        (self.iv.len() + subs).min(255) as u8
    }
}

/// ISO/IEC 14496-12 §8.12.1: protection scheme info for a sample entry.
pub fn write_sinf(buf: &mut BytesMut, original_format: &[u8; 4], p: &TrackProtection) {
    let start = begin_box(buf, b"sinf");
    write_frma(buf, original_format);
    write_schm(buf, p.scheme);
    write_schi(buf, p);
    end_box(buf, start);
}

/// §8.12.2: the sample entry's original fourcc (`avc1`, `mp4a`).
pub fn write_frma(buf: &mut BytesMut, original_format: &[u8; 4]) {
    let start = begin_box(buf, b"frma");
    buf.put_slice(original_format);
    end_box(buf, start);
}

/// §8.12.5: scheme type and version 1.0 (0x00010000), ISO/IEC 23001-7 §4.2.
pub fn write_schm(buf: &mut BytesMut, scheme: Scheme) {
    let start = begin_full_box(buf, b"schm", 0, 0);
    buf.put_slice(scheme.fourcc());
    buf.put_u32(0x0001_0000);
    end_box(buf, start);
}

/// §8.12.6: scheme information, holding `tenc`.
pub fn write_schi(buf: &mut BytesMut, p: &TrackProtection) {
    let start = begin_box(buf, b"schi");
    write_tenc(buf, p);
    end_box(buf, start);
}

/// ISO/IEC 23001-7 §8.2: version 1 (pattern fields) for cbcs, 0 for cenc.
pub fn write_tenc(buf: &mut BytesMut, p: &TrackProtection) {
    let version = u8::from(p.scheme == Scheme::Cbcs);
    let start = begin_full_box(buf, b"tenc", version, 0);
    buf.put_u8(0); // reserved
    let (crypt, skip) = p.pattern();
    buf.put_u8(if version == 0 { 0 } else { (crypt << 4) | skip });
    buf.put_u8(1); // default_isProtected
    buf.put_u8(p.per_sample_iv_size());
    buf.put_slice(&p.kid);
    if p.per_sample_iv_size() == 0 {
        buf.put_u8(16); // default_constant_IV_size
        buf.put_slice(&p.constant_iv);
    }
    end_box(buf, start);
}

/// ISO/IEC 23001-7 §6 `CencSampleEncryptionInformationGroupEntry`: the
/// same fields as `tenc` after its version/flags (reserved, crypt:skip
/// pattern, isProtected, Per_Sample_IV_Size, KID, constant IV when the
/// per-sample IV size is 0).
fn write_seig_entry(buf: &mut BytesMut, p: &TrackProtection) {
    buf.put_u8(0); // reserved
    let (crypt, skip) = p.pattern();
    buf.put_u8((crypt << 4) | skip);
    buf.put_u8(1); // isProtected
    buf.put_u8(p.per_sample_iv_size());
    buf.put_slice(&p.kid);
    if p.per_sample_iv_size() == 0 {
        buf.put_u8(16); // constant_IV_size
        buf.put_slice(&p.constant_iv);
    }
}

/// ISO/IEC 14496-12 §8.9.3 `sgpd`, version 1 (Chromium reads the length
/// fields of version 1 only), grouping type `seig`, one entry of
/// `default_length` bytes.
pub fn write_seig_sgpd(buf: &mut BytesMut, p: &TrackProtection) {
    let start = begin_full_box(buf, b"sgpd", 1, 0);
    buf.put_slice(b"seig");
    let mut entry = BytesMut::new();
    write_seig_entry(&mut entry, p);
    buf.put_u32(entry.len() as u32); // default_length
    buf.put_u32(1); // entry_count
    buf.put_slice(&entry);
    end_box(buf, start);
}

/// ISO/IEC 14496-12 §8.9.2 `sbgp`, version 0: all `sample_count` samples
/// belong to the first group description in this `traf` (§8.9.4: indices
/// above 0x10000 are fragment-local, 0x10001 the first).
pub fn write_seig_sbgp(buf: &mut BytesMut, sample_count: u32) {
    let start = begin_full_box(buf, b"sbgp", 0, 0);
    buf.put_slice(b"seig");
    buf.put_u32(1); // entry_count
    buf.put_u32(sample_count);
    buf.put_u32(FRAGMENT_GROUP_DESCRIPTION_BASE + 1);
    end_box(buf, start);
}

/// ISO/IEC 14496-12 §8.9.4: group description indices past this refer to
/// the `sgpd` in the same `traf`.
pub const FRAGMENT_GROUP_DESCRIPTION_BASE: u32 = 0x1_0000;

/// ISO/IEC 23001-7 §8.1: version 1 (key IDs listed) when there are any.
pub fn write_pssh(buf: &mut BytesMut, pssh: &Pssh) {
    let version = u8::from(!pssh.kids.is_empty());
    let start = begin_full_box(buf, b"pssh", version, 0);
    buf.put_slice(&pssh.system_id);
    if version == 1 {
        buf.put_u32(pssh.kids.len() as u32);
        for kid in &pssh.kids {
            buf.put_slice(kid);
        }
    }
    buf.put_u32(pssh.data.len() as u32);
    buf.put_slice(&pssh.data);
    end_box(buf, start);
}

/// ISO/IEC 23001-7 §7.2: sample encryption, flag 0x2 when subsamples are
/// listed. Returns the offset (within `buf`) of the first sample's info,
/// which `saio` points at.
pub fn write_senc(buf: &mut BytesMut, samples: &[SampleAuxInfo]) -> usize {
    let subsamples = samples.iter().any(|s| !s.subsamples.is_empty());
    let start = begin_full_box(buf, b"senc", 0, if subsamples { 0x2 } else { 0 });
    buf.put_u32(samples.len() as u32);
    let first = buf.len();
    for s in samples {
        buf.put_slice(&s.iv);
        if subsamples {
            buf.put_u16(s.subsamples.len() as u16);
            for (clear, protected) in &s.subsamples {
                buf.put_u16(*clear);
                buf.put_u32(*protected);
            }
        }
    }
    end_box(buf, start);
    first
}

/// ISO/IEC 14496-12 §8.7.8: sizes of each sample's auxiliary information.
pub fn write_saiz(buf: &mut BytesMut, samples: &[SampleAuxInfo]) {
    let start = begin_full_box(buf, b"saiz", 0, 0);
    let sizes: Vec<u8> = samples.iter().map(SampleAuxInfo::size).collect();
    // default_sample_info_size 0 means "sizes listed", so 0 is never a default.
    let uniform = sizes
        .first()
        .filter(|f| **f > 0 && sizes.iter().all(|s| s == *f));
    buf.put_u8(uniform.copied().unwrap_or(0)); // default_sample_info_size
    buf.put_u32(samples.len() as u32);
    if uniform.is_none() {
        buf.put_slice(&sizes);
    }
    end_box(buf, start);
}

/// §8.7.9: one offset, relative to moof (default-base-is-moof).
pub fn write_saio(buf: &mut BytesMut, offset: u32) {
    let start = begin_full_box(buf, b"saio", 0, 0);
    buf.put_u32(1);
    buf.put_u32(offset);
    end_box(buf, start);
}

/// A box inside a byte slice: fourcc and where it and its body lie.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BoxRange {
    pub fourcc: [u8; 4],
    pub start: usize,
    pub body: usize,
    pub end: usize,
}

/// The boxes laid one after another in `data[from..to]` (32-bit sizes only,
/// which is all our writer produces).
pub fn boxes(data: &[u8], from: usize, to: usize) -> Result<Vec<BoxRange>, CencError> {
    let mut out = Vec::new();
    let mut at = from;
    while at < to {
        let header = data.get(at..at + 8).ok_or(CencError("truncated box"))?;
        let size = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        if size < 8 || at + size > to {
            return Err(CencError("bad box size"));
        }
        let mut fourcc = [0u8; 4];
        fourcc.copy_from_slice(&header[4..8]);
        out.push(BoxRange {
            fourcc,
            start: at,
            body: at + 8,
            end: at + size,
        });
        at += size;
    }
    Ok(out)
}

fn child(
    data: &[u8],
    parent: &BoxRange,
    fourcc: &[u8; 4],
    skip: usize,
) -> Result<BoxRange, CencError> {
    boxes(data, parent.body + skip, parent.end)?
        .into_iter()
        .find(|b| &b.fourcc == fourcc)
        .ok_or(CencError("missing box"))
}

fn top(data: &[u8], fourcc: &[u8; 4]) -> Result<BoxRange, CencError> {
    boxes(data, 0, data.len())?
        .into_iter()
        .find(|b| &b.fourcc == fourcc)
        .ok_or(CencError("missing top-level box"))
}

fn grow(data: &mut [u8], at: usize, by: usize) {
    let size = u32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]);
    data[at..at + 4].copy_from_slice(&(size + by as u32).to_be_bytes());
}

/// A clear CMAF header → protected: the sample entry becomes `encv`/`enca`
/// with a `sinf`, and `moov` gains the `pssh` boxes.
pub fn protect_init(init: &[u8], p: &TrackProtection) -> Result<Bytes, CencError> {
    let moov = top(init, b"moov")?;
    let trak = child(init, &moov, b"trak", 0)?;
    let mdia = child(init, &trak, b"mdia", 0)?;
    let minf = child(init, &mdia, b"minf", 0)?;
    let stbl = child(init, &minf, b"stbl", 0)?;
    let stsd = child(init, &stbl, b"stsd", 0)?;
    // stsd: version/flags and entry_count precede the entries.
    let entry = boxes(init, stsd.body + 8, stsd.end)?
        .into_iter()
        .next()
        .ok_or(CencError("empty stsd"))?;
    let protected_fourcc: &[u8; 4] = match (&entry.fourcc, p.kind) {
        (b"avc1" | b"hvc1" | b"hev1", TrackKind::Video) => b"encv",
        (b"mp4a", TrackKind::Audio) => b"enca",
        _ => return Err(CencError("unsupported sample entry")),
    };
    let mut sinf = BytesMut::new();
    write_sinf(&mut sinf, &entry.fourcc, p);
    let mut pssh = BytesMut::new();
    for system in &p.pssh {
        write_pssh(&mut pssh, system);
    }
    let mut out = Vec::with_capacity(init.len() + sinf.len() + pssh.len());
    out.extend_from_slice(&init[..entry.end]);
    out.extend_from_slice(&sinf);
    out.extend_from_slice(&init[entry.end..moov.end]);
    out.extend_from_slice(&pssh);
    out.extend_from_slice(&init[moov.end..]);
    for b in [&entry, &stsd, &stbl, &minf, &mdia, &trak] {
        grow(&mut out, b.start, sinf.len());
    }
    grow(&mut out, moov.start, sinf.len() + pssh.len());
    out[entry.start + 4..entry.start + 8].copy_from_slice(protected_fourcc);
    Ok(Bytes::from(out))
}

/// Sample sizes from a `trun` (§8.8.8) and its data_offset.
fn parse_trun(data: &[u8], trun: &BoxRange) -> Result<(usize, Vec<usize>), CencError> {
    let body = data.get(trun.body..trun.end).ok_or(CencError("trun"))?;
    let mut r = Reader { data: body, at: 0 };
    let flags = r.u32()? & 0x00ff_ffff;
    let count = r.u32()? as usize;
    let data_offset_at = trun.body + r.at;
    if flags & 0x1 == 0 || flags & 0x200 == 0 {
        return Err(CencError("trun without data offset or sample sizes"));
    }
    let _ = r.u32()?; // data_offset
    if flags & 0x4 != 0 {
        r.u32()?;
    }
    let mut sizes = Vec::with_capacity(count.min(100_000));
    for _ in 0..count {
        if flags & 0x100 != 0 {
            r.u32()?;
        }
        sizes.push(r.u32()? as usize);
        if flags & 0x400 != 0 {
            r.u32()?;
        }
        if flags & 0x800 != 0 {
            r.u32()?;
        }
    }
    Ok((data_offset_at, sizes))
}

struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn u32(&mut self) -> Result<u32, CencError> {
        let b = self
            .data
            .get(self.at..self.at + 4)
            .ok_or(CencError("truncated"))?;
        self.at += 4;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// A clear CMAF fragment (`styp` + `moof` + `mdat`, one track) → protected:
/// samples encrypted in place, `senc` + `saiz` + `saio` appended to `traf`
/// (and, with `in_band`, `sbgp` + `sgpd` after them and `pssh` at the end
/// of `moof`).
/// `iv_seed` makes `cenc` IVs unique per fragment (a hash of its URL, say);
/// the output is a pure function of the inputs, so every render of one
/// fragment is byte-identical.
pub fn protect_fragment(
    fragment: &[u8],
    p: &TrackProtection,
    iv_seed: u64,
) -> Result<Bytes, CencError> {
    protect_fragment_with(fragment, p, iv_seed, &|sample| {
        nal_subsamples(sample, p.scheme)
    })
}

/// A video sample → its `(clear, protected)` byte counts.
pub type SubsampleLayout<'a> = dyn Fn(&[u8]) -> Vec<(u16, u32)> + 'a;

/// [`protect_fragment`] with the video subsample layout given by
/// `video_subsamples` (`(clear, protected)` byte counts covering a whole
/// sample): HEVC's, whose NAL headers and slice headers differ from AVC's.
pub fn protect_fragment_with(
    fragment: &[u8],
    p: &TrackProtection,
    iv_seed: u64,
    video_subsamples: &SubsampleLayout<'_>,
) -> Result<Bytes, CencError> {
    let moof = top(fragment, b"moof")?;
    let mdat = top(fragment, b"mdat")?;
    let traf = child(fragment, &moof, b"traf", 0)?;
    let trun = child(fragment, &traf, b"trun", 0)?;
    let (data_offset_at, sizes) = parse_trun(fragment, &trun)?;
    let data_offset = u32::from_be_bytes([
        fragment[data_offset_at],
        fragment[data_offset_at + 1],
        fragment[data_offset_at + 2],
        fragment[data_offset_at + 3],
    ]) as usize;
    let first_sample = moof.start + data_offset;
    let total: usize = sizes.iter().sum();
    if first_sample < mdat.body || first_sample + total > mdat.end {
        return Err(CencError("samples outside mdat"));
    }
    let mut out = fragment.to_vec();
    let mut infos = Vec::with_capacity(sizes.len());
    let mut at = first_sample;
    for (index, size) in sizes.iter().enumerate() {
        let iv = sample_iv(p, iv_seed, index as u64);
        let sample = &mut out[at..at + size];
        let subsamples = match p.kind {
            TrackKind::Video => video_subsamples(sample),
            TrackKind::Audio => Vec::new(),
        };
        let covered: usize = subsamples
            .iter()
            .map(|(c, e)| usize::from(*c) + *e as usize)
            .sum();
        if !subsamples.is_empty() && covered != *size {
            return Err(CencError("subsample layout does not cover the sample"));
        }
        infos.push(encrypt_subsamples(p, &iv, sample, subsamples));
        at += size;
    }
    // senc, saiz, saio go at the end of traf; saio needs senc's place.
    // Constant IV and whole samples (cbcs audio) leave nothing to say: a
    // saiz of all-zero sizes cannot even be written (size 0 means "listed").
    let mut aux = BytesMut::new();
    if infos.iter().any(|i| i.size() > 0) {
        let senc_first = write_senc(&mut aux, &infos);
        write_saiz(&mut aux, &infos);
        let saio_offset = (traf.end - moof.start + senc_first) as u32;
        write_saio(&mut aux, saio_offset);
    }
    // After senc, so saio's offset above still holds.
    let mut in_moof = BytesMut::new();
    if p.in_band {
        write_seig_sbgp(&mut aux, sizes.len() as u32);
        write_seig_sgpd(&mut aux, p);
        for system in &p.pssh {
            write_pssh(&mut in_moof, system);
        }
    }
    let mut result = Vec::with_capacity(out.len() + aux.len() + in_moof.len());
    result.extend_from_slice(&out[..traf.end]);
    result.extend_from_slice(&aux);
    result.extend_from_slice(&out[traf.end..moof.end]);
    result.extend_from_slice(&in_moof);
    result.extend_from_slice(&out[moof.end..]);
    grow(&mut result, traf.start, aux.len());
    grow(&mut result, moof.start, aux.len() + in_moof.len());
    let new_offset = (data_offset + aux.len() + in_moof.len()) as u32;
    result[data_offset_at..data_offset_at + 4].copy_from_slice(&new_offset.to_be_bytes());
    Ok(Bytes::from(result))
}

/// `cenc`: 8 bytes unique per sample under one key; `cbcs`: none (constant IV).
fn sample_iv(p: &TrackProtection, seed: u64, index: u64) -> Vec<u8> {
    match p.scheme {
        // Consecutive from a per-fragment hash: unique within a fragment,
        // colliding across fragments with odds near samples / 2^64.
        Scheme::Cenc => seed.wrapping_add(index).to_be_bytes().to_vec(),
        Scheme::Cbcs => Vec::new(),
    }
}

/// Encrypts one sample in place; returns its `senc` entry.
pub fn encrypt_sample(p: &TrackProtection, iv: &[u8], sample: &mut [u8]) -> SampleAuxInfo {
    let subsamples = match p.kind {
        TrackKind::Video => nal_subsamples(sample, p.scheme),
        TrackKind::Audio => Vec::new(),
    };
    encrypt_subsamples(p, iv, sample, subsamples)
}

/// Encrypts one sample in place in the given `(clear, protected)` layout
/// (empty: the whole sample); returns its `senc` entry.
pub fn encrypt_subsamples(
    p: &TrackProtection,
    iv: &[u8],
    sample: &mut [u8],
    subsamples: Vec<(u16, u32)>,
) -> SampleAuxInfo {
    match p.scheme {
        Scheme::Cenc => {
            let mut counter = [0u8; 16];
            counter[..8].copy_from_slice(iv);
            let mut ctr = ctr::Ctr128BE::<Aes128>::new(&p.key.into(), &counter.into());
            if subsamples.is_empty() {
                ctr.apply_keystream(sample);
            } else {
                // One keystream runs across all protected ranges of a sample.
                let mut at = 0;
                for (clear, protected) in &subsamples {
                    at += usize::from(*clear);
                    ctr.apply_keystream(&mut sample[at..at + *protected as usize]);
                    at += *protected as usize;
                }
            }
        }
        Scheme::Cbcs => {
            let cipher = Aes128::new(&p.key.into());
            let (crypt, skip) = p.pattern();
            if subsamples.is_empty() {
                cbc_pattern(&cipher, &p.constant_iv, crypt, skip, sample);
            } else {
                let mut at = 0;
                for (clear, protected) in &subsamples {
                    at += usize::from(*clear);
                    let end = at + *protected as usize;
                    cbc_pattern(&cipher, &p.constant_iv, crypt, skip, &mut sample[at..end]);
                    at = end;
                }
            }
        }
    }
    SampleAuxInfo {
        iv: iv.to_vec(),
        subsamples,
    }
}

/// AES-CBC over whole blocks, `crypt` encrypted then `skip` clear, from `iv`
/// (0:0 means every block); a trailing partial block stays clear (§10.4.2).
pub fn cbc_pattern(cipher: &Aes128, iv: &[u8; 16], crypt: u8, skip: u8, data: &mut [u8]) {
    let mut chain = *iv;
    let period = usize::from(crypt) + usize::from(skip);
    for (i, block) in data.chunks_exact_mut(16).enumerate() {
        if period > 0 && i % period >= usize::from(crypt) {
            continue;
        }
        for (b, c) in block.iter_mut().zip(chain.iter()) {
            *b ^= c;
        }
        let mut ga = aes::Block::clone_from_slice(block);
        cipher.encrypt_block(&mut ga);
        block.copy_from_slice(&ga);
        chain.copy_from_slice(&ga);
    }
}

/// Subsamples for an AVC sample with 4-byte NAL lengths (ISO/IEC 23001-7
/// §10.2, §10.4): length + NAL header clear, slice data protected, non-VCL
/// NAL units clear. Anything unparseable stays wholly clear.
pub fn nal_subsamples(sample: &[u8], scheme: Scheme) -> Vec<(u16, u32)> {
    let mut out = Vec::new();
    let mut clear = 0usize;
    let mut at = 0usize;
    while at + 4 <= sample.len() {
        let len = u32::from_be_bytes([sample[at], sample[at + 1], sample[at + 2], sample[at + 3]])
            as usize;
        if len == 0 || at + 4 + len > sample.len() {
            break;
        }
        let nal_type = sample[at + 4] & 0x1f;
        let vcl = (1..=5).contains(&nal_type);
        let body = len - 1;
        let protected = match (vcl, scheme) {
            (false, _) => 0,
            (true, Scheme::Cenc) => body / 16 * 16,
            (true, Scheme::Cbcs) => body,
        };
        clear += 4 + len - protected;
        if protected > 0 {
            while clear > usize::from(u16::MAX) {
                out.push((u16::MAX, 0));
                clear -= usize::from(u16::MAX);
            }
            out.push((clear as u16, protected as u32));
            clear = 0;
        }
        at += 4 + len;
    }
    clear += sample.len() - at;
    if clear > 0 {
        while clear > usize::from(u16::MAX) {
            out.push((u16::MAX, 0));
            clear -= usize::from(u16::MAX);
        }
        out.push((clear as u16, 0));
    }
    out
}

#[cfg(test)]
mod tests;
