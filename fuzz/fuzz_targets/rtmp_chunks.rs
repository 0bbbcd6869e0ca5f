//! RTMP input after the handshake, as `ingest::rtmp` feeds it: the chunk
//! gate first, then `rml_rtmp`'s chunk deserializer on what the gate let
//! through, one message at a time. Neither may panic, and the gate must
//! refuse any message over the limit before the deserializer sees it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rml_rtmp::chunk_io::ChunkDeserializer;
use strata_origin::ingest::rtmp_chunks::ChunkGate;

const LIMIT: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let mut gate = ChunkGate::default();
    let mut rml = ChunkDeserializer::new();
    let mut rest = data;
    while !rest.is_empty() {
        let Ok(n) = gate.advance(rest, LIMIT) else {
            return;
        };
        let (now, after) = rest.split_at(n);
        rest = after;
        let mut input = now;
        loop {
            // Production (ingest::rtmp) still catches a panic of rml_rtmp's
            // and ends the connection, but on what the gate lets through
            // there must be none: the gate mirrors rml_rtmp's framing
            // (regression input: corpus/rtmp_chunks/seed-capacity-overflow,
            // a Set Chunk Size read from another chunk stream's bytes).
            let next = rml.get_next_message(input);
            match next {
                Ok(Some(message)) => {
                    input = &[];
                    assert!(
                        message.data.len() <= LIMIT,
                        "a message over the limit got through"
                    );
                    if message.type_id == 1 && message.data.len() >= 4 {
                        let d = &message.data;
                        let size = u32::from_be_bytes([d[0], d[1], d[2], d[3]]);
                        if rml.set_max_chunk_size(size as usize).is_err() {
                            return;
                        }
                    }
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
