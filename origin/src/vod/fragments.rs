//! Fragmented MP4 sources (ISO/IEC 14496-12 §8.8): the sample tables of a
//! file whose samples live in `moof` boxes, built from `trex` defaults and
//! each fragment's `tfhd`, `tfdt` and `trun`. Pure, like [`super::mp4`].

use std::ops::Range;

use super::mp4::{
    child, children, corrupt, finish, parse_box_header, parse_traks, IndexLimits, LocateError,
    Mp4Error, Mp4Index, Reader, SampleEntry, TrackIndex,
};

/// `sample_is_non_sync_sample` in sample flags (§8.8.3.1).
const NON_SYNC: u32 = 0x0001_0000;

/// Every top-level `moof` box of the file (whole boxes), at most
/// `limits.max_moov_bytes` of them in total.
pub fn locate_moofs(
    file_len: u64,
    limits: &IndexLimits,
    mut read_at: impl FnMut(u64, usize) -> std::io::Result<Vec<u8>>,
) -> Result<Vec<Range<u64>>, LocateError> {
    let mut at = 0u64;
    let mut moofs = Vec::new();
    let mut bytes = 0u64;
    while at < file_len {
        let head = read_at(at, 16).map_err(LocateError::Io)?;
        let header = parse_box_header(&head, at, file_len)?;
        if &header.kind == b"moof" {
            bytes += header.size;
            if bytes > limits.max_moov_bytes {
                return Err(Mp4Error::TooLarge(format!(
                    "moof boxes of over {} bytes",
                    limits.max_moov_bytes
                ))
                .into());
            }
            moofs.push(at..at + header.size);
        }
        at += header.size;
    }
    Ok(moofs)
}

/// Per-track defaults from `mvex/trex` (§8.8.3).
#[derive(Clone, Copy, Default)]
struct Defaults {
    duration: u32,
    size: u32,
    flags: u32,
}

/// Indexes a fragmented MP4 from its `moov` body and its `moof` boxes
/// (`(offset of the box in the file, whole box)`), in file order.
pub fn parse_fragmented(
    moov: &[u8],
    moofs: &[(u64, Vec<u8>)],
    limits: &IndexLimits,
) -> Result<Mp4Index, Mp4Error> {
    let boxes = children(moov)?;
    let mut tracks = parse_traks(&boxes, limits)?;
    let mut defaults: Vec<(u32, Defaults)> = Vec::new();
    if let Some(mvex) = child(&boxes, b"mvex") {
        for (kind, trex) in children(mvex)? {
            if &kind != b"trex" {
                continue;
            }
            let mut r = Reader::new(trex, "trex");
            r.full_box()?;
            let track_id = r.u32()?;
            r.u32()?; // default_sample_description_index
            defaults.push((
                track_id,
                Defaults {
                    duration: r.u32()?,
                    size: r.u32()?,
                    flags: r.u32()?,
                },
            ));
        }
    }
    let mut total: u64 = tracks.iter().map(|t| t.samples.len() as u64).sum();
    for (moof_at, moof) in moofs {
        let header = parse_box_header(moof, 0, moof.len() as u64)?;
        let body = &moof[header.header_len as usize..];
        for (kind, traf) in children(body)? {
            if &kind != b"traf" {
                continue;
            }
            let trex = |id| {
                defaults
                    .iter()
                    .find(|(t, _)| *t == id)
                    .map_or(Defaults::default(), |d| d.1)
            };
            add_traf(traf, *moof_at, &mut tracks, trex, limits, &mut total)?;
        }
    }
    for t in &mut tracks {
        t.presentation_shift = t
            .edit_media_time
            .clamp(0, super::mp4::earliest_composition(&t.samples).max(0));
    }
    finish(tracks)
}

fn add_traf(
    traf: &[u8],
    moof_at: u64,
    tracks: &mut [TrackIndex],
    trex: impl Fn(u32) -> Defaults,
    limits: &IndexLimits,
    total: &mut u64,
) -> Result<(), Mp4Error> {
    let boxes = children(traf)?;
    let tfhd = child(&boxes, b"tfhd").ok_or_else(|| corrupt("traf without tfhd"))?;
    let mut r = Reader::new(tfhd, "tfhd");
    let (_, flags) = r.full_box()?;
    let track_id = r.u32()?;
    let mut d = trex(track_id);
    let base = if flags & 0x01 != 0 {
        r.u64()?
    } else {
        // default-base-is-moof, and what writers without it mean in practice.
        moof_at
    };
    if flags & 0x02 != 0 {
        r.u32()?; // sample_description_index
    }
    if flags & 0x08 != 0 {
        d.duration = r.u32()?;
    }
    if flags & 0x10 != 0 {
        d.size = r.u32()?;
    }
    if flags & 0x20 != 0 {
        d.flags = r.u32()?;
    }
    let Some(track) = tracks.iter_mut().find(|t| t.track_id == track_id) else {
        // A track we do not package (text, timecode).
        return Ok(());
    };
    let mut dts = match child(&boxes, b"tfdt") {
        Some(tfdt) => {
            let mut r = Reader::new(tfdt, "tfdt");
            let (version, _) = r.full_box()?;
            if version == 1 {
                r.u64()?
            } else {
                u64::from(r.u32()?)
            }
        }
        None => track.end_dts,
    };
    let mut next_offset = base;
    for (_, trun) in boxes.iter().filter(|(k, _)| k == b"trun") {
        let mut r = Reader::new(trun, "trun");
        let (_, flags) = r.full_box()?;
        let per_sample = 4 * [0x100u32, 0x200, 0x400, 0x800]
            .iter()
            .filter(|&&f| flags & f != 0)
            .count();
        let extra = 4 * usize::from(flags & 0x01 != 0) + 4 * usize::from(flags & 0x04 != 0);
        let n = r.u32()? as usize;
        if n.saturating_mul(per_sample).saturating_add(extra) > r.remaining() {
            return Err(corrupt(format!(
                "'trun' claims {n} samples in {} bytes",
                r.remaining()
            )));
        }
        *total += n as u64;
        if *total > limits.max_samples {
            return Err(Mp4Error::TooLarge(format!(
                "over {} samples",
                limits.max_samples
            )));
        }
        let mut offset = if flags & 0x01 != 0 {
            base.checked_add_signed(i64::from(r.u32()? as i32))
                .ok_or_else(|| corrupt("trun data offset before the file"))?
        } else {
            next_offset
        };
        let first_flags = if flags & 0x04 != 0 {
            Some(r.u32()?)
        } else {
            None
        };
        track.samples.reserve(n);
        for i in 0..n {
            let duration = if flags & 0x100 != 0 {
                r.u32()?
            } else {
                d.duration
            };
            let size = if flags & 0x200 != 0 { r.u32()? } else { d.size };
            let sample_flags = if flags & 0x400 != 0 {
                r.u32()?
            } else if i == 0 {
                first_flags.unwrap_or(d.flags)
            } else {
                d.flags
            };
            let cts = if flags & 0x800 != 0 {
                r.u32()? as i32
            } else {
                0
            };
            track.samples.push(SampleEntry {
                offset,
                size,
                dts,
                cts,
                sync: sample_flags & NON_SYNC == 0,
            });
            offset = offset
                .checked_add(u64::from(size))
                .ok_or_else(|| corrupt("sample offset overflows"))?;
            dts = dts
                .checked_add(u64::from(duration))
                .ok_or_else(|| corrupt("decode time overflows"))?;
        }
        next_offset = offset;
    }
    track.end_dts = dts;
    Ok(())
}
