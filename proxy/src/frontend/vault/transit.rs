//! `encrypt`, `decrypt`, `rewrap` and `datakey`: keymux's WRAP, UNWRAP, REWRAP and
//! GENERATE_DATA_KEY, one item or a `batch_input` of many (datakey included, which
//! neither Vault nor OpenBao batches). `associated_data` is keymux's aad; rewrap keeps
//! it.

use axum::extract::{Path, State};
use axum::response::Response;
use keymux_protocol::{Reply, Request};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::VaultState;
use super::auth::Caller;
use super::batch::{ItemOutput, Items, Referenced};
use super::ciphertext::{blob_of, ciphertext_of, decode, encode};
use super::error::VaultError;
use super::keys;
use super::reply::{RawBody, SecretText};

/// Refuses `context` and `nonce`, which keymux has no use for, unless empty.
fn check_unsupported(context: &Option<String>, nonce: &Option<String>) -> Result<(), VaultError> {
    if context.as_deref().is_some_and(|c| !c.is_empty()) {
        return Err(VaultError::BadRequest(
            "context: keymux keys are not derived; bind a ciphertext to its context with associated_data"
                .into(),
        ));
    }
    if nonce.as_deref().is_some_and(|n| !n.is_empty()) {
        return Err(VaultError::BadRequest("nonce: keymux never takes a caller's nonce".into()));
    }
    Ok(())
}

fn aad(associated_data: &Option<String>) -> Result<Vec<u8>, VaultError> {
    associated_data.as_deref().map_or(Ok(Vec::new()), |text| decode("associated_data", text))
}

/// `encrypt`'s and `rewrap`'s output.
#[derive(Debug, Serialize)]
pub(super) struct CiphertextOut {
    ciphertext: String,
    key_version: u32,
}

impl ItemOutput for CiphertextOut {}

/// `decrypt`'s output; a failed item has an empty plaintext, as in Vault.
#[derive(Debug, Serialize)]
pub(super) struct PlaintextOut {
    plaintext: SecretText,
}

impl ItemOutput for PlaintextOut {
    fn on_failure() -> Option<Self> {
        Some(PlaintextOut { plaintext: SecretText(Zeroizing::default()) })
    }
}

/// `datakey`'s output.
#[derive(Debug, Serialize)]
pub(super) struct DataKeyOut {
    ciphertext: String,
    key_version: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    plaintext: Option<SecretText>,
}

impl ItemOutput for DataKeyOut {}

/// `encrypt`'s `type`: the key type Vault creates a missing key with.
#[derive(Debug, Default, Deserialize)]
struct KeyTypeField {
    #[serde(default, rename = "type")]
    key_type: Option<String>,
}

/// One `encrypt` item.
#[derive(Debug, Default, Deserialize)]
pub(super) struct EncryptItem {
    #[serde(default)]
    plaintext: Option<String>,
    #[serde(default)]
    associated_data: Option<String>,
    #[serde(default)]
    key_version: Option<u32>,
    #[serde(default)]
    reference: Option<String>,
    #[serde(default)]
    context: Option<String>,
    #[serde(default)]
    nonce: Option<String>,
}

/// `POST /v1/<mount>/encrypt/:name`.
pub(super) async fn encrypt(
    State(state): State<VaultState>,
    Path(name): Path<String>,
    caller: Caller,
    RawBody(body): RawBody,
) -> Result<Response, VaultError> {
    let items = Items::<EncryptItem>::parse(&body, state.max_batch_items)?;
    let upsert: KeyTypeField = super::reply::parse_json(&body)?;
    keys::create_on_encrypt(&state, &caller, &name, upsert.key_type.as_deref()).await?;
    let prepare = |item: &EncryptItem| {
        check_unsupported(&item.context, &item.nonce)?;
        check_key_version(&state, &name, item.key_version)?;
        let plaintext = item.plaintext.as_deref().ok_or_else(|| missing("plaintext"))?;
        Ok(Request::Wrap {
            key: name.clone(),
            aad: aad(&item.associated_data)?,
            plaintext: decode("plaintext", plaintext)?.into(),
        })
    };
    Ok(items.run(&state, &caller, prepare, render_ciphertext).await)
}

/// One `decrypt` item.
#[derive(Debug, Default, Deserialize)]
pub(super) struct DecryptItem {
    #[serde(default)]
    ciphertext: Option<String>,
    #[serde(default)]
    associated_data: Option<String>,
    #[serde(default)]
    reference: Option<String>,
    #[serde(default)]
    context: Option<String>,
    #[serde(default)]
    nonce: Option<String>,
}

impl DecryptItem {
    fn blob_and_aad(&self, key: &str) -> Result<(Vec<u8>, Vec<u8>), VaultError> {
        check_unsupported(&self.context, &self.nonce)?;
        let ciphertext = self.ciphertext.as_deref().ok_or_else(|| missing("ciphertext"))?;
        Ok((blob_of(key, ciphertext)?, aad(&self.associated_data)?))
    }
}

/// `POST /v1/<mount>/decrypt/:name`.
pub(super) async fn decrypt(
    State(state): State<VaultState>,
    Path(name): Path<String>,
    caller: Caller,
    RawBody(body): RawBody,
) -> Result<Response, VaultError> {
    let items = Items::<DecryptItem>::parse(&body, state.max_batch_items)?;
    let prepare = |item: &DecryptItem| {
        let (blob, aad) = item.blob_and_aad(&name)?;
        Ok(Request::Unwrap { aad, blob })
    };
    let render = |reply: Reply| match reply {
        Reply::Unwrap { plaintext } => Ok(PlaintextOut { plaintext: secret_base64(plaintext.expose()) }),
        other => Err(unexpected(&other)),
    };
    Ok(items.run(&state, &caller, prepare, render).await)
}

/// One `rewrap` item: a `decrypt` item and the version asked for.
#[derive(Debug, Default, Deserialize)]
pub(super) struct RewrapItem {
    #[serde(default)]
    ciphertext: Option<String>,
    #[serde(default)]
    associated_data: Option<String>,
    #[serde(default)]
    reference: Option<String>,
    #[serde(default)]
    context: Option<String>,
    #[serde(default)]
    nonce: Option<String>,
    #[serde(default)]
    key_version: Option<u32>,
}

/// `POST /v1/<mount>/rewrap/:name`: under the key's current version, keeping the
/// ciphertext's associated data.
pub(super) async fn rewrap(
    State(state): State<VaultState>,
    Path(name): Path<String>,
    caller: Caller,
    RawBody(body): RawBody,
) -> Result<Response, VaultError> {
    let items = Items::<RewrapItem>::parse(&body, state.max_batch_items)?;
    let prepare = |item: &RewrapItem| {
        check_key_version(&state, &name, item.key_version)?;
        check_unsupported(&item.context, &item.nonce)?;
        let ciphertext = item.ciphertext.as_deref().ok_or_else(|| missing("ciphertext"))?;
        Ok(Request::Rewrap { aad: aad(&item.associated_data)?, blob: blob_of(&name, ciphertext)? })
    };
    Ok(items.run(&state, &caller, prepare, render_ciphertext).await)
}

/// One `datakey` item.
#[derive(Debug, Default, Deserialize)]
pub(super) struct DataKeyItem {
    #[serde(default)]
    bits: Option<u32>,
    #[serde(default)]
    associated_data: Option<String>,
    #[serde(default)]
    reference: Option<String>,
    #[serde(default)]
    context: Option<String>,
    #[serde(default)]
    nonce: Option<String>,
}

/// `POST /v1/<mount>/datakey/plaintext|wrapped/:name`: a new data key, wrapped, and in
/// the clear too for `plaintext`.
pub(super) async fn datakey(
    State(state): State<VaultState>,
    Path((kind, name)): Path<(String, String)>,
    caller: Caller,
    RawBody(body): RawBody,
) -> Result<Response, VaultError> {
    let with_plaintext = match kind.as_str() {
        "plaintext" => true,
        "wrapped" => false,
        _ => return Err(VaultError::BadRequest("invalid type: plaintext or wrapped".into())),
    };
    let items = Items::<DataKeyItem>::parse(&body, state.max_batch_items)?;
    let prepare = |item: &DataKeyItem| {
        check_unsupported(&item.context, &item.nonce)?;
        let length = match item.bits.unwrap_or(256) {
            bits @ (128 | 256 | 512) => (bits / 8) as u16,
            _ => return Err(VaultError::BadRequest("invalid bit length: 128, 256 or 512".into())),
        };
        Ok(Request::GenerateDataKey { key: name.clone(), aad: aad(&item.associated_data)?, length })
    };
    let render = |reply: Reply| match reply {
        Reply::GenerateDataKey { plaintext, blob } => {
            let (ciphertext, key_version) = ciphertext_of(&blob)?;
            let plaintext = with_plaintext.then(|| secret_base64(plaintext.expose()));
            Ok(DataKeyOut { ciphertext, key_version, plaintext })
        }
        other => Err(unexpected(&other)),
    };
    Ok(items.run(&state, &caller, prepare, render).await)
}

fn render_ciphertext(reply: Reply) -> Result<CiphertextOut, VaultError> {
    match reply {
        Reply::Wrap { blob } | Reply::Rewrap { blob } => {
            let (ciphertext, key_version) = ciphertext_of(&blob)?;
            Ok(CiphertextOut { ciphertext, key_version })
        }
        other => Err(unexpected(&other)),
    }
}

fn secret_base64(bytes: &[u8]) -> SecretText {
    SecretText(Zeroizing::new(encode(bytes)))
}

/// keymux wraps under a key's current version only: a `key_version` naming another is
/// refused rather than silently ignored.
fn check_key_version(state: &VaultState, key: &str, asked: Option<u32>) -> Result<(), VaultError> {
    let Some(asked) = asked.filter(|&v| v != 0) else { return Ok(()) };
    let current = state.wiring.registry.get(key)?.current_version()?;
    if asked == current {
        Ok(())
    } else {
        Err(VaultError::BadRequest(format!(
            "key_version {asked}: keymux encrypts under the current version ({current}) only"
        )))
    }
}

pub(super) fn missing(field: &str) -> VaultError {
    VaultError::BadRequest(format!("missing {field} to process"))
}

pub(super) fn unexpected(reply: &Reply) -> VaultError {
    VaultError::Internal(format!("unexpected answer from the router: {:?}", std::mem::discriminant(reply)))
}

impl Referenced for EncryptItem {
    fn reference(&self) -> Option<&str> {
        self.reference.as_deref()
    }
}

impl Referenced for DecryptItem {
    fn reference(&self) -> Option<&str> {
        self.reference.as_deref()
    }
}

impl Referenced for RewrapItem {
    fn reference(&self) -> Option<&str> {
        self.reference.as_deref()
    }
}

impl Referenced for DataKeyItem {
    fn reference(&self) -> Option<&str> {
        self.reference.as_deref()
    }
}
