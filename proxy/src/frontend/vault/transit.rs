//! `encrypt`, `decrypt`, `rewrap` and `datakey`: keymux's WRAP, UNWRAP, REWRAP and
//! GENERATE_DATA_KEY, one item or a `batch_input` of many (datakey included, which
//! neither Vault nor OpenBao batches). `associated_data` is keymux's aad; rewrap keeps
//! it.

use axum::extract::{Path, State};
use axum::response::Response;
use keymux_protocol::{Reply, Request};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::VaultState;
use super::auth::Caller;
use super::batch::{Batchable, Referenced};
use super::ciphertext::{blob_of, ciphertext_of, decode, encode};
use super::error::VaultError;
use super::reply::VaultJson;

/// Fields keymux has no use for but Vault clients send: accepted when empty.
#[derive(Debug, Default, Deserialize)]
pub(super) struct Unsupported {
    #[serde(default)]
    context: Option<String>,
    #[serde(default)]
    nonce: Option<String>,
}

impl Unsupported {
    fn check(&self) -> Result<(), VaultError> {
        if self.context.as_deref().is_some_and(|c| !c.is_empty()) {
            return Err(VaultError::BadRequest(
                "context: keymux keys are not derived; bind a ciphertext to its context with associated_data"
                    .into(),
            ));
        }
        if self.nonce.as_deref().is_some_and(|n| !n.is_empty()) {
            return Err(VaultError::BadRequest("nonce: keymux never takes a caller's nonce".into()));
        }
        Ok(())
    }
}

fn aad(associated_data: &Option<String>) -> Result<Vec<u8>, VaultError> {
    associated_data.as_deref().map_or(Ok(Vec::new()), |text| decode("associated_data", text))
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
    #[serde(flatten)]
    unsupported: Unsupported,
}

/// `POST /v1/<mount>/encrypt/:name`.
pub(super) async fn encrypt(
    State(state): State<VaultState>,
    Path(name): Path<String>,
    caller: Caller,
    VaultJson(body): VaultJson<Batchable<EncryptItem>>,
) -> Result<Response, VaultError> {
    let items = body.into_items(state.max_batch_items)?;
    let prepare = |item: &EncryptItem| {
        item.unsupported.check()?;
        check_key_version(&state, &name, item.key_version)?;
        let plaintext = item.plaintext.as_deref().ok_or_else(|| missing("plaintext"))?;
        Ok(Request::Wrap {
            key: name.clone(),
            aad: aad(&item.associated_data)?,
            plaintext: decode("plaintext", plaintext)?.into(),
        })
    };
    Ok(items.run(&state, &caller, prepare, render_ciphertext, |_| {}).await)
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
    #[serde(flatten)]
    unsupported: Unsupported,
}

impl DecryptItem {
    fn blob_and_aad(&self, key: &str) -> Result<(Vec<u8>, Vec<u8>), VaultError> {
        self.unsupported.check()?;
        let ciphertext = self.ciphertext.as_deref().ok_or_else(|| missing("ciphertext"))?;
        Ok((blob_of(key, ciphertext)?, aad(&self.associated_data)?))
    }
}

/// `POST /v1/<mount>/decrypt/:name`.
pub(super) async fn decrypt(
    State(state): State<VaultState>,
    Path(name): Path<String>,
    caller: Caller,
    VaultJson(body): VaultJson<Batchable<DecryptItem>>,
) -> Result<Response, VaultError> {
    let items = body.into_items(state.max_batch_items)?;
    let prepare = |item: &DecryptItem| {
        let (blob, aad) = item.blob_and_aad(&name)?;
        Ok(Request::Unwrap { aad, blob })
    };
    let render = |reply: Reply| match reply {
        Reply::Unwrap { plaintext } => Ok(fields([("plaintext", json!(encode(plaintext.expose())))])),
        other => Err(unexpected(&other)),
    };
    // Vault's failed decrypt items carry an empty plaintext.
    let failed = |fields: &mut Map<String, Value>| {
        fields.insert("plaintext".into(), json!(""));
    };
    Ok(items.run(&state, &caller, prepare, render, failed).await)
}

/// One `rewrap` item.
#[derive(Debug, Default, Deserialize)]
pub(super) struct RewrapItem {
    #[serde(flatten)]
    ciphertext: DecryptItem,
    #[serde(default)]
    key_version: Option<u32>,
}

/// `POST /v1/<mount>/rewrap/:name`: under the key's current version, keeping the
/// ciphertext's associated data.
pub(super) async fn rewrap(
    State(state): State<VaultState>,
    Path(name): Path<String>,
    caller: Caller,
    VaultJson(body): VaultJson<Batchable<RewrapItem>>,
) -> Result<Response, VaultError> {
    let items = body.into_items(state.max_batch_items)?;
    let prepare = |item: &RewrapItem| {
        check_key_version(&state, &name, item.key_version)?;
        let (blob, aad) = item.ciphertext.blob_and_aad(&name)?;
        Ok(Request::Rewrap { aad, blob })
    };
    Ok(items.run(&state, &caller, prepare, render_ciphertext, |_| {}).await)
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
    #[serde(flatten)]
    unsupported: Unsupported,
}

/// `POST /v1/<mount>/datakey/plaintext|wrapped/:name`: a new data key, wrapped, and in
/// the clear too for `plaintext`.
pub(super) async fn datakey(
    State(state): State<VaultState>,
    Path((kind, name)): Path<(String, String)>,
    caller: Caller,
    VaultJson(body): VaultJson<Batchable<DataKeyItem>>,
) -> Result<Response, VaultError> {
    let with_plaintext = match kind.as_str() {
        "plaintext" => true,
        "wrapped" => false,
        _ => return Err(VaultError::BadRequest("invalid type: plaintext or wrapped".into())),
    };
    let items = body.into_items(state.max_batch_items)?;
    let prepare = |item: &DataKeyItem| {
        item.unsupported.check()?;
        let length = match item.bits.unwrap_or(256) {
            bits @ (128 | 256 | 512) => (bits / 8) as u16,
            _ => return Err(VaultError::BadRequest("invalid bit length: 128, 256 or 512".into())),
        };
        Ok(Request::GenerateDataKey { key: name.clone(), aad: aad(&item.associated_data)?, length })
    };
    let render = |reply: Reply| match reply {
        Reply::GenerateDataKey { plaintext, blob } => {
            let (ciphertext, version) = ciphertext_of(&blob)?;
            let mut out = fields([("ciphertext", json!(ciphertext)), ("key_version", json!(version))]);
            if with_plaintext {
                out.insert("plaintext".into(), json!(encode(plaintext.expose())));
            }
            Ok(out)
        }
        other => Err(unexpected(&other)),
    };
    Ok(items.run(&state, &caller, prepare, render, |_| {}).await)
}

fn render_ciphertext(reply: Reply) -> Result<Map<String, Value>, VaultError> {
    match reply {
        Reply::Wrap { blob } | Reply::Rewrap { blob } => {
            let (ciphertext, version) = ciphertext_of(&blob)?;
            Ok(fields([("ciphertext", json!(ciphertext)), ("key_version", json!(version))]))
        }
        other => Err(unexpected(&other)),
    }
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

pub(super) fn fields<const N: usize>(pairs: [(&str, Value); N]) -> Map<String, Value> {
    pairs.into_iter().map(|(name, value)| (name.to_owned(), value)).collect()
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
        self.ciphertext.reference.as_deref()
    }
}

impl Referenced for DataKeyItem {
    fn reference(&self) -> Option<&str> {
        self.reference.as_deref()
    }
}
