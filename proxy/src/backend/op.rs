//! What a backend runs: one [`Op`] per client request, with its deadline
//! ([`BatchOp`]), and blobs whose header is already parsed ([`ParsedBlob`]).

use std::time::Instant;

use keymux_protocol::{BlobHeader, BlobMode, Reply, SecretBytes};

use crate::error::OpError;

/// One operation in a batch. All operations of a batch name the same key.
#[derive(Debug)]
pub enum Op {
    /// Wrap `plaintext` under the key's current version.
    Wrap {
        /// Client AAD.
        aad: Vec<u8>,
        /// The key to wrap.
        plaintext: SecretBytes,
    },
    /// Generate a `length`-byte data key and wrap it.
    GenerateDataKey {
        /// Client AAD.
        aad: Vec<u8>,
        /// Bytes of key to generate.
        length: u16,
    },
    /// Unwrap a blob.
    Unwrap {
        /// Client AAD.
        aad: Vec<u8>,
        /// The blob, its header already parsed.
        blob: ParsedBlob,
    },
    /// Sign `input` with the key's current version: the message itself, or with
    /// `digest` its hash (the router has checked its length against the algorithm).
    Sign {
        /// The message or the digest.
        input: Vec<u8>,
        /// Whether `input` is a digest.
        digest: bool,
    },
    /// AES-256-GCM under a version of the key (the current one, unless the caller
    /// named one) with the caller's AAD: the raw
    /// AEAD, its IV, ciphertext and tag returned apart (no blob).
    Encrypt {
        /// The key version: 0 for the current one (the router has checked any other is
        /// enabled).
        version: u32,
        /// Client AAD, the AEAD's associated data as it is.
        aad: Vec<u8>,
        /// The data to encrypt.
        plaintext: SecretBytes,
    },
    /// AES-256-GCM decryption under version `version` of the key.
    Decrypt {
        /// The key version ENCRYPT named.
        version: u32,
        /// Client AAD.
        aad: Vec<u8>,
        /// The initialisation vector.
        iv: Vec<u8>,
        /// The ciphertext.
        ciphertext: Vec<u8>,
        /// The authentication tag.
        tag: Vec<u8>,
    },
    /// Unwrap a blob and wrap its key again under the key's current version.
    Rewrap {
        /// Client AAD.
        aad: Vec<u8>,
        /// The blob, its header already parsed.
        blob: ParsedBlob,
    },
}

impl Op {
    /// A short name for metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Wrap { .. } => "wrap",
            Op::GenerateDataKey { .. } => "generate_data_key",
            Op::Unwrap { .. } => "unwrap",
            Op::Rewrap { .. } => "rewrap",
            Op::Sign { .. } => "sign",
            Op::Encrypt { .. } => "encrypt",
            Op::Decrypt { .. } => "decrypt",
        }
    }
}

/// A blob whose header has been parsed, keeping the original bytes.
#[derive(Debug, Clone)]
pub struct ParsedBlob {
    bytes: Vec<u8>,
    header_len: usize,
    /// The parsed header.
    pub header: BlobHeader,
}

impl ParsedBlob {
    /// Parses `bytes`; a blob that does not parse cannot verify, so it is INTEGRITY.
    pub fn parse(bytes: Vec<u8>) -> Result<Self, OpError> {
        let (header, body) = BlobHeader::parse(&bytes).map_err(|_| OpError::Integrity)?;
        let header_len = bytes.len() - body.len();
        Ok(Self { bytes, header_len, header })
    }

    /// The header bytes, which the AEAD binds.
    pub fn header_bytes(&self) -> &[u8] {
        &self.bytes[..self.header_len]
    }

    /// The backend-specific body.
    pub fn body(&self) -> &[u8] {
        &self.bytes[self.header_len..]
    }

    /// The whole blob.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Whether the body is in direct mode.
    pub fn is_direct(&self) -> bool {
        self.header.mode == BlobMode::Direct
    }

    /// The blob's mode.
    pub fn mode(&self) -> BlobMode {
        self.header.mode
    }
}

/// The outcome of one operation.
pub type OpResult = Result<Reply, OpError>;

/// One operation of a batch and its client's deadline (`None`: the client set none;
/// a backend that waits, KMS say, applies its own `max_wait`).
#[derive(Debug)]
pub struct BatchOp {
    /// What to do.
    pub op: Op,
    /// When the client stops waiting.
    pub deadline: Option<Instant>,
}

impl BatchOp {
    /// `op` with no client deadline.
    pub fn new(op: Op) -> Self {
        Self { op, deadline: None }
    }
}
