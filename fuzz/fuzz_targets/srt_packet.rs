//! The SRT ingest's first look at a datagram (`ingest::srt::guard::inspect`):
//! it must never panic, and whatever it lets through to a peer's srt-protocol
//! listener must parse there without panicking.
#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;
use srt_protocol::packet::Packet;
use strata_origin::ingest::srt::guard::inspect;

fuzz_target!(|data: &[u8]| {
    if inspect(data).is_ok() {
        // The peer's listener parses the same bytes the same way (IPv4 loopback).
        let parsed = Packet::parse(&mut Cursor::new(data), false);
        assert!(parsed.is_ok(), "inspect passed a packet srt-protocol refuses");
    }
});
