//! keymux wire protocol v1, sans IO.
//!
//! This crate turns bytes into typed frames and back; it owns no sockets, no clock and
//! no runtime. The proxy and the client SDK drive it from their own I/O loops, and the
//! optional `codec` feature adapts it to `tokio_util::codec`.
//!
//! A stream carries length-prefixed frames (see `DESIGN.md`, *Wire protocol v1*):
//!
//! ```text
//! frame    := length:u32 body            length = bytes in body, 12 ..= max_frame
//! body     := version:u8 (=1) opcode:u8 flags:u16 request_id:u64 payload
//! ```
//!
//! The operations ([`Opcode`], [`Request`], [`Reply`]):
//!
//! | opcode | request | OK response |
//! |---|---|---|
//! | 0x01 WRAP | key, aad, plaintext | blob |
//! | 0x02 UNWRAP | aad, blob | plaintext |
//! | 0x03 GENERATE_DATA_KEY | key, aad, length | plaintext, blob |
//! | 0x04 REWRAP | aad, blob | blob |
//! | 0x05 SIGN | key, input | version, signature |
//! | 0x06 VERIFY | key, version, input, signature | valid |
//! | 0x07 GET_PUBLIC_KEY | key, version (0 = current) | version, algorithm, public_key |
//! | 0x08 ENCRYPT | key, version (0 = current), aad, plaintext | version, iv, ciphertext, tag |
//! | 0x09 DECRYPT | key, version, aad, iv, ciphertext, tag | plaintext |
//! | 0x10 PING | | |
//! | 0x11 HELLO | client_name | max_frame, max_in_flight, server_version |
//!
//! Request [`Flags`]: cache bypass on UNWRAP and REWRAP, a deadline on any request, and
//! on SIGN and VERIFY a digest flag (`input` is the message's hash). The signing
//! opcodes' [`Algorithm`]s say how long a digest must be and which algorithms take
//! none; the proxy applies them, as only it knows a key's algorithm. ENCRYPT and
//! DECRYPT are the raw AES-256-GCM on an `aes-256` key, for front ends whose callers
//! define their own ciphertext format (AWS XKS): no blob, the AAD as given, the IV and
//! tag apart. Blobs
//! ([`BlobHeader`]) come in three [`BlobMode`]s: direct, intermediate and KEM
//! (`ml-kem-768` keys).
//!
//! Decoding is split in two steps so that faults land at the right level:
//! [`FrameSplitter`] cuts whole frames off a buffer and reports [`FrameError`]s, which
//! end the connection; [`RequestFrame::decode`] and [`ResponseFrame::decode`] parse one
//! frame's payload and report [`Rejected`], which is answered with a status while the
//! connection stays up.
//!
//! ```
//! use bytes::BytesMut;
//! use keymux_protocol::{FrameSplitter, Limits, Request, RequestFrame};
//!
//! let limits = Limits::default();
//! let request = RequestFrame::new(7, Request::Ping);
//! let mut wire = BytesMut::new();
//! request.encode(&mut wire, &limits).unwrap();
//!
//! let mut splitter = FrameSplitter::new(limits.max_frame);
//! let body = splitter.split(&mut wire).unwrap().expect("a whole frame");
//! let decoded = RequestFrame::decode(&body, &limits).unwrap();
//! assert_eq!(decoded.request_id, 7);
//! ```
#![forbid(unsafe_code)]

mod algorithm;
mod blob;
#[cfg(feature = "codec")]
mod codec;
mod coding;
pub mod conformance;
mod decoder;
mod error;
mod frame;
mod limits;
mod request;
mod response;
mod secret;

pub use algorithm::Algorithm;
pub use blob::{BLOB_FORMAT_V1, BLOB_MAGIC, BlobHeader, BlobMode};
#[cfg(feature = "codec")]
pub use codec::{ClientCodec, CodecError, ServerCodec};
pub use decoder::FrameSplitter;
pub use error::{BlobError, EncodeError, Field, FrameError, PayloadError, Rejected, UnknownAlgorithm};
pub use frame::{ALPN, Flags, HEADER_LEN, LENGTH_PREFIX_LEN, Opcode, PROTOCOL_VERSION, Status};
pub use limits::{LimitError, Limits};
pub use request::{Request, RequestFrame};
pub use response::{Failure, Reply, ResponseFrame};
pub use secret::SecretBytes;
