//! FLV audio and video tag bodies as an RTMP publisher sends them: the
//! demuxer returns errors for bad input, never panics.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use strata_origin::media::flv::FlvDemuxer;

fuzz_target!(|data: &[u8]| {
    let mut demux = FlvDemuxer::new();
    // Records: [kind, len_hi, len_lo, body...], kind's low bit picks audio.
    let mut rest = data;
    let mut ts = 0u32;
    while rest.len() >= 3 {
        let kind = rest[0];
        let len = usize::from(u16::from_be_bytes([rest[1], rest[2]])).min(rest.len() - 3);
        let body = Bytes::copy_from_slice(&rest[3..3 + len]);
        rest = &rest[3 + len..];
        ts = ts.wrapping_add(u32::from(kind >> 1));
        let _ = if kind & 1 == 0 {
            demux.video(ts, &body)
        } else {
            demux.audio(ts, &body)
        };
    }
});
