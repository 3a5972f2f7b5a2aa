//! Typed client errors. Callers match on variants, never on message text.

use std::io;
use std::time::Duration;

use keymux_protocol::{Algorithm, BlobError, EncodeError, Failure, FrameError, Rejected, Status};

use crate::config::Endpoint;

/// A `Result` whose error is the client's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a call failed.
///
/// The first ten variants are the proxy's non-OK statuses, one each, with the message it
/// sent (never key material); the retryable ones also carry the proxy's `retry_after`.
/// The rest are raised by the client itself. [`Error::status`] gives the wire status,
/// and [`Error::is_retryable`] says whether trying again may succeed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// BAD_REQUEST: the proxy could not parse the request.
    #[error("bad request: {message}")]
    BadRequest {
        /// The proxy's explanation.
        message: String,
    },
    /// UNKNOWN_KEY: no key of that name.
    #[error("unknown key: {message}")]
    UnknownKey {
        /// The proxy's explanation.
        message: String,
    },
    /// FORBIDDEN: this client may not use the key or operation.
    #[error("forbidden: {message}")]
    Forbidden {
        /// The proxy's explanation.
        message: String,
    },
    /// INTEGRITY: the AAD or the blob does not verify.
    #[error("integrity check failed: {message}")]
    Integrity {
        /// The proxy's explanation.
        message: String,
    },
    /// KEY_DISABLED: the blob's key version is disabled.
    #[error("key disabled: {message}")]
    KeyDisabled {
        /// The proxy's explanation.
        message: String,
    },
    /// BUSY (retryable): the proxy is overloaded.
    #[error("proxy busy: {message} (retry after {retry_after:?})")]
    Busy {
        /// The proxy's explanation.
        message: String,
        /// How long the proxy asked the client to wait.
        retry_after: Duration,
    },
    /// BACKEND_UNAVAILABLE (retryable): the HSM or KMS cannot be reached.
    #[error("backend unavailable: {message} (retry after {retry_after:?})")]
    BackendUnavailable {
        /// The proxy's explanation.
        message: String,
        /// How long the proxy asked the client to wait.
        retry_after: Duration,
    },
    /// TIMEOUT (retryable): the proxy dropped the request when its deadline passed.
    #[error("proxy timed out: {message} (retry after {retry_after:?})")]
    Timeout {
        /// The proxy's explanation.
        message: String,
        /// How long the proxy asked the client to wait.
        retry_after: Duration,
    },
    /// UNSUPPORTED: the proxy does not support the operation.
    #[error("unsupported: {message}")]
    Unsupported {
        /// The proxy's explanation.
        message: String,
    },
    /// INTERNAL: a bug or an unexpected backend failure in the proxy.
    #[error("proxy internal error: {message}")]
    Internal {
        /// The proxy's explanation.
        message: String,
    },
    /// Connecting to an endpoint, or the HELLO exchange on a new connection, failed at
    /// the transport level (refused, unreachable, reset, timed out).
    #[error("cannot connect to {endpoint}: {source}")]
    Connect {
        /// The endpoint that failed (the last one tried, with several).
        endpoint: Endpoint,
        /// The transport error.
        #[source]
        source: io::Error,
    },
    /// The connection closed while the call was queued or in flight. The request may or
    /// may not have been processed; every keymux operation is safe to retry.
    #[error("connection closed before the response arrived")]
    ConnectionClosed,
    /// The proxy broke the protocol; the call's connection is not trusted.
    #[error("protocol violation: {0}")]
    Protocol(#[from] ProtocolError),
    /// The call's deadline passed before a response arrived.
    #[error("deadline exceeded")]
    DeadlineExceeded,
    /// An endpoint string does not parse.
    #[error(transparent)]
    InvalidEndpoint(#[from] InvalidEndpoint),
    /// The [`ClientConfig`](crate::ClientConfig) is not usable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The request cannot be put on the wire (an empty or too long key name, a field
    /// over 65535 bytes, a frame over the proxy's `max_frame`). Not sent.
    #[error("request cannot be encoded: {0}")]
    InvalidRequest(#[from] EncodeError),
    /// An envelope is malformed or does not decrypt.
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// A REWRAP came back under another key, or an older version, than the blob had:
    /// the proxy's key list is stale (or it is not the proxy it should be). Keep the
    /// original blob; the rewrapped one is not returned.
    #[error(
        "REWRAP returned {new_key:?} version {to} for a blob of {key:?} version {from}: the proxy's key \
         list looks stale; keep the original blob"
    )]
    RewrapWentBack {
        /// The original blob's key.
        key: String,
        /// The original blob's version.
        from: u32,
        /// The key the proxy answered with.
        new_key: String,
        /// The version the proxy answered with.
        to: u32,
    },
    /// A public key cannot do what was asked locally (verify, wrap offline).
    #[error(transparent)]
    PublicKey(#[from] PublicKeyError),
}

impl Error {
    /// The wire status this error carries, for errors the proxy sent.
    pub fn status(&self) -> Option<Status> {
        Some(match self {
            Error::BadRequest { .. } => Status::BadRequest,
            Error::UnknownKey { .. } => Status::UnknownKey,
            Error::Forbidden { .. } => Status::Forbidden,
            Error::Integrity { .. } => Status::Integrity,
            Error::KeyDisabled { .. } => Status::KeyDisabled,
            Error::Busy { .. } => Status::Busy,
            Error::BackendUnavailable { .. } => Status::BackendUnavailable,
            Error::Timeout { .. } => Status::Timeout,
            Error::Unsupported { .. } => Status::Unsupported,
            Error::Internal { .. } => Status::Internal,
            _ => return None,
        })
    }

    /// Whether the same call may succeed if tried again: the retryable statuses (BUSY,
    /// BACKEND_UNAVAILABLE, TIMEOUT), a lost connection, and a failed connect.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Busy { .. }
                | Error::BackendUnavailable { .. }
                | Error::Timeout { .. }
                | Error::ConnectionClosed
                | Error::Connect { .. }
        )
    }

    /// The wait the proxy asked for before a retry, for the retryable statuses.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Busy { retry_after, .. }
            | Error::BackendUnavailable { retry_after, .. }
            | Error::Timeout { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// The message the proxy sent, for errors the proxy sent.
    pub fn server_message(&self) -> Option<&str> {
        match self {
            Error::BadRequest { message }
            | Error::UnknownKey { message }
            | Error::Forbidden { message }
            | Error::Integrity { message }
            | Error::KeyDisabled { message }
            | Error::Busy { message, .. }
            | Error::BackendUnavailable { message, .. }
            | Error::Timeout { message, .. }
            | Error::Unsupported { message }
            | Error::Internal { message } => Some(message),
            _ => None,
        }
    }
}

/// The one place a wire failure becomes a client error.
impl From<Failure> for Error {
    fn from(failure: Failure) -> Self {
        let Failure { status, message, retry_after_ms } = failure;
        let retry_after = Duration::from_millis(u64::from(retry_after_ms));
        match status {
            Status::BadRequest => Error::BadRequest { message },
            Status::UnknownKey => Error::UnknownKey { message },
            Status::Forbidden => Error::Forbidden { message },
            Status::Integrity => Error::Integrity { message },
            Status::KeyDisabled => Error::KeyDisabled { message },
            Status::Busy => Error::Busy { message, retry_after },
            Status::BackendUnavailable => Error::BackendUnavailable { message, retry_after },
            Status::Timeout => Error::Timeout { message, retry_after },
            Status::Unsupported => Error::Unsupported { message },
            Status::Internal => Error::Internal { message },
            // `ResponseFrame::decode` never yields a failure with OK or an unknown code.
            other => Error::Protocol(ProtocolError::UnexpectedStatus(other)),
        }
    }
}

/// How the proxy broke the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The response stream's framing is corrupt; the connection was closed.
    #[error("corrupt framing: {0}")]
    Frame(#[from] FrameError),
    /// A response's payload does not parse.
    #[error("malformed response: {0}")]
    Malformed(#[from] Rejected),
    /// The response answers a different operation than the request.
    #[error("response opcode {got:#04x} does not answer request opcode {expected:#04x}")]
    UnexpectedReply {
        /// The request's opcode byte.
        expected: u8,
        /// The response's opcode byte (without the response bit).
        got: u8,
    },
    /// A failure carried a status that is not a failure.
    #[error("unexpected status {0}")]
    UnexpectedStatus(Status),
    /// A REWRAP answered with a blob whose header does not parse.
    #[error("REWRAP returned a malformed blob: {0}")]
    MalformedBlob(BlobError),
    /// HELLO announced limits the client cannot work with.
    #[error("HELLO announced max_frame {max_frame}, outside the protocol's range")]
    InvalidHello {
        /// The announced `max_frame`.
        max_frame: u32,
    },
    /// The proxy answered a request id the client never sent during the handshake.
    #[error("expected the HELLO response, got request id {0}")]
    UnexpectedRequestId(u64),
    /// GET_PUBLIC_KEY answered with bytes that are not a DER SubjectPublicKeyInfo of
    /// the algorithm it named.
    #[error("GET_PUBLIC_KEY answered a {algorithm} key that does not parse")]
    InvalidPublicKey {
        /// The algorithm the response named.
        algorithm: Algorithm,
    },
    /// GET_PUBLIC_KEY answered for another version than the one asked for (or for
    /// version 0, which names no version).
    #[error("GET_PUBLIC_KEY for version {requested} answered version {got}")]
    UnexpectedVersion {
        /// The version asked for; 0 = the current one.
        requested: u32,
        /// The version answered.
        got: u32,
    },
}

/// An endpoint string that does not parse; each variant keeps the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidEndpoint {
    /// Not `tcp://`, `tls://`, `quic://` or `unix://`.
    #[error("invalid endpoint {0:?}: expected tcp://, tls:// or quic://host:port, or unix:///path")]
    UnknownScheme(String),
    /// A TCP endpoint without `:port`.
    #[error("invalid endpoint {0:?}: missing :port")]
    MissingPort(String),
    /// The port is not a number in 1..=65535.
    #[error("invalid endpoint {0:?}: port must be 1 to 65535")]
    InvalidPort(String),
    /// The host is empty or malformed (an IPv6 address must be in brackets).
    #[error("invalid endpoint {0:?}: bad host (write IPv6 addresses as [::1])")]
    InvalidHost(String),
    /// A Unix socket path that is not absolute (`unix:///path` has three slashes).
    #[error("invalid endpoint {0:?}: unix socket path must be absolute, as in unix:///run/keymux.sock")]
    RelativePath(String),
}

/// A [`ClientConfig`](crate::ClientConfig) setting that is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid client config: {key}: {reason}")]
pub struct ConfigError {
    /// The setting's field name.
    pub key: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

/// Why an envelope could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// The envelope ends before its fixed fields.
    #[error("envelope is truncated")]
    Truncated,
    /// The envelope does not start with `KMXE`.
    #[error("not a keymux envelope (bad magic)")]
    BadMagic,
    /// The envelope's version is not one this client reads.
    #[error("unsupported envelope version {0}")]
    UnsupportedVersion(u8),
    /// The proxy returned a data key that is not 32 bytes.
    #[error("data key is {0} bytes, AES-256-GCM needs 32")]
    DataKeyLength(usize),
    /// The ciphertext, the AAD or the envelope header was altered, or the wrong AAD was
    /// given.
    #[error("envelope does not authenticate")]
    Authentication,
    /// The wrapped data key does not fit the envelope's 16-bit length field.
    #[error("wrapped data key of {0} bytes does not fit an envelope")]
    BlobTooLong(usize),
}

/// Why something done locally with a public key, without calling the proxy, could not
/// be done. A signature that does not verify is not an error: verifying answers
/// `Ok(false)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PublicKeyError {
    /// The bytes are not a DER SubjectPublicKeyInfo of a key of this algorithm.
    #[error("not a valid {algorithm} public key")]
    InvalidPublicKey {
        /// The algorithm the key was said to have.
        algorithm: Algorithm,
    },
    /// A key name that no request or blob can carry: 1 to 255 bytes of UTF-8.
    #[error("key names are 1 to 255 bytes, got {len}")]
    InvalidKeyName {
        /// The name's length in bytes.
        len: usize,
    },
    /// Version 0 names no version (it means "the current one" only in a request).
    #[error("a public key belongs to a version of 1 or more, not 0")]
    InvalidVersion,
    /// The key does not sign: an `ml-kem-768` key wraps.
    #[error("{algorithm} keys do not sign, so nothing verifies under them")]
    CannotVerify {
        /// The key's algorithm.
        algorithm: Algorithm,
    },
    /// The algorithm signs the message itself (Ed25519, ML-DSA), never a digest.
    #[error("{algorithm} signs the message itself, not a digest")]
    DigestUnsupported {
        /// The key's algorithm.
        algorithm: Algorithm,
    },
    /// A digest of the wrong length for the algorithm's hash.
    #[error("digest is {actual} bytes, {expected} expected")]
    DigestLength {
        /// The hash's output length: 32 for SHA-256, 48 for SHA-384.
        expected: usize,
        /// The length given.
        actual: usize,
    },
    /// Only an `ml-kem-768` key's public key wraps offline (blob mode 3).
    #[error("{algorithm} keys cannot wrap offline: only ml-kem-768 keys can")]
    CannotWrap {
        /// The key's algorithm.
        algorithm: Algorithm,
    },
    /// The data key is too long for its blob to fit a request (a `bytes16` field).
    #[error("a data key of {len} bytes makes a blob too long for UNWRAP (at most {max} bytes fit)")]
    DataKeyTooLong {
        /// The data key's length.
        len: usize,
        /// The longest data key whose blob fits, for this key name.
        max: usize,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_failure_status_maps_to_its_variant() {
        for status in Status::ALL.into_iter().filter(|s| *s != Status::Ok) {
            let error = Error::from(Failure::retry_after(status, "why", 250));
            assert_eq!(error.status(), Some(status));
            assert_eq!(error.server_message(), Some("why"));
            assert_eq!(error.is_retryable(), status.is_retryable(), "{status}");
            let expected_retry = status.is_retryable().then_some(Duration::from_millis(250));
            assert_eq!(error.retry_after(), expected_retry, "{status}");
        }
    }

    #[test]
    fn client_side_errors_have_no_status() {
        assert_eq!(Error::ConnectionClosed.status(), None);
        assert!(Error::ConnectionClosed.is_retryable());
        assert!(!Error::DeadlineExceeded.is_retryable());
        let connect = Error::Connect {
            endpoint: Endpoint::tcp("localhost", 1),
            source: io::Error::from(io::ErrorKind::ConnectionRefused),
        };
        assert!(connect.is_retryable());
        assert!(connect.to_string().contains("tcp://localhost:1"));
    }
}
