//! An executor thread's handle on the soft keystore, and how a batch runs:
//!
//! - `aes-256`: AES-256-GCM under the key version's KEK, body `nonce:[12]
//!   ciphertext+tag`, the blob header and the client AAD as associated data (mode 1);
//! - `ml-kem-768`: WRAP encapsulates to the version's public key, UNWRAP decapsulates
//!   with its private key (mode 3, see `keymux_crypto::kem`), the same associated data;
//! - signing keys: SIGN with the current version's private key;
//! - ENCRYPT and DECRYPT: the raw AES-256-GCM on an `aes-256` key's KEK, a random IV,
//!   the caller's AAD as it is, no blob.

use std::sync::{Arc, RwLock};

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{Aead, Payload};
use keymux_crypto::{CryptoError, PrivateKey, kem};
use keymux_protocol::{BlobHeader, BlobMode, Reply, SecretBytes};

use super::keystore::fill_random;
use super::{NONCE_LEN, SoftState, VersionKey};
use crate::backend::{BackendWorker, BatchOp, Completions, Op, OpResult, ParsedBlob};
use crate::error::OpError;
use crate::keys::KeyInfo;

/// AES-GCM tag bytes.
const TAG_LEN: usize = 16;

/// An executor thread's handle on the soft keystore.
pub(super) struct SoftWorker {
    state: Arc<RwLock<SoftState>>,
}

/// The operation error for a failure of `keymux_crypto` (never carrying key material).
fn crypto_error(error: CryptoError) -> OpError {
    match error {
        CryptoError::Unsupported { .. } => OpError::Unsupported,
        CryptoError::DigestLength { .. } => OpError::BadRequest(error.to_string()),
        CryptoError::Integrity | CryptoError::BodyTooShort { .. } => OpError::Integrity,
        other => OpError::Internal(other.to_string()),
    }
}

impl SoftWorker {
    pub(super) fn new(state: Arc<RwLock<SoftState>>) -> Self {
        Self { state }
    }

    fn version_key(state: &SoftState, key: &str, version: u32) -> Result<Arc<VersionKey>, OpError> {
        state
            .keys
            .get(key)
            .and_then(|versions| versions.get(&version))
            .cloned()
            .ok_or_else(|| OpError::UnknownVersion { key: key.into(), version })
    }

    /// Wraps `plaintext` under `key`'s current version: AES-GCM (mode 1), or an ML-KEM
    /// encapsulation (mode 3).
    fn seal(state: &SoftState, key: &KeyInfo, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, OpError> {
        key.check_wraps()?;
        let version = key.current_version()?;
        let version_key = Self::version_key(state, &key.name, version)?;
        let mode = match &*version_key {
            VersionKey::Aes(_) => BlobMode::Direct,
            VersionKey::Private(_) => BlobMode::Kem,
        };
        let header = BlobHeader { key: key.name.clone(), version, mode };
        let mut blob = header.to_bytes().map_err(|e| OpError::Internal(e.to_string()))?;
        let associated = BlobHeader::associated_data(&blob, aad);
        match &*version_key {
            VersionKey::Aes(cipher) => {
                let mut nonce = [0u8; NONCE_LEN];
                fill_random(&mut nonce);
                let sealed = cipher
                    .encrypt(&nonce.into(), Payload { msg: plaintext, aad: &associated })
                    .map_err(|_| OpError::Internal("AES-GCM encryption failed".into()))?;
                blob.extend_from_slice(&nonce);
                blob.extend_from_slice(&sealed);
            }
            VersionKey::Private(private) => {
                let body = kem::seal(&private.public_key(), &associated, plaintext).map_err(crypto_error)?;
                blob.extend_from_slice(&body);
            }
        }
        Ok(blob)
    }

    /// Unwraps a blob of `key`: mode 1 under an `aes-256` key, mode 3 under an
    /// `ml-kem-768` key; anything else does not verify.
    fn open(state: &SoftState, key: &KeyInfo, aad: &[u8], blob: &ParsedBlob) -> Result<SecretBytes, OpError> {
        key.check_decryptable(blob.header.version)?;
        let version_key = Self::version_key(state, &key.name, blob.header.version)?;
        let associated = BlobHeader::associated_data(blob.header_bytes(), aad);
        match (&*version_key, blob.mode()) {
            (VersionKey::Aes(cipher), BlobMode::Direct) => Self::open_aes(cipher, &associated, blob.body()),
            (VersionKey::Private(private), BlobMode::Kem) => {
                let dek = kem::open(private, &associated, blob.body()).map_err(crypto_error)?;
                Ok(SecretBytes::copy_from(&dek))
            }
            _ => Err(OpError::Integrity),
        }
    }

    fn open_aes(cipher: &Aes256Gcm, associated: &[u8], body: &[u8]) -> Result<SecretBytes, OpError> {
        if body.len() < NONCE_LEN + 16 {
            return Err(OpError::Integrity);
        }
        let (nonce, sealed) = body.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| OpError::Integrity)?;
        cipher
            .decrypt(&nonce.into(), Payload { msg: sealed, aad: associated })
            .map(SecretBytes::new)
            .map_err(|_| OpError::Integrity)
    }

    /// The AES key of `key` version `version`; an `ml-kem-768` key has none.
    fn aes_cipher(state: &SoftState, key: &KeyInfo, version: u32) -> Result<Arc<VersionKey>, OpError> {
        let version_key = Self::version_key(state, &key.name, version)?;
        match &*version_key {
            VersionKey::Aes(_) => Ok(version_key),
            VersionKey::Private(_) => Err(OpError::BadRequest(format!(
                "key {:?} is not an aes-256 key: ENCRYPT needs one",
                key.name
            ))),
        }
    }

    /// The raw AEAD: AES-256-GCM under `version` (0: the current one), a fresh random IV, the
    /// caller's AAD as it is.
    fn encrypt(state: &SoftState, key: &KeyInfo, version: u32, aad: &[u8], plaintext: &[u8]) -> OpResult {
        key.check_wraps()?;
        let version = key.encryption_version(version)?;
        let version_key = Self::aes_cipher(state, key, version)?;
        let VersionKey::Aes(cipher) = &*version_key else { return Err(OpError::Unsupported) };
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce);
        let mut ciphertext = cipher
            .encrypt(&nonce.into(), Payload { msg: plaintext, aad })
            .map_err(|_| OpError::Internal("AES-GCM encryption failed".into()))?;
        let tag = ciphertext.split_off(ciphertext.len() - TAG_LEN);
        Ok(Reply::Encrypt { version, iv: nonce.to_vec(), ciphertext, tag })
    }

    /// The inverse of [`SoftWorker::encrypt`]; any IV or tag of the wrong length, like
    /// any other mismatch, does not verify.
    fn decrypt(
        state: &SoftState,
        key: &KeyInfo,
        version: u32,
        aad: &[u8],
        iv: &[u8],
        ciphertext: &[u8],
        tag: &[u8],
    ) -> OpResult {
        key.check_wraps()?;
        key.check_decryptable(version)?;
        let version_key = Self::aes_cipher(state, key, version)?;
        let VersionKey::Aes(cipher) = &*version_key else { return Err(OpError::Unsupported) };
        let nonce: [u8; NONCE_LEN] = iv.try_into().map_err(|_| OpError::Integrity)?;
        if tag.len() != TAG_LEN {
            return Err(OpError::Integrity);
        }
        let sealed = [ciphertext, tag].concat();
        let plaintext =
            cipher.decrypt(&nonce.into(), Payload { msg: &sealed, aad }).map_err(|_| OpError::Integrity)?;
        Ok(Reply::Decrypt { plaintext: SecretBytes::new(plaintext) })
    }

    /// Signs with `key`'s current version.
    fn sign(state: &SoftState, key: &KeyInfo, input: &[u8], digest: bool) -> OpResult {
        key.check_signs()?;
        let version = key.current_version()?;
        let VersionKey::Private(private) = &*Self::version_key(state, &key.name, version)? else {
            return Err(OpError::Internal(format!("key {:?} holds no private key", key.name)));
        };
        let signature = Self::sign_with(private, input, digest).map_err(crypto_error)?;
        Ok(Reply::Sign { version, signature })
    }

    fn sign_with(private: &PrivateKey, input: &[u8], digest: bool) -> Result<Vec<u8>, CryptoError> {
        if digest { private.sign_digest(input) } else { private.sign(input) }
    }

    fn run(state: &SoftState, key: &KeyInfo, op: &Op) -> OpResult {
        match op {
            Op::Wrap { aad, plaintext } => {
                Ok(Reply::Wrap { blob: Self::seal(state, key, aad, plaintext.expose())? })
            }
            Op::GenerateDataKey { aad, length } => {
                let mut plaintext = SecretBytes::zeroed(usize::from(*length));
                fill_random(plaintext.expose_mut());
                let blob = Self::seal(state, key, aad, plaintext.expose())?;
                Ok(Reply::GenerateDataKey { plaintext, blob })
            }
            Op::Unwrap { aad, blob } => Ok(Reply::Unwrap { plaintext: Self::open(state, key, aad, blob)? }),
            Op::Rewrap { aad, blob } => {
                let plaintext = Self::open(state, key, aad, blob)?;
                Ok(Reply::Rewrap { blob: Self::seal(state, key, aad, plaintext.expose())? })
            }
            Op::Sign { input, digest } => Self::sign(state, key, input, *digest),
            Op::Encrypt { version, aad, plaintext } => {
                Self::encrypt(state, key, *version, aad, plaintext.expose())
            }
            Op::Decrypt { version, aad, iv, ciphertext, tag } => {
                Self::decrypt(state, key, *version, aad, iv, ciphertext, tag)
            }
        }
    }
}

impl BackendWorker for SoftWorker {
    fn run_batch(&mut self, key: &KeyInfo, ops: &[BatchOp], done: &mut Completions<'_>) {
        let state = self.state.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        for (index, batch_op) in ops.iter().enumerate() {
            done(index, Self::run(&state, key, &batch_op.op));
        }
    }
}
