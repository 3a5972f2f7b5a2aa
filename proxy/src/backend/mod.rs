//! Backends hold the key-encryption keys and run batches of operations on them.
//!
//! A backend is a factory of [`BackendWorker`]s. Each executor thread opens one worker
//! and owns it for its life: for PKCS#11 that is one pinned, logged-in session; for
//! the soft keystore it is a handle on the shared key material. Workers take whole
//! batches, so a backend with a high per-call cost can pack them.

pub mod kms;
pub mod pkcs11;
pub mod soft;

use std::time::Instant;

use keymux_protocol::{BlobHeader, BlobMode, Reply, SecretBytes};

use crate::error::OpError;
use crate::keys::{KeyInfo, VersionState};

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
}

/// The outcome of one operation.
pub type OpResult = Result<Reply, OpError>;

/// A source of key-encryption keys.
pub trait Backend: Send + Sync + 'static {
    /// A short name for metrics and logs (`soft`, `pkcs11`, `kms`).
    fn kind(&self) -> &'static str;

    /// Every key and version the backend holds: the source of truth for the registry.
    fn list_keys(&self) -> Result<Vec<KeyInfo>, OpError>;

    /// Opens the per-thread state an executor needs (a session, a connection).
    fn open_worker(&self) -> Result<Box<dyn BackendWorker>, OpError>;

    /// How many executor threads this backend wants (PKCS#11: one per session); `None`
    /// leaves it to `batch.executor_threads`.
    fn preferred_workers(&self) -> Option<usize> {
        None
    }

    /// Creates key `name` with version 1.
    fn create_key(&self, name: &str) -> Result<KeyInfo, OpError>;

    /// Adds a version to `name`, which becomes current; returns its number.
    fn rotate_key(&self, name: &str) -> Result<u32, OpError>;

    /// Enables or disables one version.
    fn set_version_state(&self, name: &str, version: u32, state: VersionState) -> Result<(), OpError>;

    /// Refuses unwraps of blobs from versions below `version`.
    fn set_min_decryption_version(&self, name: &str, version: u32) -> Result<(), OpError>;

    /// Destroys one version's key material for good.
    fn destroy_version(&self, name: &str, version: u32) -> Result<(), OpError>;

    /// Adds the backend's own metrics to the proxy's registry (default: none).
    fn register_metrics(&self, _registry: &mut prometheus_client::registry::Registry) {}
}

/// Checks that `version` of `key` may be destroyed: never the current version (new
/// wraps use it) and never the highest (version numbers are never reused, so a blob
/// can never name a version other than the one that sealed it).
pub fn check_destroyable(key: &KeyInfo, version: u32) -> Result<(), OpError> {
    if key.current_version().ok() == Some(version) {
        return Err(OpError::BadRequest(format!(
            "version {version} is the current version of {:?}: rotate first",
            key.name
        )));
    }
    if key.versions.last().is_some_and(|v| v.version == version) {
        return Err(OpError::BadRequest(format!(
            "version {version} is the latest version of {:?}: rotate first, so version numbers are never reused",
            key.name
        )));
    }
    Ok(())
}

/// Checks a key name: 1 to 255 bytes of UTF-8 (a str8), no control characters.
pub fn validate_key_name(name: &str) -> Result<(), OpError> {
    if name.is_empty() || name.len() > 255 || name.chars().any(char::is_control) {
        return Err(OpError::BadRequest("key names are 1 to 255 bytes with no control characters".into()));
    }
    Ok(())
}

/// Per-executor-thread state that runs batches. Owned by one thread for its life.
pub trait BackendWorker: Send {
    /// Runs `ops` (all on `key`), pushing exactly one result per op onto `out`, in
    /// order. Must not panic on any input.
    fn run_batch(&mut self, key: &KeyInfo, ops: &[Op], out: &mut Vec<OpResult>);

    /// [`BackendWorker::run_batch`], knowing each operation's deadline (`deadlines[i]`
    /// is `ops[i]`'s), handing each result to `done(i, result)` (once per op, in any
    /// order) as soon as it is ready. Backends whose operations finish at different
    /// times (KMS calls, admission waits, retries) answer each client without waiting
    /// for the rest of the batch. The default runs [`BackendWorker::run_batch`] and
    /// hands the results over in order.
    fn run_batch_each(
        &mut self,
        key: &KeyInfo,
        ops: &[Op],
        deadlines: &[Option<Instant>],
        done: &mut (dyn FnMut(usize, OpResult) + Send),
    ) {
        let _ = deadlines;
        let mut out = Vec::with_capacity(ops.len());
        self.run_batch(key, ops, &mut out);
        out.into_iter().enumerate().for_each(|(index, result)| done(index, result));
    }
}
