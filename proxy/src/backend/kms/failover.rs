//! The regions of a KMS backend, in order of preference, and the one loop every KMS
//! request goes through: pick a region, admission, in-flight limit, the call, then
//! retry, back off or fail over.
//!
//! Work goes to the first region whose circuit is closed. A request that gets no
//! usable answer moves at once to the next such region, so cutting the primary loses
//! no operation whose deadline leaves room for a second try; once the primary's
//! circuit opens, work skips it without trying. Each region has a prober that, while
//! its circuit is open, asks KMS something cheap every `probe_interval` and closes the
//! circuit when it answers, so work returns to the primary by itself.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_kms::Client;
use tokio::sync::Semaphore;

use super::admission::TokenBucket;
use super::circuit::Circuit;
use super::config::{KmsConfig, KmsRegionConfig};
use super::metrics::{KmsMetrics, KmsOutcome};
use crate::backend::{BackendFault, RetryReason};
use crate::error::OpError;

/// Backoffs never grow past this.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// One region (or endpoint) and its limits.
pub(crate) struct Region {
    /// The name in metrics and logs.
    pub(crate) label: String,
    /// The AWS region (for ReplicateKey).
    pub(crate) region: String,
    /// The SDK client.
    pub(crate) client: Client,
    bucket: TokenBucket,
    circuit: Circuit,
    in_flight: Semaphore,
    /// A moving average of answered calls' latency, in microseconds: admission leaves
    /// this much of a deadline for the call itself.
    latency_us: AtomicU64,
}

impl Region {
    /// The typical latency of an answered call.
    fn latency(&self) -> Duration {
        Duration::from_micros(self.latency_us.load(Ordering::Relaxed))
    }

    /// Folds one answered call's latency into the average (weight 1/8).
    fn record_latency(&self, took: Duration) {
        let sample = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let old = self.latency_us.load(Ordering::Relaxed);
        let new = if old == 0 { sample } else { old - old / 8 + sample / 8 };
        self.latency_us.store(new, Ordering::Relaxed);
    }

    /// A region with its own token bucket, circuit and in-flight limit.
    pub(crate) fn new(region: &KmsRegionConfig, client: Client, config: &KmsConfig) -> Self {
        Self {
            label: region.label().to_owned(),
            region: region.region.clone(),
            client,
            bucket: TokenBucket::new(config.rate, config.burst),
            circuit: Circuit::new(config.failure_threshold),
            in_flight: Semaphore::new(config.max_in_flight),
            latency_us: AtomicU64::new(0),
        }
    }
}

/// A failed request that a retry or another region may still serve.
enum Retry {
    Throttled,
    Unavailable(String),
}

/// Retry and probe settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RetrySettings {
    pub(crate) max_retries: u32,
    pub(crate) backoff: Duration,
    pub(crate) call_timeout: Duration,
    pub(crate) probe_interval: Duration,
}

/// Every region of the backend, in order of preference.
pub(crate) struct Regions {
    regions: Vec<Region>,
    settings: RetrySettings,
    metrics: KmsMetrics,
}

impl Regions {
    /// The regions, first preferred.
    pub(crate) fn new(regions: Vec<Region>, settings: RetrySettings, metrics: KmsMetrics) -> Self {
        for region in &regions {
            metrics.circuit(&region.label, false);
            metrics.rate(&region.label, region.bucket.rate());
        }
        Self { regions, settings, metrics }
    }

    /// The regions, first preferred.
    pub(crate) fn all(&self) -> &[Region] {
        &self.regions
    }

    /// The first region whose circuit is closed, not counting those in `skip`.
    fn pick(&self, skip: &[bool]) -> Option<usize> {
        (0..self.regions.len()).find(|&i| !skip[i] && !self.regions[i].circuit.is_open())
    }

    /// Runs one KMS request (`call`, named `name` in metrics) for an operation on `key`
    /// (name and version) due by `deadline`, on the first usable region, retrying and failing over as the
    /// module describes. `call` builds and sends the request on the client it is given.
    pub(crate) async fn call<T, F, Fut>(
        &self,
        name: &'static str,
        (key, version): (&str, u32),
        deadline: Instant,
        mut call: F,
    ) -> Result<T, OpError>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, BackendFault>>,
    {
        let mut skip = vec![false; self.regions.len()];
        let mut retries = 0u32;
        loop {
            let Some(index) = self.pick(&skip) else {
                return Err(self.unavailable("every region's circuit is open".into()));
            };
            let region = &self.regions[index];
            let now = Instant::now();
            // Leave room for the call itself (twice its typical latency, and 5 ms for
            // the answer's way back): a request sent just before its deadline would be
            // answered after it, a KMS call paid for nothing.
            let room = region.latency() * 2 + Duration::from_millis(5);
            let send_by = deadline.checked_sub(room).unwrap_or(now);
            match region.bucket.reserve(now, send_by) {
                Ok(wait) if wait.is_zero() => {}
                Ok(wait) => tokio::time::sleep(wait).await,
                Err(retry_after) => {
                    self.metrics.admission_busy(&region.label);
                    return Err(OpError::Busy { key: key.to_owned(), retry_after });
                }
            }
            let deadline_at = tokio::time::Instant::from_std(deadline);
            let Ok(Ok(permit)) = tokio::time::timeout_at(deadline_at, region.in_flight.acquire()).await
            else {
                return Err(OpError::Timeout);
            };
            let sent = Instant::now();
            let attempt_end = deadline.min(sent + self.settings.call_timeout);
            let outcome = tokio::time::timeout_at(
                tokio::time::Instant::from_std(attempt_end),
                call(region.client.clone()),
            )
            .await;
            drop(permit);
            let fault = match outcome {
                Ok(Ok(value)) => {
                    self.answered(region, name, sent.elapsed());
                    return Ok(value);
                }
                Ok(Err(BackendFault::Retryable { reason: RetryReason::Throttled, .. })) => Retry::Throttled,
                Ok(Err(BackendFault::Retryable {
                    reason:
                        RetryReason::Unavailable(reason)
                        | RetryReason::SessionLost(reason)
                        | RetryReason::StaleHandle(reason),
                    ..
                })) => Retry::Unavailable(reason),
                Ok(Err(fault)) => {
                    self.answered(region, name, sent.elapsed());
                    return Err(fault.into_op_error(key, version));
                }
                Err(_) if attempt_end >= deadline => {
                    self.metrics.call(&region.label, name, KmsOutcome::Failed);
                    return Err(OpError::Timeout);
                }
                Err(_) => Retry::Unavailable(format!("no answer within {:?}", self.settings.call_timeout)),
            };
            let giving_up = match fault {
                Retry::Throttled => {
                    self.metrics.call(&region.label, name, KmsOutcome::Throttled);
                    let rate = region.bucket.throttled(Instant::now());
                    self.metrics.rate(&region.label, rate);
                    let fault = BackendFault::Retryable {
                        reason: RetryReason::Throttled,
                        retry_after: self.settings.backoff,
                    };
                    fault.into_op_error(key, version)
                }
                Retry::Unavailable(reason) => {
                    self.metrics.call(&region.label, name, KmsOutcome::Failed);
                    if region.circuit.record_failure() {
                        self.metrics.circuit(&region.label, true);
                        tracing::warn!(region = %region.label, %reason, "KMS region failing; circuit open");
                    }
                    skip[index] = true;
                    if self.pick(&skip).is_some() {
                        self.metrics.failover(&region.label);
                        continue;
                    }
                    skip.iter_mut().for_each(|s| *s = false);
                    self.unavailable(reason)
                }
            };
            retries += 1;
            let backoff = jittered(self.settings.backoff, retries);
            if retries > self.settings.max_retries || Instant::now() + backoff >= deadline {
                return Err(giving_up);
            }
            self.metrics.retry(&region.label);
            tokio::time::sleep(backoff).await;
        }
    }

    fn answered(&self, region: &Region, name: &'static str, took: Duration) {
        region.circuit.record_answer();
        region.record_latency(took);
        self.metrics.call(&region.label, name, KmsOutcome::Answered);
    }

    fn unavailable(&self, reason: String) -> OpError {
        OpError::BackendUnavailable { reason, retry_after: self.settings.probe_interval }
    }

    /// Probes every region whose circuit is open, every `probe_interval`, closing the
    /// circuit when the region answers. Runs until the backend is dropped.
    pub(crate) async fn probe(regions: std::sync::Weak<Self>) {
        loop {
            let Some(this) = regions.upgrade() else { return };
            let interval = this.settings.probe_interval;
            for region in this.regions.iter().filter(|r| r.circuit.is_open()) {
                if !region.bucket.try_take(Instant::now()) {
                    continue;
                }
                let probe = region.client.list_keys().limit(1).send();
                let answered =
                    matches!(tokio::time::timeout(this.settings.call_timeout, probe).await, Ok(Ok(_)));
                let outcome = if answered { KmsOutcome::Answered } else { KmsOutcome::Failed };
                this.metrics.call(&region.label, "probe", outcome);
                if answered && region.circuit.close() {
                    this.metrics.circuit(&region.label, false);
                    tracing::info!(region = %region.label, "KMS region answers again; circuit closed");
                }
            }
            drop(this);
            tokio::time::sleep(interval).await;
        }
    }
}

/// Full jitter: a random wait between zero and `base * 2^(retry - 1)`, capped.
fn jittered(base: Duration, retry: u32) -> Duration {
    let ceiling = base.saturating_mul(1 << retry.saturating_sub(1).min(16)).min(MAX_BACKOFF);
    let fraction = getrandom::u64().map_or(0.5, |r| (r >> 11) as f64 / (1u64 << 53) as f64);
    ceiling.mul_f64(fraction)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_under_a_cap() {
        for retry in 1..30 {
            let wait = jittered(Duration::from_millis(25), retry);
            let ceiling = Duration::from_millis(25 << (retry - 1).min(16)).min(MAX_BACKOFF);
            assert!(wait <= ceiling, "{wait:?} > {ceiling:?}");
        }
    }
}
