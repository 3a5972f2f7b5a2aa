//! `random`: random bytes from the operating system's generator (the one every keymux
//! key and IV comes from), base64 or hex.

use axum::extract::{Path, State};
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;

use super::VaultState;
use super::auth::Caller;
use super::ciphertext::encode;
use super::error::VaultError;
use super::reply::{VaultJson, envelope};

/// The most bytes one request may ask for (Vault's own limit).
const MAX_BYTES: usize = 128 * 1024;

/// `random`'s body.
#[derive(Debug, Default, Deserialize)]
pub(super) struct RandomBody {
    #[serde(default)]
    bytes: Option<usize>,
    #[serde(default)]
    format: Option<String>,
}

/// `POST|GET /v1/<mount>/random`, `/random/:bytes`, `/random/:source/:bytes`.
pub(super) async fn random(
    State(_state): State<VaultState>,
    path: Option<Path<Vec<String>>>,
    _caller: Caller,
    VaultJson(body): VaultJson<RandomBody>,
) -> Result<Response, VaultError> {
    let segments = path.map(|Path(segments)| segments).unwrap_or_default();
    let from_path = match segments.as_slice() {
        [] => None,
        [one] if one.bytes().all(|b| b.is_ascii_digit()) => Some(one.as_str()),
        [one] => check_source(one).map(|()| None)?,
        [source, bytes] => check_source(source).map(|()| Some(bytes.as_str()))?,
        _ => return Err(VaultError::NotFound("no handler for route".into())),
    };
    let count = match from_path {
        Some(text) => text.parse().map_err(|_| VaultError::BadRequest("invalid number of bytes".into()))?,
        None => body.bytes.unwrap_or(32),
    };
    if count == 0 || count > MAX_BYTES {
        return Err(VaultError::BadRequest(format!("bytes: 1 to {MAX_BYTES}")));
    }
    let mut bytes = zeroize::Zeroizing::new(vec![0u8; count]);
    getrandom::fill(&mut bytes).map_err(|error| VaultError::Internal(format!("random: {error}")))?;
    let text = match body.format.as_deref().unwrap_or("base64") {
        "base64" => encode(&bytes),
        "hex" => bytes.iter().map(|b| format!("{b:02x}")).collect(),
        _ => return Err(VaultError::BadRequest("format: base64 or hex".into())),
    };
    Ok(envelope(json!({ "random_bytes": text })))
}

fn check_source(source: &str) -> Result<(), VaultError> {
    match source {
        "platform" | "all" => Ok(()),
        _ => Err(VaultError::BadRequest("source: platform or all".into())),
    }
}
