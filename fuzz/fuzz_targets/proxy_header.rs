//! PROXY protocol v1/v2 headers from a load balancer (or anyone who can reach
//! a listener that accepts them): a header, `Incomplete` or `Invalid`, and a
//! header never claims more bytes than it was given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata::policy::client::{parse_proxy_header, ProxyError};

fuzz_target!(|data: &[u8]| {
    match parse_proxy_header(data) {
        Ok(header) => assert!(header.len <= data.len(), "{header:?} from {} bytes", data.len()),
        Err(ProxyError::Incomplete | ProxyError::Invalid(_)) => {}
    }
    // Every prefix of the input is a prefix of the stream the edge reads.
    for cut in [1, 8, 16, 28, 107] {
        if let Some(prefix) = data.get(..cut) {
            let _ = parse_proxy_header(prefix);
        }
    }
});
