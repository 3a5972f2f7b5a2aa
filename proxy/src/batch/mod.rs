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

pub use executor::{BatchSettings, Executors};
pub use queue::KeyQueues;

use crate::backend::{BatchOp, OpResult};
use crate::cache::CacheFill;
use crate::server::responder::Responder;

/// One client operation waiting for an executor.
pub struct Job {
    /// What to do, and by when: dropped with TIMEOUT if it has not reached the backend
    /// by its deadline.
    pub op: BatchOp,
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
            Completion::FillCache(fill) => fill.complete(result),
        }
    }
}
