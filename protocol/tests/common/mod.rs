//! Helpers shared by the protocol's integration tests: field-by-field comparison of
//! frames (in `check.rs`, which the fuzz targets share) and proptest strategies for every
//! frame variant.
//!
//! Each test binary uses a different subset, hence the `dead_code` allowance.
#![allow(dead_code)]

use bytes::BytesMut;
use keymux_protocol::{
    Algorithm, Failure, FrameSplitter, Limits, Reply, Request, RequestFrame, ResponseFrame, SecretBytes,
    Status,
};
use proptest::collection::vec;
use proptest::prelude::*;

pub(crate) use keymux_protocol::conformance::*;

/// Splits every whole frame off `wire`, panicking on a framing error.
pub(crate) fn split_all(splitter: &mut FrameSplitter, wire: &mut BytesMut) -> Vec<BytesMut> {
    let mut bodies = Vec::new();
    while let Some(body) = splitter.split(wire).expect("valid framing") {
        bodies.push(body);
    }
    bodies
}

// ---- proptest strategies -------------------------------------------------------------

/// A valid `str8`: 1..=255 bytes of UTF-8, any script, boundary lengths included.
pub(crate) fn str8() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z0-9/._-]{1,32}",
        // At most 60 characters of at most 4 bytes: always within 255 bytes.
        2 => "\\PC{1,60}",
        1 => "[a-z]{250,255}",
    ]
}

/// Bytes of length `0..=max`, mostly short so that cases stay fast.
pub(crate) fn bytes_up_to(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => vec(any::<u8>(), 0..=max.min(48)),
        1 => vec(any::<u8>(), 0..=max),
        1 => vec(any::<u8>(), max..=max),
    ]
}

/// A secret of `1..=max` bytes.
fn secret_up_to(max: usize) -> impl Strategy<Value = SecretBytes> {
    prop_oneof![
        4 => vec(any::<u8>(), 1..=max.min(64)),
        1 => vec(any::<u8>(), 1..=max),
    ]
    .prop_map(SecretBytes::new)
}

/// Any signature algorithm.
pub(crate) fn algorithm() -> impl Strategy<Value = Algorithm> {
    proptest::sample::select(&Algorithm::ALL[..])
}

/// Any request whose fields are within `limits` (so that it decodes).
pub(crate) fn request(limits: Limits) -> impl Strategy<Value = Request> {
    let max_plaintext = limits.max_plaintext;
    prop_oneof![
        (str8(), bytes_up_to(limits.max_aad), secret_up_to(max_plaintext))
            .prop_map(|(key, aad, plaintext)| Request::Wrap { key, aad, plaintext }),
        (bytes_up_to(limits.max_aad), bytes_up_to(limits.max_blob))
            .prop_map(|(aad, blob)| Request::Unwrap { aad, blob }),
        (str8(), bytes_up_to(limits.max_aad), 1..=max_plaintext as u16)
            .prop_map(|(key, aad, length)| Request::GenerateDataKey { key, aad, length }),
        (bytes_up_to(limits.max_aad), bytes_up_to(limits.max_blob))
            .prop_map(|(aad, blob)| Request::Rewrap { aad, blob }),
        (str8(), bytes_up_to(limits.max_sign_input), any::<bool>())
            .prop_map(|(key, input, digest)| Request::Sign { key, input, digest }),
        (
            str8(),
            any::<u32>(),
            bytes_up_to(limits.max_sign_input),
            bytes_up_to(limits.max_signature),
            any::<bool>()
        )
            .prop_map(|(key, version, input, signature, digest)| Request::Verify {
                key,
                version,
                input,
                signature,
                digest
            }),
        (str8(), any::<u32>()).prop_map(|(key, version)| Request::GetPublicKey { key, version }),
        (str8(), any::<u32>(), bytes_up_to(limits.max_aad), secret_up_to(max_plaintext))
            .prop_map(|(key, version, aad, plaintext)| Request::Encrypt { key, version, aad, plaintext }),
        (
            (str8(), any::<u32>(), bytes_up_to(limits.max_aad)),
            (bytes_up_to(Limits::MAX_IV), bytes_up_to(max_plaintext), bytes_up_to(Limits::MAX_TAG))
        )
            .prop_map(|((key, version, aad), (iv, ciphertext, tag))| Request::Decrypt {
                key,
                version,
                aad,
                iv,
                ciphertext,
                tag
            }),
        Just(Request::Ping),
        str8().prop_map(|client_name| Request::Hello { client_name }),
    ]
}

/// Any request frame that fits `limits`, with every flag combination its opcode allows.
pub(crate) fn request_frame(limits: Limits) -> impl Strategy<Value = RequestFrame> {
    (any::<u64>(), any::<bool>(), proptest::option::of(any::<u32>()), request(limits)).prop_map(
        |(request_id, bypass, timeout_ms, request)| {
            let bypass_cache = bypass && matches!(request, Request::Unwrap { .. } | Request::Rewrap { .. });
            RequestFrame { request_id, bypass_cache, timeout_ms, request }
        },
    )
}

/// Any OK reply. Field sizes are kept well under the default `max_frame`.
pub(crate) fn reply() -> impl Strategy<Value = Reply> {
    prop_oneof![
        bytes_up_to(4096).prop_map(|blob| Reply::Wrap { blob }),
        secret_up_to(4096).prop_map(|plaintext| Reply::Unwrap { plaintext }),
        (secret_up_to(4096), bytes_up_to(4096))
            .prop_map(|(plaintext, blob)| Reply::GenerateDataKey { plaintext, blob }),
        bytes_up_to(4096).prop_map(|blob| Reply::Rewrap { blob }),
        (any::<u32>(), bytes_up_to(4096)).prop_map(|(version, signature)| Reply::Sign { version, signature }),
        any::<bool>().prop_map(|valid| Reply::Verify { valid }),
        (any::<u32>(), algorithm(), bytes_up_to(4096)).prop_map(|(version, algorithm, public_key)| {
            Reply::PublicKey { version, algorithm, public_key }
        }),
        (any::<u32>(), bytes_up_to(16), bytes_up_to(4096), bytes_up_to(16))
            .prop_map(|(version, iv, ciphertext, tag)| Reply::Encrypt { version, iv, ciphertext, tag }),
        secret_up_to(4096).prop_map(|plaintext| Reply::Decrypt { plaintext }),
        Just(Reply::Pong),
        (any::<u32>(), any::<u32>(), str8()).prop_map(|(max_frame, max_in_flight, server_version)| {
            Reply::Hello { max_frame, max_in_flight, server_version }
        }),
    ]
}

/// Any failure, of every non-OK status. `retry_after_ms` is on the wire only for
/// retryable statuses, so it is zero on the others (as the decoder reports them).
pub(crate) fn failure() -> impl Strategy<Value = Failure> {
    let statuses: Vec<Status> = Status::ALL.into_iter().filter(|s| *s != Status::Ok).collect();
    (proptest::sample::select(statuses), "\\PC{0,80}", any::<u32>()).prop_map(|(status, message, retry)| {
        let retry_after_ms = if status.is_retryable() { retry } else { 0 };
        Failure { status, message, retry_after_ms }
    })
}

/// Any response: an OK reply, or a failure to any request opcode byte (known or not).
pub(crate) fn response_frame() -> impl Strategy<Value = ResponseFrame> {
    prop_oneof![
        (any::<u64>(), reply()).prop_map(|(id, reply)| ResponseFrame::ok(id, reply)),
        (any::<u64>(), 0u8..0x80, failure())
            .prop_map(|(id, opcode, failure)| ResponseFrame::failure(id, opcode, failure)),
    ]
}
