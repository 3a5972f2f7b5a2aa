//! The XKS specification's errors: each a name and an HTTP status, answered as
//! `{"errorName": ..., "errorMessage": ...}`, and the one mapping of router failures to
//! them.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use keymux_protocol::{Failure, Status};

/// An error the XKS specification defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum XksErrorName {
    /// 400: an input parameter is invalid.
    ValidationException,
    /// 400: the key is disabled.
    InvalidStateException,
    /// 400: ciphertext, IV, AAD or tag corrupted, missing or invalid.
    InvalidCiphertextException,
    /// 400: the key does not support the operation.
    InvalidKeyUsageException,
    /// 401: the SigV4 signature does not verify (or the request is too old or new).
    AuthenticationFailedException,
    /// 403: not authorised based on the request metadata.
    AccessDeniedException,
    /// 404: no such key.
    KeyNotFoundException,
    /// 404: not an XKS API path.
    InvalidUriPathException,
    /// 429: too many requests.
    ThrottlingException,
    /// 501: not implemented, or a parameter larger than supported.
    UnsupportedOperationException,
    /// 503: a dependency (the backend) did not answer in time.
    DependencyTimeoutException,
    /// 500: anything else.
    InternalException,
}

impl XksErrorName {
    /// Every error, for tests.
    pub const ALL: [XksErrorName; 12] = [
        Self::ValidationException,
        Self::InvalidStateException,
        Self::InvalidCiphertextException,
        Self::InvalidKeyUsageException,
        Self::AuthenticationFailedException,
        Self::AccessDeniedException,
        Self::KeyNotFoundException,
        Self::InvalidUriPathException,
        Self::ThrottlingException,
        Self::UnsupportedOperationException,
        Self::DependencyTimeoutException,
        Self::InternalException,
    ];

    /// The `errorName`.
    pub fn name(self) -> &'static str {
        match self {
            Self::ValidationException => "ValidationException",
            Self::InvalidStateException => "InvalidStateException",
            Self::InvalidCiphertextException => "InvalidCiphertextException",
            Self::InvalidKeyUsageException => "InvalidKeyUsageException",
            Self::AuthenticationFailedException => "AuthenticationFailedException",
            Self::AccessDeniedException => "AccessDeniedException",
            Self::KeyNotFoundException => "KeyNotFoundException",
            Self::InvalidUriPathException => "InvalidUriPathException",
            Self::ThrottlingException => "ThrottlingException",
            Self::UnsupportedOperationException => "UnsupportedOperationException",
            Self::DependencyTimeoutException => "DependencyTimeoutException",
            Self::InternalException => "InternalException",
        }
    }

    /// The HTTP status the specification gives it.
    pub fn status(self) -> StatusCode {
        match self {
            Self::ValidationException
            | Self::InvalidStateException
            | Self::InvalidCiphertextException
            | Self::InvalidKeyUsageException => StatusCode::BAD_REQUEST,
            Self::AuthenticationFailedException => StatusCode::UNAUTHORIZED,
            Self::AccessDeniedException => StatusCode::FORBIDDEN,
            Self::KeyNotFoundException | Self::InvalidUriPathException => StatusCode::NOT_FOUND,
            Self::ThrottlingException => StatusCode::TOO_MANY_REQUESTS,
            Self::UnsupportedOperationException => StatusCode::NOT_IMPLEMENTED,
            Self::DependencyTimeoutException => StatusCode::SERVICE_UNAVAILABLE,
            Self::InternalException => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// An error answer: the name and a message (printable ASCII, under 512 characters, as
/// the specification requires; never key material).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XksError {
    /// Which error.
    pub name: XksErrorName,
    /// Why.
    pub message: String,
}

impl XksError {
    /// `name` with `message`.
    pub fn new(name: XksErrorName, message: impl Into<String>) -> Self {
        Self { name, message: message.into() }
    }

    /// A ValidationException.
    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(XksErrorName::ValidationException, message)
    }

    /// The XKS error for a router failure of an Encrypt or Decrypt: the one mapping.
    pub fn from_failure(failure: &Failure) -> Self {
        let name = match failure.status {
            Status::BadRequest => XksErrorName::ValidationException,
            Status::UnknownKey => XksErrorName::KeyNotFoundException,
            // The ACL does not let this key store use the key for this operation.
            Status::Forbidden => XksErrorName::InvalidKeyUsageException,
            Status::Integrity => XksErrorName::InvalidCiphertextException,
            Status::KeyDisabled => XksErrorName::InvalidStateException,
            Status::Busy => XksErrorName::ThrottlingException,
            Status::Timeout => XksErrorName::DependencyTimeoutException,
            Status::Unsupported => XksErrorName::UnsupportedOperationException,
            _ => XksErrorName::InternalException,
        };
        Self::new(name, failure.message.clone())
    }
}

/// Printable ASCII only, under 512 characters.
fn printable(message: &str) -> String {
    message.chars().map(|c| if (' '..='~').contains(&c) { c } else { '?' }).take(500).collect()
}

impl IntoResponse for XksError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "errorName": self.name.name(),
            "errorMessage": printable(&self.message),
        });
        (self.name.status(), Json(body)).into_response()
    }
}

/// How the listener's own refusals read in XKS's format: a body over the limit is a
/// parameter larger than supported (501), a request past its time a dependency time-out
/// (503).
pub(super) fn reject(status: StatusCode, message: &'static str) -> Response {
    let name = match status {
        StatusCode::PAYLOAD_TOO_LARGE => XksErrorName::UnsupportedOperationException,
        StatusCode::SERVICE_UNAVAILABLE => XksErrorName::DependencyTimeoutException,
        StatusCode::BAD_REQUEST => XksErrorName::ValidationException,
        _ => XksErrorName::InternalException,
    };
    XksError::new(name, message).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_its_specified_status() {
        let statuses: Vec<u16> = XksErrorName::ALL.iter().map(|name| name.status().as_u16()).collect();
        assert_eq!(statuses, [400, 400, 400, 400, 401, 403, 404, 404, 429, 501, 503, 500]);
    }

    #[test]
    fn messages_are_printable_ascii_and_short() {
        let message = printable(&format!("bad \u{7}\n{}", "é".repeat(600)));
        assert!(message.len() < 512 && message.chars().all(|c| (' '..='~').contains(&c)));
    }
}
