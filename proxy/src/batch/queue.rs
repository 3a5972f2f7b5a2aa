//! The per-key queues and the ready channel.

// Operator-chosen key names: a fast hasher, no flooding to fear.
use foldhash::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use crossbeam_queue::ArrayQueue;

use super::Job;
use crate::error::OpError;
use crate::telemetry::Metrics;

/// One key's bounded queue.
pub(crate) struct KeyQueue {
    pub(crate) name: Arc<str>,
    jobs: ArrayQueue<Job>,
    /// True while the key is on the ready channel or being drained.
    scheduled: AtomicBool,
}

impl KeyQueue {
    /// Moves up to `max` jobs into `out`; returns how many.
    pub(crate) fn drain_into(&self, out: &mut Vec<Job>, max: usize) -> usize {
        let before = out.len();
        while out.len() - before < max {
            match self.jobs.pop() {
                Some(job) => out.push(job),
                None => break,
            }
        }
        out.len() - before
    }
}

/// A message on the ready channel.
pub(crate) enum Ready {
    /// This key has queued jobs.
    Key(Arc<KeyQueue>),
    /// An executor should exit.
    Stop,
}

/// The per-key queues: routes jobs into them and schedules keys with work onto the
/// ready channel that executors take them from.
pub struct KeyQueues {
    queues: RwLock<HashMap<Arc<str>, Arc<KeyQueue>>>,
    ready_tx: Sender<Ready>,
    ready_rx: Receiver<Ready>,
    capacity: usize,
    /// Nanoseconds; replaceable on a config reload.
    busy_retry_after: AtomicU64,
    metrics: Arc<Metrics>,
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

impl KeyQueues {
    /// The retry-after hint sent with BUSY (`batch.busy_retry_after`).
    pub fn busy_retry_after(&self) -> Duration {
        Duration::from_nanos(self.busy_retry_after.load(Ordering::Relaxed))
    }

    /// Changes the BUSY retry-after hint (a config reload).
    pub fn set_busy_retry_after(&self, retry_after: Duration) {
        self.busy_retry_after.store(nanos(retry_after), Ordering::Relaxed);
    }

    /// A queues whose per-key queues hold `capacity` jobs each.
    pub fn new(capacity: usize, busy_retry_after: Duration, metrics: Arc<Metrics>) -> Self {
        let (ready_tx, ready_rx) = crossbeam_channel::unbounded();
        let busy_retry_after = AtomicU64::new(nanos(busy_retry_after));
        Self { queues: RwLock::default(), ready_tx, ready_rx, capacity, busy_retry_after, metrics }
    }

    fn queue(&self, key: &str) -> Arc<KeyQueue> {
        if let Some(queue) = self.queues.read().unwrap_or_else(|p| p.into_inner()).get(key) {
            return Arc::clone(queue);
        }
        let mut queues = self.queues.write().unwrap_or_else(|p| p.into_inner());
        Arc::clone(queues.entry(Arc::from(key)).or_insert_with(|| {
            Arc::new(KeyQueue {
                name: Arc::from(key),
                jobs: ArrayQueue::new(self.capacity),
                scheduled: AtomicBool::new(false),
            })
        }))
    }

    /// Queues `job` on `key` (a key the registry knows), or answers BUSY at once if
    /// the key's queue is full.
    pub fn submit(&self, key: &str, job: Job) {
        let queue = self.queue(key);
        match queue.jobs.push(job) {
            Ok(()) => {
                self.metrics.queue_depth_add(1);
                // Pairs with the fence in `release`: either the executor sees this job
                // after unmarking the queue, or this thread sees the queue unmarked.
                fence(Ordering::SeqCst);
                self.schedule(&queue);
            }
            Err(job) => job
                .completion
                .complete(Err(OpError::Busy { key: key.to_owned(), retry_after: self.busy_retry_after() })),
        }
    }

    fn schedule(&self, queue: &Arc<KeyQueue>) {
        if !queue.scheduled.swap(true, Ordering::AcqRel) {
            // The receiver lives in `self`, so the channel cannot be disconnected.
            let _ = self.ready_tx.send(Ready::Key(Arc::clone(queue)));
        }
    }

    /// Called by an executor after draining `queue`: unmarks it, and puts it back on
    /// the ready channel if jobs arrived meanwhile (or are left over).
    pub(crate) fn release(&self, queue: &Arc<KeyQueue>) {
        queue.scheduled.store(false, Ordering::SeqCst);
        // Without this fence the emptiness check could be ordered before the store, and a
        // job pushed in between would wait for the key's next request (a lost wake-up).
        fence(Ordering::SeqCst);
        if !queue.jobs.is_empty() {
            self.schedule(queue);
        }
    }

    pub(crate) fn ready(&self) -> &Receiver<Ready> {
        &self.ready_rx
    }

    pub(crate) fn stop_executors(&self, count: usize) {
        for _ in 0..count {
            let _ = self.ready_tx.send(Ready::Stop);
        }
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}
