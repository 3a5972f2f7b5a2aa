//! `sign` and `verify`: keymux's SIGN and VERIFY, one item or a `batch_input`.
//!
//! A key type signs one way: ECDSA P-256 with SHA-256 and P-384 with SHA-384, DER
//! (`asn1`) signatures; Ed25519 pure; RSA-3072 PSS or PKCS#1 v1.5 as its keymux type
//! says. A `hash_algorithm`, `signature_algorithm` or `marshaling_algorithm` naming
//! another is refused (400) rather than ignored. `prehashed` inputs are digests.

use axum::extract::{Path, State};
use axum::response::Response;
use keymux_protocol::{Reply, Request};
use serde::{Deserialize, Serialize};

use super::VaultState;
use super::auth::Caller;
use super::batch::{ItemOutput, Items, Referenced};
use super::ciphertext::{decode, format_prefixed, parse_prefixed};
use super::error::VaultError;
use super::keys::{hash_of, vault_type_name};
use super::reply::{RawBody, parse_json};
use super::transit::{missing, unexpected};
use crate::keys::KeyType;

/// The options of a sign or verify request, from its body and path.
#[derive(Debug, Default, Deserialize)]
pub(super) struct SigningOptions {
    #[serde(default)]
    hash_algorithm: Option<String>,
    #[serde(default)]
    algorithm: Option<String>,
    #[serde(default)]
    prehashed: bool,
    #[serde(default)]
    signature_algorithm: Option<String>,
    #[serde(default)]
    marshaling_algorithm: Option<String>,
    #[serde(default)]
    key_version: Option<u32>,
}

impl SigningOptions {
    /// Checks the options against the key's type; `from_path` is the
    /// `/sign/:name/:hash_algorithm` form's hash.
    fn check(&self, state: &VaultState, key: &str, from_path: Option<&str>) -> Result<(), VaultError> {
        let key_type = state.wiring.registry.get(key)?.key_type;
        if !key_type.is_signing() {
            return Err(VaultError::BadRequest(format!(
                "key type {} does not support signing",
                vault_type_name(key_type)
            )));
        }
        let hash = from_path.or(self.hash_algorithm.as_deref()).or(self.algorithm.as_deref());
        match (hash, hash_of(key_type)) {
            // Vault ignores the hash for Ed25519; so does keymux for its pure signers.
            (None, _) | (Some(_), None) => {}
            (Some(asked), Some(hashes)) if asked == hashes => {}
            (Some(asked), expected) => {
                return Err(VaultError::BadRequest(format!(
                    "hash_algorithm {asked:?}: keymux signs {} keys with {} only",
                    vault_type_name(key_type),
                    expected.unwrap_or("no pre-hash")
                )));
            }
        }
        if self.prehashed && hash_of(key_type).is_none() {
            return Err(VaultError::BadRequest(format!(
                "prehashed: {} signs the message itself",
                vault_type_name(key_type)
            )));
        }
        let scheme = match key_type {
            KeyType::Rsa3072Pss => Some("pss"),
            KeyType::Rsa3072Pkcs1 => Some("pkcs1v15"),
            _ => None,
        };
        if let Some(asked) = self.signature_algorithm.as_deref().filter(|a| !a.is_empty()) {
            if scheme != Some(asked) {
                return Err(VaultError::BadRequest(format!(
                    "signature_algorithm {asked:?}: this key signs with {}",
                    scheme.unwrap_or("its own algorithm only")
                )));
            }
        }
        if self.marshaling_algorithm.as_deref().is_some_and(|m| m != "asn1") {
            return Err(VaultError::BadRequest("marshaling_algorithm: asn1 only".into()));
        }
        if self.key_version.is_some_and(|v| v != 0) {
            let current = state.wiring.registry.get(key)?.current_version()?;
            if self.key_version != Some(current) {
                return Err(VaultError::BadRequest(format!(
                    "key_version: keymux signs with the current version ({current}) only"
                )));
            }
        }
        Ok(())
    }
}

/// `sign`'s output.
#[derive(Debug, Serialize)]
pub(super) struct SignatureOut {
    signature: String,
    key_version: u32,
}

impl ItemOutput for SignatureOut {}

/// `verify`'s output.
#[derive(Debug, Serialize)]
pub(super) struct VerdictOut {
    valid: bool,
}

impl ItemOutput for VerdictOut {}

/// One `sign` item.
#[derive(Debug, Default, Deserialize)]
pub(super) struct SignItem {
    #[serde(default)]
    input: Option<String>,
    #[serde(default)]
    reference: Option<String>,
}

/// `POST /v1/<mount>/sign/:name` and `/sign/:name/:hash_algorithm`.
pub(super) async fn sign(
    State(state): State<VaultState>,
    Path(path): Path<Vec<String>>,
    caller: Caller,
    RawBody(body): RawBody,
) -> Result<Response, VaultError> {
    let (name, hash) = split_path(path)?;
    let options: SigningOptions = parse_json(&body)?;
    options.check(&state, &name, hash.as_deref())?;
    let digest = options.prehashed;
    let items = Items::<SignItem>::parse(&body, state.max_batch_items)?;
    let prepare = |item: &SignItem| {
        let input = decode("input", item.input.as_deref().ok_or_else(|| missing("input"))?)?;
        Ok(Request::Sign { key: name.clone(), input, digest })
    };
    let render = |reply: Reply| match reply {
        Reply::Sign { version, signature } => {
            Ok(SignatureOut { signature: format_prefixed(version, &signature), key_version: version })
        }
        other => Err(unexpected(&other)),
    };
    Ok(items.run(&state, &caller, prepare, render).await)
}

/// One `verify` item.
#[derive(Debug, Default, Deserialize)]
pub(super) struct VerifyItem {
    #[serde(default)]
    input: Option<String>,
    #[serde(default)]
    signature: Option<String>,
    #[serde(default)]
    reference: Option<String>,
}

/// `POST /v1/<mount>/verify/:name` and `/verify/:name/:hash_algorithm`.
pub(super) async fn verify(
    State(state): State<VaultState>,
    Path(path): Path<Vec<String>>,
    caller: Caller,
    RawBody(body): RawBody,
) -> Result<Response, VaultError> {
    let (name, hash) = split_path(path)?;
    let options: SigningOptions = parse_json(&body)?;
    options.check(&state, &name, hash.as_deref())?;
    let digest = options.prehashed;
    let items = Items::<VerifyItem>::parse(&body, state.max_batch_items)?;
    let prepare = |item: &VerifyItem| {
        let input = decode("input", item.input.as_deref().ok_or_else(|| missing("input"))?)?;
        let signature =
            parse_prefixed("signature", item.signature.as_deref().ok_or_else(|| missing("signature"))?)?;
        Ok(Request::Verify {
            key: name.clone(),
            version: signature.version,
            input,
            signature: signature.bytes,
            digest,
        })
    };
    let render = |reply: Reply| match reply {
        Reply::Verify { valid } => Ok(VerdictOut { valid }),
        other => Err(unexpected(&other)),
    };
    Ok(items.run(&state, &caller, prepare, render).await)
}

/// `[name]` or `[name, hash_algorithm]`.
fn split_path(mut path: Vec<String>) -> Result<(String, Option<String>), VaultError> {
    match path.len() {
        1 => Ok((path.remove(0), None)),
        2 => {
            let hash = path.pop();
            Ok((path.remove(0), hash))
        }
        _ => Err(VaultError::NotFound("no handler for route".into())),
    }
}

impl Referenced for SignItem {
    fn reference(&self) -> Option<&str> {
        self.reference.as_deref()
    }
}

impl Referenced for VerifyItem {
    fn reference(&self) -> Option<&str> {
        self.reference.as_deref()
    }
}
