//! A wrapped blob as UNWRAP receives it: the header parses or is refused, and what
//! parses re-encodes to the same header bytes and parses again to an equal header. The
//! mode byte of what parses is a defined mode (1 direct, 2 intermediate, 3 KEM).
#![no_main]

use keymux_protocol::{BlobHeader, BlobMode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|blob: &[u8]| {
    let Ok((header, body)) = BlobHeader::parse(blob) else { return };
    assert!(!body.is_empty());
    let header_len = blob.len() - body.len();
    assert_eq!(header.encoded_len(), header_len);
    // The mode is the header's last byte, and parsing kept it as it was.
    assert_eq!(BlobMode::from_u8(blob[header_len - 1]), Some(header.mode));
    assert!(matches!(header.mode, BlobMode::Direct | BlobMode::Intermediate | BlobMode::Kem));
    let encoded = header.to_bytes().expect("a parsed header re-encodes");
    assert_eq!(encoded, &blob[..header_len]);
    let mut again = encoded;
    again.extend_from_slice(body);
    let (reparsed, rebody) = BlobHeader::parse(&again).expect("re-encoding parses");
    assert_eq!(reparsed, header);
    assert_eq!(rebody, body);
});
