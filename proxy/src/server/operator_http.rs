//! The operator's endpoints on the admin listener: `POST /reload` (what `keymux
//! reload` calls).
//!
//! Every one needs `Authorization: Bearer <operator.token>`: without the header or with
//! another token the answer is 401; with no `operator.token` configured, 403 (the
//! endpoints are off). The token is read from its source on each request, so a
//! rotated token file applies at once, and compared in constant time. The admin
//! listener is meant for loopback (its default, `admin.listen`); put it behind
//! something that terminates TLS before exposing it further.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use subtle::ConstantTimeEq;

use super::live::{LiveConfig, ReloadError};

/// The routes, to merge into the admin listener's router.
pub(super) fn routes(live: Arc<LiveConfig>) -> Router {
    Router::new().route("/reload", post(reload)).with_state(live)
}

/// Why an operator request was turned away.
pub(super) struct Refusal(StatusCode, &'static str);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let Refusal(status, message) = self;
        if status == StatusCode::UNAUTHORIZED {
            (status, [(header::WWW_AUTHENTICATE, "Bearer")], message).into_response()
        } else {
            (status, message).into_response()
        }
    }
}

/// Checks the bearer token against `operator.token`.
pub(super) fn authorize(live: &LiveConfig, headers: &HeaderMap) -> Result<(), Refusal> {
    let Some(source) = live.current().operator.token.clone() else {
        return Err(Refusal(StatusCode::FORBIDDEN, "operator endpoints are off: set operator.token\n"));
    };
    let expected = source.resolve().map_err(|error| {
        tracing::warn!(%error, "cannot read operator.token");
        Refusal(StatusCode::SERVICE_UNAVAILABLE, "operator.token cannot be read\n")
    })?;
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    match presented {
        Some(token) if bool::from(token.as_bytes().ct_eq(expected.as_bytes())) => Ok(()),
        _ => Err(Refusal(StatusCode::UNAUTHORIZED, "a valid operator token is required\n")),
    }
}

async fn reload(State(live): State<Arc<LiveConfig>>, headers: HeaderMap) -> Response {
    if let Err(refusal) = authorize(&live, &headers) {
        return refusal.into_response();
    }
    let result = tokio::task::spawn_blocking(move || live.reload("admin")).await;
    match result {
        Ok(Ok(outcome)) => {
            let body = serde_json::json!({ "reloaded": true, "changes": outcome.changes, "certificates": outcome.certificates });
            (StatusCode::OK, axum::Json(body)).into_response()
        }
        Ok(Err(error)) => {
            let status = match &error {
                ReloadError::RestartRequired { .. } => StatusCode::CONFLICT,
                _ => StatusCode::UNPROCESSABLE_ENTITY,
            };
            let restart = match &error {
                ReloadError::RestartRequired { keys } => keys.clone(),
                _ => Vec::new(),
            };
            let body = serde_json::json!({ "reloaded": false, "error": error.to_string(), "restart_required": restart });
            (status, axum::Json(body)).into_response()
        }
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "reload task failed\n").into_response(),
    }
}
