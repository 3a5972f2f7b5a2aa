//! Codec micro-benches: the per-frame cost of the sans-IO wire format, which sits on the
//! hot path of every request the proxy serves.
//!
//! Throughput is reported in elements (frames), so the figures read as frames per second.

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use keymux_protocol::{
    BlobHeader, BlobMode, FrameSplitter, Limits, Reply, Request, RequestFrame, ResponseFrame, SecretBytes,
};

/// Frames in the pipelined buffer.
const PIPELINE_DEPTH: usize = 64;

fn wrap_request() -> RequestFrame {
    RequestFrame {
        request_id: 0x0123_4567_89ab_cdef,
        bypass_cache: false,
        timeout_ms: Some(1500),
        request: Request::Wrap {
            key: "payments".into(),
            aad: b"tenant=7".to_vec(),
            plaintext: SecretBytes::new((0u8..32).collect()),
        },
    }
}

/// A realistic blob: a v1 header and a 60-byte body (AES-GCM: 12 nonce + 32 key + 16 tag).
fn blob() -> Vec<u8> {
    let header = BlobHeader { key: "payments".into(), version: 3, mode: BlobMode::Direct };
    let mut blob = header.to_bytes().expect("valid header");
    blob.extend_from_slice(&[0xc5; 60]);
    blob
}

fn unwrap_response() -> ResponseFrame {
    ResponseFrame::ok(7, Reply::Unwrap { plaintext: SecretBytes::new((0u8..32).collect()) })
}

fn encode_to_vec(encode: impl FnOnce(&mut BytesMut)) -> BytesMut {
    let mut wire = BytesMut::new();
    encode(&mut wire);
    wire
}

/// The body of the one frame in `wire`, as the splitter returns it.
fn body_of(mut wire: BytesMut) -> BytesMut {
    FrameSplitter::new(Limits::default().max_frame).split(&mut wire).expect("valid").expect("whole")
}

fn requests(c: &mut Criterion) {
    let limits = Limits::default();
    let request = wrap_request();
    let mut group = c.benchmark_group("wrap_request_32B");
    group.throughput(Throughput::Elements(1));

    let mut wire = BytesMut::with_capacity(256);
    group.bench_function("encode", |b| {
        b.iter(|| {
            wire.clear();
            black_box(&request).encode(&mut wire, &limits).expect("encodes");
            black_box(&wire);
        })
    });

    let body = body_of(encode_to_vec(|wire| request.encode(wire, &limits).expect("encodes")));
    group.bench_function("decode", |b| {
        b.iter(|| RequestFrame::decode(black_box(&body), &limits).expect("decodes"))
    });
    group.finish();
}

fn responses(c: &mut Criterion) {
    let limits = Limits::default();
    let response = unwrap_response();
    let mut group = c.benchmark_group("unwrap_ok_response_32B");
    group.throughput(Throughput::Elements(1));

    let mut wire = BytesMut::with_capacity(256);
    group.bench_function("encode", |b| {
        b.iter(|| {
            wire.clear();
            black_box(&response).encode(&mut wire, &limits).expect("encodes");
            black_box(&wire);
        })
    });

    let body = body_of(encode_to_vec(|wire| response.encode(wire, &limits).expect("encodes")));
    group.bench_function("decode", |b| b.iter(|| ResponseFrame::decode(black_box(&body)).expect("decodes")));
    group.finish();
}

/// What a server's read loop does with one read that holds 64 pipelined UNWRAPs: split
/// every frame off the buffer, decode it, wipe it.
fn pipeline(c: &mut Criterion) {
    let limits = Limits::default();
    let mut stream = BytesMut::new();
    for id in 0..PIPELINE_DEPTH as u64 {
        let request = RequestFrame::new(id, Request::Unwrap { aad: b"tenant=7".to_vec(), blob: blob() });
        request.encode(&mut stream, &limits).expect("encodes");
    }

    let mut group = c.benchmark_group("pipelined_unwrap_x64");
    group.throughput(Throughput::Elements(PIPELINE_DEPTH as u64));
    group.bench_function("split_decode", |b| {
        b.iter_batched_ref(
            || stream.clone(),
            |buf| {
                let mut splitter = FrameSplitter::new(limits.max_frame);
                let mut frames = 0;
                while let Some(mut body) = splitter.split(buf).expect("valid framing") {
                    black_box(RequestFrame::decode(&body, &limits).expect("decodes"));
                    FrameSplitter::wipe(&mut body);
                    frames += 1;
                }
                assert_eq!(frames, PIPELINE_DEPTH);
            },
            criterion::BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, requests, responses, pipeline);
criterion_main!(benches);
