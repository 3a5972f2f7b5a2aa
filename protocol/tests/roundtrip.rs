//! Property tests: every frame the encoder accepts splits and decodes back to an equal
//! value; blob headers likewise.

mod common;

use bytes::BytesMut;
use common::{assert_request_eq, assert_response_eq, split_all};
use keymux_protocol::{
    BlobHeader, BlobMode, Failure, FrameSplitter, LENGTH_PREFIX_LEN, Limits, RequestFrame, ResponseFrame,
    Status,
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
        intermediate in any::<bool>(),
        body in vec(any::<u8>(), 1..64),
    ) {
        let mode = if intermediate { BlobMode::Intermediate } else { BlobMode::Direct };
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
