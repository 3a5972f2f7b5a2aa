//! Vault's response envelope (`request_id`, `data`, `warnings`...), and request bodies
//! as Vault reads them.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::{Serialize, Serializer};
use serde_json::Value;
use zeroize::Zeroizing;

use super::error::VaultError;

/// Vault's response envelope around `data`.
#[derive(Debug, Serialize)]
pub(super) struct Envelope<D> {
    request_id: String,
    lease_id: &'static str,
    renewable: bool,
    lease_duration: u32,
    data: D,
    wrap_info: Option<()>,
    warnings: Option<()>,
    auth: Option<()>,
}

impl<D: Serialize> Envelope<D> {
    /// `data` in the envelope, with a fresh request id.
    pub(super) fn new(data: D) -> Self {
        Self {
            request_id: request_id(),
            lease_id: "",
            renewable: false,
            lease_duration: 0,
            data,
            wrap_info: None,
            warnings: None,
            auth: None,
        }
    }
}

impl<D: Serialize> IntoResponse for Envelope<D> {
    fn into_response(self) -> Response {
        Json(self).into_response()
    }
}

/// `data` in Vault's envelope, status 200.
pub(super) fn envelope(data: Value) -> Response {
    Envelope::new(data).into_response()
}

/// A request id in the form of Vault's (a version-4 UUID): a random prefix drawn once
/// per process and a counter. Ids name requests in logs; they are not secrets, so no
/// draw from the operating system per request.
fn request_id() -> String {
    static PREFIX: OnceLock<[u8; 8]> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).expect("the operating system's random number generator failed");
        bytes
    });
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(prefix);
    bytes[8..].copy_from_slice(&COUNTER.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

/// Text that is secret (a plaintext, in base64): zeroized when dropped.
#[derive(Debug)]
pub(super) struct SecretText(pub(super) Zeroizing<String>);

impl Serialize for SecretText {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// `body` as JSON (an empty body as `{}`), as Vault reads it whatever the
/// `Content-Type`. Errors say where the JSON is wrong, never what it holds.
pub(super) fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, VaultError> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) { b"{}" } else { body };
    serde_json::from_slice(body)
        .map_err(|error| VaultError::BadRequest(format!("failed to parse JSON input: {error}")))
}

/// A request body, read under the listener's size limit.
pub(super) struct RawBody(pub(super) Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = VaultError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        Bytes::from_request(request, state).await.map(RawBody).map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                VaultError::TooLarge("request body too large")
            } else {
                VaultError::BadRequest(format!("failed to read the request body: {}", rejection.body_text()))
            }
        })
    }
}

/// A JSON request body of one shape (no batches).
pub(super) struct VaultJson<T>(pub(super) T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for VaultJson<T> {
    type Rejection = VaultError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let RawBody(bytes) = RawBody::from_request(request, state).await?;
        parse_json(&bytes).map(VaultJson)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_look_like_uuids() {
        let id = request_id();
        assert_eq!(id.len(), 36);
        assert_eq!(id.as_bytes()[14], b'4');
        assert_ne!(id, request_id());
    }

    #[test]
    fn bodies_parse_as_vault_reads_them() {
        let empty: serde_json::Map<String, Value> = parse_json(b" \n").unwrap();
        assert!(empty.is_empty());
        let error = parse_json::<Value>(b"{\"plaintext\": \"c2VjcmV0\"").unwrap_err();
        assert!(!error.to_string().contains("c2VjcmV0"), "never the input: {error}");
    }
}
