//! The four XKS operations (`health`, `keys/{id}/metadata`, `keys/{id}/encrypt`,
//! `keys/{id}/decrypt`), each authenticated by SigV4 first, as router requests.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, Uri, header};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use keymux_crypto::KeyType;
use keymux_protocol::{Reply, Request, SecretBytes};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use super::ciphertext;
use super::error::{XksError, XksErrorName};
use super::sigv4::{ReceivedRequest, Verifier};
use crate::access::identity::Identity;
use crate::access::ops::AclOp;
use crate::frontend::http::HttpPeer;
use crate::frontend::{CallOptions, FrontDoor};
use crate::keys::KeyRegistry;
use crate::server::peer::Peer;

/// Plaintext and ciphertext bytes the specification requires a proxy to take; larger
/// ones are UnsupportedOperationException.
pub const MAX_DATA: usize = 4300;
/// AAD bytes the specification requires a proxy to take.
pub const MAX_AAD: usize = 8192;

/// What every handler shares.
pub(super) struct XksService {
    pub(super) door: FrontDoor,
    pub(super) registry: Arc<KeyRegistry>,
    pub(super) verifier: Verifier,
    pub(super) deadline: Duration,
    pub(super) client_cn: Option<String>,
    pub(super) health_key: Option<String>,
    pub(super) health_cache_ttl: Duration,
    pub(super) health: Mutex<Option<(Instant, &'static str)>>,
    pub(super) fleet_size: u32,
    pub(super) backend_kind: &'static str,
}

/// The handlers' state.
pub(super) type Shared = State<Arc<XksService>>;

/// `requestMetadata`: logged by `kmsRequestId`; otherwise only checked to be there.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequestMetadata {
    aws_principal_arn: Option<String>,
    kms_operation: String,
    kms_request_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MetadataBody {
    request_metadata: RequestMetadata,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EncryptBody {
    request_metadata: RequestMetadata,
    plaintext: String,
    encryption_algorithm: String,
    additional_authenticated_data: Option<String>,
    ciphertext_data_integrity_value_algorithm: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DecryptBody {
    request_metadata: RequestMetadata,
    ciphertext: String,
    ciphertext_metadata: Option<String>,
    encryption_algorithm: String,
    additional_authenticated_data: Option<String>,
    initialization_vector: String,
    authentication_tag: String,
}

/// The parts of a request every operation needs.
pub(super) struct Incoming {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    peer: HttpPeer,
    body: Result<Bytes, BytesRejection>,
}

impl<S: Send + Sync> axum::extract::FromRequest<S> for Incoming {
    type Rejection = std::convert::Infallible;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        let (parts, body) = request.into_parts();
        let peer = parts.extensions.get::<HttpPeer>().cloned().unwrap_or_else(|| HttpPeer {
            addr: std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
            identity: Arc::new(Identity::anonymous()),
        });
        let body = Bytes::from_request(axum::extract::Request::from_parts(parts.clone(), body), state).await;
        Ok(Self { method: parts.method, uri: parts.uri, headers: parts.headers, peer, body })
    }
}

impl XksService {
    /// SigV4 (and the client certificate's CN, when configured), then the peer of the
    /// credential's identity.
    fn authenticate<'a>(&self, incoming: &'a Incoming) -> Result<(Peer, &'a [u8]), XksError> {
        let body = incoming.body.as_ref().map_err(|rejection| {
            XksError::new(XksErrorName::UnsupportedOperationException, rejection.body_text())
        })?;
        if let Some(cn) = &self.client_cn {
            if !incoming.peer.identity.common_names.iter().any(|name| name == cn) {
                return Err(XksError::new(
                    XksErrorName::AuthenticationFailedException,
                    "the client certificate's CN is not the configured one",
                ));
            }
        }
        let host = incoming
            .headers
            .get(header::HOST)
            .and_then(|value| value.to_str().ok())
            .or_else(|| incoming.uri.authority().map(|authority| authority.as_str()));
        let request = ReceivedRequest {
            method: incoming.method.as_str(),
            path_and_query: incoming.uri.path_and_query().map_or("/", |p| p.as_str()),
            headers: &incoming.headers,
            host,
            body,
        };
        let name = self.verifier.verify(&request, SystemTime::now()).map_err(|error| {
            tracing::debug!(%error, peer = %incoming.peer.addr, "xks: authentication failed");
            XksError::new(XksErrorName::AuthenticationFailedException, error.to_string())
        })?;
        // A credential, like a Vault token, is its own kind of identity: no client
        // certificate's CN can pass for it.
        let identity = Identity::token(&format!("xks:{name}"));
        let peer = self.door.peer(&identity, incoming.peer.addr.to_string()).map_err(|retry_after| {
            XksError::new(
                XksErrorName::ThrottlingException,
                format!("over this key store's connection quota; retry after {} ms", retry_after.as_millis()),
            )
        })?;
        Ok((peer, body))
    }

    fn options(&self) -> CallOptions {
        CallOptions { timeout: Some(self.deadline), bypass_cache: false }
    }

    /// Whether the key may be used at all (it is an AES-256 key with a usable version).
    fn key_info(&self, key: &str) -> Result<Arc<crate::keys::KeyInfo>, XksError> {
        let info = self
            .registry
            .get(key)
            .map_err(|_| XksError::new(XksErrorName::KeyNotFoundException, "no such key"))?;
        if info.key_type != KeyType::Aes256 {
            return Err(XksError::new(XksErrorName::KeyNotFoundException, "not an aes-256 key"));
        }
        Ok(info)
    }
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, XksError> {
    serde_json::from_slice(body).map_err(|error| XksError::validation(format!("request body: {error}")))
}

fn check_key_id(key: &str) -> Result<(), XksError> {
    let ok = !key.is_empty()
        && key.len() <= 128
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
    if ok { Ok(()) } else { Err(XksError::validation("the key id is 1 to 128 of A-Z a-z 0-9 - . _")) }
}

fn check_key_metadata(metadata: &RequestMetadata) -> Result<(), XksError> {
    if metadata.aws_principal_arn.is_none() {
        return Err(XksError::validation("requestMetadata.awsPrincipalArn is required"));
    }
    Ok(())
}

fn decode(field: &'static str, text: &str, max: usize) -> Result<Vec<u8>, XksError> {
    let bytes = BASE64.decode(text).map_err(|_| XksError::validation(format!("{field} is not Base64")))?;
    if bytes.len() > max {
        return Err(XksError::new(
            XksErrorName::UnsupportedOperationException,
            format!("{field} is over {max} bytes"),
        ));
    }
    Ok(bytes)
}

fn check_algorithm(algorithm: &str) -> Result<(), XksError> {
    if algorithm == "AES_GCM" {
        Ok(())
    } else {
        Err(XksError::validation("encryptionAlgorithm must be AES_GCM"))
    }
}

/// POST `keys/{id}/metadata`.
pub(super) async fn metadata(
    State(service): Shared,
    Path(key): Path<String>,
    incoming: Incoming,
) -> Result<Json<Value>, XksError> {
    let (peer, body) = service.authenticate(&incoming)?;
    let request: MetadataBody = parse(body)?;
    check_key_metadata(&request.request_metadata)?;
    check_key_id(&key)?;
    log(&request.request_metadata, "metadata", &key);
    let info = service.key_info(&key)?;
    let mut usage = Vec::new();
    if peer.permissions.allows(AclOp::Encrypt, &key) {
        usage.push("ENCRYPT");
    }
    if peer.permissions.allows(AclOp::Decrypt, &key) {
        usage.push("DECRYPT");
    }
    let status = if info.current_version().is_ok() { "ENABLED" } else { "DISABLED" };
    Ok(Json(json!({ "keySpec": "AES_256", "keyUsage": usage, "keyStatus": status })))
}

fn log(metadata: &RequestMetadata, operation: &str, key: &str) {
    tracing::debug!(
        kms_request_id = %metadata.kms_request_id,
        kms_operation = %metadata.kms_operation,
        operation,
        key,
        "xks request"
    );
}

/// POST `keys/{id}/encrypt`.
pub(super) async fn encrypt(
    State(service): Shared,
    Path(key): Path<String>,
    incoming: Incoming,
) -> Result<Json<Value>, XksError> {
    let (peer, body) = service.authenticate(&incoming)?;
    let request: EncryptBody = parse(body)?;
    check_key_metadata(&request.request_metadata)?;
    check_key_id(&key)?;
    check_algorithm(&request.encryption_algorithm)?;
    let want_integrity = match request.ciphertext_data_integrity_value_algorithm.as_deref() {
        None => false,
        Some("SHA_256") => true,
        Some(_) => return Err(XksError::validation("ciphertextDataIntegrityValueAlgorithm must be SHA_256")),
    };
    log(&request.request_metadata, "encrypt", &key);
    let plaintext = SecretBytes::new(decode("plaintext", &request.plaintext, MAX_DATA)?);
    let aad = match &request.additional_authenticated_data {
        Some(text) => decode("additionalAuthenticatedData", text, MAX_AAD)?,
        None => Vec::new(),
    };
    // The metadata, so the AAD, names the version: it is chosen here. A key store the
    // ACL does not let encrypt learns nothing of the key (the router refuses it).
    let version = if peer.permissions.allows(AclOp::Encrypt, &key) {
        let info = service.key_info(&key)?;
        info.current_version()
            .map_err(|error| XksError::new(XksErrorName::InvalidStateException, error.to_string()))?
    } else {
        0
    };
    let meta = ciphertext::metadata(version);
    let associated = ciphertext::associated_data(&aad, &meta);
    let call = Request::Encrypt { key: key.clone(), version, aad: associated.clone(), plaintext };
    let (iv, sealed, tag) = match service.door.call(&peer, call, service.options()).await {
        Ok(Reply::Encrypt { version: used, iv, ciphertext, tag }) if used == version => (iv, ciphertext, tag),
        Ok(_) => return Err(XksError::new(XksErrorName::InternalException, "unexpected answer")),
        Err(failure) => return Err(XksError::from_failure(&failure)),
    };
    let mut answer = json!({
        "ciphertext": BASE64.encode(&sealed),
        "ciphertextMetadata": BASE64.encode(meta),
        "initializationVector": BASE64.encode(&iv),
        "authenticationTag": BASE64.encode(&tag),
    });
    if want_integrity {
        // Hashed before the check below, as Appendix C of the specification asks.
        let value = ciphertext::integrity_value(&aad, &meta, &iv, &sealed, &tag);
        if peer.permissions.allows(AclOp::Decrypt, &key) {
            let check = Request::Decrypt { key, version, aad: associated, iv, ciphertext: sealed, tag };
            match service.door.call(&peer, check, service.options()).await {
                Ok(Reply::Decrypt { .. }) => {}
                _ => {
                    return Err(XksError::new(
                        XksErrorName::InternalException,
                        "the ciphertext did not decrypt",
                    ));
                }
            }
        }
        answer["ciphertextDataIntegrityValue"] = Value::String(BASE64.encode(value));
    }
    Ok(Json(answer))
}

/// POST `keys/{id}/decrypt`.
pub(super) async fn decrypt(
    State(service): Shared,
    Path(key): Path<String>,
    incoming: Incoming,
) -> Result<Json<Value>, XksError> {
    let (peer, body) = service.authenticate(&incoming)?;
    let request: DecryptBody = parse(body)?;
    check_key_metadata(&request.request_metadata)?;
    check_key_id(&key)?;
    check_algorithm(&request.encryption_algorithm)?;
    log(&request.request_metadata, "decrypt", &key);
    let sealed = decode("ciphertext", &request.ciphertext, MAX_DATA)?;
    let aad = match &request.additional_authenticated_data {
        Some(text) => decode("additionalAuthenticatedData", text, MAX_AAD)?,
        None => Vec::new(),
    };
    let iv = decode("initializationVector", &request.initialization_vector, 16)?;
    if iv.len() != 12 && iv.len() != 16 {
        return Err(XksError::validation("initializationVector must be 12 or 16 bytes"));
    }
    let tag = decode("authenticationTag", &request.authentication_tag, 16)?;
    if tag.len() != 16 {
        return Err(XksError::validation("authenticationTag must be 16 bytes"));
    }
    let invalid =
        || XksError::new(XksErrorName::InvalidCiphertextException, "ciphertextMetadata is not keymux's");
    let meta = match &request.ciphertext_metadata {
        Some(text) => BASE64.decode(text).map_err(|_| invalid())?,
        None => return Err(invalid()),
    };
    let version = ciphertext::version_of(&meta).ok_or_else(invalid)?;
    let associated = ciphertext::associated_data(&aad, &meta);
    let call = Request::Decrypt { key, version, aad: associated, iv, ciphertext: sealed, tag };
    match service.door.call(&peer, call, service.options()).await {
        Ok(Reply::Decrypt { plaintext }) => {
            Ok(Json(json!({ "plaintext": BASE64.encode(plaintext.expose()) })))
        }
        Ok(_) => Err(XksError::new(XksErrorName::InternalException, "unexpected answer")),
        Err(failure) => Err(XksError::from_failure(&failure)),
    }
}

/// POST `health`: a round trip on the health key (cached for `health_cache_ttl`).
pub(super) async fn health(State(service): Shared, incoming: Incoming) -> Result<Json<Value>, XksError> {
    let (peer, _) = service.authenticate(&incoming)?;
    let status = service.health_status(&peer).await;
    Ok(Json(json!({
        "xksProxyFleetSize": service.fleet_size,
        "xksProxyVendor": "keymux",
        "xksProxyModel": format!("keymux {}", env!("CARGO_PKG_VERSION")),
        "ekmVendor": "keymux",
        "ekmFleetDetails": [{
            "id": "keymux-backend",
            "model": format!("keymux {} backend", service.backend_kind),
            "healthStatus": status,
        }],
    })))
}

impl XksService {
    async fn health_status(&self, peer: &Peer) -> &'static str {
        let Some(key) = &self.health_key else { return "ACTIVE" };
        let mut last = self.health.lock().await;
        if let Some((at, status)) = *last {
            if at.elapsed() < self.health_cache_ttl {
                return status;
            }
        }
        let status = if self.probe(peer, key).await { "ACTIVE" } else { "UNAVAILABLE" };
        *last = Some((Instant::now(), status));
        status
    }

    async fn probe(&self, peer: &Peer, key: &str) -> bool {
        const PROBE: &[u8] = b"keymux xks health probe";
        let aad = b"keymux xks health".to_vec();
        let encrypt = Request::Encrypt {
            key: key.to_owned(),
            version: 0,
            aad: aad.clone(),
            plaintext: SecretBytes::copy_from(PROBE),
        };
        let Ok(Reply::Encrypt { version, iv, ciphertext, tag }) =
            self.door.call(peer, encrypt, self.options()).await
        else {
            return false;
        };
        let decrypt = Request::Decrypt { key: key.to_owned(), version, aad, iv, ciphertext, tag };
        matches!(self.door.call(peer, decrypt, self.options()).await, Ok(Reply::Decrypt { plaintext }) if plaintext.expose() == PROBE)
    }
}

/// Any path that is not an XKS operation.
pub(super) async fn not_found() -> XksError {
    XksError::new(XksErrorName::InvalidUriPathException, "not an XKS API path")
}
