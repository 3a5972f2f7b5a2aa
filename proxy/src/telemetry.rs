//! The one place tracing and metrics are set up.
//!
//! Metrics use `prometheus-client`; the handles on the request path are resolved once
//! at start-up, so recording is a few atomic operations with no label lookups.

use std::sync::Arc;
use std::time::Duration;

use keymux_protocol::{Opcode, Status};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Installs the global tracing subscriber: human-readable lines on stderr, filtered by
/// `RUST_LOG` (default `info`). Safe to call more than once.
///
/// The default leaves out cryptoki's complaint when it drops a session the token
/// already closed: that is expected while a PKCS#11 session is being recovered, and
/// keymux logs the recovery itself.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,cryptoki::session::session_management=off")
    });
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpStatusLabels {
    op: &'static str,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendOpLabels {
    backend: &'static str,
    op: &'static str,
}

/// Every metric keymux exports, with pre-resolved handles for the hot path.
pub struct Metrics {
    registry: Registry,
    requests: Vec<Counter>,
    latency: Vec<Histogram>,
    batch_size: Histogram,
    queue_depth: Gauge,
    cache_hits: Counter,
    cache_misses: Counter,
    cache_evictions: Counter,
    backend_ops: Family<BackendOpLabels, Counter>,
    backend_batches: Family<BackendOpLabels, Counter>,
    connections: Gauge,
    rejected_frames: Counter,
    timed_out_connections: Counter,
    failed_handshakes: Counter,
    evicted_handshakes: Counter,
    address_validations: Counter,
    refused_connections: Family<ReasonLabels, Counter>,
    audit: crate::audit::AuditHealth,
}

/// The index of an opcode among [`Opcode::ALL`], for the pre-resolved handles.
fn op_index(op: Opcode) -> usize {
    Opcode::ALL.iter().position(|o| *o == op).unwrap_or(0)
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Arc<Self> {
        Self::with_extra(|_| {})
    }

    /// Creates and registers every metric, and whatever `extra` registers (a
    /// backend's own metrics).
    pub fn with_extra(extra: impl FnOnce(&mut Registry)) -> Arc<Self> {
        let mut registry = Registry::with_prefix("keymux");
        extra(&mut registry);

        let requests_family = Family::<OpStatusLabels, Counter>::default();
        registry.register("requests", "Requests answered, by operation and status", requests_family.clone());
        let mut requests = Vec::with_capacity(Opcode::ALL.len() * Status::ALL.len());
        for op in Opcode::ALL {
            for status in Status::ALL {
                let labels = OpStatusLabels { op: op.name(), status: status.name() };
                requests.push(requests_family.get_or_create(&labels).clone());
            }
        }

        let latency_family = Family::<OpLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_01, 2.0, 22))
        });
        registry.register(
            "request_duration_seconds",
            "Time from reading a request to queueing its response",
            latency_family.clone(),
        );
        let latency = Opcode::ALL
            .iter()
            .map(|op| latency_family.get_or_create(&OpLabels { op: op.name() }).clone())
            .collect();

        let batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 13));
        registry.register("batch_size", "Jobs per backend batch", batch_size.clone());
        let queue_depth = Gauge::default();
        registry.register("queue_depth", "Jobs waiting in per-key queues", queue_depth.clone());
        let cache_hits = Counter::default();
        registry.register("cache_hits", "Unwraps answered from the cache", cache_hits.clone());
        let cache_misses = Counter::default();
        registry.register("cache_misses", "Unwraps not found in the cache", cache_misses.clone());
        let cache_evictions = Counter::default();
        registry.register(
            "cache_evictions",
            "Cache entries evicted for size or age",
            cache_evictions.clone(),
        );
        let backend_ops = Family::<BackendOpLabels, Counter>::default();
        registry.register("backend_ops", "Operations run on a backend", backend_ops.clone());
        let backend_batches = Family::<BackendOpLabels, Counter>::default();
        registry.register("backend_batches", "Batches run on a backend", backend_batches.clone());
        let connections = Gauge::default();
        registry.register("connections", "Open client connections", connections.clone());
        let rejected_frames = Counter::default();
        registry.register(
            "rejected_frames",
            "Frames that closed their connection (bad length or version)",
            rejected_frames.clone(),
        );
        let timed_out_connections = Counter::default();
        registry.register(
            "timed_out_connections",
            "Connections closed for idling or for not completing a frame in time",
            timed_out_connections.clone(),
        );
        let failed_handshakes = Counter::default();
        registry.register(
            "failed_handshakes",
            "TLS or QUIC handshakes that failed or timed out (client certificates included)",
            failed_handshakes.clone(),
        );

        let evicted_handshakes = Counter::default();
        registry.register(
            "evicted_handshakes",
            "Pending handshakes dropped to make room in a full server.max_handshakes budget",
            evicted_handshakes.clone(),
        );
        let address_validations = Counter::default();
        registry.register(
            "quic_retries",
            "QUIC Retry packets sent to make a client prove its address",
            address_validations.clone(),
        );
        let refused_connections = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "refused_connections",
            "Connections closed before being served: per_source or connection_limit",
            refused_connections.clone(),
        );

        let audit = crate::audit::AuditHealth::default();
        registry.register(
            "audit_write_failures",
            "Audit records or syncs that could not be written (a full disk, say)",
            audit.write_failures.clone(),
        );
        registry.register(
            "audit_failing",
            "1 while the audit log's last write failed",
            audit.failing.clone(),
        );

        Arc::new(Self {
            registry,
            requests,
            latency,
            batch_size,
            queue_depth,
            cache_hits,
            cache_misses,
            cache_evictions,
            backend_ops,
            backend_batches,
            connections,
            rejected_frames,
            timed_out_connections,
            failed_handshakes,
            evicted_handshakes,
            address_validations,
            refused_connections,
            audit,
        })
    }

    /// Records one answered request.
    pub fn record_request(&self, op: Opcode, status: Status, elapsed: Duration) {
        let index = op_index(op) * Status::ALL.len() + status as usize;
        if let Some(counter) = self.requests.get(index) {
            counter.inc();
        }
        self.latency[op_index(op)].observe(elapsed.as_secs_f64());
    }

    /// Requests answered so far with this op and status.
    pub fn requests(&self, op: Opcode, status: Status) -> u64 {
        self.requests[op_index(op) * Status::ALL.len() + status as usize].get()
    }

    /// Records a batch of `ops` operations of kind `op` run on `backend`.
    pub fn record_batch(&self, backend: &'static str, op: &'static str, ops: usize) {
        let labels = BackendOpLabels { backend, op };
        self.backend_batches.get_or_create(&labels).inc();
        self.backend_ops.get_or_create(&labels).inc_by(ops as u64);
    }

    /// Records the size of one executor batch.
    pub fn record_batch_size(&self, jobs: usize) {
        self.batch_size.observe(jobs as f64);
    }

    /// Operations of kind `op` run on `backend` so far.
    pub fn backend_ops(&self, backend: &'static str, op: &'static str) -> u64 {
        self.backend_ops.get_or_create(&BackendOpLabels { backend, op }).get()
    }

    /// Adjusts the queued-jobs gauge.
    pub fn queue_depth_add(&self, delta: i64) {
        self.queue_depth.inc_by(delta);
    }

    /// Counts a cache hit.
    pub fn cache_hit(&self) {
        self.cache_hits.inc();
    }

    /// Counts a cache miss.
    pub fn cache_miss(&self) {
        self.cache_misses.inc();
    }

    /// Counts a cache eviction.
    pub fn cache_eviction(&self) {
        self.cache_evictions.inc();
    }

    /// Cache hits so far.
    pub fn cache_hits(&self) -> u64 {
        self.cache_hits.get()
    }

    /// Cache misses so far.
    pub fn cache_misses(&self) -> u64 {
        self.cache_misses.get()
    }

    /// Adjusts the open-connections gauge.
    pub fn connections_add(&self, delta: i64) {
        self.connections.inc_by(delta);
    }

    /// Counts a frame that closed its connection.
    pub fn frame_rejected(&self) {
        self.rejected_frames.inc();
    }

    /// Counts a connection closed by the idle or frame timeout.
    pub fn connection_timed_out(&self) {
        self.timed_out_connections.inc();
    }

    /// Counts a failed or timed-out TLS/QUIC handshake.
    pub fn handshake_failed(&self) {
        self.failed_handshakes.inc();
    }

    /// Counts a pending handshake dropped from a full budget.
    pub fn handshake_evicted(&self) {
        self.evicted_handshakes.inc();
    }

    /// Counts a QUIC Retry sent.
    pub fn address_validation_sent(&self) {
        self.address_validations.inc();
    }

    /// Counts a connection closed before being served, for `reason`.
    pub fn connection_refused(&self, reason: &'static str) {
        self.refused_connections.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// The audit log's health counters, for the log's writer to report on.
    pub fn audit_health(&self) -> crate::audit::AuditHealth {
        self.audit.clone()
    }

    /// Whether the audit log's last write failed.
    pub fn audit_failing(&self) -> bool {
        self.audit.failing.get() != 0
    }

    /// Everything, in the Prometheus text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_lists_every_family() {
        let metrics = Metrics::new();
        metrics.record_request(Opcode::Wrap, Status::Ok, Duration::from_micros(80));
        metrics.record_batch("soft", "wrap", 3);
        metrics.record_batch_size(3);
        let text = metrics.encode();
        for name in [
            "keymux_requests_total{op=\"wrap\",status=\"OK\"} 1",
            "keymux_request_duration_seconds_bucket",
            "keymux_batch_size_bucket",
            "keymux_queue_depth",
            "keymux_cache_hits_total",
            "keymux_cache_misses_total",
            "keymux_cache_evictions_total",
            "keymux_backend_ops_total{backend=\"soft\",op=\"wrap\"} 3",
            "keymux_connections",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
        assert_eq!(metrics.requests(Opcode::Wrap, Status::Ok), 1);
    }
}
