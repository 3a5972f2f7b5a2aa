//! The operator's endpoints on the admin listener: `POST /reload` (what `keymux
//! reload` calls), `GET /audit/query` (the SQLite index, see `audit::index`) and
//! `GET /audit/export?format=jsonl|cef` (streamed from the log files).
//!
//! Every one needs `Authorization: Bearer <operator.token>`: without the header or with
//! another token the answer is 401; with no `operator.token` configured, 403 (the
//! endpoints are off). The token is read from its source on each request, so a
//! rotated token file applies at once, and compared in constant time. The admin
//! listener is meant for loopback (its default, `admin.listen`); put it behind
//! something that terminates TLS before exposing it further.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Query as Query_, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use subtle::ConstantTimeEq;

use super::live::{LiveConfig, ReloadError};
use crate::audit::export::{ExportFormat, export};
use crate::audit::index::{AuditIndex, MAX_LIMIT, Query};

/// The routes, to merge into the admin listener's router.
pub(super) fn routes(live: Arc<LiveConfig>) -> Router {
    Router::new()
        .route("/reload", post(reload))
        .route("/audit/query", get(audit_query))
        .route("/audit/export", get(audit_export))
        .with_state(live)
}

/// A bad query parameter: 400 naming it.
fn bad_parameter(name: &str, message: &str) -> Refusal {
    Refusal(StatusCode::BAD_REQUEST, format!("parameter `{name}`: {message}\n"))
}

/// An RFC 3339 time (`2026-01-01T00:00:00Z`, fractions and offsets allowed) in the
/// form the log writes, so times compare as text.
fn parse_time(name: &str, value: &str) -> Result<String, Refusal> {
    humantime::parse_rfc3339_weak(value)
        .map(|time| humantime::format_rfc3339_millis(time).to_string())
        .map_err(|_| bad_parameter(name, "expected an RFC 3339 time such as 2026-01-01T00:00:00Z"))
}

/// The query parameters as an [`audit::index::Query`], or 400 naming the bad one.
pub(super) fn parse_query(params: &HashMap<String, String>) -> Result<Query, Refusal> {
    let mut query = Query::default();
    for (name, value) in params {
        match name.as_str() {
            "from" => query.from = Some(parse_time(name, value)?),
            "to" => query.to = Some(parse_time(name, value)?),
            "principal" => query.principal = Some(value.clone()),
            "key" => query.key = Some(value.clone()),
            "op" => query.op = Some(value.clone()),
            "outcome" => {
                if !["denied", "failed", "refused", "ok", "info"].contains(&value.as_str()) {
                    return Err(bad_parameter(name, "expected denied, failed, refused, ok or info"));
                }
                query.outcome = Some(value.clone());
            }
            "limit" => {
                query.limit = match value.parse::<u32>() {
                    Ok(limit @ 1..=MAX_LIMIT) => limit,
                    _ => return Err(bad_parameter(name, &format!("expected 1..={MAX_LIMIT}"))),
                }
            }
            "format" => {}
            _ => return Err(bad_parameter(name, "unknown parameter")),
        }
    }
    Ok(query)
}

/// The audit log and its index file, or 404 when no audit log is configured.
pub(super) fn audit_files(live: &LiveConfig) -> Result<(PathBuf, PathBuf), Refusal> {
    let config = live.current();
    let Some(log) = config.audit.path.clone() else {
        return Err(Refusal(StatusCode::NOT_FOUND, "no audit log: set audit.path\n".into()));
    };
    let index = config.operator.audit_index.clone().unwrap_or_else(|| AuditIndex::default_path(&log));
    Ok((log, index))
}

async fn audit_query(
    State(live): State<Arc<LiveConfig>>,
    headers: HeaderMap,
    Query_(params): Query_<HashMap<String, String>>,
) -> Result<Response, Refusal> {
    authorize(&live, &headers)?;
    let query = parse_query(&params)?;
    let (log, index) = audit_files(&live)?;
    let result = tokio::task::spawn_blocking(move || {
        live.audit().sync();
        let mut index = AuditIndex::open(&index, &log)?;
        index.sync()?;
        index.query(&query)
    })
    .await;
    Ok(match result {
        Ok(Ok(lines)) => {
            let records: Vec<serde_json::Value> =
                lines.iter().filter_map(|line| serde_json::from_str(line).ok()).collect();
            axum::Json(serde_json::json!({ "count": records.len(), "records": records })).into_response()
        }
        Ok(Err(error)) => {
            tracing::warn!(%error, "audit query failed");
            (StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n")).into_response()
        }
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "audit query task failed\n").into_response(),
    })
}

/// Lines in flight between the reading thread and the client, at most.
const EXPORT_BUFFER: usize = 64;

async fn audit_export(
    State(live): State<Arc<LiveConfig>>,
    headers: HeaderMap,
    Query_(params): Query_<HashMap<String, String>>,
) -> Result<Response, Refusal> {
    authorize(&live, &headers)?;
    let name = params.get("format").map_or("jsonl", String::as_str);
    let format = ExportFormat::parse(name).ok_or_else(|| bad_parameter("format", "expected jsonl or cef"))?;
    let query = parse_query(&params)?;
    if let Some(name) =
        ["principal", "key", "op", "outcome", "limit"].iter().find(|name| params.contains_key(**name))
    {
        return Err(bad_parameter(name, "export takes only format, from and to"));
    }
    let (log, _) = audit_files(&live)?;
    // A bounded channel: the reading thread waits while the client is slow, so the
    // export never holds more than EXPORT_BUFFER lines.
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<String, std::io::Error>>(EXPORT_BUFFER);
    tokio::task::spawn_blocking(move || {
        live.audit().sync();
        let (from, to) = (query.from.as_deref(), query.to.as_deref());
        let result = export(&log, format, from, to, |line| sender.blocking_send(Ok(line)).is_ok());
        if let Err(error) = result {
            let _ = sender.blocking_send(Err(error));
        }
    });
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    });
    let content_type = match format {
        ExportFormat::JsonLines => "application/x-ndjson",
        ExportFormat::Cef => "text/plain; charset=utf-8",
    };
    Ok(([(header::CONTENT_TYPE, content_type)], axum::body::Body::from_stream(stream)).into_response())
}

/// Why an operator request was turned away.
pub(super) struct Refusal(pub(super) StatusCode, String);

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
        return Err(Refusal(
            StatusCode::FORBIDDEN,
            "operator endpoints are off: set operator.token\n".into(),
        ));
    };
    let expected = source.resolve().map_err(|error| {
        tracing::warn!(%error, "cannot read operator.token");
        Refusal(StatusCode::SERVICE_UNAVAILABLE, "operator.token cannot be read\n".into())
    })?;
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    match presented {
        Some(token) if bool::from(token.as_bytes().ct_eq(expected.as_bytes())) => Ok(()),
        _ => Err(Refusal(StatusCode::UNAUTHORIZED, "a valid operator token is required\n".into())),
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
