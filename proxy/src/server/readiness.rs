//! Readiness: whether a load balancer should send this proxy new clients, as `/readyz`
//! answers it, and the drain that turns it off before the listeners close.
//!
//! Ready means the proxy can do its work now: its key list was read from the backend
//! recently (so the backend answers: the refresher lists the keys every
//! `keys.refresh_interval`), the audit log can be written, and no shutdown has begun.
//! Liveness (`/healthz`) stays separate: a backend outage makes every replica unready,
//! not restarted.
//!
//! A shutdown begins with the drain: readiness goes off first, the listeners keep
//! serving for `server.drain_delay` so that balancers' health checks see the change and
//! send new connections elsewhere, and only then does the broadcast stop the listeners
//! and let in-flight requests finish.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::keys::KeyRegistry;
use crate::telemetry::Metrics;

/// Why the proxy is not ready; its text is `/readyz`'s body (no secrets in it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NotReady {
    /// A shutdown has begun.
    #[error("draining: shutting down")]
    Draining,
    /// The key list could not be read from the backend lately.
    #[error(
        "backend not answering: the key list was last read {age_ms} ms ago \
         (ready only within {limit_ms} ms: two keys.refresh_interval)"
    )]
    BackendStale {
        /// Milliseconds since the last successful read.
        age_ms: u128,
        /// The most that still counts as ready.
        limit_ms: u128,
    },
    /// The audit log's writes fail.
    #[error("audit log failing: records cannot be written")]
    AuditFailing,
}

/// The proxy's readiness, shared by the admin listener and the drain.
pub struct Readiness {
    draining: AtomicBool,
    registry: Arc<KeyRegistry>,
    metrics: Arc<Metrics>,
    max_key_age: Duration,
}

impl Readiness {
    /// Readiness of a proxy whose keys are in `registry`, refreshed every
    /// `refresh_interval`, wraps refused past `max_staleness`.
    pub(super) fn new(
        registry: Arc<KeyRegistry>,
        metrics: Arc<Metrics>,
        refresh_interval: Duration,
        max_staleness: Duration,
    ) -> Self {
        // One missed refresh is tolerated; never longer than new wraps are served.
        let max_key_age = (refresh_interval * 2).min(max_staleness);
        Self { draining: AtomicBool::new(false), registry, metrics, max_key_age }
    }

    /// Ready now, or why not.
    pub fn check(&self) -> Result<(), NotReady> {
        if self.is_draining() {
            return Err(NotReady::Draining);
        }
        let age = self.registry.age();
        if age > self.max_key_age {
            return Err(NotReady::BackendStale {
                age_ms: age.as_millis(),
                limit_ms: self.max_key_age.as_millis(),
            });
        }
        if self.metrics.audit_failing() {
            return Err(NotReady::AuditFailing);
        }
        Ok(())
    }

    /// How long ago the backend last answered the key list read (its health probe).
    pub fn key_list_age(&self) -> Duration {
        self.registry.age()
    }

    /// Whether a shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub(super) fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }
}

/// Starts a proxy's shutdown the way a load balancer needs it; cheap to clone.
#[derive(Clone)]
pub struct Drain {
    pub(super) readiness: Arc<Readiness>,
    pub(super) shutdown: CancellationToken,
    pub(super) delay: Duration,
}

impl Drain {
    /// Goes not-ready at once, keeps serving for `server.drain_delay` (cut short if the
    /// shutdown token is cancelled meanwhile), then cancels the shutdown token: the
    /// listeners stop and in-flight requests get `server.shutdown_grace` to finish.
    pub async fn run(self) {
        self.readiness.start_draining();
        if !self.delay.is_zero() {
            tracing::info!(delay = ?self.delay, "not ready: serving on while balancers notice");
            tokio::select! {
                () = tokio::time::sleep(self.delay) => {}
                () = self.shutdown.cancelled() => {}
            }
        }
        self.shutdown.cancel();
    }
}
