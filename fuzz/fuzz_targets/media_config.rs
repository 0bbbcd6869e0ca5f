//! The codec configuration parsers a publisher's bytes reach: H.264 SPS,
//! `avcC` records, Annex B and length-prefixed NAL framing, AAC
//! AudioSpecificConfig and ADTS headers. The first byte picks the parser;
//! each must answer an error for bad input, never panic.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use strata_origin::media::{aac, h264};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    match selector % 6 {
        0 => {
            if let Ok(sps) = h264::parse_sps(body) {
                let _ = sps.codec_string();
            }
            let _ = h264::rbsp_from_nal(body);
            let _ = h264::nal_unit_type(body);
        }
        1 => {
            if let Ok(config) = h264::parse_avc_config(&Bytes::copy_from_slice(body)) {
                // What the packager does with a parsed record.
                let _ = h264::video_params(config.sps.clone(), config.pps.clone());
            }
        }
        2 => {
            let nals = h264::annexb_nals(body);
            let _ = h264::contains_idr(nals.iter().copied());
            let avcc = h264::annexb_to_avcc(body);
            let _ = h264::avcc_to_annexb(&avcc);
        }
        3 => {
            for length_size in 1..=4 {
                let _ = h264::avcc_nals(body, length_size);
            }
            let _ = h264::avcc_to_annexb(body);
        }
        4 => {
            if let Ok(asc) = aac::parse_asc(body) {
                let _ = asc.codec_string();
                let _ = asc.channels();
            }
            let _ = aac::audio_params(Bytes::copy_from_slice(body));
        }
        _ => {
            if let Ok(adts) = aac::parse_adts(body) {
                let _ = adts.asc();
            }
        }
    }
});
