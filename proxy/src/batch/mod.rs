//! Per-key queues and the executors that drain them in batches.
//!
//! Every key has a bounded lock-free queue. A key with work is put on the ready
//! channel once; an idle executor takes it, drains up to `max_batch` jobs, puts the key
//! back if work remains (so several executors can share a hot key), and runs the batch
//! on its backend worker. Batches form by themselves under load, and an idle executor
//! never waits for a batch to fill unless `max_delay` asks it to. A full queue answers
//! BUSY at once, so memory stays bounded.

mod executor;
mod queue;

use std::sync::Arc;
use std::time::Instant;

pub use executor::{BatchSettings, Executors};
pub use queue::Dispatcher;

use crate::backend::{Op, OpResult};
use crate::cache::{CacheKey, UnwrapCache};
use crate::reply::Responder;

/// One client operation waiting for an executor.
pub struct Job {
    /// What to do.
    pub op: Op,
    /// Drop the job with TIMEOUT if it has not reached the backend by then.
    pub deadline: Option<Instant>,
    /// Who hears the outcome.
    pub completion: Completion,
}

/// Where a job's outcome goes.
pub enum Completion {
    /// Straight to one client.
    Respond(Responder),
    /// Into the unwrap cache, and from there to every client that asked for the same
    /// blob and AAD while this job was in flight.
    FillCache(CacheFill),
}

impl Completion {
    /// Delivers the outcome.
    pub fn complete(self, result: OpResult) {
        match self {
            Completion::Respond(responder) => responder.send(result),
            Completion::FillCache(mut fill) => fill.complete(result),
        }
    }
}

/// The leader's claim on a pending cache entry. Dropped unanswered (a job discarded at
/// shutdown, say), it answers every waiter rather than leave them hanging.
pub struct CacheFill {
    cache: Arc<UnwrapCache>,
    key: CacheKey,
    done: bool,
}

impl CacheFill {
    /// The claim on entry `key` of `cache`.
    pub fn new(cache: Arc<UnwrapCache>, key: CacheKey) -> Self {
        Self { cache, key, done: false }
    }

    fn complete(&mut self, result: OpResult) {
        self.done = true;
        self.cache.complete(&self.key, result);
    }
}

impl Drop for CacheFill {
    fn drop(&mut self) {
        if !self.done {
            self.complete(Err(crate::error::OpError::ShuttingDown));
        }
    }
}
