//! The admin HTTP listener: `/metrics` (Prometheus text format) and `/healthz`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::telemetry::Metrics;

#[derive(Clone)]
struct AdminState {
    metrics: Arc<Metrics>,
    serving: Arc<AtomicBool>,
}

async fn metrics_page(State(state): State<AdminState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        state.metrics.encode(),
    )
}

async fn healthz(State(state): State<AdminState>) -> impl IntoResponse {
    if !state.serving.load(Ordering::Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
    } else if state.metrics.audit_failing() {
        // Serving on without an audit trail is a compliance failure an operator must see.
        (StatusCode::SERVICE_UNAVAILABLE, "audit log failing: records cannot be written\n")
    } else {
        (StatusCode::OK, "ok\n")
    }
}

/// Serves the admin endpoints on `listener` until `shutdown` fires. `/healthz` answers
/// 503 once `serving` is false (during the shutdown drain) and while the audit log's
/// writes fail.
pub(super) async fn serve_admin(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    serving: Arc<AtomicBool>,
    shutdown: CancellationToken,
) {
    let app = Router::new()
        .route("/metrics", get(metrics_page))
        .route("/healthz", get(healthz))
        .with_state(AdminState { metrics, serving });
    let result = axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await;
    if let Err(error) = result {
        tracing::warn!(%error, "admin listener failed");
    }
}
