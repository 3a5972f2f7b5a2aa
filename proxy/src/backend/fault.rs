//! Backend faults, typed once for every backend: a fault is retryable (with its reason
//! and when to retry) or final; [`BackendFault::into_op_error`] is the one mapping to
//! the operation error a client sees, so the same condition gives the same status on
//! every backend (a refused key version is KEY_DISABLED on PKCS#11 and KMS alike;
//! throttling is BUSY on the data path and the admin path alike).

use std::time::Duration;

use crate::error::OpError;

/// Why a backend call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BackendFault {
    /// Trying again later may succeed.
    #[error("{reason}")]
    Retryable {
        /// What went wrong.
        reason: RetryReason,
        /// When a retry may succeed.
        retry_after: Duration,
    },
    /// The backend refuses to use this key version (disabled, pending deletion, or
    /// missing the permission for the operation).
    #[error("the backend refuses this key version")]
    KeyRefused,
    /// Trying again will not help.
    #[error(transparent)]
    Final(OpError),
}

/// Why a retryable fault happened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RetryReason {
    /// The backend asks for fewer requests (HTTP 429, `ThrottlingException`).
    #[error("the backend is throttling requests")]
    Throttled,
    /// The backend cannot be reached, or failed (a 5xx, a call that timed out, a token
    /// that cannot open a session). Secret-free.
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// A PKCS#11 session was closed or invalidated under the worker; a new session may
    /// succeed. Secret-free.
    #[error("session lost: {0}")]
    SessionLost(String),
    /// A cached PKCS#11 object handle no longer names its object (the key was
    /// destroyed and made again, restored, or moved by the token); finding the object
    /// again may succeed, on the same session. Secret-free.
    #[error("stale object handle: {0}")]
    StaleHandle(String),
}

impl BackendFault {
    /// A retryable fault: the backend is unavailable for `reason`.
    pub fn unavailable(reason: impl Into<String>, retry_after: Duration) -> Self {
        BackendFault::Retryable { reason: RetryReason::Unavailable(reason.into()), retry_after }
    }

    /// Whether trying again may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, BackendFault::Retryable { .. })
    }

    /// The operation error a client sees for this fault on `key` at `version`: the one
    /// mapping from backend faults to wire statuses.
    pub fn into_op_error(self, key: &str, version: u32) -> OpError {
        match self {
            BackendFault::Retryable { reason: RetryReason::Throttled, retry_after } => {
                OpError::Throttled { retry_after }
            }
            BackendFault::Retryable {
                reason:
                    RetryReason::Unavailable(reason)
                    | RetryReason::SessionLost(reason)
                    | RetryReason::StaleHandle(reason),
                retry_after,
            } => OpError::BackendUnavailable { reason, retry_after },
            BackendFault::KeyRefused => OpError::KeyDisabled { key: key.to_owned(), version },
            BackendFault::Final(error) => error,
        }
    }
}

impl From<OpError> for BackendFault {
    fn from(error: OpError) -> Self {
        BackendFault::Final(error)
    }
}

#[cfg(test)]
mod tests {
    use keymux_protocol::Status;

    use super::*;

    #[test]
    fn the_same_condition_is_the_same_status() {
        let after = Duration::from_millis(5);
        let throttled = BackendFault::Retryable { reason: RetryReason::Throttled, retry_after: after };
        assert_eq!(throttled.into_op_error("k", 1).status(), Status::Busy);
        let lost =
            BackendFault::Retryable { reason: RetryReason::SessionLost("x".into()), retry_after: after };
        assert_eq!(lost.into_op_error("k", 1).status(), Status::BackendUnavailable);
        assert_eq!(
            BackendFault::unavailable("down", after).into_op_error("k", 1).status(),
            Status::BackendUnavailable
        );
        assert_eq!(
            BackendFault::KeyRefused.into_op_error("k", 3),
            OpError::KeyDisabled { key: "k".into(), version: 3 }
        );
        assert_eq!(BackendFault::Final(OpError::Integrity).into_op_error("k", 1), OpError::Integrity);
    }
}
