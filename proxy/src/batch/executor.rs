//! Executor threads: each owns one backend worker for its life and runs batches on it,
//! never on a tokio worker thread.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use super::queue::{KeyQueue, Ready};
use super::{Job, KeyQueues};
use crate::backend::{Backend, BackendWorker, BatchOp, OpResult};
use crate::error::OpError;
use crate::keys::KeyRegistry;

/// Batching settings an executor needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSettings {
    /// Most jobs per batch.
    pub max_batch: usize,
    /// How long to linger for a partial batch to fill.
    pub max_delay: Duration,
}

/// The running executor threads.
pub struct Executors {
    threads: Vec<JoinHandle<()>>,
    queues: Arc<KeyQueues>,
}

impl Executors {
    /// Starts `count` threads, each opening its own worker on `backend`. Each batch
    /// reads `settings` afresh, so a config reload may change them while serving.
    pub fn start(
        count: usize,
        backend: Arc<dyn Backend>,
        queues: Arc<KeyQueues>,
        registry: Arc<KeyRegistry>,
        settings: Arc<ArcSwap<BatchSettings>>,
    ) -> std::io::Result<Self> {
        let threads = (0..count)
            .map(|index| {
                let executor = Executor {
                    backend: Arc::clone(&backend),
                    queues: Arc::clone(&queues),
                    registry: Arc::clone(&registry),
                    settings: Arc::clone(&settings),
                };
                std::thread::Builder::new()
                    .name(format!("keymux-{}-{index}", backend.kind()))
                    .spawn(move || executor.run())
            })
            .collect::<std::io::Result<_>>()?;
        Ok(Self { threads, queues })
    }

    /// Stops every thread once it finishes its current batch, and waits for them.
    pub fn stop(self) {
        self.queues.stop_executors(self.threads.len());
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

struct Executor {
    backend: Arc<dyn Backend>,
    queues: Arc<KeyQueues>,
    registry: Arc<KeyRegistry>,
    settings: Arc<ArcSwap<BatchSettings>>,
}

impl Executor {
    fn open_worker(&self) -> Box<dyn BackendWorker> {
        let mut delay = Duration::from_millis(50);
        loop {
            match self.backend.open_worker() {
                Ok(worker) => return worker,
                Err(error) => {
                    tracing::warn!(backend = self.backend.kind(), %error, "cannot open a backend worker; retrying");
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    fn run(self) {
        let mut worker = self.open_worker();
        let mut jobs = Vec::with_capacity(self.settings.load().max_batch);
        while let Ok(Ready::Key(queue)) = self.queues.ready().recv() {
            self.take_batch(&queue, &mut jobs);
            self.queues.release(&queue);
            if jobs.is_empty() {
                continue;
            }
            self.queues.metrics().queue_depth_add(-(jobs.len() as i64));
            self.queues.metrics().record_batch_size(jobs.len());
            if !self.run_batch(&mut *worker, &queue, &mut jobs) {
                tracing::error!(backend = self.backend.kind(), "backend worker panicked; reopening it");
                worker = self.open_worker();
            }
        }
    }

    /// Drains up to `max_batch` jobs, lingering up to `max_delay` for a partial batch.
    fn take_batch(&self, queue: &KeyQueue, jobs: &mut Vec<Job>) {
        let settings = **self.settings.load();
        let max = settings.max_batch;
        queue.drain_into(jobs, max);
        if settings.max_delay.is_zero() || jobs.len() >= max {
            return;
        }
        let until = Instant::now() + settings.max_delay;
        while jobs.len() < max {
            let now = Instant::now();
            if now >= until {
                break;
            }
            std::thread::sleep((until - now).min(Duration::from_micros(50)));
            queue.drain_into(jobs, max - jobs.len());
        }
    }

    /// Runs one batch; returns false if the worker panicked (every job is still answered).
    fn run_batch(&self, worker: &mut dyn BackendWorker, queue: &KeyQueue, jobs: &mut Vec<Job>) -> bool {
        let now = Instant::now();
        let mut ops = Vec::with_capacity(jobs.len());
        let mut completions = Vec::with_capacity(jobs.len());
        for job in jobs.drain(..) {
            if job.op.deadline.is_some_and(|deadline| deadline <= now) {
                job.completion.complete(Err(OpError::Timeout));
            } else {
                ops.push(job.op);
                completions.push(Some(job.completion));
            }
        }
        if ops.is_empty() {
            return true;
        }
        let key = match self.registry.get(&queue.name) {
            Ok(key) => key,
            Err(error) => {
                completions.into_iter().flatten().for_each(|c| c.complete(Err(error.clone())));
                return true;
            }
        };
        // Counted before the batch runs: a client may read the metrics as soon as its
        // own operation is answered, before the rest of the batch is.
        self.record(&ops);
        let mut done = |index: usize, result: OpResult| {
            if let Some(completion) = completions.get_mut(index).and_then(Option::take) {
                completion.complete(result);
            }
        };
        let healthy = catch_unwind(AssertUnwindSafe(|| worker.run_batch(&key, &ops, &mut done))).is_ok();
        for completion in completions.into_iter().flatten() {
            completion.complete(Err(OpError::Internal("backend gave no result".into())));
        }
        healthy
    }

    /// Counts the batch's operations per kind, for the backend metrics.
    fn record(&self, ops: &[BatchOp]) {
        let mut counts: Vec<(&'static str, usize)> = Vec::with_capacity(4);
        for BatchOp { op, .. } in ops {
            match counts.iter_mut().find(|(name, _)| *name == op.name()) {
                Some((_, count)) => *count += 1,
                None => counts.push((op.name(), 1)),
            }
        }
        for (name, count) in counts {
            self.queues.metrics().record_batch(self.backend.kind(), name, count);
        }
    }
}
