//! Property tests: every frame the encoder accepts splits and decodes back to an equal
//! value; blob headers likewise.

mod common;

use bytes::BytesMut;
use common::{assert_request_eq, assert_response_eq, split_all};
use keymux_protocol::{
    BlobHeader, BlobMode, Failure, Field, Flags, FrameSplitter, HEADER_LEN, LENGTH_PREFIX_LEN, Limits,
    Opcode, PayloadError, Request, RequestFrame, ResponseFrame, Status,
};
use proptest::collection::vec;
use proptest::prelude::*;

/// Encodes `frame` alone and checks its length prefix against what was written.
fn encode_one(encode: impl FnOnce(&mut BytesMut)) -> BytesMut {
    let mut wire = BytesMut::new();
    encode(&mut wire);
    let length = u32::from_be_bytes(wire[..4].try_into().unwrap()) as usize;
    assert_eq!(length + LENGTH_PREFIX_LEN, wire.len(), "length prefix");
    wire
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn request_round_trips(frame in common::request_frame(Limits::default())) {
        let limits = Limits::default();
        let mut wire = encode_one(|wire| frame.encode(wire, &limits).unwrap());
        let mut splitter = FrameSplitter::new(limits.max_frame);
        let body = splitter.split(&mut wire).unwrap().expect("a whole frame");
        prop_assert!(wire.is_empty());
        let decoded = RequestFrame::decode(&body, &limits).unwrap();
        assert_request_eq(&decoded, &frame);
    }

    #[test]
    fn response_round_trips(frame in common::response_frame()) {
        let limits = Limits::default();
        let mut wire = encode_one(|wire| frame.encode(wire, &limits).unwrap());
        let mut splitter = FrameSplitter::new(limits.max_frame);
        let body = splitter.split(&mut wire).unwrap().expect("a whole frame");
        prop_assert!(wire.is_empty());
        let decoded = ResponseFrame::decode(&body).unwrap();
        assert_response_eq(&decoded, &frame);
    }

    /// Pipelined frames in one buffer come back in order, each equal to what was sent.
    #[test]
    fn pipelined_frames_round_trip(
        requests in vec(common::request_frame(Limits::default()), 1..16),
        responses in vec(common::response_frame(), 1..16),
    ) {
        let limits = Limits::default();
        let mut wire = BytesMut::new();
        for frame in &requests {
            frame.encode(&mut wire, &limits).unwrap();
        }
        let bodies = split_all(&mut FrameSplitter::new(limits.max_frame), &mut wire);
        prop_assert!(wire.is_empty());
        prop_assert_eq!(bodies.len(), requests.len());
        for (body, frame) in bodies.iter().zip(&requests) {
            assert_request_eq(&RequestFrame::decode(body, &limits).unwrap(), frame);
        }

        for frame in &responses {
            frame.encode(&mut wire, &limits).unwrap();
        }
        let bodies = split_all(&mut FrameSplitter::new(limits.max_frame), &mut wire);
        prop_assert_eq!(bodies.len(), responses.len());
        for (body, frame) in bodies.iter().zip(&responses) {
            assert_response_eq(&ResponseFrame::decode(body).unwrap(), frame);
        }
    }

    /// A failing encode leaves the buffer exactly as it was (frames already in it stay
    /// intact), and an encode that succeeds never exceeds `max_frame`.
    #[test]
    fn encode_respects_max_frame_and_writes_nothing_on_error(
        frame in common::response_frame(),
        max_frame in Limits::MIN_FRAME..2048,
        prefix in vec(any::<u8>(), 0..16),
    ) {
        let limits = Limits { max_frame, ..Limits::default() };
        let mut wire = BytesMut::from(&prefix[..]);
        match frame.encode(&mut wire, &limits) {
            Ok(()) => {
                let length = u32::from_be_bytes(wire[prefix.len()..][..4].try_into().unwrap());
                prop_assert!(length <= max_frame);
            }
            Err(_) => prop_assert_eq!(&wire[..], &prefix[..]),
        }
    }

    #[test]
    fn blob_header_round_trips(
        key in common::str8(),
        version in any::<u32>(),
        mode in proptest::sample::select(&BlobMode::ALL[..]),
        body in vec(any::<u8>(), 1..64),
    ) {
        let header = BlobHeader { key, version, mode };
        let mut blob = header.to_bytes().unwrap();
        prop_assert_eq!(blob.len(), header.encoded_len());
        blob.extend_from_slice(&body);
        let (parsed, parsed_body) = BlobHeader::parse(&blob).unwrap();
        prop_assert_eq!(&parsed, &header);
        prop_assert_eq!(parsed_body, &body[..]);
        prop_assert_eq!(blob.len() - parsed_body.len(), header.encoded_len());
    }
}

/// `retry_after_ms` travels only with retryable statuses: on the others it is dropped.
#[test]
fn retry_after_is_dropped_for_non_retryable_statuses() {
    for status in Status::ALL.into_iter().filter(|s| *s != Status::Ok) {
        let frame = ResponseFrame::failure(1, 0x01, Failure::retry_after(status, "m", 77));
        let mut wire = BytesMut::new();
        frame.encode(&mut wire, &Limits::default()).unwrap();
        let body = FrameSplitter::new(Limits::default().max_frame).split(&mut wire).unwrap().unwrap();
        let decoded = ResponseFrame::decode(&body).unwrap();
        let expected = if status.is_retryable() { 77 } else { 0 };
        assert_eq!(decoded.result.unwrap_err().retry_after_ms, expected, "{status}");
    }
}

/// A failure that claims OK would read as a success: it goes out as INTERNAL.
#[test]
fn failure_claiming_ok_is_sent_as_internal() {
    let frame = ResponseFrame::failure(1, 0x02, Failure::new(Status::Ok, "confused"));
    let mut wire = BytesMut::new();
    frame.encode(&mut wire, &Limits::default()).unwrap();
    let body = FrameSplitter::new(Limits::default().max_frame).split(&mut wire).unwrap().unwrap();
    assert_eq!(ResponseFrame::decode(&body).unwrap().status(), Status::Internal);
}

/// Each flag bit is refused exactly on the opcodes that do not allow it: the digest flag
/// is allowed on SIGN and VERIFY only, cache bypass on UNWRAP and REWRAP, the deadline
/// everywhere. Flags are checked before the payload, so an empty one will do.
#[test]
fn flags_are_refused_exactly_where_not_allowed() {
    let limits = Limits::default();
    for opcode in Opcode::ALL {
        let allowed = Flags::allowed(opcode);
        let expected = match opcode {
            Opcode::Sign | Opcode::Verify => Flags::DIGEST | Flags::DEADLINE,
            Opcode::Unwrap | Opcode::Rewrap => Flags::BYPASS_CACHE | Flags::DEADLINE,
            _ => Flags::DEADLINE,
        };
        assert_eq!(allowed, expected, "{opcode:?}");
        for bit in 0..16 {
            let flags = 1u16 << bit;
            let mut body = vec![1, opcode as u8];
            body.extend_from_slice(&flags.to_be_bytes());
            body.extend_from_slice(&7u64.to_be_bytes());
            let refused = matches!(
                RequestFrame::decode(&body, &limits),
                Err(rejected) if rejected.error == PayloadError::BadFlags(flags)
            );
            assert_eq!(refused, flags & allowed == 0, "{opcode:?} with flags {flags:#06x}");
        }
    }
}

/// The digest flag goes on the wire from the request's `digest` field, and only then.
#[test]
fn digest_flag_travels_with_sign_and_verify() {
    let limits = Limits::default();
    let flags_of = |request: Request, timeout_ms: Option<u32>| {
        let frame = RequestFrame { timeout_ms, ..RequestFrame::new(1, request) };
        let mut wire = BytesMut::new();
        frame.encode(&mut wire, &limits).unwrap();
        u16::from_be_bytes([wire[6], wire[7]])
    };
    let sign = |digest| Request::Sign { key: "k".into(), input: vec![0; 32], digest };
    let verify = |digest| Request::Verify {
        key: "k".into(),
        version: 1,
        input: vec![0; 32],
        signature: vec![1],
        digest,
    };
    assert_eq!(flags_of(sign(false), None), 0);
    assert_eq!(flags_of(sign(true), None), Flags::DIGEST);
    assert_eq!(flags_of(sign(true), Some(5)), Flags::DIGEST | Flags::DEADLINE);
    assert_eq!(flags_of(verify(false), Some(5)), Flags::DEADLINE);
    assert_eq!(flags_of(verify(true), None), Flags::DIGEST);
    assert_eq!(flags_of(Request::GetPublicKey { key: "k".into(), version: 0 }, None), 0);
}

/// SIGN's and VERIFY's input and VERIFY's signature are bounded by their limits, which
/// are checked before the bytes are read.
#[test]
fn signing_fields_are_bounded_by_the_limits() {
    let limits = Limits { max_sign_input: 64, max_signature: 3309, ..Limits::default() };
    let decode = |request: Request| {
        let mut wire = BytesMut::new();
        RequestFrame::new(9, request).encode(&mut wire, &Limits::default()).unwrap();
        RequestFrame::decode(&wire[LENGTH_PREFIX_LEN..], &limits).map(|_| ()).map_err(|r| r.error)
    };
    let sign = |len| Request::Sign { key: "k".into(), input: vec![0; len], digest: false };
    let verify = |input, signature| Request::Verify {
        key: "k".into(),
        version: 1,
        input: vec![0; input],
        signature: vec![0; signature],
        digest: true,
    };
    assert_eq!(decode(sign(64)), Ok(()));
    assert_eq!(decode(sign(65)), Err(PayloadError::TooLarge { field: Field::Input, len: 65, max: 64 }));
    assert_eq!(decode(verify(64, 3309)), Ok(()));
    assert_eq!(decode(verify(65, 1)), Err(PayloadError::TooLarge { field: Field::Input, len: 65, max: 64 }));
    assert_eq!(
        decode(verify(48, 3310)),
        Err(PayloadError::TooLarge { field: Field::Signature, len: 3310, max: 3309 })
    );
    // The limit is read from the length prefix: a body cut short after it still reports
    // the limit, not the truncation.
    let mut wire = BytesMut::new();
    RequestFrame::new(9, sign(65)).encode(&mut wire, &Limits::default()).unwrap();
    let body = &wire[LENGTH_PREFIX_LEN..HEADER_LEN + LENGTH_PREFIX_LEN + 2 + 2 + 1];
    assert_eq!(
        RequestFrame::decode(body, &limits).unwrap_err().error,
        PayloadError::TooLarge { field: Field::Input, len: 65, max: 64 }
    );
}
