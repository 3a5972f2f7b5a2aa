//! The AWS KMS External Key Store (XKS) proxy API: AWS KMS itself encrypts and decrypts
//! with a key that lives in the operator's HSM behind keymux. See `docs/XKS.md`.
//!
//! A thin translation, as every front end is: a request is authenticated by SigV4
//! ([`sigv4`]) to the identity of its credential (`[[acl]]` rules:
//! `token = "xks:<credential name>"`), turned into the raw-AEAD router
//! requests ENCRYPT and DECRYPT through the [`FrontDoor`](super::FrontDoor), and the
//! answers put into the specification's JSON. There is no crypto here beyond the AAD's
//! framing and the integrity hash the specification defines ([`ciphertext`]).

pub mod ciphertext;
pub mod config;
pub mod error;
pub mod sigv4;

pub use config::{XksConfig, XksCredential};
pub use error::{XksError, XksErrorName};

mod api;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::post;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::FrontDoor;
use super::http::{HttpListener, HttpListenerError};
use crate::keys::KeyRegistry;
use crate::server::CertReloader;

pub use api::{MAX_AAD, MAX_DATA};

/// What the XKS API reaches into the running proxy for.
#[derive(Clone)]
pub struct Wiring {
    /// The router.
    pub front_door: FrontDoor,
    /// The keys as the router sees them (key metadata, the version to encrypt under).
    pub registry: Arc<KeyRegistry>,
    /// The backend's kind (`soft`, `pkcs11`, `kms`), for the health answer.
    pub backend_kind: &'static str,
}

/// Why the XKS API could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum XksStartError {
    /// A credential could not be read. Never carries the secret.
    #[error("credentials[{index}].{field}: {source}")]
    Secret {
        /// Which `[[xks.credentials]]` entry.
        index: usize,
        /// `access_key_id` or `secret_access_key`.
        field: &'static str,
        /// Why.
        source: crate::secrets::SecretError,
    },
    /// The listener could not start.
    #[error(transparent)]
    Listener(#[from] HttpListenerError),
}

/// The XKS API's routes under `config.base_path()`.
fn router(config: &XksConfig, service: Arc<api::XksService>) -> Router {
    let base = config.base_path();
    Router::new()
        .route(&format!("{base}/health"), post(api::health))
        .route(&format!("{base}/keys/{{key}}/metadata"), post(api::metadata))
        .route(&format!("{base}/keys/{{key}}/encrypt"), post(api::encrypt))
        .route(&format!("{base}/keys/{{key}}/decrypt"), post(api::decrypt))
        .fallback(api::not_found)
        .with_state(service)
}

/// Reads the credentials, binds `[xks]`'s listener and serves the API on it until
/// `shutdown`; returns the bound address.
pub async fn start(
    config: &XksConfig,
    wiring: Wiring,
    reloader: Option<&Arc<CertReloader>>,
    tasks: &TaskTracker,
    shutdown: CancellationToken,
    grace: Duration,
) -> Result<SocketAddr, XksStartError> {
    let mut verifier = sigv4::Verifier::new(&config.region, sigv4::SERVICE, config.max_clock_skew);
    for (index, credential) in config.credentials.iter().enumerate() {
        let secret = |field, source: &crate::secrets::SecretSource| {
            source.resolve().map_err(|source| XksStartError::Secret { index, field, source })
        };
        let access_key_id = secret("access_key_id", &credential.access_key_id)?;
        let secret_access_key = secret("secret_access_key", &credential.secret_access_key)?;
        verifier.add(&credential.name, &access_key_id, secret_access_key);
    }
    let service = Arc::new(api::XksService {
        door: wiring.front_door,
        registry: wiring.registry,
        verifier,
        deadline: config.deadline,
        client_cn: config.client_cn.clone(),
        health_key: config.health_key.clone(),
        health_cache_ttl: config.health_cache_ttl,
        health: tokio::sync::Mutex::new(None),
        fleet_size: config.fleet_size,
        backend_kind: wiring.backend_kind,
    });
    let listener = HttpListener::bind("xks", config.listen, &config.http, reloader).await?;
    let addr =
        listener.local_addr().map_err(|source| HttpListenerError::Bind { address: config.listen, source })?;
    listener.spawn(router(config, service), error::reject, tasks, shutdown, grace);
    tracing::info!(%addr, path = %config.base_path(), "AWS XKS proxy API listening");
    Ok(addr)
}
