//! The XKS API's SigV4 headers as they arrive: an `Authorization` value and an
//! `X-Amz-Date` parse or are refused, never panic.
#![no_main]

use keymux_proxy::frontend::xks::sigv4::{parse_amz_date, parse_authorization};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = parse_authorization(&text);
    let _ = parse_amz_date(&text);
});
