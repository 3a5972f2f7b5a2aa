//! The admin HTTP listener: `/metrics` (Prometheus text format), `/healthz` (liveness;
//! `?verbose` for the JSON detail of [`super::health`])
//! and `/readyz` (readiness, see [`super::readiness`]), plus the operator's endpoints
//! (see [`super::operator_http`]).

use std::sync::Arc;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::readiness::Readiness;
use crate::telemetry::Metrics;

#[derive(Clone)]
struct AdminState {
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    backend: &'static str,
}

async fn metrics_page(State(state): State<AdminState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        state.metrics.encode(),
    )
}

async fn healthz(State(state): State<AdminState>, RawQuery(query): RawQuery) -> Response {
    if query
        .is_some_and(|query| query.split('&').any(|pair| pair == "verbose" || pair.starts_with("verbose=")))
    {
        let detail = super::health::detail(&state.metrics, &state.readiness, state.backend);
        let code = if detail["status"] == "ok" { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
        return (code, axum::Json(detail)).into_response();
    }
    if state.readiness.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
    } else if state.metrics.audit_failing() {
        // Serving on without an audit trail is a compliance failure an operator must see.
        (StatusCode::SERVICE_UNAVAILABLE, "audit log failing: records cannot be written\n")
    } else {
        (StatusCode::OK, "ok\n")
    }
    .into_response()
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    match state.readiness.check() {
        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    }
}

/// Serves the admin endpoints on `listener` until `shutdown` fires. `/healthz` answers
/// 503 once the drain has begun and while the audit log's writes fail; `/readyz` also
/// while the backend does not answer.
pub(super) async fn serve_admin(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    backend: &'static str,
    operator: Router,
    shutdown: CancellationToken,
) {
    let app = Router::new()
        .route("/metrics", get(metrics_page))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(AdminState { metrics, readiness, backend })
        .merge(operator);
    let result = axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await;
    if let Err(error) = result {
        tracing::warn!(%error, "admin listener failed");
    }
}
