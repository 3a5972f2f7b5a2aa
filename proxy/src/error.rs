//! The proxy's operation errors and the one place they map to wire statuses.

use std::time::Duration;

use keymux_protocol::{Failure, Status};

/// Why an operation failed. Messages name keys and versions, never key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpError {
    /// The request is well-formed but cannot be served as asked.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// No key of this name.
    #[error("unknown key {0:?}")]
    UnknownKey(String),
    /// The key exists but not this version (destroyed, or never created).
    #[error("key {key:?} has no version {version}")]
    UnknownVersion {
        /// Key name.
        key: String,
        /// The version asked for.
        version: u32,
    },
    /// The key exists but not this version, where a client names the version itself
    /// (VERIFY, GET_PUBLIC_KEY): UNKNOWN_KEY. (A blob naming a version its key never had
    /// is [`OpError::UnknownVersion`]: it does not verify.)
    #[error("key {key:?} has no version {version}")]
    VersionNotFound {
        /// Key name.
        key: String,
        /// The version asked for.
        version: u32,
    },
    /// The caller may not do this.
    #[error("forbidden")]
    Forbidden,
    /// The blob or its AAD does not verify.
    #[error("blob does not verify under its key and this aad")]
    Integrity,
    /// The key version is disabled, or below the key's minimum decryption version.
    #[error("key {key:?} version {version} is disabled")]
    KeyDisabled {
        /// Key name.
        key: String,
        /// The disabled version.
        version: u32,
    },
    /// The key's queue is full.
    #[error("key {key:?} is overloaded")]
    Busy {
        /// Key name.
        key: String,
        /// When to retry.
        retry_after: Duration,
    },
    /// The client's identity is over its request rate or in-flight quota.
    #[error("over this identity's request quota")]
    OverQuota {
        /// When to retry.
        retry_after: Duration,
    },
    /// The proxy is at `server.max_connections`.
    #[error("the proxy is at its connection limit")]
    ConnectionLimit {
        /// When to retry.
        retry_after: Duration,
    },
    /// The backend throttled the request and retries within the deadline ran out.
    #[error("the backend is throttling requests")]
    Throttled {
        /// When to retry.
        retry_after: Duration,
    },
    /// The backend cannot be reached.
    #[error("backend unavailable: {reason}")]
    BackendUnavailable {
        /// What failed, without secrets.
        reason: String,
        /// When to retry.
        retry_after: Duration,
    },
    /// The client's deadline passed before the work was done.
    #[error("deadline exceeded")]
    Timeout,
    /// The proxy is shutting down.
    #[error("shutting down")]
    ShuttingDown,
    /// The operation is not supported.
    #[error("operation not supported")]
    Unsupported,
    /// A bug or an unexpected backend answer.
    #[error("internal error: {0}")]
    Internal(String),
}

impl OpError {
    /// The wire status for this error. Every error maps to exactly one status, here.
    pub fn status(&self) -> Status {
        match self {
            OpError::BadRequest(_) => Status::BadRequest,
            OpError::UnknownKey(_) | OpError::VersionNotFound { .. } => Status::UnknownKey,
            // A blob naming a version the key does not have cannot have come from it.
            OpError::UnknownVersion { .. } | OpError::Integrity => Status::Integrity,
            OpError::Forbidden => Status::Forbidden,
            OpError::KeyDisabled { .. } => Status::KeyDisabled,
            OpError::Busy { .. }
            | OpError::OverQuota { .. }
            | OpError::ConnectionLimit { .. }
            | OpError::Throttled { .. }
            | OpError::ShuttingDown => Status::Busy,
            OpError::BackendUnavailable { .. } => Status::BackendUnavailable,
            OpError::Timeout => Status::Timeout,
            OpError::Unsupported => Status::Unsupported,
            OpError::Internal(_) => Status::Internal,
        }
    }

    /// How long a client should wait before retrying (retryable statuses only).
    fn retry_after(&self) -> Duration {
        match self {
            OpError::Busy { retry_after, .. }
            | OpError::OverQuota { retry_after }
            | OpError::ConnectionLimit { retry_after }
            | OpError::Throttled { retry_after }
            | OpError::BackendUnavailable { retry_after, .. } => *retry_after,
            OpError::ShuttingDown => Duration::from_millis(100),
            _ => Duration::ZERO,
        }
    }
}

impl From<&OpError> for Failure {
    fn from(error: &OpError) -> Self {
        let retry_after_ms = u32::try_from(error.retry_after().as_millis()).unwrap_or(u32::MAX);
        Failure::retry_after(error.status(), error.to_string(), retry_after_ms)
    }
}

impl From<OpError> for Failure {
    fn from(error: OpError) -> Self {
        Failure::from(&error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_errors_carry_retry_after() {
        let failure = Failure::from(OpError::Busy { key: "k".into(), retry_after: Duration::from_millis(7) });
        assert_eq!(failure.status, Status::Busy);
        assert_eq!(failure.retry_after_ms, 7);
        let shutting_down = Failure::from(OpError::ShuttingDown);
        assert_eq!((shutting_down.status, shutting_down.retry_after_ms), (Status::Busy, 100));
        // A passed deadline is retryable, but says nothing about when.
        let timeout = Failure::from(OpError::Timeout);
        assert_eq!((timeout.status, timeout.retry_after_ms), (Status::Timeout, 0));
        let integrity = Failure::from(OpError::Integrity);
        assert_eq!((integrity.status, integrity.retry_after_ms), (Status::Integrity, 0));
    }
}
