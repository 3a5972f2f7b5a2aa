//! Vault's response envelope (`request_id`, `data`, `warnings`...), and the JSON
//! request bodies as Vault reads them.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::error::VaultError;

/// `data` in Vault's envelope, status 200.
pub(super) fn envelope(data: Value) -> Response {
    Json(wrapped(data)).into_response()
}

/// The envelope itself.
pub(super) fn wrapped(data: Value) -> Value {
    json!({
        "request_id": request_id(),
        "lease_id": "",
        "renewable": false,
        "lease_duration": 0,
        "data": data,
        "wrap_info": null,
        "warnings": null,
        "auth": null,
    })
}

/// A random version-4 UUID, as Vault's request ids are.
fn request_id() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the operating system's random number generator failed");
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

/// A JSON request body, read as Vault reads one: whatever the `Content-Type`, and an
/// empty body as `{}`. The body was read under the listener's size limit.
pub(super) struct VaultJson<T>(pub(super) T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for VaultJson<T> {
    type Rejection = VaultError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(request, state).await.map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                VaultError::TooLarge("request body too large")
            } else {
                VaultError::BadRequest(format!("failed to read the request body: {}", rejection.body_text()))
            }
        })?;
        let body: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) { b"{}" } else { &bytes };
        serde_json::from_slice(body)
            .map(VaultJson)
            .map_err(|error| VaultError::BadRequest(format!("failed to parse JSON input: {error}")))
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
}
