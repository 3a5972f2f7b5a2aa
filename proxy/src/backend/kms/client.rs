//! The SDK client for one region, and how its failures are sorted.
//!
//! Each region gets its own `aws-sdk-kms` client over one pooled HTTPS client (rustls
//! with `ring`). The SDK's own retries are off: keymux retries itself, knowing each
//! operation's deadline, the region's token bucket and its circuit.

use std::collections::HashMap;
use std::time::Duration;

use aws_config::BehaviorVersion;
// The names aws-config's `profile_files` takes; their new names live in aws-runtime,
// which keymux would otherwise not depend on directly.
#[allow(deprecated)]
use aws_config::profile::profile_file::{ProfileFileKind, ProfileFiles};
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_kms::Client;
use aws_sdk_kms::config::Region;
use aws_sdk_kms::config::http::HttpResponse;
use aws_sdk_kms::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};

use super::config::{KmsConfig, KmsRegionConfig};
use crate::backend::{BackendFault, RetryReason};
use crate::error::OpError;

/// A client for `region`, its credentials from the standard chain.
#[allow(deprecated)]
pub(crate) async fn connect(config: &KmsConfig, region: &KmsRegionConfig) -> Client {
    let http =
        aws_smithy_http_client::Builder::new().tls_provider(Provider::Rustls(CryptoMode::Ring)).build_https();
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(config.connect_timeout)
        .operation_attempt_timeout(config.call_timeout)
        .build();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(region.region.clone()))
        .http_client(http)
        .timeout_config(timeouts)
        .retry_config(RetryConfig::disabled());
    if let Some(endpoint) = &region.endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    if let Some(file) = &config.credentials_file {
        let files = ProfileFiles::builder()
            .include_default_config_file(true)
            .with_file(ProfileFileKind::Credentials, file)
            .build();
        loader = loader.profile_files(files);
    }
    if let Some(profile) = &config.profile {
        loader = loader.profile_name(profile);
    }
    Client::new(&loader.load().await)
}

/// A retryable fault; the retry hint is the failover's to set (its backoff and probe
/// interval), not the classifier's.
fn retryable(reason: RetryReason) -> BackendFault {
    BackendFault::Retryable { reason, retry_after: Duration::ZERO }
}

/// Sorts an SDK failure. Messages carry KMS's error code and text, never key material.
pub(crate) fn classify<E>(error: SdkError<E, HttpResponse>) -> BackendFault
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let service = match &error {
        SdkError::ServiceError(service) => service,
        SdkError::ConstructionFailure(_) => {
            let message = format!("KMS request: {}", DisplayErrorContext(&error));
            return BackendFault::Final(OpError::Internal(message));
        }
        _ => return retryable(RetryReason::Unavailable(short(&DisplayErrorContext(&error).to_string()))),
    };
    let status = service.raw().status().as_u16();
    let code = service.err().code().unwrap_or("unknown");
    let message = service.err().message().unwrap_or_default();
    let described = || short(&format!("{code}: {message}"));
    match code {
        "ThrottlingException" | "TooManyRequestsException" | "RequestLimitExceeded" => {
            retryable(RetryReason::Throttled)
        }
        "InvalidCiphertextException" | "IncorrectKeyException" => BackendFault::Final(OpError::Integrity),
        "KMSInternalException"
        | "DependencyTimeoutException"
        | "KeyUnavailableException"
        | "ServiceUnavailableException"
        | "InternalFailure" => retryable(RetryReason::Unavailable(described())),
        // The KMS key is disabled or pending deletion: the key version is disabled.
        "DisabledException" | "KMSInvalidStateException" => BackendFault::KeyRefused,
        "ValidationException" => BackendFault::Final(OpError::BadRequest(described())),
        _ if status == 429 => retryable(RetryReason::Throttled),
        _ if status >= 500 => retryable(RetryReason::Unavailable(described())),
        _ => BackendFault::Final(OpError::Internal(format!("KMS: {}", described()))),
    }
}

/// At most 300 characters of a failure description.
fn short(text: &str) -> String {
    match text.char_indices().nth(300) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_owned(),
    }
}

/// The KMS encryption context binding a blob header and the client's AAD: one entry,
/// `keymux:ad`, the BLAKE3 hash (hex) of `header || aad`, the associated data every
/// keymux backend binds. Hashed because KMS limits a context to 8 KiB and the AAD may
/// be as long, and because contexts appear in KMS's audit logs (CloudTrail).
pub(crate) fn context(header: &[u8], aad: &[u8]) -> HashMap<String, String> {
    let mut hasher = blake3::Hasher::new();
    hasher.update(header);
    hasher.update(aad);
    HashMap::from([("keymux:ad".to_owned(), hasher.finalize().to_hex().to_string())])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_context_binds_header_and_aad() {
        assert_eq!(context(b"h", b"a"), context(b"h", b"a"));
        assert_ne!(context(b"h", b"a"), context(b"h", b"b"));
        assert_ne!(context(b"h1", b"a"), context(b"h2", b"a"));
        assert!(short(&"x".repeat(400)).len() < 310);
    }

    /// A `Sign` refused by KMS with `code`, as the SDK hands it over.
    fn sign_refused(
        code: &str,
        status: u16,
    ) -> SdkError<aws_sdk_kms::operation::sign::SignError, HttpResponse> {
        let metadata = aws_sdk_kms::error::ErrorMetadata::builder().code(code).message("refused").build();
        let response = HttpResponse::new(status.try_into().unwrap(), "".into());
        SdkError::service_error(aws_sdk_kms::operation::sign::SignError::generic(metadata), response)
    }

    #[test]
    fn a_sign_on_a_disabled_key_is_key_disabled() {
        for code in ["DisabledException", "KMSInvalidStateException"] {
            let fault = classify(sign_refused(code, 400));
            assert!(matches!(fault, BackendFault::KeyRefused), "{code}: {fault:?}");
            assert_eq!(fault.into_op_error("k", 2), OpError::KeyDisabled { key: "k".into(), version: 2 });
        }
        assert!(matches!(
            classify(sign_refused("ThrottlingException", 400)),
            BackendFault::Retryable { reason: RetryReason::Throttled, .. }
        ));
        assert!(matches!(
            classify(sign_refused("ValidationException", 400)),
            BackendFault::Final(OpError::BadRequest(_))
        ));
    }
}
