//! Golden frames: hand-written wire bytes (`tests/golden/*.hex`, written from DESIGN.md)
//! decoded field by field against values written here, and those values encoded back to
//! exactly the same bytes.

mod common;

use std::path::Path;

use bytes::BytesMut;
use common::{assert_request_eq, assert_response_eq};
use keymux_protocol::{
    BlobHeader, BlobMode, Failure, Field, FrameError, FrameSplitter, Limits, PayloadError, Rejected, Reply,
    Request, RequestFrame, ResponseFrame, SecretBytes, Status,
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
    let rejected = rejected_request("bad_unknown_flag.hex");
    assert_eq!(rejected, Rejected { request_id: 110, opcode: 0x10, error: PayloadError::BadFlags(0x0004) });
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
    assert!(count >= 40, "only {count} golden files found");
}
