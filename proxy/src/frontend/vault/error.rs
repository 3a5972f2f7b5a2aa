//! The Transit API's errors, and the one place they map to Vault's HTTP statuses and
//! its error body, `{"errors": ["..."]}`.

use std::time::Duration;

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use keymux_protocol::{Failure, Status};

use crate::error::OpError;
use crate::keys::KeyAdminError;

/// Why a Transit request failed. Messages never carry key material or tokens.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VaultError {
    /// Bad input: unparsable JSON, a bad field, a ciphertext that does not decode.
    #[error("{0}")]
    BadRequest(String),
    /// A ciphertext that does not authenticate under its key and context: Vault says
    /// 400 too.
    #[error("cipher: message authentication failed")]
    Integrity,
    /// No token, an unknown token, or the ACL refuses.
    #[error("permission denied")]
    PermissionDenied,
    /// No such key (or no such path).
    #[error("{0}")]
    NotFound(String),
    /// The path exists, not with this method.
    #[error("unsupported operation")]
    MethodNotAllowed,
    /// The body is over the listener's limit.
    #[error("{0}")]
    TooLarge(&'static str),
    /// A queue is full or a quota is hit: retry after the hint.
    #[error("{message}")]
    Busy {
        /// What is busy.
        message: String,
        /// When to retry.
        retry_after: Duration,
    },
    /// The backend cannot serve now, or the deadline passed.
    #[error("{message}")]
    Unavailable {
        /// What is unavailable.
        message: String,
        /// When to retry.
        retry_after: Duration,
    },
    /// A bug or an unexpected backend answer.
    #[error("internal error: {0}")]
    Internal(String),
}

impl VaultError {
    /// The HTTP status Vault answers this error with: the one mapping.
    pub fn status(&self) -> StatusCode {
        match self {
            VaultError::BadRequest(_) | VaultError::Integrity => StatusCode::BAD_REQUEST,
            VaultError::PermissionDenied => StatusCode::FORBIDDEN,
            VaultError::NotFound(_) => StatusCode::NOT_FOUND,
            VaultError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            VaultError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            VaultError::Busy { .. } => StatusCode::TOO_MANY_REQUESTS,
            VaultError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            VaultError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Whether a batch item failing this way is the client's doing (Vault answers such
    /// a batch 400). A busy key or a quota is not: retrying later may work.
    pub fn is_user_error(&self) -> bool {
        self.status().is_client_error() && !matches!(self, VaultError::Busy { .. })
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            VaultError::Busy { retry_after, .. } | VaultError::Unavailable { retry_after, .. } => {
                Some(*retry_after)
            }
            _ => None,
        }
    }
}

/// The listener's own refusals ([`crate::frontend::http::Rejection`]) in Vault's form.
pub fn reject(status: StatusCode, message: &'static str) -> Response {
    let error = match status {
        StatusCode::PAYLOAD_TOO_LARGE => VaultError::TooLarge(message),
        StatusCode::SERVICE_UNAVAILABLE => {
            VaultError::Unavailable { message: message.to_owned(), retry_after: Duration::from_secs(1) }
        }
        _ => VaultError::BadRequest(message.to_owned()),
    };
    error.into_response()
}

impl IntoResponse for VaultError {
    fn into_response(self) -> Response {
        // Vault's 404 for a missing key has an empty list.
        let message = self.to_string();
        let errors: Vec<String> = if message.is_empty() { Vec::new() } else { vec![message] };
        let mut response = (self.status(), Json(serde_json::json!({ "errors": errors }))).into_response();
        if let Some(retry_after) = self.retry_after() {
            // Whole seconds, rounded up: Retry-After has no finer unit.
            let seconds = retry_after.as_millis().div_ceil(1000).max(1);
            if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

impl From<Failure> for VaultError {
    fn from(failure: Failure) -> Self {
        let retry_after = Duration::from_millis(u64::from(failure.retry_after_ms));
        let message = failure.message;
        match failure.status {
            Status::UnknownKey => VaultError::NotFound(message),
            Status::Forbidden => VaultError::PermissionDenied,
            Status::Integrity => VaultError::Integrity,
            Status::Busy => VaultError::Busy { message, retry_after },
            Status::BackendUnavailable => VaultError::Unavailable { message, retry_after },
            Status::Timeout => VaultError::Unavailable { message, retry_after: Duration::from_secs(1) },
            Status::Internal => VaultError::Internal(message),
            // Bad input, a disabled or retired version, an operation the key cannot do.
            _ => VaultError::BadRequest(message),
        }
    }
}

impl From<OpError> for VaultError {
    fn from(error: OpError) -> Self {
        Failure::from(error).into()
    }
}

impl From<KeyAdminError> for VaultError {
    fn from(error: KeyAdminError) -> Self {
        match error {
            KeyAdminError::UnknownKey(key) => VaultError::NotFound(format!("unknown key {key:?}")),
            other => other.into_op_error().into(),
        }
    }
}

impl From<JsonRejection> for VaultError {
    fn from(rejection: JsonRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return VaultError::TooLarge("request body too large");
        }
        VaultError::BadRequest(format!("failed to parse JSON input: {}", rejection.body_text()))
    }
}

impl From<PathRejection> for VaultError {
    fn from(rejection: PathRejection) -> Self {
        VaultError::BadRequest(rejection.body_text())
    }
}

impl From<QueryRejection> for VaultError {
    fn from(rejection: QueryRejection) -> Self {
        VaultError::BadRequest(rejection.body_text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keymux_statuses_map_to_vaults() {
        let status = |status: Status| VaultError::from(Failure::new(status, "x")).status();
        assert_eq!(status(Status::BadRequest), StatusCode::BAD_REQUEST);
        assert_eq!(status(Status::Integrity), StatusCode::BAD_REQUEST);
        assert_eq!(status(Status::KeyDisabled), StatusCode::BAD_REQUEST);
        assert_eq!(status(Status::UnknownKey), StatusCode::NOT_FOUND);
        assert_eq!(status(Status::Forbidden), StatusCode::FORBIDDEN);
        assert_eq!(status(Status::Busy), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(status(Status::BackendUnavailable), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(status(Status::Internal), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn busy_carries_retry_after_in_whole_seconds() {
        let busy = VaultError::Busy { message: "busy".into(), retry_after: Duration::from_millis(10) };
        let response = busy.into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    }
}
