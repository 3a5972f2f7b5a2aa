//! Per-worker measurements, merged at the end: an HDR latency histogram of successful
//! operations, error counts by status, and how many failures were answers from the
//! proxy (a status) rather than client-side failures (a deadline, a lost connection).

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use keymux_client::Error;
use serde::Serialize;

/// Largest latency the histogram tells apart: one minute, in microseconds. Slower
/// operations are recorded as this value.
const MAX_LATENCY_US: u64 = 60_000_000;
/// Significant decimal digits kept by the histogram (0.1 % value resolution).
const SIGNIFICANT_DIGITS: u8 = 3;

/// What one request loop measured; [`Recorder::merge`] combines them.
#[derive(Debug, Clone)]
pub struct Recorder {
    latency: Histogram<u64>,
    errors: BTreeMap<String, u64>,
    /// Failures the proxy answered with a status (the rest failed on the client's side).
    answered_errors: u64,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    /// An empty recorder.
    pub fn new() -> Self {
        let latency = Histogram::new_with_bounds(1, MAX_LATENCY_US, SIGNIFICANT_DIGITS)
            .expect("constant histogram bounds are valid");
        Self { latency, errors: BTreeMap::new(), answered_errors: 0 }
    }

    /// Records a successful operation that took `elapsed`.
    pub fn record_ok(&mut self, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.latency.saturating_record(micros.max(1));
    }

    /// Counts a failed operation under its [`error_label`].
    pub fn record_error(&mut self, error: &Error) {
        self.record_failure(error_label(error), error.status().is_some());
    }

    /// Counts a failed operation under `label` (an [`error_label`], or
    /// [`INVALID_SIGNATURE`]); `answered` if the proxy answered it (a status, or a
    /// signature that does not verify) rather than the client giving up.
    pub fn record_failure(&mut self, label: &str, answered: bool) {
        *self.errors.entry(label.to_owned()).or_default() += 1;
        self.answered_errors += u64::from(answered);
    }

    /// Adds `other`'s measurements to these.
    pub fn merge(&mut self, other: &Recorder) {
        // Same bounds on both sides, so adding cannot fail; saturate just in case.
        if self.latency.add(&other.latency).is_err() {
            for value in other.latency.iter_recorded() {
                self.latency.saturating_record_n(value.value_iterated_to(), value.count_at_value());
            }
        }
        for (label, count) in &other.errors {
            *self.errors.entry(label.clone()).or_default() += count;
        }
        self.answered_errors += other.answered_errors;
    }

    /// Successful operations recorded.
    pub fn ops(&self) -> u64 {
        self.latency.len()
    }

    /// Failed operations by label.
    pub fn errors(&self) -> &BTreeMap<String, u64> {
        &self.errors
    }

    /// Operations recorded, successful or not.
    pub fn completed(&self) -> u64 {
        self.ops() + self.errors.values().sum::<u64>()
    }

    /// Operations the proxy answered: successes, and failures it sent a status for.
    pub fn answered(&self) -> u64 {
        self.ops() + self.answered_errors
    }

    /// The latency histogram, in microseconds.
    pub fn histogram(&self) -> &Histogram<u64> {
        &self.latency
    }

    /// The headline percentiles.
    pub fn summary(&self) -> LatencySummary {
        LatencySummary::of(&self.latency)
    }
}

/// Latency percentiles of successful operations, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LatencySummary {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 95th percentile.
    pub p95: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Slowest operation.
    pub max: u64,
}

impl LatencySummary {
    /// The percentiles of `histogram` (all zero when it is empty).
    pub fn of(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Self::default();
        }
        let at = |quantile| histogram.value_at_quantile(quantile);
        Self {
            p50: at(0.5),
            p90: at(0.9),
            p95: at(0.95),
            p99: at(0.99),
            p999: at(0.999),
            max: histogram.max(),
        }
    }
}

/// The label of a VERIFY answered `valid = 0` for the signature the generator made at
/// set-up, which must verify: the proxy answered, but wrongly.
pub const INVALID_SIGNATURE: &str = "INVALID_SIGNATURE";

/// The label an error is counted under: the wire status name (`BUSY`, `TIMEOUT`, ...)
/// for errors the proxy sent, otherwise what went wrong on the client's side.
pub fn error_label(error: &Error) -> &'static str {
    if let Some(status) = error.status() {
        return status.name();
    }
    match error {
        Error::ConnectionClosed => "CONNECTION_CLOSED",
        Error::Connect { .. } => "CONNECT",
        Error::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Error::Protocol(_) => "PROTOCOL",
        Error::InvalidRequest(_) => "INVALID_REQUEST",
        _ => "OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_latencies_and_errors() {
        let mut total = Recorder::new();
        let mut worker = Recorder::new();
        for micros in 1..=1000 {
            worker.record_ok(Duration::from_micros(micros));
        }
        worker.record_error(&Error::Busy { message: String::new(), retry_after: Duration::ZERO });
        worker.record_error(&Error::DeadlineExceeded);
        worker.record_failure(INVALID_SIGNATURE, true);
        total.merge(&worker);
        total.merge(&worker);

        assert_eq!(total.ops(), 2000);
        assert_eq!(total.errors().get("BUSY"), Some(&2));
        assert_eq!(total.errors().get("DEADLINE_EXCEEDED"), Some(&2));
        assert_eq!(total.errors().get("INVALID_SIGNATURE"), Some(&2));
        assert_eq!(total.completed(), 2006);
        // BUSY and an invalid signature are the proxy's answers; a deadline that passed
        // on the client's side is not.
        assert_eq!(total.answered(), 2004);
        let summary = total.summary();
        assert!((499..=501).contains(&summary.p50), "{summary:?}");
        assert!((989..=991).contains(&summary.p99), "{summary:?}");
        assert_eq!(summary.max, 1000);
    }

    #[test]
    fn an_empty_recorder_summarises_to_zero() {
        assert_eq!(Recorder::new().summary(), LatencySummary::default());
    }
}
