//! Golden frames: hand-written wire bytes (`tests/golden/*.hex`, written from DESIGN.md)
//! decoded field by field against values written here, and those values encoded back to
//! exactly the same bytes.

mod common;

use std::path::Path;

use bytes::BytesMut;
use common::{assert_request_eq, assert_response_eq};
use keymux_protocol::{
    Algorithm, BlobHeader, BlobMode, Failure, Field, FrameError, FrameSplitter, Limits, Opcode, PayloadError,
    Rejected, Reply, Request, RequestFrame, ResponseFrame, SecretBytes, Status,
};

const GOLDEN_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden");

// ---- loading and checking ------------------------------------------------------------

/// The bytes of a golden file: hex digits with whitespace ignored and `#` comments.
fn load(name: &str) -> Vec<u8> {
    let path = Path::new(GOLDEN_DIR).join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let digits: String = text
        .lines()
        .flat_map(|line| line.split('#').next().unwrap_or("").chars())
        .filter(|c| !c.is_whitespace())
        .collect();
    hex::decode(&digits).unwrap_or_else(|e| panic!("{name}: not hex: {e}"))
}

/// The one frame body in a golden file; the splitter must consume every byte.
fn one_body(name: &str, wire: &[u8]) -> BytesMut {
    let mut buf = BytesMut::from(wire);
    let mut splitter = FrameSplitter::new(Limits::default().max_frame);
    let body = splitter
        .split(&mut buf)
        .unwrap_or_else(|e| panic!("{name}: framing error {e}"))
        .unwrap_or_else(|| panic!("{name}: not a whole frame"));
    assert!(buf.is_empty(), "{name}: {} bytes after the frame", buf.len());
    body
}

fn check_request(name: &str, expected: RequestFrame) {
    let wire = load(name);
    let limits = Limits::default();
    let decoded = RequestFrame::decode(&one_body(name, &wire), &limits)
        .unwrap_or_else(|e| panic!("{name}: does not decode: {e}"));
    assert_request_eq(&decoded, &expected);
    let mut encoded = BytesMut::new();
    expected.encode(&mut encoded, &limits).unwrap_or_else(|e| panic!("{name}: does not encode: {e}"));
    assert_eq!(hex::encode(&encoded), hex::encode(&wire), "{name}: encoding differs from the golden bytes");
}

fn check_response(name: &str, expected: ResponseFrame) {
    let wire = load(name);
    let decoded = ResponseFrame::decode(&one_body(name, &wire))
        .unwrap_or_else(|e| panic!("{name}: does not decode: {e}"));
    assert_response_eq(&decoded, &expected);
    let mut encoded = BytesMut::new();
    expected
        .encode(&mut encoded, &Limits::default())
        .unwrap_or_else(|e| panic!("{name}: does not encode: {e}"));
    assert_eq!(hex::encode(&encoded), hex::encode(&wire), "{name}: encoding differs from the golden bytes");
}

fn frame_error(name: &str) -> FrameError {
    let mut buf = BytesMut::from(&load(name)[..]);
    let mut splitter = FrameSplitter::new(Limits::default().max_frame);
    match splitter.split(&mut buf) {
        Err(error) => error,
        Ok(frame) => panic!("{name}: expected a framing error, got {frame:?}"),
    }
}

fn rejected_request(name: &str) -> Rejected {
    let wire = load(name);
    match RequestFrame::decode(&one_body(name, &wire), &Limits::default()) {
        Err(rejected) => rejected,
        Ok(frame) => panic!("{name}: expected a rejection, got {frame:?}"),
    }
}

fn rejected_response(name: &str) -> Rejected {
    let wire = load(name);
    match ResponseFrame::decode(&one_body(name, &wire)) {
        Err(rejected) => rejected,
        Ok(frame) => panic!("{name}: expected a rejection, got {frame:?}"),
    }
}

// ---- the values the golden files hold -----------------------------------------------

/// The 32-byte data key 00 01 .. 1f.
fn dek() -> SecretBytes {
    SecretBytes::new((0u8..32).collect())
}

/// A direct-mode blob of key "payments" at `version`, with an 8-byte body.
fn blob(version: u8, body: [u8; 8]) -> Vec<u8> {
    let mut blob = b"KMX\x01\x08payments\x00\x00\x00".to_vec();
    blob.push(version);
    blob.push(1);
    blob.extend_from_slice(&body);
    blob
}

fn blob_v3() -> Vec<u8> {
    blob(3, [0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7])
}

fn blob_v4() -> Vec<u8> {
    blob(4, [0xd0, 0xd1, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7])
}

fn aad() -> Vec<u8> {
    b"tenant=7".to_vec()
}

fn frame(request_id: u64, bypass_cache: bool, timeout_ms: Option<u32>, request: Request) -> RequestFrame {
    RequestFrame { request_id, bypass_cache, timeout_ms, request }
}

fn wrap() -> Request {
    Request::Wrap { key: "payments".into(), aad: aad(), plaintext: dek() }
}

fn unwrap() -> Request {
    Request::Unwrap { aad: aad(), blob: blob_v3() }
}

fn rewrap() -> Request {
    Request::Rewrap { aad: Vec::new(), blob: blob_v3() }
}

fn generate(length: u16) -> Request {
    Request::GenerateDataKey { key: "payments".into(), aad: aad(), length }
}

fn hello() -> Request {
    Request::Hello { client_name: "loadgen/0.1".into() }
}

/// The message the signing files sign: "hello, keymux".
fn message() -> Vec<u8> {
    b"hello, keymux".to_vec()
}

/// SHA-256("hello, keymux").
fn sha256_digest() -> Vec<u8> {
    hex::decode("9e5fa0aab145fffa7c68cb54a52f23185b541fdca139060a469daa0137ee22a4").unwrap()
}

/// SHA-384("hello, keymux").
fn sha384_digest() -> Vec<u8> {
    hex::decode(
        "8ca6358b1e7be4b9e17411979f189c45553bf827d18fdb57d81271ef0d7d3af025597115ad109153cb7f65d2aa564384",
    )
    .unwrap()
}

/// The 64 stand-in signature bytes 40 41 .. 7f.
fn signature() -> Vec<u8> {
    (0x40u8..0x80).collect()
}

fn sign(input: Vec<u8>, digest: bool) -> Request {
    Request::Sign { key: "signer".into(), input, digest }
}

fn verify(input: Vec<u8>, digest: bool) -> Request {
    Request::Verify { key: "signer".into(), version: 3, input, signature: signature(), digest }
}

fn get_public_key(version: u32) -> Request {
    Request::GetPublicKey { key: "signer".into(), version }
}

/// The Ed25519 SubjectPublicKeyInfo of RFC 8410, section 10.1.
fn ed25519_spki() -> Vec<u8> {
    hex::decode("302a300506032b657003210019bf44096984cdfe8541bac167dc3b96c85086aa30b6b6cb0c5c38ad703166e1")
        .unwrap()
}

// ---- requests ------------------------------------------------------------------------

#[test]
fn request_wrap() {
    check_request("req_wrap.hex", frame(0x0123_4567_89ab_cdef, false, None, wrap()));
}

#[test]
fn request_wrap_with_deadline() {
    check_request("req_wrap_deadline.hex", frame(2, false, Some(1500), wrap()));
}

#[test]
fn request_unwrap() {
    check_request("req_unwrap.hex", frame(3, false, None, unwrap()));
}

#[test]
fn request_unwrap_with_deadline() {
    check_request("req_unwrap_deadline.hex", frame(4, false, Some(250), unwrap()));
}

#[test]
fn request_unwrap_bypassing_the_cache() {
    check_request("req_unwrap_bypass.hex", frame(5, true, None, unwrap()));
}

#[test]
fn request_unwrap_bypassing_the_cache_with_deadline() {
    check_request("req_unwrap_bypass_deadline.hex", frame(6, true, Some(u32::MAX), unwrap()));
}

#[test]
fn request_generate_data_key() {
    check_request("req_generate_data_key.hex", frame(7, false, None, generate(32)));
}

#[test]
fn request_generate_data_key_with_deadline() {
    check_request("req_generate_data_key_deadline.hex", frame(8, false, Some(10_000), generate(16)));
}

#[test]
fn request_rewrap() {
    check_request("req_rewrap.hex", frame(9, false, None, rewrap()));
}

#[test]
fn request_rewrap_with_deadline() {
    check_request("req_rewrap_deadline.hex", frame(10, false, Some(100), rewrap()));
}

#[test]
fn request_sign() {
    check_request("req_sign.hex", frame(20, false, None, sign(message(), false)));
}

#[test]
fn request_sign_with_deadline() {
    check_request("req_sign_deadline.hex", frame(21, false, Some(2000), sign(message(), false)));
}

#[test]
fn request_sign_a_digest() {
    check_request("req_sign_digest.hex", frame(22, false, None, sign(sha256_digest(), true)));
}

#[test]
fn request_sign_a_digest_with_deadline() {
    check_request("req_sign_digest_deadline.hex", frame(23, false, Some(500), sign(sha384_digest(), true)));
}

#[test]
fn request_verify() {
    check_request("req_verify.hex", frame(24, false, None, verify(message(), false)));
}

#[test]
fn request_verify_with_deadline() {
    check_request("req_verify_deadline.hex", frame(25, false, Some(2000), verify(message(), false)));
}

#[test]
fn request_verify_a_digest() {
    check_request("req_verify_digest.hex", frame(26, false, None, verify(sha256_digest(), true)));
}

#[test]
fn request_verify_a_digest_with_deadline() {
    check_request(
        "req_verify_digest_deadline.hex",
        frame(27, false, Some(500), verify(sha384_digest(), true)),
    );
}

#[test]
fn request_get_public_key_of_the_current_version() {
    check_request("req_get_public_key.hex", frame(28, false, None, get_public_key(0)));
}

#[test]
fn request_get_public_key_with_deadline() {
    check_request("req_get_public_key_deadline.hex", frame(29, false, Some(1000), get_public_key(3)));
}

#[test]
fn request_ping() {
    check_request("req_ping.hex", frame(11, false, None, Request::Ping));
}

#[test]
fn request_ping_with_deadline() {
    check_request("req_ping_deadline.hex", frame(12, false, Some(1000), Request::Ping));
}

#[test]
fn request_hello() {
    check_request("req_hello.hex", frame(0, false, None, hello()));
}

#[test]
fn request_hello_with_deadline() {
    check_request("req_hello_deadline.hex", frame(13, false, Some(3000), hello()));
}

// ---- OK responses --------------------------------------------------------------------

#[test]
fn response_wrap_ok() {
    check_response(
        "resp_wrap_ok.hex",
        ResponseFrame::ok(0x0123_4567_89ab_cdef, Reply::Wrap { blob: blob_v3() }),
    );
}

#[test]
fn response_unwrap_ok() {
    check_response("resp_unwrap_ok.hex", ResponseFrame::ok(3, Reply::Unwrap { plaintext: dek() }));
}

#[test]
fn response_generate_data_key_ok() {
    check_response(
        "resp_generate_data_key_ok.hex",
        ResponseFrame::ok(7, Reply::GenerateDataKey { plaintext: dek(), blob: blob_v3() }),
    );
}

#[test]
fn response_rewrap_ok() {
    check_response("resp_rewrap_ok.hex", ResponseFrame::ok(9, Reply::Rewrap { blob: blob_v4() }));
}

#[test]
fn response_sign_ok() {
    check_response(
        "resp_sign_ok.hex",
        ResponseFrame::ok(20, Reply::Sign { version: 3, signature: signature() }),
    );
}

#[test]
fn response_verify_ok_valid() {
    check_response("resp_verify_ok_valid.hex", ResponseFrame::ok(24, Reply::Verify { valid: true }));
}

/// A signature that does not verify is an OK answer with `valid = 0`, not a failure.
#[test]
fn response_verify_ok_invalid() {
    check_response("resp_verify_ok_invalid.hex", ResponseFrame::ok(25, Reply::Verify { valid: false }));
}

#[test]
fn response_get_public_key_ok() {
    check_response(
        "resp_get_public_key_ok.hex",
        ResponseFrame::ok(
            28,
            Reply::PublicKey { version: 3, algorithm: Algorithm::Ed25519, public_key: ed25519_spki() },
        ),
    );
}

#[test]
fn response_ping_ok() {
    check_response("resp_ping_ok.hex", ResponseFrame::ok(11, Reply::Pong));
}

#[test]
fn response_hello_ok() {
    check_response(
        "resp_hello_ok.hex",
        ResponseFrame::ok(
            0,
            Reply::Hello { max_frame: 65_536, max_in_flight: 1024, server_version: "keymux/0.1.0".into() },
        ),
    );
}

// ---- failure responses, one per non-OK status ----------------------------------------

#[test]
fn response_bad_request() {
    check_response(
        "resp_fail_bad_request.hex",
        ResponseFrame::failure(100, 0x01, Failure::new(Status::BadRequest, "truncated")),
    );
}

#[test]
fn response_unknown_key() {
    check_response(
        "resp_fail_unknown_key.hex",
        ResponseFrame::failure(101, 0x01, Failure::new(Status::UnknownKey, "no such key")),
    );
}

#[test]
fn response_forbidden() {
    check_response(
        "resp_fail_forbidden.hex",
        ResponseFrame::failure(102, 0x02, Failure::new(Status::Forbidden, "denied")),
    );
}

#[test]
fn response_integrity() {
    check_response(
        "resp_fail_integrity.hex",
        ResponseFrame::failure(103, 0x02, Failure::new(Status::Integrity, "aad mismatch")),
    );
}

#[test]
fn response_key_disabled() {
    check_response(
        "resp_fail_key_disabled.hex",
        ResponseFrame::failure(104, 0x04, Failure::new(Status::KeyDisabled, "v3 disabled")),
    );
}

#[test]
fn response_busy_carries_retry_after() {
    check_response(
        "resp_fail_busy.hex",
        ResponseFrame::failure(105, 0x03, Failure::retry_after(Status::Busy, "queue full", 50)),
    );
}

#[test]
fn response_backend_unavailable_carries_retry_after() {
    check_response(
        "resp_fail_backend_unavailable.hex",
        ResponseFrame::failure(106, 0x02, Failure::retry_after(Status::BackendUnavailable, "hsm down", 1000)),
    );
}

#[test]
fn response_timeout_carries_retry_after() {
    check_response(
        "resp_fail_timeout.hex",
        ResponseFrame::failure(107, 0x01, Failure::retry_after(Status::Timeout, "", 10)),
    );
}

#[test]
fn response_unsupported_to_an_unknown_opcode() {
    check_response(
        "resp_fail_unsupported.hex",
        ResponseFrame::failure(108, 0x20, Failure::new(Status::Unsupported, "unknown opcode")),
    );
}

#[test]
fn response_internal_with_utf8_message() {
    check_response(
        "resp_fail_internal.hex",
        ResponseFrame::failure(109, 0x10, Failure::new(Status::Internal, "clé")),
    );
}

/// Every non-OK status has its golden file (a new status must come with one).
#[test]
fn every_failure_status_has_a_golden_file() {
    for status in Status::ALL.into_iter().filter(|s| *s != Status::Ok) {
        let name = format!("resp_fail_{}.hex", status.name().to_lowercase());
        let wire = load(&name);
        let decoded = ResponseFrame::decode(&one_body(&name, &wire)).unwrap();
        assert_eq!(decoded.status(), status, "{name}");
    }
}

/// Every opcode has golden request and OK response files (a new opcode must come with
/// them); the tests above check their contents.
#[test]
fn every_opcode_has_golden_files() {
    let names: Vec<String> = std::fs::read_dir(GOLDEN_DIR)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    for opcode in Opcode::ALL {
        for prefix in [format!("req_{}", opcode.name()), format!("resp_{}_ok", opcode.name())] {
            let found = names.iter().any(|name| {
                name.strip_prefix(&prefix).is_some_and(|rest| rest == ".hex" || rest.starts_with('_'))
            });
            assert!(found, "no golden file {prefix}*.hex for {opcode:?}");
        }
    }
}

// ---- blob headers --------------------------------------------------------------------

#[test]
fn blob_header_direct() {
    let blob = load("blob_direct.hex");
    let expected = BlobHeader { key: "payments".into(), version: 3, mode: BlobMode::Direct };
    let (header, body) = BlobHeader::parse(&blob).unwrap();
    assert_eq!(header, expected);
    assert_eq!(body, [0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7]);
    assert_eq!(expected.encoded_len(), 18);
    assert_eq!(hex::encode(expected.to_bytes().unwrap()), hex::encode(&blob[..18]));
    // The same blob is what the request and response golden files carry.
    assert_eq!(blob, blob_v3());
}

#[test]
fn blob_header_intermediate() {
    let blob = load("blob_intermediate.hex");
    let expected =
        BlobHeader { key: "kms/orders".into(), version: 0x0001_0002, mode: BlobMode::Intermediate };
    let (header, body) = BlobHeader::parse(&blob).unwrap();
    assert_eq!(header, expected);
    assert_eq!(body, (0xe0u8..=0xef).collect::<Vec<_>>());
    assert_eq!(expected.encoded_len(), 20);
    assert_eq!(hex::encode(expected.to_bytes().unwrap()), hex::encode(&blob[..20]));
}

#[test]
fn blob_header_kem() {
    let blob = load("blob_kem.hex");
    let expected = BlobHeader { key: "pq/orders".into(), version: 1, mode: BlobMode::Kem };
    let (header, body) = BlobHeader::parse(&blob).unwrap();
    assert_eq!(header, expected);
    assert_eq!(body, (0xf0u8..=0xff).collect::<Vec<_>>());
    assert_eq!(expected.encoded_len(), 19);
    assert_eq!(hex::encode(expected.to_bytes().unwrap()), hex::encode(&blob[..19]));
}

// ---- bad input -----------------------------------------------------------------------

#[test]
fn bad_length_under_12() {
    let error = frame_error("bad_length_under_12.hex");
    assert_eq!(error, FrameError::TooShort(11));
    assert_eq!(error.request_id(), None);
}

#[test]
fn bad_length_over_max_frame_is_refused_before_the_body() {
    let mut buf = BytesMut::from(&load("bad_length_over_max_frame.hex")[..]);
    let mut splitter = FrameSplitter::new(Limits::default().max_frame);
    assert_eq!(splitter.split(&mut buf), Err(FrameError::TooLong { length: 65_537, max: 65_536 }));
    assert!(buf.capacity() < 65_537, "the splitter must not reserve room for the refused body");
    assert_eq!(frame_error("bad_length_over_max_frame.hex").request_id(), None);
}

#[test]
fn bad_version() {
    let error = frame_error("bad_version.hex");
    assert_eq!(error, FrameError::BadVersion { version: 2, opcode: 0x10, request_id: 99 });
    assert_eq!(error.request_id(), Some((99, 0x10)));
}

#[test]
fn bad_unknown_flag_bit() {
    let rejected = rejected_request("bad_unknown_flag_bit3.hex");
    assert_eq!(rejected, Rejected { request_id: 121, opcode: 0x05, error: PayloadError::BadFlags(0x0008) });
    assert_eq!(rejected.error.status(), Status::BadRequest);
}

#[test]
fn bad_digest_flag_on_ping() {
    let rejected = rejected_request("bad_digest_on_ping.hex");
    assert_eq!(rejected, Rejected { request_id: 110, opcode: 0x10, error: PayloadError::BadFlags(0x0004) });
    assert_eq!(rejected.error.status(), Status::BadRequest);
}

#[test]
fn bad_digest_flag_on_wrap() {
    let rejected = rejected_request("bad_digest_on_wrap.hex");
    assert_eq!(rejected, Rejected { request_id: 119, opcode: 0x01, error: PayloadError::BadFlags(0x0004) });
    assert_eq!(rejected.error.status(), Status::BadRequest);
}

#[test]
fn bad_digest_flag_on_get_public_key() {
    let rejected = rejected_request("bad_digest_on_get_public_key.hex");
    assert_eq!(rejected, Rejected { request_id: 120, opcode: 0x07, error: PayloadError::BadFlags(0x0004) });
    assert_eq!(rejected.error.status(), Status::BadRequest);
}

#[test]
fn bad_truncated_signature() {
    let rejected = rejected_request("bad_truncated_signature.hex");
    assert_eq!(
        rejected,
        Rejected { request_id: 122, opcode: 0x06, error: PayloadError::Truncated(Field::Signature) }
    );
    assert_eq!(rejected.error.status(), Status::BadRequest);
}

#[test]
fn bad_bypass_flag_on_wrap() {
    let rejected = rejected_request("bad_bypass_on_wrap.hex");
    assert_eq!(rejected, Rejected { request_id: 111, opcode: 0x01, error: PayloadError::BadFlags(0x0001) });
    assert_eq!(rejected.error.status(), Status::BadRequest);
}

#[test]
fn bad_truncated_field() {
    let rejected = rejected_request("bad_truncated_field.hex");
    assert_eq!(
        rejected,
        Rejected { request_id: 112, opcode: 0x02, error: PayloadError::Truncated(Field::Blob) }
    );
    assert_eq!(rejected.error.status(), Status::BadRequest);
}

#[test]
fn bad_truncated_deadline() {
    let rejected = rejected_request("bad_truncated_deadline.hex");
    assert_eq!(
        rejected,
        Rejected { request_id: 113, opcode: 0x10, error: PayloadError::Truncated(Field::Timeout) }
    );
}

#[test]
fn bad_trailing_bytes() {
    let rejected = rejected_request("bad_trailing_bytes.hex");
    assert_eq!(rejected, Rejected { request_id: 114, opcode: 0x10, error: PayloadError::TrailingBytes(2) });
    assert_eq!(rejected.error.status(), Status::BadRequest);
}

#[test]
fn bad_invalid_utf8_key() {
    let rejected = rejected_request("bad_invalid_utf8_key.hex");
    assert_eq!(
        rejected,
        Rejected { request_id: 115, opcode: 0x01, error: PayloadError::InvalidUtf8(Field::Key) }
    );
    assert_eq!(rejected.error.status(), Status::BadRequest);
}

#[test]
fn bad_empty_key() {
    let rejected = rejected_request("bad_empty_key.hex");
    assert_eq!(rejected, Rejected { request_id: 116, opcode: 0x03, error: PayloadError::Empty(Field::Key) });
    assert_eq!(rejected.error.status(), Status::BadRequest);
}

/// An unknown opcode is answered UNSUPPORTED with the request's id and opcode, in the
/// shape of `resp_fail_unsupported.hex`.
#[test]
fn bad_unknown_opcode_is_answered_unsupported() {
    let rejected = rejected_request("bad_unknown_opcode.hex");
    assert_eq!(
        rejected,
        Rejected { request_id: 108, opcode: 0x20, error: PayloadError::UnknownOpcode(0x20) }
    );
    let answer = ResponseFrame::from(rejected);
    assert_eq!((answer.request_id, answer.opcode, answer.status()), (108, 0x20, Status::Unsupported));
    let mut wire = BytesMut::new();
    answer.encode(&mut wire, &Limits::default()).unwrap();
    assert_eq!(&wire[4..8], [0x01, 0xa0, 0x00, 0x00], "version, opcode 0x20|0x80, no flags");
    assert_eq!(&wire[16..18], [0x00, 0x09], "status UNSUPPORTED");
}

#[test]
fn bad_response_unknown_status() {
    assert_eq!(
        rejected_response("bad_response_unknown_status.hex"),
        Rejected { request_id: 117, opcode: 0x10, error: PayloadError::UnknownStatus(11) }
    );
}

#[test]
fn bad_response_missing_retry_after() {
    assert_eq!(
        rejected_response("bad_response_missing_retry_after.hex"),
        Rejected { request_id: 118, opcode: 0x01, error: PayloadError::Truncated(Field::RetryAfter) }
    );
}

#[test]
fn bad_response_verify_valid_2() {
    assert_eq!(
        rejected_response("bad_response_verify_valid_2.hex"),
        Rejected {
            request_id: 123,
            opcode: 0x06,
            error: PayloadError::BadValue { field: Field::Valid, value: 2 }
        }
    );
}

#[test]
fn bad_response_unknown_algorithm() {
    assert_eq!(
        rejected_response("bad_response_unknown_algorithm.hex"),
        Rejected {
            request_id: 124,
            opcode: 0x07,
            error: PayloadError::BadValue { field: Field::Algorithm, value: 0 }
        }
    );
}

#[test]
fn bad_response_truncated_signature() {
    assert_eq!(
        rejected_response("bad_response_truncated_signature.hex"),
        Rejected { request_id: 125, opcode: 0x05, error: PayloadError::Truncated(Field::Signature) }
    );
}

/// Every golden file is checked by a test above: none is left unexamined.
#[test]
fn no_golden_file_is_orphaned() {
    let source = include_str!("golden.rs");
    let mut count = 0;
    for entry in std::fs::read_dir(GOLDEN_DIR).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if !name.ends_with(".hex") {
            continue;
        }
        count += 1;
        // resp_fail_*.hex files are also reached through every_failure_status_has_a_golden_file.
        assert!(source.contains(&format!("\"{name}\"")), "{name} is not used by golden.rs");
    }
    assert!(count >= 65, "only {count} golden files found");
}

// ---- the raw AEAD: ENCRYPT and DECRYPT ------------------------------------------------

/// The IV, ciphertext and tag of the XKS specification's own example (Appendix C), as
/// stand-in bytes.
fn aead_parts() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    (
        hex::decode("1ccae5470f39700254779031").unwrap(),
        hex::decode("821c642b5b71783367deaf18").unwrap(),
        hex::decode("bc1c4dda7707d6812447c5955e99b261").unwrap(),
    )
}

#[test]
fn request_encrypt() {
    let request = Request::Encrypt {
        key: "xks".into(),
        version: 0,
        aad: b"team=".to_vec(),
        plaintext: SecretBytes::copy_from(b"Hello World!"),
    };
    check_request("req_encrypt.hex", frame(30, false, None, request));
}

#[test]
fn request_decrypt() {
    let (iv, ciphertext, tag) = aead_parts();
    let request =
        Request::Decrypt { key: "xks".into(), version: 2, aad: b"team=".to_vec(), iv, ciphertext, tag };
    check_request("req_decrypt.hex", frame(31, false, None, request));
}

#[test]
fn response_encrypt_ok() {
    let (iv, ciphertext, tag) = aead_parts();
    check_response(
        "resp_encrypt_ok.hex",
        ResponseFrame::ok(30, Reply::Encrypt { version: 2, iv, ciphertext, tag }),
    );
}

#[test]
fn response_decrypt_ok() {
    let reply = Reply::Decrypt { plaintext: SecretBytes::copy_from(b"Hello World!") };
    check_response("resp_decrypt_ok.hex", ResponseFrame::ok(31, reply));
}
