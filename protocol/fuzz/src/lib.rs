//! Shared driver for the keymux-protocol fuzz targets.

use bytes::BytesMut;
use keymux_protocol::{FrameSplitter, HEADER_LEN, LENGTH_PREFIX_LEN, Limits};

use keymux_protocol::conformance as check;

/// Decodes `body` as a request; what decodes must re-encode canonically and decode
/// again to an equal request.
pub fn check_request_body(body: &[u8], limits: &Limits) {
    check::check_request_body(body, limits);
}

/// Decodes `body` as a response; what decodes must re-encode canonically and decode
/// again to an equal response.
pub fn check_response_body(body: &[u8], limits: &Limits) {
    check::check_response_body(body, limits);
}

/// Limits small enough that fuzzed frames reach them.
pub fn limits() -> Limits {
    Limits {
        max_frame: 4096,
        max_aad: 512,
        max_plaintext: 256,
        max_blob: 1024,
        max_sign_input: 512,
        max_signature: 1024,
        max_public_key: 1024,
    }
}

/// Feeds `data` to a [`FrameSplitter`] as a socket would, a few bytes at a time (the
/// first byte picks the read size, so the fuzzer explores the splitter's states), and
/// calls `on_body` with each whole frame until the stream ends or its framing fails.
pub fn for_each_frame(data: &[u8], limits: &Limits, mut on_body: impl FnMut(&[u8])) {
    let Some((&first, stream)) = data.split_first() else { return };
    let read_size = usize::from(first % 64) + 1;
    let max_frame = limits.max_frame as usize;
    let mut splitter = FrameSplitter::new(limits.max_frame);
    let mut buf = BytesMut::new();
    for chunk in stream.chunks(read_size) {
        buf.extend_from_slice(chunk);
        loop {
            match splitter.split(&mut buf) {
                Ok(Some(mut body)) => {
                    assert!((HEADER_LEN..=max_frame).contains(&body.len()));
                    on_body(&body);
                    FrameSplitter::wipe(&mut body);
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
        // At most one partial frame stays buffered between reads.
        assert!(buf.len() < LENGTH_PREFIX_LEN.max(max_frame));
    }
}
