//! MPEG-TS from an SRT publisher, fed in arbitrary pieces: the demuxer must
//! return errors for bad input, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_origin::media::ts_demux::TsDemuxer;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let mut demux = TsDemuxer::new();
    // The first byte picks the piece size, so packet boundaries move.
    for piece in rest.chunks(usize::from(split).max(1) * 7) {
        if demux.push(piece).is_err() {
            return;
        }
    }
    let _ = demux.flush();
});
