//! Frame types shared by both directions: the version, the opcodes, the request flags,
//! the statuses, the fixed body header and the framing of a body. Requests are in
//! [`crate::request`], responses in [`crate::response`].

use bytes::{BufMut, BytesMut};

use crate::error::{EncodeError, PayloadError, Rejected};
use crate::limits::Limits;

/// The only protocol version this crate speaks.
pub const PROTOCOL_VERSION: u8 = 1;

/// The ALPN protocol id of protocol v1, over TLS and QUIC; client and proxy both offer it.
pub const ALPN: &[u8] = b"keymux/1";
/// Bytes in the `length` prefix.
pub const LENGTH_PREFIX_LEN: usize = 4;
/// Bytes in the fixed body header: version, opcode, flags, request id.
pub const HEADER_LEN: usize = 12;

/// An operation. Responses carry the request's opcode with the high bit set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
#[non_exhaustive]
pub enum Opcode {
    /// Wrap a plaintext key under a named key.
    Wrap = 0x01,
    /// Unwrap a blob.
    Unwrap = 0x02,
    /// Generate a fresh data key and return it with its wrapped blob.
    GenerateDataKey = 0x03,
    /// Re-wrap a blob under its key's current version.
    Rewrap = 0x04,
    /// Sign a message, or a digest, with a named key's current version.
    Sign = 0x05,
    /// Check a signature under a named key version.
    Verify = 0x06,
    /// Fetch a key version's public key.
    GetPublicKey = 0x07,
    /// AES-256-GCM on a named key's current version: IV, ciphertext and tag back
    /// separately, no blob (for front ends such as AWS XKS that define their own
    /// ciphertext format).
    Encrypt = 0x08,
    /// The inverse of ENCRYPT, under the key version it names.
    Decrypt = 0x09,
    /// Liveness check.
    Ping = 0x10,
    /// Learn the server's limits.
    Hello = 0x11,
}

impl Opcode {
    /// The bit set on a response's opcode.
    pub const RESPONSE_BIT: u8 = 0x80;

    /// Every opcode, in wire order.
    pub const ALL: [Opcode; 11] = [
        Opcode::Wrap,
        Opcode::Unwrap,
        Opcode::GenerateDataKey,
        Opcode::Rewrap,
        Opcode::Sign,
        Opcode::Verify,
        Opcode::GetPublicKey,
        Opcode::Encrypt,
        Opcode::Decrypt,
        Opcode::Ping,
        Opcode::Hello,
    ];

    /// The opcode for a request byte, if defined.
    pub fn from_u8(byte: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|op| *op as u8 == byte)
    }

    /// A short lowercase name, for metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            Opcode::Wrap => "wrap",
            Opcode::Unwrap => "unwrap",
            Opcode::GenerateDataKey => "generate_data_key",
            Opcode::Rewrap => "rewrap",
            Opcode::Sign => "sign",
            Opcode::Verify => "verify",
            Opcode::GetPublicKey => "get_public_key",
            Opcode::Encrypt => "encrypt",
            Opcode::Decrypt => "decrypt",
            Opcode::Ping => "ping",
            Opcode::Hello => "hello",
        }
    }
}

/// Request flag bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flags;

impl Flags {
    /// UNWRAP and REWRAP: skip the unwrap cache (neither read nor filled).
    pub const BYPASS_CACHE: u16 = 1 << 0;
    /// The payload starts with `timeout_ms:u32`, the client's deadline.
    pub const DEADLINE: u16 = 1 << 1;
    /// SIGN and VERIFY: `input` is a digest of the message, not the message. Its
    /// length must be the key's [`Algorithm::digest_len`] (the proxy checks, knowing
    /// the key).
    pub const DIGEST: u16 = 1 << 2;

    /// The flag bits allowed on a request with this opcode. The deadline is allowed on
    /// every request (DESIGN.md defines bit 1 for all opcodes); cache bypass only where
    /// there is a cache to bypass; the digest flag only where there is an input to sign
    /// or verify.
    pub fn allowed(opcode: Opcode) -> u16 {
        match opcode {
            Opcode::Unwrap | Opcode::Rewrap => Self::BYPASS_CACHE | Self::DEADLINE,
            Opcode::Sign | Opcode::Verify => Self::DIGEST | Self::DEADLINE,
            Opcode::Wrap
            | Opcode::GenerateDataKey
            | Opcode::GetPublicKey
            | Opcode::Encrypt
            | Opcode::Decrypt
            | Opcode::Ping
            | Opcode::Hello => Self::DEADLINE,
        }
    }
}

/// A response status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
#[non_exhaustive]
pub enum Status {
    /// Success; the OK payload follows.
    Ok = 0,
    /// The request is malformed.
    BadRequest = 1,
    /// No key of that name.
    UnknownKey = 2,
    /// The client may not do this.
    Forbidden = 3,
    /// The AAD or the blob does not verify.
    Integrity = 4,
    /// The key version is disabled.
    KeyDisabled = 5,
    /// Overloaded; retry after `retry_after_ms`.
    Busy = 6,
    /// The backend cannot be reached; retry after `retry_after_ms`.
    BackendUnavailable = 7,
    /// The deadline passed; retry after `retry_after_ms`.
    Timeout = 8,
    /// The opcode or feature is not supported.
    Unsupported = 9,
    /// A bug or an unexpected backend failure.
    Internal = 10,
}

impl Status {
    /// Every status, in code order.
    pub const ALL: [Status; 11] = [
        Status::Ok,
        Status::BadRequest,
        Status::UnknownKey,
        Status::Forbidden,
        Status::Integrity,
        Status::KeyDisabled,
        Status::Busy,
        Status::BackendUnavailable,
        Status::Timeout,
        Status::Unsupported,
        Status::Internal,
    ];

    /// The status for a code, if defined.
    pub fn from_u16(code: u16) -> Option<Self> {
        Self::ALL.get(usize::from(code)).copied()
    }

    /// Whether a client may retry; such failures carry `retry_after_ms`.
    pub fn is_retryable(self) -> bool {
        matches!(self, Status::Busy | Status::BackendUnavailable | Status::Timeout)
    }

    /// An uppercase name as in the specification, for metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::BadRequest => "BAD_REQUEST",
            Status::UnknownKey => "UNKNOWN_KEY",
            Status::Forbidden => "FORBIDDEN",
            Status::Integrity => "INTEGRITY",
            Status::KeyDisabled => "KEY_DISABLED",
            Status::Busy => "BUSY",
            Status::BackendUnavailable => "BACKEND_UNAVAILABLE",
            Status::Timeout => "TIMEOUT",
            Status::Unsupported => "UNSUPPORTED",
            Status::Internal => "INTERNAL",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The fixed 12-byte body header.
pub(crate) struct Header {
    pub(crate) opcode: u8,
    pub(crate) flags: u16,
    pub(crate) request_id: u64,
}

impl Header {
    /// Reads the header, refusing a body too short to hold one.
    pub(crate) fn read(body: &[u8]) -> Result<Self, Rejected> {
        let Some(header) = body.get(..HEADER_LEN) else {
            let opcode = body.get(1).copied().unwrap_or(0);
            return Err(Rejected { request_id: 0, opcode, error: PayloadError::ShortBody(body.len()) });
        };
        let mut id = [0u8; 8];
        id.copy_from_slice(&header[4..12]);
        Ok(Self {
            opcode: header[1],
            flags: u16::from_be_bytes([header[2], header[3]]),
            request_id: u64::from_be_bytes(id),
        })
    }
}

/// Writes `length | header | payload`, patching the length in once the payload is
/// known; on any error `dst` is left as it was.
pub(crate) fn write_frame(
    dst: &mut BytesMut,
    limits: &Limits,
    opcode: u8,
    flags: u16,
    request_id: u64,
    payload: impl FnOnce(&mut BytesMut) -> Result<(), EncodeError>,
) -> Result<(), EncodeError> {
    let start = dst.len();
    dst.put_u32(0);
    dst.put_u8(PROTOCOL_VERSION);
    dst.put_u8(opcode);
    dst.put_u16(flags);
    dst.put_u64(request_id);
    let written = payload(dst).and_then(|()| {
        let len = dst.len() - start - LENGTH_PREFIX_LEN;
        if len > limits.max_frame as usize {
            return Err(EncodeError::FrameTooLong { len, max: limits.max_frame });
        }
        Ok(len)
    });
    match written {
        Ok(len) => {
            dst[start..start + LENGTH_PREFIX_LEN].copy_from_slice(&(len as u32).to_be_bytes());
            Ok(())
        }
        Err(error) => {
            dst.truncate(start);
            Err(error)
        }
    }
}

/// The longest prefix of `text` that is at most `max` bytes and ends on a character.
pub(crate) fn truncate_utf8(text: &str, max: usize) -> &[u8] {
    if text.len() <= max {
        return text.as_bytes();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text.as_bytes()[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::RequestFrame;
    use crate::response::ResponseFrame;

    #[test]
    fn short_bodies_are_rejected_not_panicked_on() {
        for len in 0..HEADER_LEN {
            let body = vec![1u8; len];
            let rejected = RequestFrame::decode(&body, &Limits::default()).unwrap_err();
            assert_eq!(rejected.error, PayloadError::ShortBody(len));
            assert_eq!(ResponseFrame::decode(&body).unwrap_err().error, PayloadError::ShortBody(len));
        }
    }
}
