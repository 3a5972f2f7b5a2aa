//! An executor thread's handle on the soft keystore, and how a batch runs: AES-256-GCM
//! under the key version's KEK, `nonce:[12] ciphertext+tag`, the blob header and the
//! client AAD as associated data.

use std::sync::{Arc, RwLock};

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{Aead, Payload};
use keymux_protocol::{BlobHeader, BlobMode, Reply, SecretBytes};

use super::keystore::fill_random;
use super::{NONCE_LEN, SoftState};
use crate::backend::{BackendWorker, BatchOp, Completions, Op, OpResult, ParsedBlob};
use crate::error::OpError;
use crate::keys::KeyInfo;

/// An executor thread's handle on the soft keystore.
pub(super) struct SoftWorker {
    state: Arc<RwLock<SoftState>>,
}

impl SoftWorker {
    pub(super) fn new(state: Arc<RwLock<SoftState>>) -> Self {
        Self { state }
    }

    fn cipher(state: &SoftState, key: &str, version: u32) -> Result<Arc<Aes256Gcm>, OpError> {
        state
            .ciphers
            .get(key)
            .and_then(|versions| versions.get(&version))
            .cloned()
            .ok_or_else(|| OpError::UnknownVersion { key: key.into(), version })
    }

    /// Wraps `plaintext` under `key`'s current version.
    fn seal(state: &SoftState, key: &KeyInfo, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, OpError> {
        let version = key.current_version()?;
        let cipher = Self::cipher(state, &key.name, version)?;
        let header = BlobHeader { key: key.name.clone(), version, mode: BlobMode::Direct };
        let mut blob = header.to_bytes().map_err(|e| OpError::Internal(e.to_string()))?;
        let associated = BlobHeader::associated_data(&blob, aad);
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce);
        let sealed = cipher
            .encrypt(&nonce.into(), Payload { msg: plaintext, aad: &associated })
            .map_err(|_| OpError::Internal("AES-GCM encryption failed".into()))?;
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&sealed);
        Ok(blob)
    }

    /// Unwraps a direct-mode blob of `key`.
    fn open(state: &SoftState, key: &KeyInfo, aad: &[u8], blob: &ParsedBlob) -> Result<SecretBytes, OpError> {
        if !blob.is_direct() {
            return Err(OpError::Integrity);
        }
        key.check_decryptable(blob.header.version)?;
        let cipher = Self::cipher(state, &key.name, blob.header.version)?;
        let body = blob.body();
        if body.len() < NONCE_LEN + 16 {
            return Err(OpError::Integrity);
        }
        let (nonce, sealed) = body.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| OpError::Integrity)?;
        let associated = BlobHeader::associated_data(blob.header_bytes(), aad);
        cipher
            .decrypt(&nonce.into(), Payload { msg: sealed, aad: &associated })
            .map(SecretBytes::new)
            .map_err(|_| OpError::Integrity)
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
