//! A CPIX document as `PUT /api/channels/{channel}/keys` receives it: the
//! parser must refuse bad XML, bad key IDs and bad keys with an error, never
//! panic, and what it accepts must write back as CPIX it reads the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_origin::keys::{parse_cpix, write_cpix};

fuzz_target!(|data: &[u8]| {
    let Ok(document) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(keys) = parse_cpix(document) {
        let again = parse_cpix(&write_cpix(&keys)).expect("our own CPIX parses");
        assert_eq!(again, keys, "CPIX round trip");
    }
});
