//! `/healthz?verbose`: the health detail an HSM operator watches, as JSON: whether the
//! proxy is live and ready (and why not), the audit log's state, and per backend the
//! last successful probe (the key list read every `keys.refresh_interval`) and its
//! answers since start (requests, errors, BUSY, the error ratio).
//!
//! Session utilisation and latency percentiles are not here: they are on `/metrics`
//! (`keymux_pkcs11_*`, `keymux_request_duration_seconds`) and in the Grafana dashboard.

use keymux_protocol::{Opcode, Status};
use serde_json::{Value, json};

use super::readiness::Readiness;
use crate::telemetry::Metrics;

/// Statuses that say the backend failed (not the client).
const BACKEND_ERRORS: [Status; 3] = [Status::BackendUnavailable, Status::Timeout, Status::Internal];

/// The detail document.
pub(super) fn detail(metrics: &Metrics, readiness: &Readiness, backend: &str) -> Value {
    let count = |statuses: &[Status]| -> u64 {
        Opcode::ALL
            .iter()
            .flat_map(|op| statuses.iter().map(move |status| metrics.requests(*op, *status)))
            .sum()
    };
    let total = count(&Status::ALL);
    let errors = count(&BACKEND_ERRORS);
    let busy = count(&[Status::Busy]);
    let ready = readiness.check();
    let status = if readiness.is_draining() {
        "draining"
    } else if metrics.audit_failing() {
        "audit_failing"
    } else {
        "ok"
    };
    json!({
        "status": status,
        "ready": ready.is_ok(),
        "not_ready": ready.err().map(|why| why.to_string()),
        "audit": { "failing": metrics.audit_failing() },
        "backends": [{
            "kind": backend,
            "last_successful_probe_ms_ago": readiness.key_list_age().as_millis() as u64,
            "requests": total,
            "errors": errors,
            "busy": busy,
            "error_ratio": if total == 0 { 0.0 } else { errors as f64 / total as f64 },
        }],
    })
}
