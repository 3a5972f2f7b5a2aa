//! The KMS backend's metrics, per configured region (the `backend` label), registered
//! into the proxy's one registry by [`crate::backend::Backend::register_metrics`].

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KmsCallLabels {
    backend: String,
    call: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KmsLabels {
    backend: String,
}

/// The KMS backend's metrics, per configured region (the `backend` label). Registered
/// into the proxy's registry by [`crate::backend::Backend::register_metrics`].
#[derive(Clone, Default)]
pub struct KmsMetrics {
    calls: Family<KmsCallLabels, Counter>,
    throttles: Family<KmsLabels, Counter>,
    retries: Family<KmsLabels, Counter>,
    admission_busy: Family<KmsLabels, Counter>,
    circuit_open: Family<KmsLabels, Gauge>,
    circuit_opens: Family<KmsLabels, Counter>,
    failovers: Family<KmsLabels, Counter>,
    rate: Family<KmsLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    intermediate_hits: Counter,
    intermediate_misses: Counter,
    intermediate_epochs: Counter,
}

/// How a KMS call ended, for [`KmsMetrics::call`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KmsOutcome {
    /// KMS answered (success, or an answer such as a bad ciphertext).
    Answered,
    /// KMS throttled the request.
    Throttled,
    /// No answer: a connection failure, a timeout or a server error.
    Failed,
}

impl KmsOutcome {
    fn name(self) -> &'static str {
        match self {
            KmsOutcome::Answered => "answered",
            KmsOutcome::Throttled => "throttled",
            KmsOutcome::Failed => "failed",
        }
    }
}

impl KmsMetrics {
    /// Adds every family to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        let kms = registry.sub_registry_with_prefix("kms");
        kms.register("calls", "KMS requests sent, by region, call and outcome", self.calls.clone());
        kms.register("throttles", "Throttling answers from KMS", self.throttles.clone());
        kms.register("retries", "KMS requests retried after throttling or a failure", self.retries.clone());
        kms.register(
            "admission_busy",
            "Operations answered BUSY because the region's token bucket had no room before their deadline",
            self.admission_busy.clone(),
        );
        kms.register("circuit_open", "1 while the region's circuit is open", self.circuit_open.clone());
        kms.register("circuit_opens", "Times the region's circuit opened", self.circuit_opens.clone());
        kms.register(
            "failovers",
            "Operations moved away from this region after it failed or its circuit opened",
            self.failovers.clone(),
        );
        kms.register(
            "admission_rate",
            "The region's current request rate limit (shrinks on throttling)",
            self.rate.clone(),
        );
        kms.register(
            "intermediate_cache_hits",
            "Intermediate-key unwraps answered from memory",
            self.intermediate_hits.clone(),
        );
        kms.register(
            "intermediate_cache_misses",
            "Intermediate-key unwraps that needed KMS",
            self.intermediate_misses.clone(),
        );
        kms.register(
            "intermediate_epochs",
            "Intermediate keys generated (one per epoch and key version)",
            self.intermediate_epochs.clone(),
        );
    }

    fn labels(backend: &str) -> KmsLabels {
        KmsLabels { backend: backend.to_owned() }
    }

    /// Counts one KMS request of `call` to region `backend`.
    pub fn call(&self, backend: &str, call: &'static str, outcome: KmsOutcome) {
        let labels = KmsCallLabels { backend: backend.to_owned(), call, outcome: outcome.name() };
        self.calls.get_or_create(&labels).inc();
        if outcome == KmsOutcome::Throttled {
            self.throttles.get_or_create(&Self::labels(backend)).inc();
        }
    }

    /// KMS requests of `call` to `backend` so far that ended with `outcome`.
    pub fn calls(&self, backend: &str, call: &'static str, outcome: KmsOutcome) -> u64 {
        let labels = KmsCallLabels { backend: backend.to_owned(), call, outcome: outcome.name() };
        self.calls.get_or_create(&labels).get()
    }

    /// Counts a retry.
    pub fn retry(&self, backend: &str) {
        self.retries.get_or_create(&Self::labels(backend)).inc();
    }

    /// Counts an operation refused by admission control.
    pub fn admission_busy(&self, backend: &str) {
        self.admission_busy.get_or_create(&Self::labels(backend)).inc();
    }

    /// Records the circuit of `backend` opening or closing.
    pub fn circuit(&self, backend: &str, open: bool) {
        self.circuit_open.get_or_create(&Self::labels(backend)).set(i64::from(open));
        if open {
            self.circuit_opens.get_or_create(&Self::labels(backend)).inc();
        }
    }

    /// Counts an operation moving on from `backend` to the next region.
    pub fn failover(&self, backend: &str) {
        self.failovers.get_or_create(&Self::labels(backend)).inc();
    }

    /// Records the current rate limit of `backend`.
    pub fn rate(&self, backend: &str, rate: f64) {
        self.rate.get_or_create(&Self::labels(backend)).set(rate);
    }

    /// Counts an intermediate-key unwrap answered from memory, or one that needed KMS.
    pub fn intermediate_lookup(&self, hit: bool) {
        if hit {
            self.intermediate_hits.inc()
        } else {
            self.intermediate_misses.inc()
        };
    }

    /// Counts a new intermediate key.
    pub fn intermediate_epoch(&self) {
        self.intermediate_epochs.inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::Metrics;

    #[test]
    fn kms_metrics_join_the_registry() {
        let kms = KmsMetrics::default();
        let metrics = Metrics::with_extra(|registry| kms.register(registry));
        kms.call("eu-west-1", "decrypt", KmsOutcome::Answered);
        kms.call("eu-west-1", "decrypt", KmsOutcome::Throttled);
        kms.retry("eu-west-1");
        kms.circuit("eu-west-1", true);
        kms.intermediate_lookup(true);
        let text = metrics.encode();
        for name in [
            "keymux_kms_calls_total{backend=\"eu-west-1\",call=\"decrypt\",outcome=\"answered\"} 1",
            "keymux_kms_throttles_total{backend=\"eu-west-1\"} 1",
            "keymux_kms_retries_total{backend=\"eu-west-1\"} 1",
            "keymux_kms_circuit_open{backend=\"eu-west-1\"} 1",
            "keymux_kms_circuit_opens_total{backend=\"eu-west-1\"} 1",
            "keymux_kms_intermediate_cache_hits_total 1",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
        assert_eq!(kms.calls("eu-west-1", "decrypt", KmsOutcome::Throttled), 1);
    }
}
