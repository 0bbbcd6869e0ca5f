//! A VOD library file as arbitrary bytes: indexing its `moov` (and `moof`s),
//! planning its segments and building every segment must return errors for bad input,
//! never panic, and never allocate beyond what the bytes justify.
#![no_main]

use std::time::Duration;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use strata_origin::vod::{fragments, mp4, plan};

fuzz_target!(|data: &[u8]| {
    let limits = mp4::IndexLimits {
        max_moov_bytes: 1 << 20,
        max_samples: 100_000,
    };
    let Ok(moov) = mp4::locate_moov(data.len() as u64, &limits, |at, n| {
        let at = at as usize;
        Ok(data[at..(at + n).min(data.len())].to_vec())
    }) else {
        return;
    };
    let moov = &data[moov.start as usize..moov.end as usize];
    let index = match mp4::parse_moov(moov, &limits) {
        Ok(index) => index,
        Err(mp4::Mp4Error::Fragmented) => {
            let Ok(moofs) = fragments::locate_moofs(data.len() as u64, &limits, |at, n| {
                let at = at as usize;
                Ok(data[at..(at + n).min(data.len())].to_vec())
            }) else {
                return;
            };
            let moofs: Vec<(u64, Vec<u8>)> = moofs
                .into_iter()
                .map(|r| (r.start, data[r.start as usize..r.end as usize].to_vec()))
                .collect();
            let Ok(index) = fragments::parse_fragmented(moov, &moofs, &limits) else {
                return;
            };
            index
        }
        Err(_) => return,
    };
    let file = Bytes::copy_from_slice(data);
    for (track, plan) in index
        .tracks
        .iter()
        .zip(plan::plan(&index, Duration::from_secs(2)))
    {
        for segment in plan.segments.iter().take(8) {
            // What the library reads: each sample's bytes, here from the input
            // (empty where the sample table points past its end).
            let samples = track.samples[segment.first..segment.end]
                .iter()
                .map(|s| {
                    let start = s.offset.min(file.len() as u64) as usize;
                    let end = (s.offset + u64::from(s.size)).min(file.len() as u64) as usize;
                    file.slice(start..end.max(start))
                })
                .collect();
            if let Ok(samples) = plan::segment_samples(track, segment, samples) {
                let _ = strata_origin::media::fmp4::media_segment(1, 1, segment.start, &samples);
            }
        }
        let _ = strata_origin::media::fmp4::init_segment(1, &track.params);
    }
});
