//! `GET /v1/sys/health`: what Vault's load balancers and clients probe, unauthenticated.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::VaultState;

/// The health body, in Vault's field names.
#[derive(Debug, Serialize)]
struct Health {
    initialized: bool,
    sealed: bool,
    standby: bool,
    replication_performance_mode: &'static str,
    replication_dr_mode: &'static str,
    server_time_utc: u64,
    version: String,
    cluster_name: &'static str,
    cluster_id: &'static str,
}

/// 200 while serving; 503 (Vault's "sealed" status) while the audit log cannot be
/// written, as the admin `/healthz` does, or during the shutdown drain.
pub(super) async fn health(State(state): State<VaultState>) -> Response {
    let failing = state.wiring.metrics.audit_failing() || state.shutdown.is_cancelled();
    let body = Health {
        initialized: true,
        sealed: failing,
        standby: false,
        replication_performance_mode: "disabled",
        replication_dr_mode: "disabled",
        server_time_utc: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        version: concat!(env!("CARGO_PKG_VERSION"), "+keymux").to_owned(),
        cluster_name: "keymux",
        // Proxies are stateless peers: one cluster, the same id everywhere.
        cluster_id: "6b65796d-7578-4000-8000-000000000000",
    };
    let status = if failing { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    (status, Json(body)).into_response()
}
