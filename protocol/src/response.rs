//! Responses: the OK payload of each operation ([`Reply`]), a failure ([`Failure`]),
//! and a response frame ([`ResponseFrame`]), with their coding.

use bytes::{BufMut, BytesMut};

use crate::algorithm::Algorithm;
use crate::coding::{Reader, put_bytes16, put_str8};
use crate::error::{EncodeError, Field, PayloadError, Rejected};
use crate::frame::{HEADER_LEN, Header, Opcode, Status, truncate_utf8, write_frame};
use crate::limits::Limits;
use crate::secret::SecretBytes;

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
    /// ENCRYPT's result: the pieces of AES-256-GCM's output, separately.
    Encrypt {
        /// The key version that encrypted: the one to pass to DECRYPT.
        version: u32,
        /// The initialisation vector (12 bytes).
        iv: Vec<u8>,
        /// The ciphertext, as long as the plaintext.
        ciphertext: Vec<u8>,
        /// The authentication tag (16 bytes).
        tag: Vec<u8>,
    },
    /// DECRYPT's plaintext.
    Decrypt {
        /// The decrypted data.
        plaintext: SecretBytes,
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
            Reply::Encrypt { .. } => Opcode::Encrypt,
            Reply::Decrypt { .. } => Opcode::Decrypt,
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
                    Reply::Unwrap { plaintext } | Reply::Decrypt { plaintext } => {
                        put_bytes16(dst, Field::Plaintext, plaintext.expose())
                    }
                    Reply::Encrypt { version, iv, ciphertext, tag } => {
                        dst.put_u32(*version);
                        put_bytes16(dst, Field::Iv, iv)?;
                        put_bytes16(dst, Field::Ciphertext, ciphertext)?;
                        put_bytes16(dst, Field::Tag, tag)
                    }
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
                Opcode::Encrypt => Reply::Encrypt {
                    version: reader.u32(Field::Version)?,
                    iv: reader.bytes16(Field::Iv, max)?,
                    ciphertext: reader.bytes16(Field::Ciphertext, max)?,
                    tag: reader.bytes16(Field::Tag, max)?,
                },
                Opcode::Decrypt => Reply::Decrypt {
                    plaintext: SecretBytes::copy_from(reader.bytes16_ref(Field::Plaintext, max)?),
                },
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
