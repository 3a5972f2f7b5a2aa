//! Backends hold the key-encryption keys and run batches of operations on them.
//!
//! A backend is a [`KeyStore`] (its keys, versions and their administration) and a
//! factory of [`BackendWorker`]s. Each executor thread opens one worker and owns it
//! for its life: for PKCS#11 that is one pinned, logged-in session; for the soft
//! keystore it is a handle on the shared key material. Workers take whole batches, so
//! a backend with a high per-call cost can pack them.
//!
//! Each backend is one folder that owns everything about it: its `[backend]` table
//! (`config.rs`), its metrics, its worker and its key store. What they share is here:
//! the operations ([`op`]), the faults ([`fault`]), and [`open`], the one factory.

mod config;
mod fault;
pub mod kms;
mod op;
pub mod pkcs11;
pub mod soft;

use std::sync::Arc;

pub use config::BackendConfig;
pub use fault::{BackendFault, RetryReason};
pub use op::{BatchOp, Op, OpResult, ParsedBlob};

use crate::error::OpError;
use crate::keys::{KeyInfo, KeyStore};

/// A source of key-encryption keys.
pub trait Backend: KeyStore + 'static {
    /// A short name for metrics and logs (`soft`, `pkcs11`, `kms`).
    fn kind(&self) -> &'static str;

    /// Opens the per-thread state an executor needs (a session, a connection).
    fn open_worker(&self) -> Result<Box<dyn BackendWorker>, BackendFault>;

    /// How many executor threads this backend wants (PKCS#11: one per session); `None`
    /// leaves it to `batch.executor_threads`.
    fn preferred_workers(&self) -> Option<usize> {
        None
    }

    /// Adds the backend's own metrics to the proxy's registry (default: none).
    fn register_metrics(&self, _registry: &mut prometheus_client::registry::Registry) {}
}

/// Where a worker hands each operation's outcome, as soon as it is known:
/// `done(index, result)` once per operation, in any order.
pub type Completions<'a> = dyn FnMut(usize, OpResult) + Send + 'a;

/// Per-executor-thread state that runs batches. Owned by one thread for its life.
pub trait BackendWorker: Send {
    /// Runs `ops` (all on `key`), each within its own deadline, handing each outcome to
    /// `done` as soon as it is ready: backends whose operations finish at different
    /// times (KMS calls, admission waits, retries) answer each client without waiting
    /// for the rest of the batch. Must not panic on any input.
    fn run_batch(&mut self, key: &KeyInfo, ops: &[BatchOp], done: &mut Completions<'_>);
}

/// Runs `ops` on `worker` and collects the outcomes in order: for tests and benches
/// that drive a worker directly.
pub fn run_collect(worker: &mut dyn BackendWorker, key: &KeyInfo, ops: &[BatchOp]) -> Vec<OpResult> {
    let mut results: Vec<Option<OpResult>> = (0..ops.len()).map(|_| None).collect();
    worker.run_batch(key, ops, &mut |index, result| results[index] = Some(result));
    results
        .into_iter()
        .map(|result| result.unwrap_or_else(|| Err(OpError::Internal("backend gave no result".into()))))
        .collect()
}

/// Why a backend could not be opened. Never carries a PIN or passphrase.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The soft keystore could not be opened.
    #[error("soft keystore: {0}")]
    Soft(#[from] soft::KeystoreError),
    /// The PKCS#11 token could not be opened.
    #[error("pkcs11: {0}")]
    Pkcs11(#[from] pkcs11::Pkcs11Error),
    /// The KMS backend could not be set up.
    #[error("kms: {0}")]
    Kms(#[from] kms::KmsError),
}

/// Opens the backend a config names: the one factory, used by the server and the CLI.
pub fn open(config: &BackendConfig) -> Result<Arc<dyn Backend>, OpenError> {
    Ok(match config {
        BackendConfig::Soft(soft) => Arc::new(soft::SoftBackend::open(soft)?),
        BackendConfig::Pkcs11(hsm) => Arc::new(pkcs11::Pkcs11Backend::open(hsm)?),
        BackendConfig::Kms(kms) => Arc::new(kms::KmsBackend::open(kms)?),
    })
}
