//! CMCD as players send it: the `CMCD` query value (percent-encoded) and the
//! `CMCD-*` header payloads (RFC 8941 structured-field dictionaries). Bad
//! input is an error the edge counts, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata::qoe::cmcd::Cmcd;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut from_query = Cmcd::default();
    let _ = from_query.parse_query_value(text);
    // Headers: the same payload split over the four CMCD-* fields.
    let mut from_headers = Cmcd::default();
    for part in text.splitn(4, '\n') {
        if from_headers.parse_into(part).is_err() {
            break;
        }
    }
    let _ = from_headers.is_empty();
});
