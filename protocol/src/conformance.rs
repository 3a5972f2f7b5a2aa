//! Conformance checks of the codec's contract, for property tests and fuzz targets
//! (this crate's, and anyone's who drives the codec): what decodes re-encodes to the
//! same bytes and decodes again to an equal frame. Frames have no `PartialEq`, because
//! `SecretBytes` deliberately has none, so they are compared field by field. Every
//! check panics on a violation, which is what a fuzzer or a property test wants.

use crate::frame::LENGTH_PREFIX_LEN;
use crate::limits::Limits;
use crate::request::{Request, RequestFrame};
use crate::response::{Reply, ResponseFrame};
use bytes::BytesMut;

/// Asserts that two requests are equal, field by field.
pub fn assert_request_eq(actual: &RequestFrame, expected: &RequestFrame) {
    assert_eq!(actual.request_id, expected.request_id, "request_id");
    assert_eq!(actual.bypass_cache, expected.bypass_cache, "bypass_cache");
    assert_eq!(actual.timeout_ms, expected.timeout_ms, "timeout_ms");
    match (&actual.request, &expected.request) {
        (
            Request::Wrap { key, aad, plaintext },
            Request::Wrap { key: key_e, aad: aad_e, plaintext: plaintext_e },
        ) => {
            assert_eq!(key, key_e, "key");
            assert_eq!(aad, aad_e, "aad");
            assert_eq!(plaintext.expose(), plaintext_e.expose(), "plaintext");
        }
        (Request::Unwrap { aad, blob }, Request::Unwrap { aad: aad_e, blob: blob_e })
        | (Request::Rewrap { aad, blob }, Request::Rewrap { aad: aad_e, blob: blob_e }) => {
            assert_eq!(aad, aad_e, "aad");
            assert_eq!(blob, blob_e, "blob");
        }
        (
            Request::GenerateDataKey { key, aad, length },
            Request::GenerateDataKey { key: key_e, aad: aad_e, length: length_e },
        ) => {
            assert_eq!(key, key_e, "key");
            assert_eq!(aad, aad_e, "aad");
            assert_eq!(length, length_e, "length");
        }
        (
            Request::Sign { key, input, digest },
            Request::Sign { key: key_e, input: input_e, digest: digest_e },
        ) => {
            assert_eq!(key, key_e, "key");
            assert_eq!(input, input_e, "input");
            assert_eq!(digest, digest_e, "digest");
        }
        (
            Request::Verify { key, version, input, signature, digest },
            Request::Verify {
                key: key_e,
                version: version_e,
                input: input_e,
                signature: signature_e,
                digest: digest_e,
            },
        ) => {
            assert_eq!(key, key_e, "key");
            assert_eq!(version, version_e, "version");
            assert_eq!(input, input_e, "input");
            assert_eq!(signature, signature_e, "signature");
            assert_eq!(digest, digest_e, "digest");
        }
        (
            Request::GetPublicKey { key, version },
            Request::GetPublicKey { key: key_e, version: version_e },
        ) => {
            assert_eq!(key, key_e, "key");
            assert_eq!(version, version_e, "version");
        }
        (
            Request::Encrypt { key, version, aad, plaintext },
            Request::Encrypt { key: key_e, version: version_e, aad: aad_e, plaintext: plaintext_e },
        ) => {
            assert_eq!(key, key_e, "key");
            assert_eq!(version, version_e, "version");
            assert_eq!(aad, aad_e, "aad");
            assert_eq!(plaintext.expose(), plaintext_e.expose(), "plaintext");
        }
        (
            Request::Decrypt { key, version, aad, iv, ciphertext, tag },
            Request::Decrypt {
                key: key_e,
                version: version_e,
                aad: aad_e,
                iv: iv_e,
                ciphertext: ciphertext_e,
                tag: tag_e,
            },
        ) => {
            assert_eq!((key, version, aad), (key_e, version_e, aad_e), "key, version, aad");
            assert_eq!((iv, ciphertext, tag), (iv_e, ciphertext_e, tag_e), "iv, ciphertext, tag");
        }
        (Request::Ping, Request::Ping) => {}
        (Request::Hello { client_name }, Request::Hello { client_name: client_name_e }) => {
            assert_eq!(client_name, client_name_e, "client_name");
        }
        (actual, expected) => panic!("request variant: got {actual:?}, expected {expected:?}"),
    }
}

/// Asserts that two responses are equal, field by field.
pub fn assert_response_eq(actual: &ResponseFrame, expected: &ResponseFrame) {
    assert_eq!(actual.request_id, expected.request_id, "request_id");
    assert_eq!(actual.opcode, expected.opcode, "opcode");
    assert_eq!(actual.status(), expected.status(), "status");
    match (&actual.result, &expected.result) {
        (Ok(reply), Ok(reply_e)) => assert_reply_eq(reply, reply_e),
        (Err(failure), Err(failure_e)) => assert_eq!(failure, failure_e, "failure"),
        (actual, expected) => panic!("result: got {actual:?}, expected {expected:?}"),
    }
}

fn assert_reply_eq(actual: &Reply, expected: &Reply) {
    match (actual, expected) {
        (Reply::Wrap { blob }, Reply::Wrap { blob: blob_e })
        | (Reply::Rewrap { blob }, Reply::Rewrap { blob: blob_e }) => assert_eq!(blob, blob_e, "blob"),
        (Reply::Unwrap { plaintext }, Reply::Unwrap { plaintext: plaintext_e }) => {
            assert_eq!(plaintext.expose(), plaintext_e.expose(), "plaintext");
        }
        (
            Reply::GenerateDataKey { plaintext, blob },
            Reply::GenerateDataKey { plaintext: plaintext_e, blob: blob_e },
        ) => {
            assert_eq!(plaintext.expose(), plaintext_e.expose(), "plaintext");
            assert_eq!(blob, blob_e, "blob");
        }
        (Reply::Sign { version, signature }, Reply::Sign { version: version_e, signature: signature_e }) => {
            assert_eq!(version, version_e, "version");
            assert_eq!(signature, signature_e, "signature");
        }
        (Reply::Verify { valid }, Reply::Verify { valid: valid_e }) => assert_eq!(valid, valid_e, "valid"),
        (
            Reply::PublicKey { version, algorithm, public_key },
            Reply::PublicKey { version: version_e, algorithm: algorithm_e, public_key: public_key_e },
        ) => {
            assert_eq!(version, version_e, "version");
            assert_eq!(algorithm, algorithm_e, "algorithm");
            assert_eq!(public_key, public_key_e, "public_key");
        }
        (
            Reply::Encrypt { version, iv, ciphertext, tag },
            Reply::Encrypt { version: version_e, iv: iv_e, ciphertext: ciphertext_e, tag: tag_e },
        ) => {
            assert_eq!(version, version_e, "version");
            assert_eq!((iv, ciphertext, tag), (iv_e, ciphertext_e, tag_e), "iv, ciphertext, tag");
        }
        (Reply::Decrypt { plaintext }, Reply::Decrypt { plaintext: plaintext_e }) => {
            assert_eq!(plaintext.expose(), plaintext_e.expose(), "plaintext");
        }
        (Reply::Pong, Reply::Pong) => {}
        (
            Reply::Hello { max_frame, max_in_flight, server_version },
            Reply::Hello {
                max_frame: max_frame_e,
                max_in_flight: max_in_flight_e,
                server_version: version_e,
            },
        ) => {
            assert_eq!(max_frame, max_frame_e, "max_frame");
            assert_eq!(max_in_flight, max_in_flight_e, "max_in_flight");
            assert_eq!(server_version, version_e, "server_version");
        }
        (actual, expected) => panic!("reply variant: got {actual:?}, expected {expected:?}"),
    }
}

/// Decodes `body` as a request. If it decodes, it must re-encode to exactly `body` (the
/// encoding is canonical) and decode again to an equal value.
///
/// The version byte is the splitter's to check, not the payload decoder's, so it is left
/// out of the comparison: `body` need not have come through a splitter.
pub fn check_request_body(body: &[u8], limits: &Limits) {
    if let Ok(request) = RequestFrame::decode(body, limits) {
        let mut wire = BytesMut::new();
        request.encode(&mut wire, limits).expect("a decoded request re-encodes");
        assert_eq!(&wire[LENGTH_PREFIX_LEN + 1..], &body[1..], "request re-encoding is not canonical");
        let again = RequestFrame::decode(&wire[LENGTH_PREFIX_LEN..], limits).expect("re-encoding decodes");
        assert_request_eq(&again, &request);
    }
}

/// As [`check_request_body`], for a response.
pub fn check_response_body(body: &[u8], limits: &Limits) {
    if let Ok(response) = ResponseFrame::decode(body) {
        let mut wire = BytesMut::new();
        response.encode(&mut wire, limits).expect("a decoded response re-encodes");
        assert_eq!(&wire[LENGTH_PREFIX_LEN + 1..], &body[1..], "response re-encoding is not canonical");
        let again = ResponseFrame::decode(&wire[LENGTH_PREFIX_LEN..]).expect("re-encoding decodes");
        assert_response_eq(&again, &response);
    }
}
