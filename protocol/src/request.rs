//! Requests: each operation's fields ([`Request`]) and a request frame's id and flags
//! ([`RequestFrame`]), with their coding.

use bytes::{BufMut, BytesMut};

use crate::coding::{Reader, put_bytes16, put_str8};
use crate::error::{EncodeError, Field, PayloadError, Rejected};
use crate::frame::{Flags, HEADER_LEN, Header, Opcode, write_frame};
use crate::limits::Limits;
use crate::secret::SecretBytes;

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
    /// AES-256-GCM encrypt `plaintext` under `key` version `version` (0: the current
    /// one), with `aad` as the associated data: the raw AEAD, no blob. A caller whose
    /// AAD names the version (AWS XKS's ciphertext metadata does) picks it first.
    Encrypt {
        /// Key name.
        key: String,
        /// The key version; 0 means the current one. Any other must be enabled.
        version: u32,
        /// Additional authenticated data.
        aad: Vec<u8>,
        /// The data to encrypt.
        plaintext: SecretBytes,
    },
    /// AES-256-GCM decrypt what ENCRYPT returned, under `key` version `version`.
    Decrypt {
        /// Key name.
        key: String,
        /// The key version ENCRYPT answered with.
        version: u32,
        /// Additional authenticated data, as given to ENCRYPT.
        aad: Vec<u8>,
        /// The initialisation vector.
        iv: Vec<u8>,
        /// The ciphertext.
        ciphertext: Vec<u8>,
        /// The authentication tag.
        tag: Vec<u8>,
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
            Request::Encrypt { .. } => Opcode::Encrypt,
            Request::Decrypt { .. } => Opcode::Decrypt,
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
                Request::Encrypt { key, version, aad, plaintext } => {
                    put_str8(dst, Field::Key, key)?;
                    dst.put_u32(*version);
                    put_bytes16(dst, Field::Aad, aad)?;
                    put_bytes16(dst, Field::Plaintext, plaintext.expose())
                }
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
                Request::Decrypt { key, version, aad, iv, ciphertext, tag } => {
                    put_str8(dst, Field::Key, key)?;
                    dst.put_u32(*version);
                    put_bytes16(dst, Field::Aad, aad)?;
                    put_bytes16(dst, Field::Iv, iv)?;
                    put_bytes16(dst, Field::Ciphertext, ciphertext)?;
                    put_bytes16(dst, Field::Tag, tag)
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
            Opcode::Encrypt => Request::Encrypt {
                key: reader.str8(Field::Key)?,
                version: reader.u32(Field::Version)?,
                aad: reader.bytes16(Field::Aad, limits.max_aad)?,
                plaintext: SecretBytes::copy_from(
                    reader.bytes16_ref(Field::Plaintext, limits.max_plaintext)?,
                ),
            },
            Opcode::Decrypt => Request::Decrypt {
                key: reader.str8(Field::Key)?,
                version: reader.u32(Field::Version)?,
                aad: reader.bytes16(Field::Aad, limits.max_aad)?,
                iv: reader.bytes16(Field::Iv, Limits::MAX_IV)?,
                ciphertext: reader.bytes16(Field::Ciphertext, limits.max_plaintext)?,
                tag: reader.bytes16(Field::Tag, Limits::MAX_TAG)?,
            },
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
