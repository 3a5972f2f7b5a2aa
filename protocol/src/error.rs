//! Typed protocol errors. Tests match on these values, never on message text.

use crate::frame::Status;

/// A payload field, named in errors so that a client learns exactly what was wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Field {
    /// The `key` name (str8).
    Key,
    /// The additional authenticated data (bytes16).
    Aad,
    /// The plaintext key to wrap, or an unwrapped key (bytes16).
    Plaintext,
    /// A wrapped blob (bytes16).
    Blob,
    /// GENERATE_DATA_KEY's `length` (u16).
    Length,
    /// The deadline (`timeout_ms`, u32).
    Timeout,
    /// HELLO's `client_name` (str8).
    ClientName,
    /// A response's `status` (u16).
    Status,
    /// A failure's `message` (bytes16).
    Message,
    /// A retryable failure's `retry_after_ms` (u32).
    RetryAfter,
    /// HELLO's `max_frame` (u32).
    MaxFrame,
    /// HELLO's `max_in_flight` (u32).
    MaxInFlight,
    /// HELLO's `server_version` (str8).
    ServerVersion,
    /// SIGN's and VERIFY's `input`: the message, or its digest under the DIGEST flag
    /// (bytes16).
    Input,
    /// A signature: SIGN's result, VERIFY's argument (bytes16).
    Signature,
    /// A key version (u32): the one that signed, the one to verify or look up under.
    Version,
    /// VERIFY's result, `valid` (u8, 1 or 0).
    Valid,
    /// GET_PUBLIC_KEY's `algorithm` (u8, an [`crate::Algorithm`] id).
    Algorithm,
    /// GET_PUBLIC_KEY's `public_key`, a DER SubjectPublicKeyInfo (bytes16).
    PublicKey,
    /// ENCRYPT's and DECRYPT's AES-GCM initialisation vector (bytes16).
    Iv,
    /// ENCRYPT's and DECRYPT's ciphertext, as long as its plaintext (bytes16).
    Ciphertext,
    /// ENCRYPT's and DECRYPT's AES-GCM authentication tag (bytes16).
    Tag,
}

impl Field {
    /// The field's name as written in the protocol specification.
    pub fn name(self) -> &'static str {
        match self {
            Field::Key => "key",
            Field::Aad => "aad",
            Field::Plaintext => "plaintext",
            Field::Blob => "blob",
            Field::Length => "length",
            Field::Timeout => "timeout_ms",
            Field::ClientName => "client_name",
            Field::Status => "status",
            Field::Message => "message",
            Field::RetryAfter => "retry_after_ms",
            Field::MaxFrame => "max_frame",
            Field::MaxInFlight => "max_in_flight",
            Field::ServerVersion => "server_version",
            Field::Input => "input",
            Field::Signature => "signature",
            Field::Version => "version",
            Field::Valid => "valid",
            Field::Algorithm => "algorithm",
            Field::PublicKey => "public_key",
            Field::Iv => "iv",
            Field::Ciphertext => "ciphertext",
            Field::Tag => "tag",
        }
    }
}

impl std::fmt::Display for Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A fault in the framing itself. The byte stream can no longer be trusted, so the
/// connection ends (after a BAD_REQUEST response where [`FrameError::request_id`] is
/// known).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The length prefix is under the 12-byte frame header.
    #[error("frame length {0} is shorter than the 12-byte header")]
    TooShort(u32),
    /// The length prefix is over `max_frame`; the body is never read.
    #[error("frame length {length} exceeds max_frame {max}")]
    TooLong {
        /// The announced length.
        length: u32,
        /// The configured limit.
        max: u32,
    },
    /// The frame's version byte is not 1.
    #[error("unsupported protocol version {version}")]
    BadVersion {
        /// The version byte received.
        version: u8,
        /// The frame's opcode byte, for the response.
        opcode: u8,
        /// The frame's request id, for the response.
        request_id: u64,
    },
}

impl FrameError {
    /// The request id to answer before closing, where the frame had a readable one.
    pub fn request_id(&self) -> Option<(u64, u8)> {
        match *self {
            FrameError::BadVersion { request_id, opcode, .. } => Some((request_id, opcode)),
            FrameError::TooShort(_) | FrameError::TooLong { .. } => None,
        }
    }
}

/// A well-framed message whose payload does not parse. The peer gets a status (see
/// [`PayloadError::status`]) and the connection stays up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PayloadError {
    /// The payload ended inside `field`.
    #[error("payload truncated in field {0}")]
    Truncated(Field),
    /// Bytes were left over after the last field.
    #[error("{0} trailing bytes after the payload")]
    TrailingBytes(usize),
    /// A string field is not valid UTF-8.
    #[error("field {0} is not valid UTF-8")]
    InvalidUtf8(Field),
    /// A str8 field is empty (str8 is 1..=255 bytes), or a length is zero.
    #[error("field {0} is empty")]
    Empty(Field),
    /// The body is shorter than the 12-byte frame header (only possible when a caller
    /// bypasses [`crate::FrameSplitter`], which refuses such frames).
    #[error("frame body of {0} bytes is shorter than the 12-byte header")]
    ShortBody(usize),
    /// A field exceeds its configured limit.
    #[error("field {field} is {len} bytes, over the limit of {max}")]
    TooLarge {
        /// The field.
        field: Field,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Flag bits that are unknown, or not allowed on this opcode.
    #[error("flags {0:#06x} are not allowed on this opcode")]
    BadFlags(u16),
    /// The opcode is not one this protocol version defines.
    #[error("unsupported opcode {0:#04x}")]
    UnknownOpcode(u8),
    /// A request opcode where a response was expected, or the reverse.
    #[error("opcode {0:#04x} travels the other way")]
    WrongDirection(u8),
    /// A response carries a status code this version does not define.
    #[error("unknown status code {0}")]
    UnknownStatus(u16),
    /// A one-byte field holds a value this version does not define: VERIFY's `valid`
    /// other than 0 or 1, or an `algorithm` that is no [`crate::Algorithm`]'s id.
    #[error("field {field} has the undefined value {value}")]
    BadValue {
        /// The field.
        field: Field,
        /// The byte received.
        value: u8,
    },
}

impl PayloadError {
    /// The status a request with this fault is answered with: UNSUPPORTED for an
    /// opcode that is not a request opcode, BAD_REQUEST for everything else.
    pub fn status(&self) -> Status {
        match self {
            PayloadError::UnknownOpcode(_) | PayloadError::WrongDirection(_) => Status::Unsupported,
            _ => Status::BadRequest,
        }
    }
}

/// A request that was framed correctly but could not be parsed, with what is needed to
/// answer it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("request {request_id} (opcode {opcode:#04x}) rejected: {error}")]
pub struct Rejected {
    /// The frame's request id.
    pub request_id: u64,
    /// The frame's raw opcode byte.
    pub opcode: u8,
    /// What was wrong.
    pub error: PayloadError,
}

/// A message that cannot be put on the wire as given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The frame body would exceed `max_frame`.
    #[error("frame of {len} bytes exceeds max_frame {max}")]
    FrameTooLong {
        /// The body length the frame would have.
        len: usize,
        /// The limit.
        max: u32,
    },
    /// A field does not fit its length prefix (255 for str8, 65535 for bytes16).
    #[error("field {field} is {len} bytes, over its maximum of {max}")]
    FieldTooLong {
        /// The field.
        field: Field,
        /// Its length.
        len: usize,
        /// The maximum its prefix allows.
        max: usize,
    },
    /// A str8 field is empty.
    #[error("field {0} must not be empty")]
    Empty(Field),
    /// A flag is set that the opcode does not allow (cache bypass outside UNWRAP and
    /// REWRAP; the digest flag cannot be, as only SIGN and VERIFY can express it).
    #[error("flags {flags:#06x} are not allowed on {opcode:?}")]
    BadFlags {
        /// The flags the frame would carry.
        flags: u16,
        /// The request's opcode.
        opcode: crate::frame::Opcode,
    },
}

/// A wrapped blob whose header does not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BlobError {
    /// The blob ends inside its header.
    #[error("blob is truncated")]
    Truncated,
    /// The blob does not start with `KMX`.
    #[error("blob does not start with the KMX magic")]
    BadMagic,
    /// The blob's format byte is not one this version reads.
    #[error("unsupported blob format {0}")]
    UnsupportedFormat(u8),
    /// The key name is empty or not UTF-8.
    #[error("blob key name is invalid")]
    BadKeyName,
    /// The mode byte is not 1 (direct), 2 (intermediate) or 3 (KEM).
    #[error("unknown blob mode {0}")]
    UnknownMode(u8),
    /// The blob carries no body after its header.
    #[error("blob has an empty body")]
    EmptyBody,
}

/// A key type name that is no signature algorithm's (see [`crate::Algorithm::name`]).
/// The caller holds the name it tried, so the error does not repeat it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a signature algorithm; expected one of {}", algorithm_names())]
pub struct UnknownAlgorithm;

/// The signature algorithms' key type names, for [`UnknownAlgorithm`]'s message.
fn algorithm_names() -> String {
    crate::Algorithm::ALL.map(crate::Algorithm::name).join(", ")
}
