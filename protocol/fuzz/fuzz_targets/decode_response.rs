//! Bytes from a server: split into frames and decoded as responses. Whatever decodes
//! must re-encode to the same bytes and decode again to an equal response.
#![no_main]

use keymux_protocol_fuzz::{check_response_body, for_each_frame, limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = limits();
    for_each_frame(data, &limits, |body| check_response_body(body, &limits));
});
