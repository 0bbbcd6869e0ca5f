//! The index of an MP4/MOV: per track, decoder parameters and a
//! sample table (offset, size, decode time, composition offset, sync flag),
//! parsed once from `moov` (ISO/IEC 14496-12 §8.6–§8.7). Pure: the caller
//! hands in `moov`'s bytes; [`locate_moov`] finds them with a few small reads.
//!
//! Every count read from a box is checked against the bytes that box
//! actually holds before anything is allocated for it, so a `moov` that lies
//! about its tables costs at most its own size in memory.

use bytes::Bytes;

use crate::media::{aac, h264, TrackKind, TrackParams};

/// Why an MP4 cannot be indexed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Mp4Error {
    /// The bytes contradict themselves: truncated boxes, tables that disagree.
    #[error("corrupt MP4: {0}")]
    Corrupt(String),
    /// Well-formed, but not something Strata packages (yet).
    #[error("unsupported MP4: {0}")]
    Unsupported(String),
    /// Samples live in `moof` boxes: index with [`super::fragments`].
    #[error("fragmented MP4")]
    Fragmented,
    /// More than the configured bounds (a huge `moov` or sample table).
    #[error("MP4 too large to index: {0}")]
    TooLarge(String),
}

pub(super) fn corrupt(why: impl Into<String>) -> Mp4Error {
    Mp4Error::Corrupt(why.into())
}

/// Bounds on what one index may take.
#[derive(Clone, Copy, Debug)]
pub struct IndexLimits {
    /// Largest `moov` read into memory.
    pub max_moov_bytes: u64,
    /// Most samples over all tracks.
    pub max_samples: u64,
}

impl Default for IndexLimits {
    fn default() -> Self {
        IndexLimits {
            max_moov_bytes: 64 << 20,
            max_samples: 4_000_000,
        }
    }
}

/// One sample as the file stores it, in the track's media timescale.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SampleEntry {
    pub offset: u64,
    pub size: u32,
    /// Decode time.
    pub dts: u64,
    /// Composition offset (`ctts`), before the edit-list shift.
    pub cts: i32,
    pub sync: bool,
}

/// One track of a progressive MP4.
#[derive(Clone, Debug)]
pub struct TrackIndex {
    pub track_id: u32,
    pub params: TrackParams,
    /// `mdhd` timescale of the sample table.
    pub timescale: u32,
    /// Media time the edit list starts presentation at (ticks), bounded so no
    /// sample's composition time goes below zero: subtracted from every
    /// composition offset, so the first frame presents at 0.
    pub presentation_shift: i64,
    /// ISO 639-2/T language from `mdhd` (`und` when unset).
    pub language: String,
    /// The first edit's media time (`elst`), 0 without one.
    pub edit_media_time: i64,
    /// NAL length-prefix size of the samples (video; 4 for audio).
    pub nal_length_size: u8,
    pub samples: Vec<SampleEntry>,
    /// Decode time at the end of the last sample.
    pub end_dts: u64,
}

impl TrackIndex {
    pub fn kind(&self) -> TrackKind {
        self.params.kind()
    }

    pub fn duration_seconds(&self) -> f64 {
        self.end_dts as f64 / f64::from(self.timescale)
    }

    /// Decode time of sample `i`, or of the track's end for `i == len`.
    pub fn dts_at(&self, i: usize) -> u64 {
        self.samples.get(i).map_or(self.end_dts, |s| s.dts)
    }
}

/// The index of one MP4: its supported tracks, video first.
#[derive(Clone, Debug)]
pub struct Mp4Index {
    pub tracks: Vec<TrackIndex>,
}

impl Mp4Index {
    /// Memory the index holds, for the cache's byte bound.
    pub fn weight(&self) -> usize {
        self.tracks
            .iter()
            .map(|t| t.samples.len() * std::mem::size_of::<SampleEntry>() + 1024)
            .sum()
    }

    pub fn track(&self, track_id: u32) -> Option<&TrackIndex> {
        self.tracks.iter().find(|t| t.track_id == track_id)
    }

    pub fn duration_seconds(&self) -> f64 {
        self.tracks
            .iter()
            .map(TrackIndex::duration_seconds)
            .fold(0.0, f64::max)
    }
}

/// A top-level box header as read from the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BoxHeader {
    pub kind: [u8; 4],
    /// Header bytes (8, or 16 with a 64-bit size).
    pub header_len: u64,
    /// Whole box, header included; to the end of the file for size 0.
    pub size: u64,
}

/// Parses a box header from the first 8 (or 16) bytes at `at` of a file of
/// `file_len` bytes; `head` holds what could be read there.
pub fn parse_box_header(head: &[u8], at: u64, file_len: u64) -> Result<BoxHeader, Mp4Error> {
    let short = head
        .get(..8)
        .ok_or_else(|| corrupt(format!("truncated box header at byte {at}")))?;
    let size32 = u32::from_be_bytes([short[0], short[1], short[2], short[3]]);
    let kind = [short[4], short[5], short[6], short[7]];
    let (header_len, size) = match size32 {
        0 => (8, file_len - at),
        1 => {
            let large = head
                .get(8..16)
                .ok_or_else(|| corrupt(format!("truncated 64-bit box size at byte {at}")))?;
            (16, u64::from_be_bytes(large.try_into().expect("8 bytes")))
        }
        n => (8, u64::from(n)),
    };
    if size < header_len || at.checked_add(size).is_none_or(|end| end > file_len) {
        return Err(corrupt(format!(
            "box '{}' at byte {at} claims {size} bytes; the file has {file_len}",
            fourcc(&kind)
        )));
    }
    Ok(BoxHeader {
        kind,
        header_len,
        size,
    })
}

/// Walks the top-level boxes with `read_at(offset, len)` (a short read at
/// the end of the file is fine) and returns where `moov`'s body lies.
pub fn locate_moov(
    file_len: u64,
    limits: &IndexLimits,
    mut read_at: impl FnMut(u64, usize) -> std::io::Result<Vec<u8>>,
) -> Result<std::ops::Range<u64>, LocateError> {
    let mut at = 0u64;
    let mut moof = false;
    while at < file_len {
        let head = read_at(at, 16).map_err(LocateError::Io)?;
        let header = parse_box_header(&head, at, file_len)?;
        match &header.kind {
            b"moov" => {
                if header.size > limits.max_moov_bytes {
                    return Err(Mp4Error::TooLarge(format!(
                        "moov of {} bytes (limit {})",
                        header.size, limits.max_moov_bytes
                    ))
                    .into());
                }
                return Ok(at + header.header_len..at + header.size);
            }
            b"moof" => moof = true,
            _ => {}
        }
        at += header.size;
    }
    Err(if moof {
        corrupt("moof boxes but no moov (an unfinished recording?)")
    } else {
        corrupt("no moov box (not an MP4, or truncated)")
    }
    .into())
}

/// [`locate_moov`]'s failures: the file's or the disk's.
#[derive(Debug, thiserror::Error)]
pub enum LocateError {
    #[error(transparent)]
    Mp4(#[from] Mp4Error),
    #[error("read: {0}")]
    Io(std::io::Error),
}

fn fourcc(kind: &[u8; 4]) -> String {
    kind.iter()
        .map(|&c| {
            if c.is_ascii_graphic() || c == b' ' {
                c as char
            } else {
                '?'
            }
        })
        .collect()
}

/// A box as `(type, body)`.
pub(super) type Child<'a> = ([u8; 4], &'a [u8]);

/// Child boxes of a container body.
pub(super) fn children(body: &[u8]) -> Result<Vec<Child<'_>>, Mp4Error> {
    let mut out = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        if rest.len() < 8 {
            // Some writers pad containers with a zero terminator (QuickTime).
            if rest.iter().all(|&b| b == 0) {
                break;
            }
            return Err(corrupt("trailing bytes inside a box"));
        }
        let header = parse_box_header(rest, 0, rest.len() as u64)?;
        let body = &rest[header.header_len as usize..header.size as usize];
        out.push((header.kind, body));
        rest = &rest[header.size as usize..];
    }
    Ok(out)
}

pub(super) fn child<'a>(boxes: &[Child<'a>], kind: &[u8; 4]) -> Option<&'a [u8]> {
    boxes.iter().find(|(k, _)| k == kind).map(|(_, b)| *b)
}

fn need<'a>(boxes: &[Child<'a>], kind: &[u8; 4]) -> Result<&'a [u8], Mp4Error> {
    child(boxes, kind).ok_or_else(|| corrupt(format!("no '{}' box", fourcc(kind))))
}

/// A cursor over a box body; every read is bounds-checked.
pub(super) struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(super) fn new(data: &'a [u8], what: &'static str) -> Self {
        Reader { data, pos: 0, what }
    }

    pub(super) fn bytes(&mut self, n: usize) -> Result<&'a [u8], Mp4Error> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| corrupt(format!("truncated '{}'", self.what)))?;
        let out = &self.data[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    pub(super) fn u8(&mut self) -> Result<u8, Mp4Error> {
        Ok(self.bytes(1)?[0])
    }

    pub(super) fn u16(&mut self) -> Result<u16, Mp4Error> {
        Ok(u16::from_be_bytes(self.bytes(2)?.try_into().expect("2")))
    }

    pub(super) fn u32(&mut self) -> Result<u32, Mp4Error> {
        Ok(u32::from_be_bytes(self.bytes(4)?.try_into().expect("4")))
    }

    pub(super) fn u64(&mut self) -> Result<u64, Mp4Error> {
        Ok(u64::from_be_bytes(self.bytes(8)?.try_into().expect("8")))
    }

    pub(super) fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    /// A full box's version and flags (§4.2).
    pub(super) fn full_box(&mut self) -> Result<(u8, u32), Mp4Error> {
        let v = self.u32()?;
        Ok(((v >> 24) as u8, v & 0x00ff_ffff))
    }

    /// An entry count whose entries take `entry_bytes` each, checked against
    /// the bytes left before anything is allocated for it.
    pub(super) fn count(&mut self, entry_bytes: usize) -> Result<usize, Mp4Error> {
        let n = self.u32()? as usize;
        if n.checked_mul(entry_bytes)
            .is_none_or(|need| need > self.remaining())
        {
            return Err(corrupt(format!(
                "'{}' claims {n} entries in {} bytes",
                self.what,
                self.remaining()
            )));
        }
        Ok(n)
    }
}

/// Indexes `moov`'s body. Tracks other than video and audio (text, timecode,
/// hints) are left out; a video or audio track in a codec Strata cannot
/// package is an error, so a title never plays with a track silently missing.
pub fn parse_moov(moov: &[u8], limits: &IndexLimits) -> Result<Mp4Index, Mp4Error> {
    let boxes = children(moov)?;
    let fragmented = child(&boxes, b"mvex").is_some();
    let tracks = parse_traks(&boxes, limits)?;
    if fragmented && tracks.iter().all(|t| t.samples.is_empty()) {
        return Err(Mp4Error::Fragmented);
    }
    finish(tracks)
}

/// Every video and audio `trak` of `moov`, samples or not.
pub(super) fn parse_traks(
    boxes: &[Child<'_>],
    limits: &IndexLimits,
) -> Result<Vec<TrackIndex>, Mp4Error> {
    let mut tracks = Vec::new();
    let mut total = 0u64;
    for (_, trak) in boxes.iter().filter(|(k, _)| k == b"trak") {
        let Some(track) = parse_trak(trak, limits, total)? else {
            continue;
        };
        total += track.samples.len() as u64;
        tracks.push(track);
    }
    Ok(tracks)
}

/// Drops tracks without samples; video first, then by track ID.
pub(super) fn finish(mut tracks: Vec<TrackIndex>) -> Result<Mp4Index, Mp4Error> {
    tracks.retain(|t| !t.samples.is_empty());
    if tracks.is_empty() {
        return Err(Mp4Error::Unsupported(
            "no H.264 video or AAC audio track".into(),
        ));
    }
    tracks.sort_by_key(|t| (t.kind(), t.track_id));
    Ok(Mp4Index { tracks })
}

fn parse_trak(
    trak: &[u8],
    limits: &IndexLimits,
    samples_so_far: u64,
) -> Result<Option<TrackIndex>, Mp4Error> {
    let boxes = children(trak)?;
    let track_id = {
        let mut r = Reader::new(need(&boxes, b"tkhd")?, "tkhd");
        let (version, _) = r.full_box()?;
        r.bytes(if version == 1 { 16 } else { 8 })?;
        r.u32()?
    };
    let mdia = children(need(&boxes, b"mdia")?)?;
    let handler = {
        let mut r = Reader::new(need(&mdia, b"hdlr")?, "hdlr");
        r.full_box()?;
        r.u32()?;
        let h: [u8; 4] = r.bytes(4)?.try_into().expect("4");
        h
    };
    if !matches!(&handler, b"vide" | b"soun") {
        return Ok(None);
    }
    let (timescale, language) = {
        let mut r = Reader::new(need(&mdia, b"mdhd")?, "mdhd");
        let (version, _) = r.full_box()?;
        r.bytes(if version == 1 { 16 } else { 8 })?;
        let timescale = r.u32()?;
        r.bytes(if version == 1 { 8 } else { 4 })?;
        let packed = r.u16()?;
        (timescale, language(packed))
    };
    if timescale == 0 {
        return Err(corrupt(format!("track {track_id}: mdhd timescale 0")));
    }
    let minf = children(need(&mdia, b"minf")?)?;
    let stbl = children(need(&minf, b"stbl")?)?;
    let (params, nal_length_size) = parse_stsd(need(&stbl, b"stsd")?, track_id)?;
    let mut samples = sample_table(&stbl, track_id, limits, samples_so_far)?;
    let end_dts = fill_times(&stbl, &mut samples, track_id)?;
    if let Some(stss) = child(&stbl, b"stss") {
        let mut r = Reader::new(stss, "stss");
        r.full_box()?;
        let n = r.count(4)?;
        for s in samples.iter_mut() {
            s.sync = false;
        }
        for _ in 0..n {
            let i = r.u32()? as usize;
            if let Some(s) = i.checked_sub(1).and_then(|i| samples.get_mut(i)) {
                s.sync = true;
            }
        }
    }
    let edit_start = child(&boxes, b"edts")
        .map(edit_media_time)
        .transpose()?
        .flatten()
        .unwrap_or(0);
    let presentation_shift = edit_start.clamp(0, earliest_composition(&samples).max(0));
    Ok(Some(TrackIndex {
        track_id,
        params,
        timescale,
        presentation_shift,
        edit_media_time: edit_start,
        language,
        nal_length_size,
        samples,
        end_dts,
    }))
}

/// ISO 639-2/T from `mdhd`'s packed form: three 5-bit letters offset by 0x60.
fn language(packed: u16) -> String {
    let letters: String = [10u16, 5, 0]
        .iter()
        .map(|shift| (((packed >> shift) & 0x1f) as u8 + 0x60) as char)
        .collect();
    if letters.chars().all(|c| c.is_ascii_lowercase()) {
        letters
    } else {
        "und".into()
    }
}

/// The media time the first edit starts at (`elst`, §8.6.6); an empty
/// edit (-1, a delay) is skipped.
/// The earliest composition time (`dts + cts`) of a track's samples: the
/// most the edit list may shift presentation by without a frame presenting
/// before zero. (Bounding by the smallest composition *offset* instead left
/// B-pyramid video — a B-frame with offset 0 — unshifted, two frames late.)
pub fn earliest_composition(samples: &[SampleEntry]) -> i64 {
    samples
        .iter()
        .map(|s| (s.dts as i64).saturating_add(i64::from(s.cts)))
        .min()
        .unwrap_or(0)
}

fn edit_media_time(edts: &[u8]) -> Result<Option<i64>, Mp4Error> {
    let boxes = children(edts)?;
    let Some(elst) = child(&boxes, b"elst") else {
        return Ok(None);
    };
    let mut r = Reader::new(elst, "elst");
    let (version, _) = r.full_box()?;
    let entry = if version == 1 { 20 } else { 12 };
    let n = r.count(entry)?;
    for _ in 0..n {
        let media_time = if version == 1 {
            r.u64()?;
            r.u64()? as i64
        } else {
            r.u32()?;
            i64::from(r.u32()? as i32)
        };
        r.u32()?; // media_rate
        if media_time >= 0 {
            return Ok(Some(media_time));
        }
    }
    Ok(None)
}

/// The first sample entry of `stsd` as decoder parameters, and the NAL
/// length size of the samples.
fn parse_stsd(stsd: &[u8], track_id: u32) -> Result<(TrackParams, u8), Mp4Error> {
    let mut r = Reader::new(stsd, "stsd");
    r.full_box()?;
    let n = r.count(8)?;
    if n == 0 {
        return Err(corrupt(format!("track {track_id}: empty stsd")));
    }
    let entries = children(&stsd[r.pos..])?;
    let (kind, body) = entries
        .first()
        .ok_or_else(|| corrupt(format!("track {track_id}: empty stsd")))?;
    match kind {
        b"avc1" | b"avc3" => {
            // VisualSampleEntry (§12.1.3): 78 bytes of fields, then boxes.
            let fields = body
                .get(78..)
                .ok_or_else(|| corrupt(format!("track {track_id}: truncated avc1")))?;
            let avcc = child(&children(fields)?, b"avcC")
                .ok_or_else(|| corrupt(format!("track {track_id}: avc1 without avcC")))?;
            let config = h264::parse_avc_config(&Bytes::copy_from_slice(avcc))
                .map_err(|e| corrupt(format!("track {track_id}: {e}")))?;
            let params = h264::video_params(config.sps, config.pps)
                .map_err(|e| corrupt(format!("track {track_id}: {e}")))?;
            Ok((TrackParams::Video(params), config.nal_length_size))
        }
        b"mp4a" => {
            // AudioSampleEntry (§12.2.3): 28 bytes; QuickTime sound
            // description versions 1 and 2 add 16 and 36 bytes.
            let version = body
                .get(8..10)
                .map_or(0, |v| u16::from_be_bytes([v[0], v[1]]));
            let skip = match version {
                0 => 28,
                1 => 44,
                2 => 64,
                v => {
                    return Err(Mp4Error::Unsupported(format!(
                        "track {track_id}: sound description version {v}"
                    )))
                }
            };
            let fields = body
                .get(skip..)
                .ok_or_else(|| corrupt(format!("track {track_id}: truncated mp4a")))?;
            let boxes = children(fields)?;
            let esds = child(&boxes, b"esds").or_else(|| {
                // QuickTime keeps esds inside a `wave` box.
                child(&boxes, b"wave")
                    .and_then(|w| children(w).ok())
                    .and_then(|w| child(&w, b"esds"))
            });
            let esds =
                esds.ok_or_else(|| corrupt(format!("track {track_id}: mp4a without esds")))?;
            let asc = audio_specific_config(esds, track_id)?;
            let params = aac::audio_params(Bytes::copy_from_slice(asc))
                .map_err(|e| corrupt(format!("track {track_id}: {e}")))?;
            Ok((TrackParams::Audio(params), 4))
        }
        b"hvc1" | b"hev1" => {
            let fields = body
                .get(78..)
                .ok_or_else(|| corrupt(format!("track {track_id}: truncated {}", fourcc(kind))))?;
            let hvcc = child(&children(fields)?, b"hvcC").ok_or_else(|| {
                corrupt(format!("track {track_id}: {} without hvcC", fourcc(kind)))
            })?;
            let (params, nal_length_size) =
                super::hevc::video_params(&fourcc(kind), body, hvcc, track_id)?;
            Ok((TrackParams::Video(params), nal_length_size))
        }
        other => Err(Mp4Error::Unsupported(format!(
            "track {track_id}: codec '{}' (H.264 avc1/avc3, HEVC hvc1/hev1 and AAC mp4a are supported)",
            fourcc(other)
        ))),
    }
}

/// The DecoderSpecificInfo (AudioSpecificConfig) inside `esds`
/// (ISO/IEC 14496-1 §7.2.6.5–7), for an AAC objectTypeIndication.
fn audio_specific_config(esds: &[u8], track_id: u32) -> Result<&[u8], Mp4Error> {
    let mut r = Reader::new(esds, "esds");
    r.full_box()?;
    let es = descriptor(&mut r, 0x03)?;
    let mut r = Reader::new(es, "ES_Descriptor");
    r.u16()?; // ES_ID
    let flags = r.u8()?;
    if flags & 0x80 != 0 {
        r.u16()?; // dependsOn_ES_ID
    }
    if flags & 0x40 != 0 {
        let n = r.u8()?;
        r.bytes(usize::from(n))?; // URL
    }
    if flags & 0x20 != 0 {
        r.u16()?; // OCR_ES_Id
    }
    let dcd = descriptor(&mut r, 0x04)?;
    let mut r = Reader::new(dcd, "DecoderConfigDescriptor");
    let object_type = r.u8()?;
    // 0x40 MPEG-4 Audio; 0x66–0x68 MPEG-2 AAC profiles.
    if !matches!(object_type, 0x40 | 0x66..=0x68) {
        return Err(Mp4Error::Unsupported(format!(
            "track {track_id}: audio objectTypeIndication {object_type:#04x} (AAC is supported)"
        )));
    }
    r.bytes(12)?;
    descriptor(&mut r, 0x05)
}

/// The body of the next descriptor, which must have `tag` (§8.3.3 sizes).
fn descriptor<'a>(r: &mut Reader<'a>, tag: u8) -> Result<&'a [u8], Mp4Error> {
    let found = r.u8()?;
    if found != tag {
        return Err(corrupt(format!(
            "esds: descriptor tag {found:#04x} where {tag:#04x} belongs"
        )));
    }
    let mut len = 0usize;
    for _ in 0..4 {
        let b = r.u8()?;
        len = (len << 7) | usize::from(b & 0x7f);
        if b & 0x80 == 0 {
            break;
        }
    }
    r.bytes(len)
}

/// Sizes (`stsz`/`stz2`) and offsets (`stsc` + `stco`/`co64`) of every sample.
fn sample_table(
    stbl: &[Child<'_>],
    track_id: u32,
    limits: &IndexLimits,
    samples_so_far: u64,
) -> Result<Vec<SampleEntry>, Mp4Error> {
    let sizes = sample_sizes(stbl, track_id, limits, samples_so_far)?;
    let chunk_offsets: Vec<u64> = if let Some(stco) = child(stbl, b"stco") {
        let mut r = Reader::new(stco, "stco");
        r.full_box()?;
        let n = r.count(4)?;
        (0..n)
            .map(|_| r.u32().map(u64::from))
            .collect::<Result<_, _>>()?
    } else {
        let mut r = Reader::new(need(stbl, b"co64")?, "co64");
        r.full_box()?;
        let n = r.count(8)?;
        (0..n).map(|_| r.u64()).collect::<Result<_, _>>()?
    };
    let mut r = Reader::new(need(stbl, b"stsc")?, "stsc");
    r.full_box()?;
    let n = r.count(12)?;
    let mut runs = Vec::with_capacity(n);
    for _ in 0..n {
        let first_chunk = r.u32()?;
        let per_chunk = r.u32()?;
        r.u32()?; // sample_description_index
        runs.push((first_chunk, per_chunk));
    }
    let mut samples = Vec::with_capacity(sizes.len());
    let mut next = 0usize;
    for (i, &(first_chunk, per_chunk)) in runs.iter().enumerate() {
        let last_chunk = runs.get(i + 1).map_or(chunk_offsets.len() as u64, |r| {
            u64::from(r.0).saturating_sub(1)
        });
        if first_chunk == 0 || u64::from(first_chunk) > last_chunk + 1 {
            return Err(corrupt(format!(
                "track {track_id}: stsc chunk numbers out of order"
            )));
        }
        for chunk in u64::from(first_chunk)..=last_chunk {
            let Some(&base) = chunk_offsets.get(chunk as usize - 1) else {
                return Err(corrupt(format!(
                    "track {track_id}: stsc names chunk {chunk} of {}",
                    chunk_offsets.len()
                )));
            };
            let mut offset = base;
            for _ in 0..per_chunk {
                let Some(&size) = sizes.get(next) else {
                    return Err(corrupt(format!(
                        "track {track_id}: chunks hold more samples than stsz lists ({})",
                        sizes.len()
                    )));
                };
                samples.push(SampleEntry {
                    offset,
                    size,
                    dts: 0,
                    cts: 0,
                    sync: true,
                });
                offset = offset
                    .checked_add(u64::from(size))
                    .ok_or_else(|| corrupt("sample offset overflows"))?;
                next += 1;
            }
        }
    }
    if samples.len() != sizes.len() {
        return Err(corrupt(format!(
            "track {track_id}: chunks hold {} samples, stsz lists {}",
            samples.len(),
            sizes.len()
        )));
    }
    Ok(samples)
}

fn sample_sizes(
    stbl: &[Child<'_>],
    track_id: u32,
    limits: &IndexLimits,
    samples_so_far: u64,
) -> Result<Vec<u32>, Mp4Error> {
    let check = |n: u64| {
        if samples_so_far + n > limits.max_samples {
            Err(Mp4Error::TooLarge(format!(
                "track {track_id}: {n} samples (limit {} per title)",
                limits.max_samples
            )))
        } else {
            Ok(())
        }
    };
    if let Some(stsz) = child(stbl, b"stsz") {
        let mut r = Reader::new(stsz, "stsz");
        r.full_box()?;
        let fixed = r.u32()?;
        if fixed != 0 {
            let n = r.u32()?;
            check(u64::from(n))?;
            return Ok(vec![fixed; n as usize]);
        }
        let n = r.count(4)?;
        check(n as u64)?;
        return (0..n).map(|_| r.u32()).collect();
    }
    let mut r = Reader::new(need(stbl, b"stz2")?, "stz2");
    r.full_box()?;
    r.bytes(3)?;
    let field = r.u8()?;
    let n = r.u32()? as usize;
    let bits = match field {
        4 | 8 | 16 => usize::from(field),
        f => return Err(corrupt(format!("stz2 field_size {f}"))),
    };
    if n.saturating_mul(bits).div_ceil(8) > r.remaining() {
        return Err(corrupt(format!(
            "'stz2' claims {n} entries in {} bytes",
            r.remaining()
        )));
    }
    check(n as u64)?;
    let body = r.bytes(r.remaining())?;
    Ok((0..n)
        .map(|i| match bits {
            4 => {
                let b = body[i / 2];
                u32::from(if i % 2 == 0 { b >> 4 } else { b & 0x0f })
            }
            8 => u32::from(body[i]),
            _ => u32::from(u16::from_be_bytes([body[2 * i], body[2 * i + 1]])),
        })
        .collect())
}

/// Decode times (`stts`) and composition offsets (`ctts`); returns the
/// decode time at the end of the last sample.
fn fill_times(
    stbl: &[Child<'_>],
    samples: &mut [SampleEntry],
    track_id: u32,
) -> Result<u64, Mp4Error> {
    let mut r = Reader::new(need(stbl, b"stts")?, "stts");
    r.full_box()?;
    let n = r.count(8)?;
    let mut i = 0usize;
    let mut t = 0u64;
    for _ in 0..n {
        let count = r.u32()? as usize;
        let delta = r.u32()?;
        for _ in 0..count {
            let Some(s) = samples.get_mut(i) else {
                return Err(corrupt(format!(
                    "track {track_id}: stts times more samples than stsz lists ({})",
                    samples.len()
                )));
            };
            s.dts = t;
            t = t
                .checked_add(u64::from(delta))
                .ok_or_else(|| corrupt("decode time overflows"))?;
            i += 1;
        }
    }
    if i != samples.len() {
        return Err(corrupt(format!(
            "track {track_id}: stts times {i} samples, stsz lists {}",
            samples.len()
        )));
    }
    if let Some(ctts) = child(stbl, b"ctts") {
        let mut r = Reader::new(ctts, "ctts");
        r.full_box()?;
        let n = r.count(8)?;
        let mut i = 0usize;
        for _ in 0..n {
            let count = r.u32()? as usize;
            // Version 0 is unsigned, but writers put negative offsets there
            // too; read both as signed (§8.6.1.3).
            let offset = r.u32()? as i32;
            for _ in 0..count {
                let Some(s) = samples.get_mut(i) else {
                    return Err(corrupt(format!(
                        "track {track_id}: ctts covers more samples than stsz lists"
                    )));
                };
                s.cts = offset;
                i += 1;
            }
        }
    }
    Ok(t)
}

#[cfg(test)]
mod shift_tests {
    use super::*;

    /// x264's B-pyramid with `-bf 3`, 512 ticks a frame: I P B B B in
    /// decode order presenting 0 4 2 1 3 (+2 frames of edit-list delay).
    /// The third B-frame's offset is 0, yet every frame presents at or
    /// after 1024: the whole edit (1024) can be applied.
    #[test]
    fn the_edit_shift_is_bounded_by_the_earliest_composition_time() {
        let presents = [0u64, 4, 2, 1, 3];
        let samples: Vec<SampleEntry> = presents
            .iter()
            .enumerate()
            .map(|(i, &p)| SampleEntry {
                offset: 0,
                size: 1,
                dts: i as u64 * 512,
                cts: i32::try_from((p + 2) * 512 - i as u64 * 512).expect("small"),
                sync: i == 0,
            })
            .collect();
        assert_eq!(samples.iter().map(|s| s.cts).min(), Some(0));
        assert_eq!(earliest_composition(&samples), 1024);
        assert_eq!(earliest_composition(&[]), 0);
    }
}
