//! A region's circuit breaker.
//!
//! Consecutive failures (no answer, a timeout, a server error) up to the threshold open
//! the circuit; while it is open the region gets no work: operations move to the next
//! region or fail fast with BACKEND_UNAVAILABLE. The region's prober (see
//! [`super::failover`]) closes it once the region answers again. Any answer from KMS,
//! a refusal included, resets the count.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// One region's breaker.
pub(crate) struct Circuit {
    threshold: u32,
    failures: AtomicU32,
    open: AtomicBool,
}

impl Circuit {
    /// A closed circuit that opens after `threshold` consecutive failures.
    pub(crate) fn new(threshold: u32) -> Self {
        Self { threshold, failures: AtomicU32::new(0), open: AtomicBool::new(false) }
    }

    /// Whether the region is shut off.
    pub(crate) fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    /// KMS answered.
    pub(crate) fn record_answer(&self) {
        self.failures.store(0, Ordering::Release);
    }

    /// A request got no usable answer; returns true if this opened the circuit.
    pub(crate) fn record_failure(&self) -> bool {
        let failures = self.failures.fetch_add(1, Ordering::AcqRel).saturating_add(1);
        failures >= self.threshold && !self.open.swap(true, Ordering::AcqRel)
    }

    /// A probe was answered: closes the circuit; returns true if it was open.
    pub(crate) fn close(&self) -> bool {
        self.failures.store(0, Ordering::Release);
        self.open.swap(false, Ordering::AcqRel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_consecutive_failures_and_closes_on_probe() {
        let circuit = Circuit::new(3);
        assert!(!circuit.record_failure());
        assert!(!circuit.record_failure());
        circuit.record_answer();
        assert!(!circuit.record_failure());
        assert!(!circuit.record_failure());
        assert!(circuit.record_failure(), "the third in a row opens it");
        assert!(circuit.is_open());
        assert!(!circuit.record_failure(), "opened once");
        assert!(circuit.close());
        assert!(!circuit.is_open());
        assert!(!circuit.close());
    }
}
