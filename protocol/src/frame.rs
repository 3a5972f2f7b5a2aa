//! Frame types: opcodes, flags, statuses, requests and responses, and their coding.

use bytes::{BufMut, BytesMut};

use crate::algorithm::Algorithm;
use crate::coding::{Reader, put_bytes16, put_str8};
use crate::error::{EncodeError, Field, PayloadError, Rejected};
use crate::limits::Limits;
use crate::secret::SecretBytes;

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
    /// Liveness check.
    Ping = 0x10,
    /// Learn the server's limits.
    Hello = 0x11,
}

impl Opcode {
    /// The bit set on a response's opcode.
    pub const RESPONSE_BIT: u8 = 0x80;

    /// Every opcode, in wire order.
    pub const ALL: [Opcode; 9] = [
        Opcode::Wrap,
        Opcode::Unwrap,
        Opcode::GenerateDataKey,
        Opcode::Rewrap,
        Opcode::Sign,
        Opcode::Verify,
        Opcode::GetPublicKey,
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
            Opcode::Wrap | Opcode::GenerateDataKey | Opcode::GetPublicKey | Opcode::Ping | Opcode::Hello => {
                Self::DEADLINE
            }
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

/// A request's operation and its fields.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Request {
    /// Wrap `plaintext` under the current version of `key`, bound to `aad`.
    Wrap {
        /// Key name.
        key: String,
        /// Additional authenticated data the blob is bound to.
        aad: Vec<u8>,
        /// The key to wrap.
        plaintext: SecretBytes,
    },
    /// Unwrap `blob`, which must have been wrapped with the same `aad`.
    Unwrap {
        /// Additional authenticated data.
        aad: Vec<u8>,
        /// A blob from WRAP, GENERATE_DATA_KEY or REWRAP.
        blob: Vec<u8>,
    },
    /// Generate a `length`-byte data key under `key`.
    GenerateDataKey {
        /// Key name.
        key: String,
        /// Additional authenticated data.
        aad: Vec<u8>,
        /// Data key length in bytes.
        length: u16,
    },
    /// Re-wrap `blob` under its key's current version.
    Rewrap {
        /// Additional authenticated data, unchanged by the re-wrap.
        aad: Vec<u8>,
        /// The blob to re-wrap.
        blob: Vec<u8>,
    },
    /// Sign `input` with the current version of `key`.
    ///
    /// `digest` is request flag bit 2 ([`Flags::DIGEST`]). Unlike `bypass_cache`, which
    /// sits on [`RequestFrame`], it lives on the two variants that define it: a digest
    /// flag on any other request cannot be written, and the code that signs finds it
    /// beside the input it qualifies.
    Sign {
        /// Key name.
        key: String,
        /// The message, or with `digest` its hash under the key's algorithm.
        input: Vec<u8>,
        /// Whether `input` is a digest ([`Flags::DIGEST`]).
        digest: bool,
    },
    /// Check that `signature` is `key` version `version`'s signature of `input`. A
    /// signature that does not verify is a successful answer, `valid: false`.
    Verify {
        /// Key name.
        key: String,
        /// The key version that signed (SIGN's answer names it).
        version: u32,
        /// The message, or with `digest` its hash under the key's algorithm.
        input: Vec<u8>,
        /// The signature to check.
        signature: Vec<u8>,
        /// Whether `input` is a digest ([`Flags::DIGEST`]); see [`Request::Sign`].
        digest: bool,
    },
    /// Fetch the public key of `key` version `version`. DESIGN.md also has this answer
    /// an `ml-kem-768` key with its encapsulation key, but gives ML-KEM no `algorithm`
    /// id yet, so for now [`Reply::PublicKey`] can carry signing keys' only (see
    /// [`Algorithm`]).
    GetPublicKey {
        /// Key name.
        key: String,
        /// The key version; 0 means the current one.
        version: u32,
    },
    /// Liveness check.
    Ping,
    /// Announce the client and learn the server's limits.
    Hello {
        /// A name for logs and metrics.
        client_name: String,
    },
}

impl Request {
    /// This request's opcode.
    pub fn opcode(&self) -> Opcode {
        match self {
            Request::Wrap { .. } => Opcode::Wrap,
            Request::Unwrap { .. } => Opcode::Unwrap,
            Request::GenerateDataKey { .. } => Opcode::GenerateDataKey,
            Request::Rewrap { .. } => Opcode::Rewrap,
            Request::Sign { .. } => Opcode::Sign,
            Request::Verify { .. } => Opcode::Verify,
            Request::GetPublicKey { .. } => Opcode::GetPublicKey,
            Request::Ping => Opcode::Ping,
            Request::Hello { .. } => Opcode::Hello,
        }
    }
}

/// A request with its id and options.
#[derive(Debug, Clone)]
pub struct RequestFrame {
    /// Chosen by the client; echoed in the response.
    pub request_id: u64,
    /// UNWRAP/REWRAP: skip the unwrap cache.
    pub bypass_cache: bool,
    /// The client's deadline, in milliseconds from when the proxy reads the frame.
    pub timeout_ms: Option<u32>,
    /// The operation.
    pub request: Request,
}

impl RequestFrame {
    /// A request with no flags.
    pub fn new(request_id: u64, request: Request) -> Self {
        Self { request_id, bypass_cache: false, timeout_ms: None, request }
    }

    fn flags(&self) -> u16 {
        let mut flags = 0;
        if self.bypass_cache {
            flags |= Flags::BYPASS_CACHE;
        }
        if self.timeout_ms.is_some() {
            flags |= Flags::DEADLINE;
        }
        if let Request::Sign { digest: true, .. } | Request::Verify { digest: true, .. } = self.request {
            flags |= Flags::DIGEST;
        }
        flags
    }

    /// Appends this frame, length prefix included, to `dst`.
    ///
    /// Fails, writing nothing, if a field does not fit its prefix, a flag is not
    /// allowed on the opcode, or the frame would exceed `limits.max_frame`.
    pub fn encode(&self, dst: &mut BytesMut, limits: &Limits) -> Result<(), EncodeError> {
        let opcode = self.request.opcode();
        let flags = self.flags();
        if flags & !Flags::allowed(opcode) != 0 {
            return Err(EncodeError::BadFlags { flags, opcode });
        }
        write_frame(dst, limits, opcode as u8, flags, self.request_id, |dst| {
            if let Some(timeout_ms) = self.timeout_ms {
                dst.put_u32(timeout_ms);
            }
            match &self.request {
                Request::Wrap { key, aad, plaintext } => {
                    put_str8(dst, Field::Key, key)?;
                    put_bytes16(dst, Field::Aad, aad)?;
                    put_bytes16(dst, Field::Plaintext, plaintext.expose())
                }
                Request::Unwrap { aad, blob } | Request::Rewrap { aad, blob } => {
                    put_bytes16(dst, Field::Aad, aad)?;
                    put_bytes16(dst, Field::Blob, blob)
                }
                Request::GenerateDataKey { key, aad, length } => {
                    put_str8(dst, Field::Key, key)?;
                    put_bytes16(dst, Field::Aad, aad)?;
                    dst.put_u16(*length);
                    Ok(())
                }
                Request::Sign { key, input, digest: _ } => {
                    put_str8(dst, Field::Key, key)?;
                    put_bytes16(dst, Field::Input, input)
                }
                Request::Verify { key, version, input, signature, digest: _ } => {
                    put_str8(dst, Field::Key, key)?;
                    dst.put_u32(*version);
                    put_bytes16(dst, Field::Input, input)?;
                    put_bytes16(dst, Field::Signature, signature)
                }
                Request::GetPublicKey { key, version } => {
                    put_str8(dst, Field::Key, key)?;
                    dst.put_u32(*version);
                    Ok(())
                }
                Request::Ping => Ok(()),
                Request::Hello { client_name } => put_str8(dst, Field::ClientName, client_name),
            }
        })
    }

    /// Parses one frame body (as returned by [`crate::FrameSplitter`]) as a request.
    pub fn decode(body: &[u8], limits: &Limits) -> Result<Self, Rejected> {
        let header = Header::read(body)?;
        Self::decode_payload(&header, &body[HEADER_LEN..], limits).map_err(|error| Rejected {
            request_id: header.request_id,
            opcode: header.opcode,
            error,
        })
    }

    fn decode_payload(header: &Header, payload: &[u8], limits: &Limits) -> Result<Self, PayloadError> {
        if header.opcode & Opcode::RESPONSE_BIT != 0 {
            return Err(PayloadError::WrongDirection(header.opcode));
        }
        let opcode = Opcode::from_u8(header.opcode).ok_or(PayloadError::UnknownOpcode(header.opcode))?;
        if header.flags & !Flags::allowed(opcode) != 0 {
            return Err(PayloadError::BadFlags(header.flags));
        }
        let mut reader = Reader::new(payload);
        let timeout_ms =
            if header.flags & Flags::DEADLINE != 0 { Some(reader.u32(Field::Timeout)?) } else { None };
        let digest = header.flags & Flags::DIGEST != 0;
        let request = match opcode {
            Opcode::Wrap => Request::Wrap {
                key: reader.str8(Field::Key)?,
                aad: reader.bytes16(Field::Aad, limits.max_aad)?,
                plaintext: SecretBytes::copy_from(
                    reader.bytes16_ref(Field::Plaintext, limits.max_plaintext)?,
                ),
            },
            Opcode::Unwrap => Request::Unwrap {
                aad: reader.bytes16(Field::Aad, limits.max_aad)?,
                blob: reader.bytes16(Field::Blob, limits.max_blob)?,
            },
            Opcode::GenerateDataKey => {
                let key = reader.str8(Field::Key)?;
                let aad = reader.bytes16(Field::Aad, limits.max_aad)?;
                let length = reader.u16(Field::Length)?;
                let len = usize::from(length);
                if len == 0 {
                    return Err(PayloadError::Empty(Field::Length));
                }
                if len > limits.max_plaintext {
                    return Err(PayloadError::TooLarge {
                        field: Field::Length,
                        len,
                        max: limits.max_plaintext,
                    });
                }
                Request::GenerateDataKey { key, aad, length }
            }
            Opcode::Rewrap => Request::Rewrap {
                aad: reader.bytes16(Field::Aad, limits.max_aad)?,
                blob: reader.bytes16(Field::Blob, limits.max_blob)?,
            },
            Opcode::Sign => Request::Sign {
                key: reader.str8(Field::Key)?,
                input: reader.bytes16(Field::Input, limits.max_sign_input)?,
                digest,
            },
            Opcode::Verify => Request::Verify {
                key: reader.str8(Field::Key)?,
                version: reader.u32(Field::Version)?,
                input: reader.bytes16(Field::Input, limits.max_sign_input)?,
                signature: reader.bytes16(Field::Signature, limits.max_signature)?,
                digest,
            },
            Opcode::GetPublicKey => {
                Request::GetPublicKey { key: reader.str8(Field::Key)?, version: reader.u32(Field::Version)? }
            }
            Opcode::Ping => Request::Ping,
            Opcode::Hello => Request::Hello { client_name: reader.str8(Field::ClientName)? },
        };
        reader.finish()?;
        Ok(Self {
            request_id: header.request_id,
            bypass_cache: header.flags & Flags::BYPASS_CACHE != 0,
            timeout_ms,
            request,
        })
    }
}

/// The OK payload of a response.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Reply {
    /// WRAP's blob.
    Wrap {
        /// The wrapped key.
        blob: Vec<u8>,
    },
    /// UNWRAP's plaintext key.
    Unwrap {
        /// The unwrapped key.
        plaintext: SecretBytes,
    },
    /// GENERATE_DATA_KEY's key and its blob.
    GenerateDataKey {
        /// The new data key.
        plaintext: SecretBytes,
        /// The data key, wrapped.
        blob: Vec<u8>,
    },
    /// REWRAP's new blob.
    Rewrap {
        /// The blob under the key's current version.
        blob: Vec<u8>,
    },
    /// SIGN's signature, in the key's algorithm's encoding (DER for ECDSA, raw for the
    /// others).
    Sign {
        /// The key version that signed: the one to pass to VERIFY.
        version: u32,
        /// The signature.
        signature: Vec<u8>,
    },
    /// VERIFY's verdict.
    Verify {
        /// Whether the signature verifies (on the wire, 1 or 0).
        valid: bool,
    },
    /// GET_PUBLIC_KEY's key.
    PublicKey {
        /// The key version the public key belongs to (the current one if the request
        /// asked for version 0).
        version: u32,
        /// The key's algorithm.
        algorithm: Algorithm,
        /// The public key, a DER SubjectPublicKeyInfo.
        public_key: Vec<u8>,
    },
    /// PING's empty answer.
    Pong,
    /// HELLO's server limits.
    Hello {
        /// The server's `max_frame`.
        max_frame: u32,
        /// Requests the server reads ahead on one connection.
        max_in_flight: u32,
        /// The server's version string.
        server_version: String,
    },
}

impl Reply {
    /// The opcode this reply answers.
    pub fn opcode(&self) -> Opcode {
        match self {
            Reply::Wrap { .. } => Opcode::Wrap,
            Reply::Unwrap { .. } => Opcode::Unwrap,
            Reply::GenerateDataKey { .. } => Opcode::GenerateDataKey,
            Reply::Rewrap { .. } => Opcode::Rewrap,
            Reply::Sign { .. } => Opcode::Sign,
            Reply::Verify { .. } => Opcode::Verify,
            Reply::PublicKey { .. } => Opcode::GetPublicKey,
            Reply::Pong => Opcode::Ping,
            Reply::Hello { .. } => Opcode::Hello,
        }
    }
}

/// A non-OK response: the status, a human-readable message and, for retryable
/// statuses, how long to wait before retrying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Never [`Status::Ok`].
    pub status: Status,
    /// A short explanation. Never contains key material.
    pub message: String,
    /// Milliseconds to wait before a retry; on the wire only for retryable statuses.
    pub retry_after_ms: u32,
}

impl Failure {
    /// A failure with no retry hint.
    pub fn new(status: Status, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), retry_after_ms: 0 }
    }

    /// A retryable failure that asks the client to wait `retry_after_ms`.
    pub fn retry_after(status: Status, message: impl Into<String>, retry_after_ms: u32) -> Self {
        Self { status, message: message.into(), retry_after_ms }
    }
}

impl From<Rejected> for ResponseFrame {
    fn from(rejected: Rejected) -> Self {
        ResponseFrame::failure(
            rejected.request_id,
            rejected.opcode,
            Failure::new(rejected.error.status(), rejected.error.to_string()),
        )
    }
}

/// A response: the request id, the request's opcode, and a reply or a failure.
#[derive(Debug, Clone)]
pub struct ResponseFrame {
    /// The request's id.
    pub request_id: u64,
    /// The request's opcode byte (without the response bit). A failure may answer an
    /// opcode this version does not know.
    pub opcode: u8,
    /// The outcome.
    pub result: Result<Reply, Failure>,
}

impl ResponseFrame {
    /// A successful response.
    pub fn ok(request_id: u64, reply: Reply) -> Self {
        Self { request_id, opcode: reply.opcode() as u8, result: Ok(reply) }
    }

    /// A failed response to a request with opcode byte `opcode`.
    pub fn failure(request_id: u64, opcode: u8, failure: Failure) -> Self {
        Self { request_id, opcode, result: Err(failure) }
    }

    /// The status this response carries.
    pub fn status(&self) -> Status {
        match &self.result {
            Ok(_) => Status::Ok,
            Err(failure) => failure.status,
        }
    }

    /// Appends this frame, length prefix included, to `dst`; writes nothing on error.
    pub fn encode(&self, dst: &mut BytesMut, limits: &Limits) -> Result<(), EncodeError> {
        let opcode = self.opcode | Opcode::RESPONSE_BIT;
        write_frame(dst, limits, opcode, 0, self.request_id, |dst| match &self.result {
            Ok(reply) => {
                dst.put_u16(Status::Ok as u16);
                match reply {
                    Reply::Wrap { blob } | Reply::Rewrap { blob } => put_bytes16(dst, Field::Blob, blob),
                    Reply::Unwrap { plaintext } => put_bytes16(dst, Field::Plaintext, plaintext.expose()),
                    Reply::GenerateDataKey { plaintext, blob } => {
                        put_bytes16(dst, Field::Plaintext, plaintext.expose())?;
                        put_bytes16(dst, Field::Blob, blob)
                    }
                    Reply::Sign { version, signature } => {
                        dst.put_u32(*version);
                        put_bytes16(dst, Field::Signature, signature)
                    }
                    Reply::Verify { valid } => {
                        dst.put_u8(u8::from(*valid));
                        Ok(())
                    }
                    Reply::PublicKey { version, algorithm, public_key } => {
                        dst.put_u32(*version);
                        dst.put_u8(algorithm.id());
                        put_bytes16(dst, Field::PublicKey, public_key)
                    }
                    Reply::Pong => Ok(()),
                    Reply::Hello { max_frame, max_in_flight, server_version } => {
                        dst.put_u32(*max_frame);
                        dst.put_u32(*max_in_flight);
                        put_str8(dst, Field::ServerVersion, server_version)
                    }
                }
            }
            Err(failure) => {
                // A failure that claims OK would be read as a success: send INTERNAL.
                let status = if failure.status == Status::Ok { Status::Internal } else { failure.status };
                dst.put_u16(status as u16);
                put_bytes16(dst, Field::Message, truncate_utf8(&failure.message, u16::MAX as usize))?;
                if status.is_retryable() {
                    dst.put_u32(failure.retry_after_ms);
                }
                Ok(())
            }
        })
    }

    /// Parses one frame body (as returned by [`crate::FrameSplitter`]) as a response.
    /// Field sizes are bounded only by the frame, whose size the splitter limits.
    pub fn decode(body: &[u8]) -> Result<Self, Rejected> {
        let header = Header::read(body)?;
        let opcode = header.opcode & !Opcode::RESPONSE_BIT;
        Self::decode_payload(&header, &body[HEADER_LEN..]).map_err(|error| Rejected {
            request_id: header.request_id,
            opcode,
            error,
        })
    }

    fn decode_payload(header: &Header, payload: &[u8]) -> Result<Self, PayloadError> {
        if header.opcode & Opcode::RESPONSE_BIT == 0 {
            return Err(PayloadError::WrongDirection(header.opcode));
        }
        if header.flags != 0 {
            return Err(PayloadError::BadFlags(header.flags));
        }
        let opcode = header.opcode & !Opcode::RESPONSE_BIT;
        let mut reader = Reader::new(payload);
        let code = reader.u16(Field::Status)?;
        let status = Status::from_u16(code).ok_or(PayloadError::UnknownStatus(code))?;
        let result = if status == Status::Ok {
            let max = Limits::BYTES16_MAX;
            Ok(match Opcode::from_u8(opcode).ok_or(PayloadError::UnknownOpcode(opcode))? {
                Opcode::Wrap => Reply::Wrap { blob: reader.bytes16(Field::Blob, max)? },
                Opcode::Rewrap => Reply::Rewrap { blob: reader.bytes16(Field::Blob, max)? },
                Opcode::Unwrap => Reply::Unwrap {
                    plaintext: SecretBytes::copy_from(reader.bytes16_ref(Field::Plaintext, max)?),
                },
                Opcode::GenerateDataKey => Reply::GenerateDataKey {
                    plaintext: SecretBytes::copy_from(reader.bytes16_ref(Field::Plaintext, max)?),
                    blob: reader.bytes16(Field::Blob, max)?,
                },
                Opcode::Sign => Reply::Sign {
                    version: reader.u32(Field::Version)?,
                    signature: reader.bytes16(Field::Signature, max)?,
                },
                Opcode::Verify => Reply::Verify {
                    valid: match reader.u8(Field::Valid)? {
                        0 => false,
                        1 => true,
                        value => return Err(PayloadError::BadValue { field: Field::Valid, value }),
                    },
                },
                Opcode::GetPublicKey => {
                    let version = reader.u32(Field::Version)?;
                    let id = reader.u8(Field::Algorithm)?;
                    let algorithm = Algorithm::from_u8(id)
                        .ok_or(PayloadError::BadValue { field: Field::Algorithm, value: id })?;
                    Reply::PublicKey {
                        version,
                        algorithm,
                        public_key: reader.bytes16(Field::PublicKey, max)?,
                    }
                }
                Opcode::Ping => Reply::Pong,
                Opcode::Hello => Reply::Hello {
                    max_frame: reader.u32(Field::MaxFrame)?,
                    max_in_flight: reader.u32(Field::MaxInFlight)?,
                    server_version: reader.str8(Field::ServerVersion)?,
                },
            })
        } else {
            let message = reader.bytes16_ref(Field::Message, Limits::BYTES16_MAX)?;
            let message =
                String::from_utf8(message.to_vec()).map_err(|_| PayloadError::InvalidUtf8(Field::Message))?;
            let retry_after_ms = if status.is_retryable() { reader.u32(Field::RetryAfter)? } else { 0 };
            Err(Failure { status, message, retry_after_ms })
        };
        reader.finish()?;
        Ok(Self { request_id: header.request_id, opcode, result })
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
fn write_frame(
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
fn truncate_utf8(text: &str, max: usize) -> &[u8] {
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
