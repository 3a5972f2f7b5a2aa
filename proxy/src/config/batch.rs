//! `[batch]` and `[cache]`: how work on one key is queued and batched, and how repeated
//! unwraps are answered from memory.

use std::time::Duration;

use serde::Deserialize;

use super::error::{InvalidSetting, invalid};

/// `[batch]`: how work on one key is queued and batched.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// Most jobs one backend call takes from a key's queue. Default 64. 1 disables
    /// batching.
    pub max_batch: usize,
    /// How long an executor lingers for a batch to fill before running a partial one.
    /// Default 0: batches form from whatever is queued, so low load keeps low latency.
    #[serde(with = "humantime_serde")]
    pub max_delay: Duration,
    /// Jobs one key may have queued; beyond it requests are answered BUSY at once.
    /// Default 4096.
    pub queue_capacity: usize,
    /// Executor threads for blocking backends. Default 0: one per CPU.
    pub executor_threads: usize,
    /// The retry-after hint sent with BUSY. Default 5 ms.
    #[serde(with = "humantime_serde")]
    pub busy_retry_after: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_batch: 64,
            max_delay: Duration::ZERO,
            queue_capacity: 4096,
            executor_threads: 0,
            busy_retry_after: Duration::from_millis(5),
        }
    }
}

impl BatchConfig {
    /// Executor threads to start, resolving 0 to the CPU count.
    pub fn threads(&self) -> usize {
        match self.executor_threads {
            0 => std::thread::available_parallelism().map_or(2, usize::from),
            n => n,
        }
    }

    /// Checks every value; keys are relative to `[batch]`.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if !(1..=4096).contains(&self.max_batch) {
            return invalid("max_batch", format!("must be 1..=4096, got {}", self.max_batch));
        }
        if self.max_delay > Duration::from_secs(1) {
            return invalid("max_delay", "must be at most 1s");
        }
        if self.queue_capacity == 0 {
            return invalid("queue_capacity", "must be at least 1");
        }
        if self.executor_threads > 1024 {
            return invalid("executor_threads", "must be at most 1024");
        }
        Ok(())
    }
}

/// `[cache]`: the unwrap cache.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Whether unwraps are cached. Default true.
    pub enabled: bool,
    /// Most entries held. Default 100000.
    pub max_entries: u64,
    /// An entry's lifetime from insertion. Default 5 min.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// An entry's lifetime from its last use. Default 1 min.
    #[serde(with = "humantime_serde")]
    pub tti: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_entries: 100_000,
            ttl: Duration::from_secs(300),
            tti: Duration::from_secs(60),
        }
    }
}

impl CacheConfig {
    /// Checks every value; keys are relative to `[cache]`.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if self.enabled && self.max_entries == 0 {
            return invalid("max_entries", "must be at least 1 when the cache is enabled");
        }
        if self.ttl.is_zero() {
            return invalid("ttl", "must be positive");
        }
        if self.tti.is_zero() {
            return invalid("tti", "must be positive");
        }
        Ok(())
    }
}
