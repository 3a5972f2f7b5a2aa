//! An executor thread's worker: runs a batch's operations concurrently on the backend's
//! runtime, each through the regions' admission, retries and failover.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use keymux_protocol::{BlobHeader, BlobMode, Reply, SecretBytes};

use super::Shared;
use super::client::{classify, context};
use super::intermediate::Body;
use crate::backend::{BackendFault, BackendWorker, BatchOp, Completions, Op, OpResult, ParsedBlob};
use crate::error::OpError;
use crate::keys::KeyInfo;

/// Largest data key KMS's GenerateDataKey makes.
const MAX_KMS_DATA_KEY: u16 = 1024;

/// One executor thread's handle on the backend.
pub(crate) struct KmsWorker {
    shared: Arc<Shared>,
}

impl KmsWorker {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

impl BackendWorker for KmsWorker {
    /// Runs every operation of the batch concurrently, answering each as it finishes.
    /// An operation whose client set no deadline gets `max_wait`.
    fn run_batch(&mut self, key: &KeyInfo, ops: &[BatchOp], done: &mut Completions<'_>) {
        let shared = &*self.shared;
        let fallback = Instant::now() + shared.max_wait;
        let mut runs: FuturesUnordered<_> = ops
            .iter()
            .enumerate()
            .map(|(index, batch_op)| {
                let deadline = batch_op.deadline.unwrap_or(fallback);
                async move { (index, shared.run(key, &batch_op.op, deadline).await) }
            })
            .collect();
        shared.block_on(async {
            while let Some((index, result)) = runs.next().await {
                done(index, result);
            }
        });
    }
}

fn header(key: &KeyInfo, version: u32, mode: BlobMode) -> Result<Vec<u8>, OpError> {
    BlobHeader { key: key.name.clone(), version, mode }
        .to_bytes()
        .map_err(|e| OpError::Internal(e.to_string()))
}

/// A KMS answer that lacks a field it always has.
pub(super) fn missing(what: &str) -> BackendFault {
    BackendFault::Final(OpError::Internal(format!("KMS answered without {what}")))
}

/// The ciphertext of an Encrypt or ReEncrypt answer.
fn ciphertext(blob: Option<Blob>) -> Result<Vec<u8>, BackendFault> {
    blob.map(Blob::into_inner).ok_or_else(|| missing("a ciphertext"))
}

/// How big a data key GenerateDataKey makes.
#[derive(Clone, Copy)]
enum DataKeySize {
    /// An AES-256 key (intermediate keys).
    Aes256,
    /// This many bytes (client data keys).
    Bytes(u16),
}

impl Shared {
    /// Runs one operation; whatever it waits for (admission, a shared intermediate-key
    /// call, retries), it is answered TIMEOUT once its deadline passes.
    async fn run(&self, key: &KeyInfo, op: &Op, deadline: Instant) -> OpResult {
        let deadline_at = tokio::time::Instant::from_std(deadline);
        tokio::time::timeout_at(deadline_at, self.run_op(key, op, deadline))
            .await
            .unwrap_or(Err(OpError::Timeout))
    }

    async fn run_op(&self, key: &KeyInfo, op: &Op, deadline: Instant) -> OpResult {
        match op {
            Op::Sign { input, digest } => self.sign(key, input, *digest, deadline).await,
            // AWS KMS does not hand out its AES-GCM IV and tag apart: no raw AEAD here.
            Op::Encrypt { .. } | Op::Decrypt { .. } => Err(OpError::Unsupported),
            Op::Wrap { aad, plaintext } => {
                Ok(Reply::Wrap { blob: self.seal(key, aad, plaintext.expose(), deadline).await? })
            }
            Op::GenerateDataKey { aad, length } => self.generate(key, aad, *length, deadline).await,
            Op::Unwrap { aad, blob } => {
                Ok(Reply::Unwrap { plaintext: self.open(key, aad, blob, deadline).await? })
            }
            Op::Rewrap { aad, blob } => {
                if blob.is_direct() && !self.intermediate.applies_to(&key.name) {
                    return Ok(Reply::Rewrap { blob: self.re_encrypt(key, aad, blob, deadline).await? });
                }
                let plaintext = self.open(key, aad, blob, deadline).await?;
                Ok(Reply::Rewrap { blob: self.seal(key, aad, plaintext.expose(), deadline).await? })
            }
        }
    }

    /// Wraps `dek` under the key's current version, in the key's mode.
    async fn seal(
        &self,
        key: &KeyInfo,
        aad: &[u8],
        dek: &[u8],
        deadline: Instant,
    ) -> Result<Vec<u8>, OpError> {
        let version = key.current_version()?;
        if self.intermediate.applies_to(&key.name) {
            let mut blob = header(key, version, BlobMode::Intermediate)?;
            let associated = BlobHeader::associated_data(&blob, aad);
            let generate = || self.new_intermediate(key, version, &blob, deadline);
            let body = self.intermediate.seal(&key.name, version, &associated, dek, generate).await?;
            blob.extend_from_slice(&body);
            return Ok(blob);
        }
        let mut blob = header(key, version, BlobMode::Direct)?;
        let (alias, context) = (self.names.version(&key.name, version), context(&blob, aad));
        let ciphertext = self
            .regions
            .call("encrypt", (&key.name, version), deadline, |client| {
                let request = client
                    .encrypt()
                    .key_id(&alias)
                    .plaintext(Blob::new(dek))
                    .set_encryption_context(Some(context.clone()))
                    .send();
                async move { ciphertext(request.await.map_err(classify)?.ciphertext_blob) }
            })
            .await?;
        blob.extend_from_slice(&ciphertext);
        Ok(blob)
    }

    /// A new intermediate key for `version` of `key`, and KMS's ciphertext of it, bound
    /// to the intermediate blob header.
    async fn new_intermediate(
        &self,
        key: &KeyInfo,
        version: u32,
        header: &[u8],
        deadline: Instant,
    ) -> Result<(SecretBytes, Vec<u8>), OpError> {
        let (alias, context) = (self.names.version(&key.name, version), context(header, b""));
        self.data_key((&key.name, version), &alias, &context, DataKeySize::Aes256, deadline).await
    }

    /// GenerateDataKey on `alias`: the plaintext key and KMS's ciphertext of it.
    async fn data_key(
        &self,
        key: (&str, u32),
        alias: &str,
        context: &HashMap<String, String>,
        size: DataKeySize,
        deadline: Instant,
    ) -> Result<(SecretBytes, Vec<u8>), OpError> {
        self.regions
            .call("generate_data_key", key, deadline, |client| {
                let builder =
                    client.generate_data_key().key_id(alias).set_encryption_context(Some(context.clone()));
                let request = match size {
                    DataKeySize::Aes256 => builder.key_spec(DataKeySpec::Aes256),
                    DataKeySize::Bytes(length) => builder.number_of_bytes(i32::from(length)),
                }
                .send();
                async move {
                    let mut output = request.await.map_err(classify)?;
                    let plaintext = output.plaintext.take().map(|b| SecretBytes::new(b.into_inner()));
                    let ciphertext = output.ciphertext_blob.take().map(Blob::into_inner);
                    plaintext.zip(ciphertext).ok_or_else(|| missing("a data key"))
                }
            })
            .await
    }

    /// GENERATE_DATA_KEY: from KMS in direct mode, from the OS CSPRNG in intermediate
    /// mode (sealed under the epoch's key, so no KMS call).
    async fn generate(&self, key: &KeyInfo, aad: &[u8], length: u16, deadline: Instant) -> OpResult {
        if self.intermediate.applies_to(&key.name) {
            let mut plaintext = SecretBytes::zeroed(usize::from(length));
            getrandom::fill(plaintext.expose_mut())
                .map_err(|e| OpError::Internal(format!("random data key: {e}")))?;
            let blob = self.seal(key, aad, plaintext.expose(), deadline).await?;
            return Ok(Reply::GenerateDataKey { plaintext, blob });
        }
        if !(1..=MAX_KMS_DATA_KEY).contains(&length) {
            return Err(OpError::BadRequest(format!(
                "KMS generates data keys of 1 to {MAX_KMS_DATA_KEY} bytes, not {length}"
            )));
        }
        let version = key.current_version()?;
        let mut blob = header(key, version, BlobMode::Direct)?;
        let (alias, context) = (self.names.version(&key.name, version), context(&blob, aad));
        let (plaintext, ciphertext) = self
            .data_key((&key.name, version), &alias, &context, DataKeySize::Bytes(length), deadline)
            .await?;
        blob.extend_from_slice(&ciphertext);
        Ok(Reply::GenerateDataKey { plaintext, blob })
    }

    /// Unwraps a blob of either mode.
    async fn open(
        &self,
        key: &KeyInfo,
        aad: &[u8],
        blob: &ParsedBlob,
        deadline: Instant,
    ) -> Result<SecretBytes, OpError> {
        let version = blob.header.version;
        key.check_decryptable(version)?;
        let alias = self.names.version(&key.name, version);
        if !blob.is_direct() {
            let associated = BlobHeader::associated_data(blob.header_bytes(), aad);
            let body = Body::parse(blob.body())?;
            let unwrap = || {
                let context = context(blob.header_bytes(), b"");
                self.decrypt((&key.name, version), &alias, body.wrapped, context, deadline)
            };
            return self.intermediate.open(&body, &associated, unwrap).await;
        }
        self.decrypt((&key.name, version), &alias, blob.body(), context(blob.header_bytes(), aad), deadline)
            .await
    }

    /// One KMS Decrypt, requiring the ciphertext to be `alias`'s key's.
    async fn decrypt(
        &self,
        key: (&str, u32),
        alias: &str,
        ciphertext: &[u8],
        context: std::collections::HashMap<String, String>,
        deadline: Instant,
    ) -> Result<SecretBytes, OpError> {
        self.regions
            .call("decrypt", key, deadline, |client| {
                let request = client
                    .decrypt()
                    .key_id(alias)
                    .ciphertext_blob(Blob::new(ciphertext))
                    .set_encryption_context(Some(context.clone()))
                    .send();
                async move {
                    let mut output = request.await.map_err(classify)?;
                    output
                        .plaintext
                        .take()
                        .map(|b| SecretBytes::new(b.into_inner()))
                        .ok_or_else(|| missing("a plaintext"))
                }
            })
            .await
    }

    /// REWRAP of a direct blob into direct mode: one KMS ReEncrypt, so the DEK never
    /// leaves KMS.
    async fn re_encrypt(
        &self,
        key: &KeyInfo,
        aad: &[u8],
        blob: &ParsedBlob,
        deadline: Instant,
    ) -> Result<Vec<u8>, OpError> {
        let from = blob.header.version;
        key.check_decryptable(from)?;
        let to = key.current_version()?;
        let mut out = header(key, to, BlobMode::Direct)?;
        let (source, destination) = (self.names.version(&key.name, from), self.names.version(&key.name, to));
        let (source_context, destination_context) = (context(blob.header_bytes(), aad), context(&out, aad));
        let ciphertext = self
            .regions
            .call("re_encrypt", (&key.name, from), deadline, |client| {
                let request = client
                    .re_encrypt()
                    .ciphertext_blob(Blob::new(blob.body()))
                    .source_key_id(&source)
                    .set_source_encryption_context(Some(source_context.clone()))
                    .destination_key_id(&destination)
                    .set_destination_encryption_context(Some(destination_context.clone()))
                    .send();
                async move { ciphertext(request.await.map_err(classify)?.ciphertext_blob) }
            })
            .await?;
        out.extend_from_slice(&ciphertext);
        Ok(out)
    }
}
