//! The switch in front of a test proxy's backend: a [`Gate`] that makes backend
//! workers wait before each batch, so tests can hold work in the queues
//! deterministically, and the backend that wraps a real one with it.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use keymux_proxy::backend::{Backend, BackendFault, BackendWorker, BatchOp, Completions};
use keymux_proxy::keys::{KeyAdminError, KeyInfo, KeyStore, KeyType, VersionState};

/// A switch that makes backend workers wait before each batch, so tests can hold work
/// in the queues deterministically. Open by default.
#[derive(Clone, Default)]
pub struct Gate {
    state: Arc<(Mutex<GateState>, Condvar)>,
}

#[derive(Default)]
struct GateState {
    closed: bool,
    waiting: usize,
    /// Jobs in the batches of the waiting workers.
    held: usize,
    /// Workers inside a batch (past the gate).
    active: usize,
}

impl Gate {
    /// Closes the gate: workers wait before their next batch.
    pub fn close(&self) {
        self.state.0.lock().unwrap().closed = true;
    }

    /// Opens the gate, releasing every waiting worker.
    pub fn open(&self) {
        self.state.0.lock().unwrap().closed = false;
        self.state.1.notify_all();
    }

    /// Waits until `count` workers are blocked at the closed gate.
    pub async fn wait_for_blocked(&self, count: usize) {
        for _ in 0..500 {
            if self.state.0.lock().unwrap().waiting >= count {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("workers never reached the gate");
    }

    /// Jobs in the batches that workers hold at the closed gate (the jobs still queued
    /// are the proxy's `keymux_queue_depth`).
    pub fn held(&self) -> usize {
        self.state.0.lock().unwrap().held
    }

    /// Waits until no worker is inside a batch: with the gate closed, every worker is
    /// then either idle or waiting at the gate, so none is in a backend call.
    pub async fn wait_until_quiet(&self) {
        for _ in 0..500 {
            if self.state.0.lock().unwrap().active == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("a worker never finished its batch");
    }

    /// Waits while the gate is closed with a batch of `jobs`, then counts the caller as
    /// inside a batch until the returned guard drops.
    fn pass(&self, jobs: usize) -> Inside<'_> {
        let (lock, condvar) = &*self.state;
        let mut state = lock.lock().unwrap();
        state.waiting += 1;
        state.held += jobs;
        while state.closed {
            state = condvar.wait(state).unwrap();
        }
        state.waiting -= 1;
        state.held -= jobs;
        state.active += 1;
        Inside(self)
    }
}

/// A worker inside a batch.
struct Inside<'a>(&'a Gate);

impl Drop for Inside<'_> {
    fn drop(&mut self) {
        self.0.state.0.lock().unwrap().active -= 1;
    }
}

/// A real backend, with a [`Gate`] in front of every batch.
pub struct GatedBackend {
    inner: Arc<dyn Backend>,
    gate: Gate,
}

impl GatedBackend {
    /// `inner`, its batches behind `gate`.
    pub fn new(inner: Arc<dyn Backend>, gate: Gate) -> Self {
        Self { inner, gate }
    }
}

impl Backend for GatedBackend {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn open_worker(&self) -> Result<Box<dyn BackendWorker>, BackendFault> {
        Ok(Box::new(GatedWorker { inner: self.inner.open_worker()?, gate: self.gate.clone() }))
    }

    fn preferred_workers(&self) -> Option<usize> {
        self.inner.preferred_workers()
    }

    fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        self.inner.register_metrics(registry);
    }
}

impl KeyStore for GatedBackend {
    fn list_keys(&self) -> Result<Vec<KeyInfo>, BackendFault> {
        self.inner.list_keys()
    }

    fn check_name(&self, name: &str) -> Result<(), KeyAdminError> {
        self.inner.check_name(name)
    }

    fn write_new_version(&self, name: &str, version: u32, key_type: KeyType) -> Result<(), KeyAdminError> {
        self.inner.write_new_version(name, version, key_type)
    }

    fn public_key(&self, name: &str, version: u32) -> Result<Vec<u8>, BackendFault> {
        self.inner.public_key(name, version)
    }

    fn write_version_state(
        &self,
        name: &str,
        version: u32,
        state: VersionState,
    ) -> Result<(), KeyAdminError> {
        self.inner.write_version_state(name, version, state)
    }

    fn write_min_decryption_version(&self, name: &str, version: u32) -> Result<(), KeyAdminError> {
        self.inner.write_min_decryption_version(name, version)
    }

    fn erase_version(&self, name: &str, version: u32) -> Result<(), KeyAdminError> {
        self.inner.erase_version(name, version)
    }
}

/// A real worker, with the [`Gate`] in front of every batch.
struct GatedWorker {
    inner: Box<dyn BackendWorker>,
    gate: Gate,
}

impl BackendWorker for GatedWorker {
    fn run_batch(&mut self, key: &KeyInfo, ops: &[BatchOp], done: &mut Completions<'_>) {
        let _inside = self.gate.pass(ops.len());
        self.inner.run_batch(key, ops, done);
    }
}
