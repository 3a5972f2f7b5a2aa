//! `keys`: list, create, read, rotate, configure and (refused) delete, through the key
//! lifecycle rules every backend shares ([`KeyLifecycle`]), under the `manage_keys`
//! ACL operation, each change audited.
//!
//! Key types go by Vault's names: `aes256-gcm96` is keymux's `aes-256`, `ecdsa-p256`
//! `ec-p256`, `ecdsa-p384` `ec-p384`, `ed25519` itself, `rsa-3072` `rsa-3072-pss`
//! (Vault's default RSA signature); keymux's own names (`rsa-3072-pkcs1`, `ml-kem-768`,
//! `ml-dsa-65`) are accepted too.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use axum::extract::{Path, Query, State};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::VaultState;
use super::auth::Caller;
use super::ciphertext::encode;
use super::error::VaultError;
use super::reply::{VaultJson, envelope};
use crate::access::ops::AclOp;
use crate::audit::Event;
use crate::keys::{KeyAdminError, KeyInfo, KeyLifecycle, KeyStore, KeyType};

/// Vault's name for a keymux key type.
pub(super) fn vault_type_name(key_type: KeyType) -> &'static str {
    match key_type {
        KeyType::Aes256 => "aes256-gcm96",
        KeyType::EcP256 => "ecdsa-p256",
        KeyType::EcP384 => "ecdsa-p384",
        KeyType::Ed25519 => "ed25519",
        KeyType::Rsa3072Pss | KeyType::Rsa3072Pkcs1 => "rsa-3072",
        other => other.name(),
    }
}

/// The keymux key type for a `type` a client asked for.
pub(super) fn key_type_of(name: &str) -> Result<KeyType, VaultError> {
    let key_type = match name {
        "aes256-gcm96" => KeyType::Aes256,
        "ecdsa-p256" => KeyType::EcP256,
        "ecdsa-p384" => KeyType::EcP384,
        "rsa-3072" => KeyType::Rsa3072Pss,
        other => KeyType::ALL.into_iter().find(|t| t.name() == other).ok_or_else(|| {
            VaultError::BadRequest(format!(
                "unknown key type {other:?}: aes256-gcm96, ecdsa-p256, ecdsa-p384, ed25519, rsa-3072 \
                 (or keymux's rsa-3072-pkcs1, ml-kem-768, ml-dsa-65)"
            ))
        })?,
    };
    Ok(key_type)
}

/// The hash Vault's `hash_algorithm` must name for a key type (`None`: it hashes none).
pub(super) fn hash_of(key_type: KeyType) -> Option<&'static str> {
    match key_type {
        KeyType::EcP256 | KeyType::Rsa3072Pss | KeyType::Rsa3072Pkcs1 => Some("sha2-256"),
        KeyType::EcP384 => Some("sha2-384"),
        _ => None,
    }
}

/// Whether `caller` may do something, anything, with key `name`: who may see it.
fn may_see(caller: &Caller, name: &str) -> bool {
    AclOp::ALL.into_iter().any(|op| caller.peer.permissions.allows(op, name))
}

/// Refuses key management unless the ACL grants `manage_keys` on `name`; a refusal is
/// audited as the router audits one.
fn authorize_admin(state: &VaultState, caller: &Caller, name: &str) -> Result<(), VaultError> {
    if caller.peer.permissions.allows(AclOp::ManageKeys, name) {
        return Ok(());
    }
    state.wiring.audit.record(Event::Denied {
        principal: caller.peer.principal.clone(),
        peer: caller.peer.addr.clone(),
        op: AclOp::ManageKeys.name(),
        key: name.to_owned(),
    });
    Err(VaultError::PermissionDenied)
}

/// Runs a key change on a blocking thread (HSM and KMS calls block), then refreshes the
/// router's view of the keys and audits the change.
async fn change(
    state: &VaultState,
    caller: &Caller,
    action: &'static str,
    name: &str,
    detail: String,
    work: impl FnOnce(&dyn KeyStore) -> Result<(), KeyAdminError> + Send + 'static,
) -> Result<(), VaultError> {
    let store = Arc::clone(&state.wiring.store);
    let refresher = Arc::clone(&state.wiring.refresher);
    let done = tokio::task::spawn_blocking(move || {
        let outcome = work(&*store);
        // Refresh even after a failure: another admin's change may be why it failed.
        let refreshed = refresher.refresh();
        outcome.map(|()| refreshed)
    })
    .await
    .map_err(|error| VaultError::Internal(format!("key change task: {error}")))?;
    let refreshed = done?;
    state.wiring.audit.record(Event::Admin {
        action: action.to_owned(),
        detail: format!("{} via the Vault API: key {name:?}{detail}", caller.peer.principal),
    });
    if let Err(error) = refreshed {
        tracing::warn!(%error, "key list refresh after a Vault API key change failed");
    }
    Ok(())
}

/// The key as Vault reads it.
fn render(state: &VaultState, key: &KeyInfo) -> Value {
    let asymmetric = key.key_type.is_asymmetric();
    let mut versions = Map::new();
    // As Vault: the versions that may still decrypt.
    for version in key.versions.iter().filter(|v| v.version >= key.min_decryption_version) {
        let created = UNIX_EPOCH + Duration::from_secs(version.created_at);
        let value = if asymmetric {
            let public_key = state
                .wiring
                .public_keys
                .get(&key.name, version.version)
                .map_or_else(String::new, |public| pem(public.spki_der()));
            json!({
                "certificate_chain": "",
                "creation_time": humantime::format_rfc3339_seconds(created).to_string(),
                "name": curve_name(key.key_type),
                "public_key": public_key,
            })
        } else {
            json!(version.created_at)
        };
        versions.insert(version.version.to_string(), value);
    }
    let wraps = key.key_type.is_wrapping();
    json!({
        "name": key.name,
        "type": vault_type_name(key.key_type),
        "keys": versions,
        "latest_version": key.versions.last().map_or(0, |v| v.version),
        "min_available_version": 0,
        "min_decryption_version": key.min_decryption_version,
        "min_encryption_version": 0,
        "deletion_allowed": false,
        "derived": false,
        "exportable": false,
        "allow_plaintext_backup": false,
        "auto_rotate_period": 0,
        "imported_key": false,
        "soft_deleted": false,
        "supports_encryption": wraps,
        "supports_decryption": wraps,
        "supports_derivation": false,
        "supports_signing": key.key_type.is_signing(),
    })
}

fn curve_name(key_type: KeyType) -> &'static str {
    match key_type {
        KeyType::EcP256 => "P-256",
        KeyType::EcP384 => "P-384",
        other => vault_type_name(other),
    }
}

/// A DER SubjectPublicKeyInfo as a PEM `PUBLIC KEY`.
fn pem(der: &[u8]) -> String {
    let body = encode(der);
    let mut out = String::from("-----BEGIN PUBLIC KEY-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END PUBLIC KEY-----\n");
    out
}

fn read_response(state: &VaultState, name: &str) -> Result<Response, VaultError> {
    let key = state.wiring.registry.get(name).map_err(|_| VaultError::NotFound(String::new()))?;
    Ok(envelope(render(state, &key)))
}

/// `GET ?list=true` or `LIST` on `keys`.
#[derive(Debug, Default, Deserialize)]
pub(super) struct ListQuery {
    #[serde(default)]
    list: Option<String>,
}

/// `LIST /v1/<mount>/keys` (and `GET ...?list=true`): the keys the caller may use.
/// None: 404 with an empty `errors`, as Vault answers.
pub(super) async fn list(
    State(state): State<VaultState>,
    method: Method,
    Query(query): Query<ListQuery>,
    caller: Caller,
) -> Result<Response, VaultError> {
    let listing = method.as_str() == "LIST" || query.list.as_deref() == Some("true");
    if !listing {
        return Err(VaultError::MethodNotAllowed);
    }
    let names: Vec<String> = state
        .wiring
        .registry
        .list()
        .iter()
        .filter(|key| may_see(&caller, &key.name))
        .map(|key| key.name.clone())
        .collect();
    if names.is_empty() {
        return Ok((axum::http::StatusCode::NOT_FOUND, axum::Json(json!({ "errors": [] }))).into_response());
    }
    Ok(envelope(json!({ "keys": names })))
}

/// `GET /v1/<mount>/keys/:name`.
pub(super) async fn read(
    State(state): State<VaultState>,
    Path(name): Path<String>,
    caller: Caller,
) -> Result<Response, VaultError> {
    if !may_see(&caller, &name) {
        return Err(VaultError::PermissionDenied);
    }
    read_response(&state, &name)
}

/// `POST /v1/<mount>/keys/:name`'s body.
#[derive(Debug, Default, Deserialize)]
pub(super) struct CreateBody {
    #[serde(default, rename = "type")]
    key_type: Option<String>,
    #[serde(default)]
    derived: bool,
    #[serde(default)]
    convergent_encryption: bool,
    #[serde(default)]
    exportable: bool,
    #[serde(default)]
    allow_plaintext_backup: bool,
}

/// `POST /v1/<mount>/keys/:name`: creates the key (version 1). An existing key of the
/// same type is left as it is (Vault's create is idempotent).
pub(super) async fn create(
    State(state): State<VaultState>,
    Path(name): Path<String>,
    caller: Caller,
    VaultJson(body): VaultJson<CreateBody>,
) -> Result<Response, VaultError> {
    authorize_admin(&state, &caller, &name)?;
    for (set, what) in [
        (body.derived, "derived"),
        (body.convergent_encryption, "convergent_encryption"),
        (body.exportable, "exportable"),
        (body.allow_plaintext_backup, "allow_plaintext_backup"),
    ] {
        if set {
            return Err(VaultError::BadRequest(format!("{what}: keymux keys never leave their backend")));
        }
    }
    let key_type = key_type_of(body.key_type.as_deref().unwrap_or("aes256-gcm96"))?;
    create_key(&state, &caller, &name, key_type).await?;
    read_response(&state, &name)
}

/// Creates `name` of `key_type` unless it exists with that type (another type is 400).
async fn create_key(
    state: &VaultState,
    caller: &Caller,
    name: &str,
    key_type: KeyType,
) -> Result<(), VaultError> {
    if let Ok(existing) = state.wiring.registry.get(name) {
        if existing.key_type != key_type {
            return Err(VaultError::BadRequest(format!(
                "key {name:?} exists with type {}",
                vault_type_name(existing.key_type)
            )));
        }
        return Ok(());
    }
    let target = name.to_owned();
    let detail = format!(" created, type {}", key_type.name());
    change(state, caller, "key_create", name, detail, move |store| {
        match store.create_key(&target, key_type) {
            Ok(_) | Err(KeyAdminError::AlreadyExists(_)) => Ok(()),
            Err(error) => Err(error),
        }
    })
    .await
}

/// `encrypt` on a key that does not exist, with `vault.create_keys_on_encrypt`: creates
/// it (of the request's `type`, default `aes256-gcm96`) when the caller may manage it,
/// as Vault's upsert does. Otherwise nothing: the encrypt then answers 404.
pub(super) async fn create_on_encrypt(
    state: &VaultState,
    caller: &Caller,
    name: &str,
    key_type: Option<&str>,
) -> Result<(), VaultError> {
    if !state.create_keys_on_encrypt || state.wiring.registry.get(name).is_ok() {
        return Ok(());
    }
    if !caller.peer.permissions.allows(AclOp::ManageKeys, name) {
        return Ok(());
    }
    let key_type = key_type_of(key_type.unwrap_or("aes256-gcm96"))?;
    if !key_type.is_wrapping() {
        return Err(VaultError::BadRequest(format!(
            "type {}: encrypt needs a wrapping key",
            vault_type_name(key_type)
        )));
    }
    create_key(state, caller, name, key_type).await
}

/// `POST /v1/<mount>/keys/:name/rotate`: a new version, current from now on.
pub(super) async fn rotate(
    State(state): State<VaultState>,
    Path(name): Path<String>,
    caller: Caller,
) -> Result<Response, VaultError> {
    authorize_admin(&state, &caller, &name)?;
    let target = name.clone();
    change(&state, &caller, "key_rotate", &name, " rotated".into(), move |store| {
        store.rotate_key(&target).map(|_| ())
    })
    .await?;
    read_response(&state, &name)
}

/// `POST /v1/<mount>/keys/:name/config`'s body.
#[derive(Debug, Default, Deserialize)]
pub(super) struct ConfigBody {
    #[serde(default)]
    min_decryption_version: Option<u32>,
    #[serde(default)]
    deletion_allowed: Option<bool>,
    #[serde(default)]
    min_encryption_version: Option<u32>,
    #[serde(default)]
    exportable: Option<bool>,
    #[serde(default)]
    allow_plaintext_backup: Option<bool>,
    #[serde(default)]
    auto_rotate_period: Option<Value>,
}

/// `POST /v1/<mount>/keys/:name/config`: `min_decryption_version` (through the
/// lifecycle rules: it must exist and not pass the current version); settings keymux
/// does not have are refused unless they ask for what keymux does anyway.
pub(super) async fn configure(
    State(state): State<VaultState>,
    Path(name): Path<String>,
    caller: Caller,
    VaultJson(body): VaultJson<ConfigBody>,
) -> Result<Response, VaultError> {
    authorize_admin(&state, &caller, &name)?;
    let key = state.wiring.registry.get(&name)?;
    if body.deletion_allowed == Some(true) {
        return Err(VaultError::BadRequest(
            "deletion_allowed: keymux never deletes a whole key through the API (version numbers \
             are never reused); destroy old versions with `keymux key destroy`"
                .into(),
        ));
    }
    if body.min_encryption_version.is_some_and(|v| v != 0)
        || body.exportable == Some(true)
        || body.allow_plaintext_backup == Some(true)
        || body.auto_rotate_period.as_ref().is_some_and(|p| p != &json!(0) && p != &json!("0"))
    {
        return Err(VaultError::BadRequest(
            "keymux supports min_decryption_version and deletion_allowed = false here".into(),
        ));
    }
    if let Some(minimum) = body.min_decryption_version.filter(|&m| m != key.min_decryption_version) {
        let minimum = minimum.max(1);
        let target = name.clone();
        let detail = format!(" min_decryption_version {minimum}");
        change(&state, &caller, "key_config", &name, detail, move |store| {
            store.set_min_decryption_version(&target, minimum)
        })
        .await?;
    }
    read_response(&state, &name)
}

/// `DELETE /v1/<mount>/keys/:name`: refused, as Vault refuses a key whose
/// `deletion_allowed` is false, which every keymux key is.
pub(super) async fn delete(
    State(state): State<VaultState>,
    Path(name): Path<String>,
    caller: Caller,
) -> Result<Response, VaultError> {
    authorize_admin(&state, &caller, &name)?;
    state.wiring.registry.get(&name)?;
    Err(VaultError::BadRequest(format!("error deleting policy {name}: deletion is not allowed for this key")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_map_both_ways() {
        for key_type in KeyType::ALL {
            let vault = vault_type_name(key_type);
            let back = key_type_of(vault).unwrap();
            assert_eq!(vault_type_name(back), vault, "{key_type}");
            assert_eq!(key_type_of(key_type.name()).unwrap(), key_type, "keymux's own name");
        }
        assert!(key_type_of("chacha20-poly1305").is_err());
    }

    #[test]
    fn public_keys_are_pem() {
        let text = pem(&[0u8; 100]);
        assert!(
            text.starts_with("-----BEGIN PUBLIC KEY-----\n") && text.ends_with("-----END PUBLIC KEY-----\n")
        );
        assert!(text.lines().all(|line| line.len() <= 64));
    }
}
