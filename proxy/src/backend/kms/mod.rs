//! Keys in AWS KMS (or a server speaking its API), through the official `aws-sdk-kms`.
//!
//! - Keys and versions are KMS keys named by aliases ([`names`]); KMS is the source of
//!   truth and `keymux key ...` administers them like any other backend's.
//! - Direct mode: Encrypt / Decrypt / GenerateDataKey / ReEncrypt, with an encryption
//!   context binding the blob header and the client AAD ([`client::context`]); the blob
//!   body is KMS's ciphertext.
//! - Intermediate mode, opt-in per key ([`intermediate`]): one KMS call per epoch.
//! - Signing keys (ECDSA P-256 and P-384, RSA-3072 PSS and PKCS#1 v1.5): asymmetric
//!   KMS keys whose type a tag records ([`key_types`]); SIGN is one KMS `Sign`, public
//!   keys come from `GetPublicKey` ([`signing`]).
//! - Every request goes through [`failover::Regions::call`]: a token bucket per region
//!   ([`admission`]), a limit on requests in flight, retries with jittered backoff, a
//!   circuit breaker per region ([`circuit`]) and failover to the next region.
//!
//! Executor threads run batches by blocking on this backend's own tokio runtime, where
//! a batch's operations run concurrently (up to the in-flight limit). See
//! `docs/KMS.md`.

mod admission;
mod circuit;
mod client;
mod config;
mod failover;
mod intermediate;
mod key_types;
mod metrics;
mod names;
mod signing;
mod store;
mod worker;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::backend::{Backend, BackendFault, BackendWorker};
use crate::keys::{KeyAdminError, KeyInfo, KeyStore, KeyType, VersionState};
use failover::{Region, Regions, RetrySettings};
use intermediate::Intermediate;
use key_types::TypeCache;
pub use metrics::{KmsMetrics, KmsOutcome};
use names::Names;

pub use config::{IntermediateConfig, KmsConfig, KmsRegionConfig};

/// Why the KMS backend could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KmsError {
    /// The backend's runtime could not be started.
    #[error("cannot start the KMS runtime: {0}")]
    Runtime(std::io::Error),
}

/// A tokio runtime that may be dropped anywhere, an async context included.
struct Runtime(Option<tokio::runtime::Runtime>);

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// What the backend's workers and admin calls share.
pub(crate) struct Shared {
    _runtime: Runtime,
    handle: tokio::runtime::Handle,
    regions: Arc<Regions>,
    names: Names,
    intermediate: Intermediate,
    /// RSA keys' types, read from their tags once.
    key_types: TypeCache,
    metrics: KmsMetrics,
    /// The deadline of an operation whose client set none.
    max_wait: Duration,
}

/// Runs `future` on `runtime` and waits for it, from any thread: from inside another
/// runtime (a proxy starting up, a test) through a short-lived thread, since a thread
/// that drives one runtime cannot block on another.
fn block_on<F: Future + Send>(runtime: &tokio::runtime::Handle, future: F) -> F::Output
where
    F::Output: Send,
{
    if tokio::runtime::Handle::try_current().is_err() {
        return runtime.block_on(future);
    }
    std::thread::scope(|scope| {
        scope.spawn(|| runtime.block_on(future)).join().unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

impl Shared {
    /// Runs `future` on the backend's runtime and waits for it.
    fn block_on<F: Future + Send>(&self, future: F) -> F::Output
    where
        F::Output: Send,
    {
        block_on(&self.handle, future)
    }
}

/// The KMS backend.
#[derive(Clone)]
pub struct KmsBackend {
    shared: Arc<Shared>,
    executors: usize,
}

impl KmsBackend {
    /// Builds a client per region (credentials are looked up when first needed) and
    /// starts the health probes.
    pub fn open(config: &KmsConfig) -> Result<Self, KmsError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("keymux-kms")
            .enable_all()
            .build()
            .map_err(KmsError::Runtime)?;
        let handle = runtime.handle().clone();
        let runtime = Runtime(Some(runtime));
        let metrics = KmsMetrics::default();
        let settings = RetrySettings {
            max_retries: config.max_retries,
            backoff: config.backoff,
            call_timeout: config.call_timeout,
            probe_interval: config.probe_interval,
        };
        let connect = async {
            let mut regions = Vec::with_capacity(config.regions.len());
            for region in &config.regions {
                regions.push(Region::new(region, client::connect(config, region).await, config));
            }
            regions
        };
        let regions = block_on(&handle, connect);
        let regions = Arc::new(Regions::new(regions, settings, metrics.clone()));
        handle.spawn(Regions::probe(Arc::downgrade(&regions)));
        let shared = Shared {
            _runtime: runtime,
            handle,
            regions,
            names: Names::new(&config.alias_prefix),
            intermediate: Intermediate::new(config.intermediate.clone(), metrics.clone()),
            key_types: TypeCache::default(),
            metrics,
            max_wait: config.max_wait,
        };
        Ok(Self { shared: Arc::new(shared), executors: config.executors })
    }

    /// The backend's metrics (also on the proxy's `/metrics` page).
    pub fn metrics(&self) -> &KmsMetrics {
        &self.shared.metrics
    }
}

impl Backend for KmsBackend {
    fn kind(&self) -> &'static str {
        "kms"
    }

    fn open_worker(&self) -> Result<Box<dyn BackendWorker>, BackendFault> {
        Ok(Box::new(worker::KmsWorker::new(Arc::clone(&self.shared))))
    }

    fn preferred_workers(&self) -> Option<usize> {
        Some(self.executors)
    }

    fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        self.shared.metrics.register(registry);
    }
}

impl KeyStore for KmsBackend {
    fn list_keys(&self) -> Result<Vec<KeyInfo>, BackendFault> {
        self.shared.block_on(self.shared.list())
    }

    fn check_name(&self, name: &str) -> Result<(), KeyAdminError> {
        names::check_key_name(name)
    }

    /// `aes-256`, `ec-p256`, `ec-p384`, `rsa-3072-pss` and `rsa-3072-pkcs1`; other types
    /// are refused ([`key_types`]).
    fn write_new_version(&self, name: &str, version: u32, key_type: KeyType) -> Result<(), KeyAdminError> {
        let Some(new) = key_types::NewKey::of(key_type) else {
            return Err(KeyAdminError::UnsupportedKeyType { key_type, backend: "kms" });
        };
        self.shared.block_on(self.shared.create_version(name, version, &new))
    }

    fn public_key(&self, name: &str, version: u32) -> Result<Vec<u8>, BackendFault> {
        self.shared.block_on(self.shared.public_key(name, version))
    }

    fn write_version_state(
        &self,
        name: &str,
        version: u32,
        state: VersionState,
    ) -> Result<(), KeyAdminError> {
        self.shared.block_on(self.shared.set_version_state(name, version, state))
    }

    fn write_min_decryption_version(&self, name: &str, version: u32) -> Result<(), KeyAdminError> {
        self.shared.block_on(self.shared.set_min_decryption_version(name, version))
    }

    fn erase_version(&self, name: &str, version: u32) -> Result<(), KeyAdminError> {
        self.shared.block_on(self.shared.destroy_version(name, version))
    }

    /// Destroying schedules the key's deletion after KMS's pending window (at least
    /// seven days, cancellable), which is the safe period on this backend.
    fn erase_is_deferred(&self) -> bool {
        true
    }
}
